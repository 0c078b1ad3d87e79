"""Completeness of layer-to-feature attribution (Hamblin et al. 2024, section 2, Figure 3).

For a feature ``f`` and an earlier layer ``l``, the total attribution ``E_l(x) = sum(grad_{h_l} f * h_l)``
equals ``f(x)`` exactly when the network between ``l`` and the feature is piecewise linear without
biases (Euler's theorem); biases, BatchNorm shifts and saturating activations make it approximate.
:func:`completeness` measures, per layer, the Pearson correlation ``r`` between ``f`` and ``E_l`` over a
dataset for several features at once; :func:`completeness_pair` is the cheap check of one (feature,
layer) pair that later stages run before ranking images by attribution, and :func:`warn_if_incomplete`
warns when it is low. :func:`plot_completeness` draws ``r`` against layer depth (the paper's Figure 3).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .storage import load_npz, save_npz
from .attribution import (
    METHODS,
    Feature,
    _prepare_inputs,
    _unused_layer_error,
    as_feature,
    attribute,
    capture,
)
from .data import dataset_identity
from .hooks import layer_table as _layer_table
from .models import unknown_layer_message


class IncompletenessWarning(UserWarning):
    """The attribution at a layer does not add up to the feature (low Pearson r between E and f)."""


# ------------------------------------------------------------------------------------------------
# result
# ------------------------------------------------------------------------------------------------
@dataclass
class CompletenessResult:
    """Result of :func:`completeness`.

    Attributes:
        layers: attribution layers, in forward (depth) order; ``"input"`` is the normalised model input.
        features: the features, as :meth:`Feature.to_dict` dicts (F of them).
        r: (F, L) Pearson correlation over the images between ``f`` and ``E_l`` (NaN where either is
            constant).
        f: (F, N) feature value on each image.
        E: (F, N, L) total attribution ``E_l`` on each image (same units as ``f``).
        method: ``"gradient_x_activation"`` or ``"integrated_gradients"``.
        steps: integration points (integrated gradients only).
        baseline: (F, N, L) for integrated gradients, the feature with layer ``l`` set to zero; IG's
            ``E_l`` approximates ``f - baseline``.
        dataset: identity of the image set (:func:`lucent_inhibit.data.dataset_identity`).
        model: the model's class name.
    """

    layers: List[str]
    features: List[dict]
    r: np.ndarray
    f: np.ndarray
    E: np.ndarray
    method: str = "gradient_x_activation"
    steps: Optional[int] = None
    baseline: Optional[np.ndarray] = None
    dataset: str = ""
    model: str = ""

    @property
    def feature_names(self) -> List[str]:
        return [Feature.from_dict(d).name for d in self.features]

    @property
    def n_images(self) -> int:
        return int(self.f.shape[1])

    def mean_r(self) -> np.ndarray:
        """(L,) mean over features of r at each layer (features with undefined r are skipped)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(self.r, axis=0)

    def r_at(self, layer: str) -> np.ndarray:
        """(F,) r of every feature at ``layer``."""
        return self.r[:, self._index(layer)]

    def subset(self, images=None, features=None) -> "CompletenessResult":
        """The result restricted to some images (indices, a slice, or an int n = the first n) and/or
        features (indices), with r recomputed: e.g. to compare two methods on the same images."""
        def pick(sel, n):
            if sel is None:
                return np.arange(n)
            if isinstance(sel, (int, np.integer)):
                if not 1 <= sel <= n:
                    raise ValueError(f"subset of {sel} out of range: the result has {n}")
                return np.arange(int(sel))
            return np.arange(n)[sel]

        im, ft = pick(images, self.n_images), pick(features, len(self.features))
        f, e = self.f[np.ix_(ft, im)], self.E[np.ix_(ft, im)]
        base = None if self.baseline is None else self.baseline[np.ix_(ft, im)]
        r = np.array([[pearson(f[i], e[i, :, j]) for j in range(len(self.layers))] for i in range(len(ft))])
        return CompletenessResult(list(self.layers), [self.features[i] for i in ft], r.reshape(len(ft), -1), f, e,
                                  self.method, self.steps, base, self.dataset, self.model)

    def target(self) -> np.ndarray:
        """(F, N, L) what ``E`` should equal if attribution were complete: ``f`` for gradient x
        activation, ``f - baseline`` for integrated gradients."""
        if self.baseline is not None:
            return self.f[:, :, None] - self.baseline
        return np.repeat(self.f[:, :, None], len(self.layers), axis=2)

    def relative_error(self) -> np.ndarray:
        """(F, L) mean |E - target| / mean |target| over images: 0 for exact completeness."""
        t = self.target()
        return np.abs(self.E - t).mean(1) / np.maximum(np.abs(t).mean(1), 1e-12)

    def table(self) -> str:
        """Per-layer text table: mean, min and max r over features and the mean relative error."""
        mean, err = self.mean_r(), self.relative_error().mean(0)
        width = max(12, max(len(l) for l in self.layers))
        lines = [
            f"completeness ({self.method}{'' if self.steps is None else f', {self.steps} steps'}): "
            f"Pearson r between f and E over {self.n_images} images, {len(self.features)} feature(s)",
            f"{'layer':<{width}}  {'mean r':>7}  {'min r':>7}  {'max r':>7}  {'rel.err':>8}",
        ]
        for j, layer in enumerate(self.layers):
            col = self.r[:, j]
            lo = np.nanmin(col) if np.isfinite(col).any() else float("nan")
            hi = np.nanmax(col) if np.isfinite(col).any() else float("nan")
            lines.append(f"{layer:<{width}}  {mean[j]:7.3f}  {lo:7.3f}  {hi:7.3f}  {err[j]:8.3g}")
        return "\n".join(lines)

    def _index(self, layer):
        if layer not in self.layers:
            raise KeyError(f"no completeness measured at layer {layer!r}; measured layers: {self.layers}")
        return self.layers.index(layer)

    def save(self, path: str) -> None:
        """Write an ``.npz`` (arrays + a JSON ``meta`` entry; no pickle)."""
        meta = {
            "layers": self.layers,
            "features": self.features,
            "method": self.method,
            "steps": self.steps,
            "dataset": self.dataset,
            "model": self.model,
        }
        arrays = {"r": self.r, "f": self.f, "E": self.E}
        if self.baseline is not None:
            arrays["baseline"] = self.baseline
        save_npz(path, arrays, meta)

    @classmethod
    def load(cls, path: str) -> "CompletenessResult":
        z, meta = load_npz(path, "CompletenessResult")
        return cls(
            layers=list(meta["layers"]),
            features=list(meta["features"]),
            r=z["r"],
            f=z["f"],
            E=z["E"],
            method=meta["method"],
            steps=meta.get("steps"),
            baseline=z["baseline"] if "baseline" in z else None,
            dataset=meta.get("dataset", ""),
            model=meta.get("model", ""),
        )


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two 1-D arrays; NaN when either is constant."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    scale = max(float(np.abs(a).max(initial=0)), float(np.abs(b).max(initial=0)), 1e-30)
    if den <= (1e-12 * scale) ** 2 * len(a):
        return float("nan")
    return float((a * b).sum() / den)


