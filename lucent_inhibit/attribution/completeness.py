"""Completeness of layer-to-feature attribution (Hamblin et al. 2024, section 2, Figure 3).

For a feature ``f`` and an earlier layer ``l``, the total attribution ``E_l(x) = sum(grad_{h_l} f * h_l)``
equals ``f(x)`` exactly when the network between ``l`` and the feature is piecewise linear without
biases (Euler's theorem); biases, BatchNorm shifts and saturating activations make it approximate.
:func:`completeness` measures, per layer, the Pearson correlation ``r`` between ``f`` and ``E_l`` over a
dataset for several features at once (the attributions come from
:func:`lucent_inhibit.attribution.attribute.attribute`); :func:`completeness_pair` is the cheap check of one
(feature, layer) pair that later stages run before ranking images by attribution, and
:func:`warn_if_incomplete` warns when it is low. :func:`plot_completeness` draws ``r`` against layer
depth (the paper's Figure 3).

Pearson r needs at least 2 images: :func:`completeness` over fewer raises ``ValueError``, and an r that
is undefined because ``f`` or ``E`` is constant over the images is NaN *with* a warning.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from torch import nn

from ..core.checkpoints import checkpointed, chunk_images, split_chunks
from ..core.features import Feature, as_feature
from ..core.results import Result
from ..core.settings import PassSettings, as_pass_settings
from ..core.validate import MAX_IMAGES, MAX_SEED, InputError, check_choice, check_int
from .agreement import PairCompleteness, adds_up, pearson, sum_check
from .attribute import METHODS
from .figures import plot_completeness
from .passes import DatasetPass, dataset_pass

#: Images per checkpoint of a completeness measurement (rounded up to whole batches).
CHECKPOINT_IMAGES = 256

__all__ = ["CompletenessResult", "IncompletenessWarning", "PairCompleteness", "adds_up", "completeness",
           "completeness_pair", "pearson", "plot_completeness", "random_logits", "sum_check", "warn_if_incomplete"]

#: Fewest images over which Pearson r between f and E is defined.
MIN_IMAGES = 2


# ------------------------------------------------------------------------------------------------
# result
# ------------------------------------------------------------------------------------------------
@dataclass
class CompletenessResult(Result):
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
        dataset: identity of the image set (:func:`lucent_inhibit.data.datasets.dataset_identity`).
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
            if isinstance(sel, (int, np.integer)) and not isinstance(sel, bool):
                if not 1 <= sel <= n:
                    raise ValueError(f"subset of {sel} out of range: the result has {n}")
                return np.arange(int(sel))
            return np.arange(n)[sel]

        im, ft = pick(images, self.n_images), pick(features, len(self.features))
        _check_count(im.size, "the subset")
        f, e = self.f[np.ix_(ft, im)], self.E[np.ix_(ft, im)]
        base = None if self.baseline is None else self.baseline[np.ix_(ft, im)]
        return CompletenessResult(list(self.layers), [self.features[i] for i in ft], _r_matrix(f, e), f, e,
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

    def sums(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(slope, share)``, each (F, L): :func:`sum_check` of every feature at every layer (against
        ``f - baseline`` for integrated gradients)."""
        t = self.target()
        pairs = [[sum_check(t[i, :, j], self.E[i, :, j]) for j in range(len(self.layers))] for i in range(len(self.features))]
        arr = np.array(pairs, dtype=np.float64).reshape(len(self.features), len(self.layers), 2)
        return arr[..., 0], arr[..., 1]

    def adds_up(self) -> np.ndarray:
        """(F, L) bool: E accounts for the feature there (:func:`adds_up`), whatever r says."""
        slope, share = self.sums()
        return np.vectorize(adds_up)(slope, share).astype(bool).reshape(slope.shape)

    def table(self) -> str:
        """Per-layer text table: mean, min and max r over features and the mean relative error."""
        mean, err = self.mean_r(), self.relative_error().mean(0)
        width = max(12, max(len(l) for l in self.layers))
        lines = [
            f"completeness ({self.method}{'' if self.steps is None else f', {self.steps} steps'}): "
            f"Pearson r between f and E over {self.n_images} images, {len(self.features)} feature(s)",
            f"{'layer':<{width}}  {'mean r':>7}  {'min r':>7}  {'max r':>7}  {'rel.err':>8}  {'slope':>7}  "
            f"{'share':>7}  adds up",
        ]
        slope, share = self.sums()
        ok = self.adds_up()
        for j, layer in enumerate(self.layers):
            col = self.r[:, j]
            lo = np.nanmin(col) if np.isfinite(col).any() else float("nan")
            hi = np.nanmax(col) if np.isfinite(col).any() else float("nan")
            lines.append(f"{layer:<{width}}  {mean[j]:7.3f}  {lo:7.3f}  {hi:7.3f}  {err[j]:8.3g}  "
                         f"{np.nanmedian(slope[:, j]):7.3g}  {np.nanmedian(share[:, j]):7.3g}  "
                         f"{int(ok[:, j].sum())}/{len(self.features)}")
        return "\n".join(lines)

    def summary(self) -> dict:
        """Method, number of images and features, and per layer the mean r over features and the mean
        relative error of E."""
        mean, err = self.mean_r(), self.relative_error().mean(0)
        slope, share = self.sums()
        ok = self.adds_up()
        return {"type": type(self).kind(), "method": self.method, "steps": self.steps, "images": self.n_images,
                "features": len(self.features), "dataset": self.dataset, "model": self.model,
                "layers": {l: {"mean_r": float(mean[j]), "relative_error": float(err[j]),
                               "median_slope": float(np.nanmedian(slope[:, j])),
                               "median_share": float(np.nanmedian(share[:, j])),
                               "features_adding_up": int(ok[:, j].sum())}
                           for j, l in enumerate(self.layers)}}

    def _repr_numbers(self) -> dict:
        """The repr's numbers: the method, the images and the mean r over features at each layer."""
        return {"method": self.method, "images": self.n_images,
                **{f"mean_r[{l}]": float(r) for l, r in zip(self.layers, self.mean_r())}}

    def plot(self, path=None, ax=None, **style):
        """Pearson r against layer depth (:func:`plot_completeness`); returns the Figure."""
        return plot_completeness(self, path, ax, **style)

    def _index(self, layer):
        if layer not in self.layers:
            raise KeyError(f"no completeness measured at layer {layer!r}; measured layers: {self.layers}")
        return self.layers.index(layer)