def random_logits(n: int = 20, seed: int = 0, n_classes: int = 1000, layer: str = "classifier") -> List[Feature]:
    """``n`` distinct random output units ``Feature(layer, unit=k)``, reproducible from ``seed``."""
    if int(n) < 1 or int(n) > int(n_classes):
        raise ValueError(f"n must be between 1 and n_classes={n_classes}, got {n}")
    units = np.random.default_rng(seed).choice(int(n_classes), size=int(n), replace=False)
    return [Feature(layer, unit=int(k)) for k in units]


def _as_features(features) -> List[Feature]:
    if isinstance(features, (Feature, dict)) or (
        isinstance(features, tuple) and len(features) == 2 and isinstance(features[0], str)
    ):
        features = [features]
    features = [as_feature(f) for f in features]
    if not features:
        raise ValueError("features is empty: give at least one Feature")
    return features


def _check_dataset(dataset):
    if torch.is_tensor(dataset):
        if dataset.dim() == 3:
            dataset = dataset[None]
        if dataset.dim() != 4:
            raise ValueError(f"an image tensor dataset must have shape (N, 3, H, W), got {tuple(dataset.shape)}")
    try:
        n = len(dataset)
    except TypeError:
        raise TypeError(
            f"dataset must be a sequence of (3, H, W) images or an (N, 3, H, W) tensor, got {type(dataset).__name__}"
        ) from None
    if n == 0:
        raise ValueError("the dataset is empty (0 images); completeness needs at least 2 images")
    return dataset, n


def _batch(dataset, start, stop):
    if torch.is_tensor(dataset):
        return dataset[start:stop]
    items = [dataset[i] for i in range(start, stop)]
    for i, item in zip(range(start, stop), items):
        if not torch.is_tensor(item) or item.dim() != 3:
            shape = tuple(item.shape) if torch.is_tensor(item) else type(item).__name__
            raise ValueError(f"dataset item {i} must be a (3, H, W) image tensor in [0, 1], got {shape}")
    return torch.stack(items)


def _check_layers(model, layers) -> List[str]:
    if isinstance(layers, str):
        layers = [layers]
    layers = list(dict.fromkeys(layers))
    if not layers:
        raise ValueError("layers is empty: name at least one attribution layer")
    valid = list(_layer_table(model))
    for l in layers:
        if l != "input" and l not in valid:
            raise ValueError(unknown_layer_message(l, ["input"] + valid))
    return layers


# ------------------------------------------------------------------------------------------------
# measurement
# ------------------------------------------------------------------------------------------------
def completeness(
    model: nn.Module,
    dataset,
    features,
    layers: Union[str, Sequence[str]],
    batch_size: int = 16,
    method: str = "gradient_x_activation",
    steps: int = 16,
    max_images: Optional[int] = None,
    preprocess: bool = True,
    progress: bool = True,
) -> CompletenessResult:
    """Pearson r between each feature and its total attribution at each layer, over a dataset.

    Args:
        model: a prepared model (:func:`lucent_inhibit.prepare`).
        dataset: a sequence of (3, H, W) images in [0, 1] (e.g. :func:`lucent_inhibit.sample_crops`,
            :class:`lucent_inhibit.ImageFolder`) or an (N, 3, H, W) tensor.
        features: one :class:`Feature` or several (e.g. :func:`random_logits`). Features on the same
            layer share one forward pass per batch (one backward pass each).
        layers: attribution layers (Lucent names, ``"input"`` for the normalised input). Every layer
            must feed every feature; otherwise a ``ValueError`` names the pair.
        batch_size: images per forward pass.
        method: ``"gradient_x_activation"`` or ``"integrated_gradients"`` (layer IG, zero baseline at
            the layer, ``steps`` points; far slower: ``steps`` forward/backward passes per layer).
        steps: integration points for integrated gradients.
        max_images: use only the first ``max_images`` images.
        preprocess: apply the model's input normalisation (as ``render_vis(preprocess=True)``).
        progress: show a tqdm bar over batches.

    Returns:
        :class:`CompletenessResult` with ``r`` (F, L), ``f`` (F, N) and ``E`` (F, N, L); layers sorted in
        forward order.
    """
    from tqdm.auto import tqdm

    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; expected one of {METHODS}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    feats = _as_features(features)
    layers = _check_layers(model, layers)
    dataset, n = _check_dataset(dataset)
    if max_images is not None:
        if int(max_images) < 1:
            raise ValueError(f"max_images must be at least 1, got {max_images}")
        n = min(n, int(max_images))
    n_f, n_l = len(feats), len(layers)
    f_vals = np.zeros((n_f, n), dtype=np.float64)
    e_vals = np.zeros((n_f, n, n_l), dtype=np.float64)
    base = np.zeros((n_f, n, n_l), dtype=np.float64) if method == "integrated_gradients" else None
    groups = {}
    for i, feat in enumerate(feats):
        groups.setdefault(feat.layer, []).append(i)
    order = None
    starts = range(0, n, int(batch_size))
    for start in tqdm(starts, desc="completeness", disable=not progress, leave=False):
        stop = min(n, start + int(batch_size))
        images = _batch(dataset, start, stop)
        if method == "integrated_gradients":
            for i, feat in enumerate(feats):
                att = attribute(model, images, feat, layers, method=method, steps=steps, preprocess=preprocess)
                f_vals[i, start:stop] = att.activation.double().cpu().numpy()
                for j, l in enumerate(layers):
                    e_vals[i, start:stop, j] = att.total(l).double().cpu().numpy()
                    base[i, start:stop, j] = att.baseline_activation[l].double().cpu().numpy()
            continue
        x = _prepare_inputs(model, images, preprocess)
        for flayer, idx in groups.items():
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                acts = capture(model, xg, layers, stop_at=flayer)
                if flayer not in acts:
                    raise ValueError(f"the forward pass never reached feature layer {flayer!r}")
                if order is None:
                    order = [l for l in acts if l in layers]
                inputs = []
                for l in layers:
                    if l not in acts:
                        raise _unused_layer_error(l, feats[idx[0]], "it runs after the feature layer in the forward pass")
                    inputs.append(acts[l])
                for k, i in enumerate(idx):
                    f = feats[i](acts[flayer])
                    grads = torch.autograd.grad(f.sum(), inputs, retain_graph=k < len(idx) - 1, allow_unused=True)
                    for j, (l, g, a) in enumerate(zip(layers, grads, inputs)):
                        if g is None:
                            raise _unused_layer_error(l, feats[i], "no gradient path from it to the feature")
                        e_vals[i, start:stop, j] = (g * a).detach().flatten(1).sum(1).double().cpu().numpy()
                    f_vals[i, start:stop] = f.detach().double().cpu().numpy()
            del acts, inputs
    if order is None:  # integrated gradients: find the forward order with one cheap pass
        with torch.no_grad():
            x = _prepare_inputs(model, _batch(dataset, 0, 1), preprocess)
            acts = capture(model, x, layers, stop_at=feats[0].layer)
        order = [l for l in acts if l in layers]
    perm = [layers.index(l) for l in order] + [j for j, l in enumerate(layers) if l not in order]
    layers = [layers[j] for j in perm]
    e_vals = e_vals[:, :, perm]
    if base is not None:
        base = base[:, :, perm]
    r = np.array([[pearson(f_vals[i], e_vals[i, :, j]) for j in range(n_l)] for i in range(n_f)]).reshape(n_f, n_l)
    return CompletenessResult(
        layers=layers,
        features=[f.to_dict() for f in feats],
        r=r,
        f=f_vals,
        E=e_vals,
        method=method,
        steps=int(steps) if method == "integrated_gradients" else None,
        baseline=base,
        dataset=dataset_identity(dataset) if not torch.is_tensor(dataset) else f"tensor(n={len(dataset)})",
        model=model._get_name(),
    )