def _sum_matrices(f: np.ndarray, e: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    pairs = [[sum_check(f[i], e[i, :, j]) for j in range(e.shape[2])] for i in range(f.shape[0])]
    arr = np.array(pairs, dtype=np.float64).reshape(f.shape[0], e.shape[2], 2)
    return arr[..., 0], arr[..., 1]


def _r_matrix(f: np.ndarray, e: np.ndarray) -> np.ndarray:
    """(F, L) Pearson r of f (F, N) against every layer's E (F, N, L)."""
    return np.array([[pearson(f[i], e[i, :, j]) for j in range(e.shape[2])] for i in range(f.shape[0])]
                    ).reshape(f.shape[0], e.shape[2])


def _check_count(n: int, what: str) -> None:
    if n < MIN_IMAGES:
        raise ValueError(
            f"completeness needs at least {MIN_IMAGES} images to correlate f and E (Pearson r is undefined over "
            f"{n} image{'' if n == 1 else 's'}); {what} has {n}"
        )


def random_logits(n: int = 20, seed: int = 0, n_classes: int = 1000, layer: str = "classifier") -> List[Feature]:
    """``n`` distinct random output units ``Feature(layer, unit=k)``, reproducible from ``seed``; ``n_classes``
    (the layer's units) at most ``validate.MAX_IMAGES``, seed 0 to ``validate.MAX_SEED``."""
    n_classes = check_int("n_classes", n_classes, 1, MAX_IMAGES)
    n, seed = check_int("n", n), check_int("seed", seed, 0, MAX_SEED)
    if not 1 <= n <= n_classes:
        raise InputError(f"n must be between 1 and n_classes={n_classes}, got {n}")
    units = np.random.default_rng(seed).choice(n_classes, size=n, replace=False)
    return [Feature(layer, unit=int(k)) for k in units]


def _as_features(features) -> List[Feature]:
    if isinstance(features, (Feature, dict)) or (
        isinstance(features, tuple) and len(features) == 2 and isinstance(features[0], str)
    ):
        features = [features]
    if isinstance(features, (str, bytes)) or not hasattr(features, "__iter__"):
        raise InputError(f"features must be a Feature or a list of Features, got {features!r:.60}")
    features = [as_feature(f) for f in features]
    if not features:
        raise ValueError("features is empty: give at least one Feature")
    return features


def _warn_undefined(r: np.ndarray, feats: List[Feature], layers: List[str], n: int) -> None:
    pairs = [f"{feats[i].name} at {layers[j]!r}" for i, j in zip(*np.nonzero(~np.isfinite(r)))]
    if pairs:
        warnings.warn(
            f"Pearson r between f and E is undefined (NaN) for {len(pairs)} (feature, layer) pair(s) because f or "
            f"E is constant over the {n} images: {', '.join(pairs[:5])}{' ...' if len(pairs) > 5 else ''}",
            stacklevel=3,
        )


def completeness(
    model: nn.Module, dataset, features, layers: Union[str, Sequence[str]], method: str = "gradient_x_activation",
    steps: int = 16, max_images: Optional[int] = None, settings: Optional[PassSettings] = None,
    checkpoint: Optional[str] = None,
) -> CompletenessResult:
    """Pearson r between each feature and its total attribution at each layer, over a dataset.

    Args:
        model: a prepared model (:func:`lucent_inhibit.prepare`); it runs in eval mode (its mode is
            restored afterwards, also on error).
        dataset: a sequence of (3, H, W) images in [0, 1] (e.g. :func:`lucent_inhibit.sample_crops`,
            :class:`lucent_inhibit.ImageFolder`) or an (N, 3, H, W) tensor; at least 2 images.
        features: one :class:`Feature` or several (e.g. :func:`random_logits`); each is attributed with
            :func:`~lucent_inhibit.attribution.attribute.attribute` (one forward and one backward pass per feature
            and batch, all layers at once).
        layers: attribution layers (Lucent names, ``"input"`` for the normalised input). Every layer
            must feed every feature; otherwise a ``ValueError`` names the pair.
        method: ``"gradient_x_activation"`` or ``"integrated_gradients"`` (layer IG, zero baseline at
            the layer, ``steps`` points; far slower: ``steps`` forward/backward passes per layer).
        steps: integration points for integrated gradients.
        max_images: use only the first ``max_images`` images.
        settings: the pass's :class:`~lucent_inhibit.core.settings.PassSettings` (batch size, input
            normalisation, progress bar); None: the defaults.
        checkpoint: a folder where the totals are saved every :data:`CHECKPOINT_IMAGES` images
            (:func:`lucent_inhibit.core.checkpoints.checkpointed`): a rerun with the same arguments after an
            interruption (SIGKILL included) resumes there and returns what an uninterrupted run returns.

    Returns:
        :class:`CompletenessResult` with ``r`` (F, L), ``f`` (F, N) and ``E`` (F, N, L); layers sorted in
        forward order. Fewer than 2 images raise ``ValueError`` (r is undefined); an r that is undefined
        because f or E is constant is NaN, with a warning naming the pairs.
    """
    feats = _as_features(features)
    method = check_choice("method", method, METHODS)
    steps = check_int("steps", steps, low=1)
    run = dataset_pass(model, dataset, layers, feats, settings)
    n = run.size if max_images is None else min(run.size, check_int("max_images", max_images, low=1))
    _check_count(n, f"the dataset ({run.name})" if max_images is None else f"max_images={max_images}")
    identity = {"features": [f.to_dict() for f in feats], "method": method, "steps": steps, "n": n, **run.identity()}
    with run.evaluating():
        order, f_vals, e_vals, base = measure_totals(run, feats, n, method, steps, checkpoint, identity)
    r = _r_matrix(f_vals, e_vals)
    _warn_undefined(r, feats, order, n)
    return CompletenessResult(
        layers=order, features=[f.to_dict() for f in feats], r=r, f=f_vals, E=e_vals, method=method,
        steps=steps if method == "integrated_gradients" else None, baseline=base, dataset=run.name,
        model=model._get_name(),
    )


def completeness_pair(
    model: nn.Module, dataset, feature, layer: str, n_images: int = 64, settings: Optional[PassSettings] = None,
) -> PairCompleteness:
    """Pearson r between ``feature`` and its gradient x activation total at ``layer`` over the first
    ``n_images`` images of ``dataset`` (at least 2), with the sum check (slope of f on E, share of f that E
    accounts for): the cheap check to run before ranking images by attribution. The result is a float
    (r) carrying ``.slope``, ``.share`` and ``.adds_up``. ``settings``: as for :func:`completeness` (its
    progress bar is off here)."""
    if not isinstance(layer, str):
        raise TypeError(f"layer must be one Lucent layer name, got {type(layer).__name__}")
    settings = as_pass_settings(settings).replace(progress=False)
    res = completeness(model, dataset, [feature], [layer], max_images=check_int("n_images", n_images, low=MIN_IMAGES),
                       settings=settings)
    slope, share = res.sums()
    return PairCompleteness(float(res.r[0, 0]), float(slope[0, 0]), float(share[0, 0]))


def measure_totals(run: DatasetPass, feats: List[Feature], n: int, method: str, steps: int,
                   checkpoint: Optional[str] = None, identity: Optional[dict] = None):
    """``(layers in forward order, f (F, N), E (F, N, L), baseline (F, N, L) or None)`` over the first ``n``
    images: gradient x activation in one forward pass per batch for all features (:func:`_shared_forward_totals`),
    integrated gradients in one :func:`~lucent_inhibit.attribution.attribute.attribute` call per feature and batch.
    With ``checkpoint`` the totals are saved (and resumed) in chunks of images described by ``identity``."""
    ig = method == "integrated_gradients"
    workspace: dict = {}  # the backward's buffers, reused by every feature and batch
    chunks = split_chunks(np.arange(n), chunk_images(run.batch_size, CHECKPOINT_IMAGES))
    with run.bar(n, "completeness") as bar:
        compute = lambda c, idx: _chunk_totals(run, feats, idx, method, steps, workspace, bar)  # noqa: E731
        parts = checkpointed(checkpoint, "completeness", identity or {}, chunks, compute,
                             skipped=lambda idx: bar.update(len(idx)))
    f_vals, e_vals = (np.concatenate([p[k] for p in parts]).swapaxes(0, 1) for k in ("f", "e"))
    base = np.concatenate([p["base"] for p in parts]).swapaxes(0, 1) if ig else None
    order = run.forward_sorted(next(run.batches(range(min(run.batch_size, n))))[1])
    perm = [run.layers.index(l) for l in order]
    return order, f_vals, e_vals[:, :, perm], None if base is None else base[:, :, perm]


def _chunk_totals(run: DatasetPass, feats: List[Feature], indices: np.ndarray, method: str, steps: int,
                  workspace: dict, bar) -> dict:
    """``{"f": (n, F), "e": (n, F, L)[, "base": (n, F, L)]}`` of the images ``indices`` (layers in pass order)."""
    ig = method == "integrated_gradients"
    n, k, n_layers = len(indices), len(feats), len(run.layers)
    f_vals, e_vals = np.zeros((k, n), dtype=np.float64), np.zeros((k, n, n_layers), dtype=np.float64)
    base = np.zeros_like(e_vals) if ig else None
    for idx, images in run.batches(indices):
        rows = idx - int(indices[0])
        if not ig:  # one forward pass for every feature, a backward per feature
            f_vals[:, rows], e_vals[:, rows] = _shared_forward_totals(run, images, feats, workspace)
        for i, feat in enumerate(feats if ig else ()):
            att = run.attribute(images, feat, method, steps)
            f_vals[i, rows] = att.activation.double().cpu().numpy()
            for j, l in enumerate(run.layers):
                e_vals[i, rows, j] = att.total(l).double().cpu().numpy()
                base[i, rows, j] = att.baseline_activation[l].double().cpu().numpy()
        bar.update(len(idx))
    out = {"f": f_vals.swapaxes(0, 1), "e": e_vals.swapaxes(0, 1)}
    return out if base is None else {**out, "base": base.swapaxes(0, 1)}


def _shared_forward_totals(run: DatasetPass, images, feats: List[Feature], workspace: dict
                           ) -> Tuple[np.ndarray, np.ndarray]:
    """``f`` (F, B) and ``E = P - N`` (F, B, L) of gradient x activation for one batch: one forward pass
    (:func:`~lucent_inhibit.attribution.attribute.feature_graph`), then one backward per feature
    (:func:`~lucent_inhibit.attribution.kernel.chunk_totals`, one feature per chunk: memory as for one feature)."""
    from .attribute import feature_graph, prepare_inputs
    from .kernel import chunk_totals

    values, acts = feature_graph(run.model, prepare_inputs(run.model, images, run.preprocess), feats, run.layers)
    e = np.zeros((len(feats), len(images), len(run.layers)))
    for i in range(len(feats)):
        p, q = chunk_totals(values, acts, feats, run.layers, range(i, i + 1), i < len(feats) - 1, False, workspace)
        e[i] = (p[0].double() - q[0].double()).cpu().numpy()
    return values.detach().double().cpu().numpy(), e