def completeness_pair(
    model: nn.Module,
    dataset,
    feature,
    layer: str,
    n_images: int = 64,
    batch_size: int = 16,
    preprocess: bool = True,
) -> float:
    """Pearson r between ``feature`` and its gradient x activation total at ``layer`` over the first
    ``n_images`` images of ``dataset``: the cheap check to run before ranking images by attribution."""
    res = completeness(
        model, dataset, [feature], [layer], batch_size=batch_size, max_images=n_images, preprocess=preprocess,
        progress=False,
    )
    return float(res.r[0, 0])


def warn_if_incomplete(r: float, feature, layer: str, threshold: float = 0.5) -> bool:
    """Issue an :class:`IncompletenessWarning` if ``r`` (from :func:`completeness_pair`) is below
    ``threshold`` or undefined. Returns True when it warned."""
    name = as_feature(feature).name if not isinstance(feature, str) else feature
    if r is None or not np.isfinite(r) or r < threshold:
        warnings.warn(
            f"attribution of feature {name} at layer {layer!r} is incomplete: Pearson r between the feature "
            f"and its total attribution E is {r if r is None else f'{r:.3f}'} (threshold {threshold}); rankings "
            "by P, N or tension at this layer may not reflect the feature. Pick a layer closer to the feature "
            "(see lucent_inhibit.completeness) or use method='integrated_gradients'.",
            IncompletenessWarning,
            stacklevel=2,
        )
        return True
    return False


# ------------------------------------------------------------------------------------------------
# figure
# ------------------------------------------------------------------------------------------------
def _merge_orders(orders: List[List[str]]) -> List[str]:
    merged: List[str] = list(orders[0])
    for order in orders[1:]:
        prev = None
        for l in order:
            if l not in merged:
                merged.insert(0 if prev is None else merged.index(prev) + 1, l)
            prev = l
    return merged


def plot_completeness(result: CompletenessResult, path: str, compare=None, title: Optional[str] = None) -> str:
    """Figure: Pearson r between feature and total attribution against layer depth.

    One thin line per feature, the mean over features in bold; ``compare`` (another result or a list,
    e.g. the integrated-gradients result for some of the same features) is drawn on the same axes in
    another colour. x: layers in forward order, labelled. Writes a PNG to ``path`` and returns it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [result] + ([] if compare is None else ([compare] if isinstance(compare, CompletenessResult) else list(compare)))
    xs = _merge_orders([r.layers for r in results])
    colours = ["tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange"]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(xs) + 2), 4.2))
    for k, res in enumerate(results):
        c = colours[k % len(colours)]
        pos = [xs.index(l) for l in res.layers]
        for i in range(res.r.shape[0]):
            ax.plot(pos, res.r[i], color=c, lw=0.6, alpha=0.35)
        label = res.method.replace("_", " ")
        if res.steps:
            label += f" ({res.steps} steps)"
        label += f": mean of {res.r.shape[0]} feature(s)"
        ax.plot(pos, res.mean_r(), color=c, lw=2.5, marker="o", ms=4, label=label)
    ax.axhline(0, color="grey", lw=0.5)
    ax.axhline(1, color="grey", lw=0.5, ls=":")
    ax.set_xticks(range(len(xs)))
    ax.set_xticklabels(xs, rotation=60, ha="right", fontsize=8)
    ax.set_xlabel("attribution layer (forward order)")
    ax.set_ylabel("Pearson r(f, E)")
    ax.set_ylim(min(-0.2, float(np.nanmin([np.nanmin(r.r) for r in results] + [0])) - 0.05), 1.05)
    ax.set_title(title or f"Completeness of attribution over {result.n_images} images ({result.model})", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
