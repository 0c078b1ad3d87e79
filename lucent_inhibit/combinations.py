"""Feature-combination plots with the cosdot objective (Hamblin, Alvarez & Konkle, paper 004; SPEC 2.7).

Which combinations of two features can a model represent? For a pair ``(f_a, f_b)``:

1. :func:`pair_statistics` measures, over a dataset, every unit of a layer at one position and their
   correlations, and picks pairs: most correlated, most anti-correlated, closest to zero correlation.
2. :func:`axis_scales` renders each feature alone (both in one batch of Lucent's render loop) and
   measures its unconstrained maximum ``s``; the pair is studied in scaled units ``y = [f_a/s_a, f_b/s_b]``.
3. :func:`sweep` maximises ``C(y, theta) = dot(y, h) * |cos(y, h)|^p`` with ``h = [cos theta, sin theta]``
   for ``n_angles`` angles on [0, 2 pi) and ``n_seeds`` noise seeds. Every (angle, seed) is one element of
   a batch of ``render_vis`` (:func:`lucent_inhibit.objectives.feature_pair` takes one angle per batch
   element), in chunks of at most ``chunk`` elements, instead of one render per angle and seed.
4. :func:`plot` draws the paper's figure from the :class:`CombinationResult`.

Measuring: all values stored in the results are measured with a separate forward pass (no gradients,
no augmentation) on the *final* rendered images, at the size the model saw during the render. Lucent's
``render_vis`` bilinearly upsamples images smaller than 224 px to 224 (or to ``fixed_image_size`` when
given) before the model; :func:`sweep` and :func:`axis_scales` measure the final images after the same
upsampling (``render_size``), so ``"center"`` and ``(y, x)`` positions mean the same neurons in the
render and in the measurement. Dataset activations (the grey cloud) should be measured on images of
that same size (e.g. ``sample_crops(size=result.render_size)``).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .storage import load_npz, save_npz
from .attribution import Feature, as_feature, capture, check_images, model_device
from .models import layers as _model_layers
from .models import preprocess_fn, unknown_layer_message
from .objectives import cosdot_value, feature_pair, pair_targets
from .objectives import feature as feature_objective

log = logging.getLogger(__name__)

Position = Union[str, Tuple[int, int]]

QUADRANTS = ("++", "-+", "--", "+-")  # quadrant q holds angles in (q pi/2, (q+1) pi/2): signs of (y_a, y_b)


# ------------------------------------------------------------------------------------------------
# helpers: save/load, measuring like the render loop
# ------------------------------------------------------------------------------------------------
def _images_to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def _uint8_to_images(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arr.astype(np.float32) / 255.0)


def render_size(image_size: int, fixed_image_size: Optional[int] = None) -> int:
    """The side of the images the model sees inside ``render_vis`` for a square ``image_size`` render:
    ``fixed_image_size`` if given, else 224 when ``image_size < 224`` (Lucent upsamples), else ``image_size``."""
    if fixed_image_size is not None:
        return int(fixed_image_size)
    return 224 if image_size < 224 else int(image_size)


def _to_render_size(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    # the same resampling render_vis applies (bilinear, align_corners=True); it commutes with the
    # per-channel affine normalisation, so resizing before or after normalising gives the same input
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=True)


def measure_pair(
    model: nn.Module,
    images: torch.Tensor,
    feature_a: Feature,
    feature_b: Feature,
    size: Optional[int] = None,
    batch_size: int = 64,
    preprocess: bool = True,
) -> torch.Tensor:
    """Both features' values (B, 2) on images (B, 3, H, W) in [0, 1], one forward pass per batch.

    ``size``: resize the images (bilinear, as ``render_vis``) to ``size`` x ``size`` before the model;
    ``None`` keeps them as they are. Raw (unscaled) feature units.
    """
    fa, fb = as_feature(feature_a), as_feature(feature_b)
    images = check_images(images, preprocess)
    device = model_device(model)
    norm = preprocess_fn(model)
    out = []
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size].to(device)
            if size is not None:
                x = _to_render_size(x, size)
            if preprocess:
                x = norm(x)
            acts = capture(model, x, [fa.layer, fb.layer])
            out.append(torch.stack([fa(acts[fa.layer]), fb(acts[fb.layer])], dim=1).cpu())
    return torch.cat(out)


def _as_image_batch(dataset) -> Sequence:
    if torch.is_tensor(dataset):
        if dataset.dim() == 3:
            dataset = dataset[None]
        return dataset
    if not isinstance(dataset, Sequence) or len(dataset) == 0:
        raise ValueError(
            "dataset must be a non-empty (N, 3, H, W) tensor or a sequence of (3, H, W) images, "
            f"got {type(dataset).__name__}"
        )
    return dataset


def _batches(dataset, batch_size: int):
    n = len(dataset)
    for start in range(0, n, batch_size):
        if torch.is_tensor(dataset):
            yield dataset[start : start + batch_size]
        else:
            yield torch.stack([dataset[i] for i in range(start, min(n, start + batch_size))])


def pair_cloud(model: nn.Module, dataset, feature_a: Feature, feature_b: Feature, batch_size: int = 32,
               progress: bool = False) -> torch.Tensor:
    """Dataset activations of a pair for the grey cloud of :func:`plot`: (N, 2), raw units.

    ``dataset``: (N, 3, H, W) tensor or sequence of (3, H, W) images in [0, 1], at the size the render
    used (``CombinationResult.render_size``) so positions mean the same neurons.
    """
    dataset = _as_image_batch(dataset)
    parts = [measure_pair(model, b, feature_a, feature_b, batch_size=batch_size)
             for b in tqdm(_batches(dataset, batch_size), disable=not progress, desc="pair cloud")]
    return torch.cat(parts)


# ------------------------------------------------------------------------------------------------
# 1. pair statistics
# ------------------------------------------------------------------------------------------------
@dataclass
class PairStatistics:
    """Activations of every unit of one layer over a dataset, at one position, and their correlations.

    Attributes:
        layer: Lucent layer name.
        position: ``"center"``, ``"mean"`` or ``(y, x)`` (read as in :class:`Feature`).
        activations: (N, C) unit values for the N images.
        correlation: (C, C) Pearson correlations; NaN for units that are constant over the dataset.
        dataset: description of the dataset (e.g. ``sample_crops(n=256, size=224, seed=0, ...)``).
        image_size: side of the dataset images the model saw.
    """

    layer: str
    position: Position
    activations: torch.Tensor
    correlation: torch.Tensor
    dataset: str = ""
    image_size: int = 0

    @property
    def n_units(self) -> int:
        return self.activations.shape[1]

    def feature(self, unit: int) -> Feature:
        """The :class:`Feature` of ``unit`` at this layer and position."""
        if not 0 <= int(unit) < self.n_units:
            raise ValueError(f"unit {unit} out of range for layer {self.layer!r} with {self.n_units} units")
        return Feature(self.layer, unit=int(unit), position=self.position)

    def values(self, unit_a: int, unit_b: int) -> torch.Tensor:
        """Dataset activations (N, 2) of two units: the grey cloud of :func:`plot`."""
        for u in (unit_a, unit_b):
            if not 0 <= int(u) < self.n_units:
                raise ValueError(f"unit {u} out of range for layer {self.layer!r} with {self.n_units} units")
        return self.activations[:, [int(unit_a), int(unit_b)]]

    def _ranked(self, key: torch.Tensor, k: int, descending: bool) -> List[Tuple[int, int, float]]:
        c = self.n_units
        iu = torch.triu_indices(c, c, offset=1)
        r = self.correlation[iu[0], iu[1]]
        kv = key[iu[0], iu[1]]
        ok = torch.isfinite(r)
        if not bool(ok.any()):
            raise ValueError(f"layer {self.layer!r} has no pair of non-constant units over the dataset")
        kv = torch.where(ok, kv, torch.tensor(-math.inf if descending else math.inf))
        order = torch.argsort(kv, descending=descending)[: max(1, int(k))]
        return [(int(iu[0, o]), int(iu[1, o]), float(r[o])) for o in order if bool(ok[o])]

    def most_correlated(self, k: int = 1) -> List[Tuple[int, int, float]]:
        """The ``k`` pairs ``(unit_a, unit_b, r)`` with the highest correlation, best first."""
        return self._ranked(self.correlation, k, descending=True)

    def most_anticorrelated(self, k: int = 1) -> List[Tuple[int, int, float]]:
        """The ``k`` pairs ``(unit_a, unit_b, r)`` with the lowest (most negative) correlation."""
        return self._ranked(self.correlation, k, descending=False)

    def least_correlated(self, k: int = 1) -> List[Tuple[int, int, float]]:
        """The ``k`` pairs ``(unit_a, unit_b, r)`` with the correlation closest to zero."""
        return self._ranked(self.correlation.abs(), k, descending=False)

    def pick(self, which: str) -> Tuple[int, int, float]:
        """One pair by name: ``"correlated"``, ``"anticorrelated"`` or ``"zero"``."""
        table = {"correlated": self.most_correlated, "anticorrelated": self.most_anticorrelated,
                 "zero": self.least_correlated}
        if which not in table:
            raise ValueError(f"unknown pair choice {which!r}; expected one of {sorted(table)}")
        return table[which](1)[0]

    def save(self, path: str) -> None:
        meta = {"layer": self.layer, "position": self.position if isinstance(self.position, str) else list(self.position),
                "dataset": self.dataset, "image_size": self.image_size, "kind": "PairStatistics"}
        save_npz(path, {"activations": self.activations.numpy(), "correlation": self.correlation.numpy()}, meta)

    @classmethod
    def load(cls, path: str) -> "PairStatistics":
        z, meta = load_npz(path, "PairStatistics")
        pos = meta["position"]
        return cls(meta["layer"], pos if isinstance(pos, str) else tuple(pos), torch.from_numpy(z["activations"]),
                   torch.from_numpy(z["correlation"]), meta["dataset"], meta["image_size"])


def correlation_matrix(activations: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlations (C, C) of the columns of ``activations`` (N, C); NaN rows/columns for
    columns whose standard deviation is below ``eps`` times the largest one (constant units)."""
    a = torch.as_tensor(activations, dtype=torch.float64)
    if a.dim() != 2 or a.shape[0] < 2:
        raise ValueError(f"activations must be (N, C) with N >= 2, got shape {tuple(a.shape)}")
    a = a - a.mean(0)
    sd = a.pow(2).mean(0).sqrt()
    dead = sd <= eps * max(float(sd.max()), 1e-30)
    z = a / torch.where(dead, torch.ones_like(sd), sd)
    r = (z.T @ z) / a.shape[0]
    r = r.clamp(-1, 1)
    r[dead, :] = float("nan")
    r[:, dead] = float("nan")
    return r.float()


def pair_statistics(
    model: nn.Module,
    dataset,
    layer: str,
    position: Position = "center",
    batch_size: int = 32,
    progress: bool = True,
) -> PairStatistics:
    """Measure every unit of ``layer`` at ``position`` over ``dataset`` and correlate them.

    Args:
        model: a prepared model.
        dataset: (N, 3, H, W) tensor or sequence of (3, H, W) images in [0, 1] (N >= 2); fed at their own
            size, so use the size the renders will be measured at (e.g. 224).
        layer: Lucent layer name with (B, C, H, W) or (B, C) activations.
        position: ``"center"``, ``"mean"`` or ``(y, x)`` as in :class:`Feature`.
        batch_size: images per forward pass.

    Returns:
        :class:`PairStatistics` with activations (N, C) and correlation (C, C).
    """
    names = _model_layers(model)
    if layer not in names:
        raise ValueError(unknown_layer_message(layer, names))
    dataset = _as_image_batch(dataset)
    if len(dataset) < 2:
        raise ValueError(f"pair statistics need at least 2 images, got {len(dataset)}")
    probe = Feature(layer, unit=0, position=position)
    norm = preprocess_fn(model)
    device = model_device(model)
    rows = []
    size = 0
    with torch.no_grad():
        for batch in tqdm(_batches(dataset, batch_size), total=math.ceil(len(dataset) / batch_size),
                          disable=not progress, desc=f"pair statistics {layer}"):
            batch = check_images(batch)
            size = batch.shape[-1]
            act = capture(model, norm(batch.to(device)), [layer], stop_at=layer)[layer]
            probe.check(act)
            yx = probe.spatial_index(act)
            if act.dim() == 4:
                act = act.mean(dim=(2, 3)) if yx is None else act[:, :, yx[0], yx[1]]
            rows.append(act.float().cpu())
    acts = torch.cat(rows)
    desc = getattr(dataset, "identity", None) or f"{type(dataset).__name__} of {len(dataset)} images"
    return PairStatistics(layer, position, acts, correlation_matrix(acts), str(desc), int(size))


# ------------------------------------------------------------------------------------------------
# rendering helpers
# ------------------------------------------------------------------------------------------------
def _seeded_image_param(image_size: int, seeds: Sequence[int], sd: float = 0.01):
    """Lucent's ``param.image`` (FFT, decorrelated colour) for ``len(seeds)`` images whose initial noise is
    drawn per element from ``torch.Generator().manual_seed(seed)``: the same (seed) gives the same start
    whatever the batch it is rendered in."""
    from lucent.optvis import param

    params, image_f = param.image(image_size, batch=len(seeds))
    spectrum = params[0]
    with torch.no_grad():
        for i, s in enumerate(seeds):
            g = torch.Generator().manual_seed(int(s))
            spectrum[i].copy_((torch.randn(spectrum.shape[1:], generator=g) * sd).to(spectrum.device))
    return params, image_f


def _render(model, objective, image_size, seeds, steps, lr, transforms, fixed_image_size):
    from lucent.optvis import render

    params, image_f = _seeded_image_param(image_size, seeds)
    render.render_vis(
        model,
        objective,
        param_f=lambda: (params, image_f),
        optimizer=lambda p: torch.optim.Adam(p, lr=lr),
        transforms=transforms,
        thresholds=(int(steps),),
        show_image=False,
        progress=False,
        fixed_image_size=fixed_image_size,
    )
    with torch.no_grad():
        return image_f().detach().cpu()


def _check_pair(model, fa: Feature, fb: Feature, size: int) -> None:
    """Validate the pair before any render: distinct, known layers, positions that exist at ``size``."""
    if fa == fb:
        raise ValueError(f"feature_a and feature_b are the same feature ({fa.name}); a combination needs two")
    names = _model_layers(model)
    for f in (fa, fb):
        if f.layer not in names:
            raise ValueError(unknown_layer_message(f.layer, names))
    device = model_device(model)
    x = preprocess_fn(model)(torch.full((1, 3, size, size), 0.5, device=device))
    with torch.no_grad():
        acts = capture(model, x, [fa.layer, fb.layer])
    for label, f, other in (("feature_a", fa, fb), ("feature_b", fb, fa)):
        try:
            f.check(acts[f.layer])
        except ValueError as exc:
            shape_f, shape_o = tuple(acts[f.layer].shape[2:]), tuple(acts[other.layer].shape[2:])
            raise ValueError(
                f"{label} ({f.name}) cannot be read at a {size}x{size} model input: {exc}. "
                f"Its layer's map is {shape_f}, the other feature's ({other.layer}) is {shape_o}; "
                "give each feature a position that exists in its own layer (or 'center' / 'mean')"
            ) from None


def _check_scale(scale) -> Tuple[float, float]:
    try:
        s = tuple(float(v) for v in scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be two positive numbers (s_a, s_b), got {scale!r}") from None
    if len(s) != 2 or any(not math.isfinite(v) or v <= 0 for v in s):
        raise ValueError(
            f"scale must be two positive finite numbers (s_a, s_b), the features' unconstrained maxima; got {s}. "
            "A zero or negative scale means the feature visualization could not make that feature positive"
        )
    return s


def _check_common(steps, image_size, chunk=1, n_seeds=1):
    for name, v, lo in (("steps", steps, 1), ("image_size", image_size, 8), ("chunk", chunk, 1), ("n_seeds", n_seeds, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")


# ------------------------------------------------------------------------------------------------
# 2. axis scales
# ------------------------------------------------------------------------------------------------
@dataclass
class AxisScales:
    """Each feature's unconstrained maximum from its own feature visualization.

    Attributes:
        scale: (2,) ``(s_a, s_b)``: the best value over seeds, raw feature units.
        values: (2, S) each feature's value on its own visualization for each seed.
        images: (2, 3, H, W) the best visualization of each feature, in [0, 1].
    """

    scale: Tuple[float, float]
    values: torch.Tensor
    images: torch.Tensor


def axis_scales(
    model: nn.Module,
    feature_a: Feature,
    feature_b: Feature,
    steps: int = 256,
    image_size: int = 128,
    n_seeds: int = 1,
    seed: int = 0,
    lr: float = 0.05,
    transforms=None,
    fixed_image_size: Optional[int] = None,
) -> AxisScales:
    """Render each feature alone (all in one batch) and measure its maximum: the axes' scales.

    The batch holds ``n_seeds`` visualizations of ``feature_a`` then ``n_seeds`` of ``feature_b`` (Lucent's
    ``feature`` objective per batch element, FFT-decorrelated ``param.image``). Each is measured on its
    final image at the render's model-input size (see the module notes). Raises ``ValueError`` when a
    feature's maximum is not positive (a zero scale).
    """
    fa, fb = as_feature(feature_a), as_feature(feature_b)
    _check_common(steps, image_size, n_seeds=n_seeds)
    size = render_size(image_size, fixed_image_size)
    _check_pair(model, fa, fb, size)
    seeds = [seed + s for s in range(n_seeds)] * 2
    objective = sum(feature_objective(fa, batch=i) for i in range(n_seeds))
    objective = objective + sum(feature_objective(fb, batch=n_seeds + i) for i in range(n_seeds))
    images = _render(model, objective, image_size, seeds, steps, lr, transforms, fixed_image_size)
    y = measure_pair(model, images, fa, fb, size=size)
    values = torch.stack([y[:n_seeds, 0], y[n_seeds:, 1]])  # (2, S)
    best = values.argmax(1)
    scale = (float(values[0, best[0]]), float(values[1, best[1]]))
    for f, s in zip((fa, fb), scale):
        if not s > 0:
            raise ValueError(
                f"the feature visualization of {f.name} reached at most {s:.4g}, so its axis scale would be "
                "zero or negative; pick a feature that can be excited (or more steps)"
            )
    imgs = torch.stack([images[int(best[0])], images[n_seeds + int(best[1])]])
    return AxisScales(scale, values, imgs)


# ------------------------------------------------------------------------------------------------
# 3. the sweep
# ------------------------------------------------------------------------------------------------
@dataclass
class CombinationResult:
    """A feature-combination sweep (paper 004).

    Attributes:
        feature_a, feature_b: the pair.
        theta: (K,) target angles in radians, ``2 pi k / K``; target ``h = [cos theta, sin theta]``.
        values: (K, S, 2) raw ``(f_a, f_b)`` measured on the final image of each angle and seed.
        scale: ``(s_a, s_b)`` the axis scales (raw units).
        score: (K, S) ``C(values / scale, theta; power)``.
        images: (K, 3, H, W) the image of the best seed (largest C) for each angle, in [0, 1]
            (stored as 8-bit by :meth:`save`).
        power: the cosine exponent ``p``.
        scale_images: (2, 3, H, W) the features' own visualizations (the axis tips), or None.
        info: steps, image_size, render_size, lr, seed, chunk, model name.
    """

    feature_a: Feature
    feature_b: Feature
    theta: torch.Tensor
    values: torch.Tensor
    scale: Tuple[float, float]
    score: torch.Tensor
    images: torch.Tensor
    power: float = 4.0
    scale_images: Optional[torch.Tensor] = None
    info: Dict = field(default_factory=dict)

    @property
    def n_angles(self) -> int:
        return self.theta.shape[0]

    @property
    def n_seeds(self) -> int:
        return self.values.shape[1]

    @property
    def render_size(self) -> int:
        return int(self.info.get("render_size", 0))

    @property
    def scaled(self) -> torch.Tensor:
        """(K, S, 2) values in axis units (``f / s``)."""
        return self.values / torch.tensor(self.scale, dtype=self.values.dtype)

    @property
    def best_seed(self) -> torch.Tensor:
        """(K,) the seed with the largest C at each angle."""
        return self.score.argmax(1)

    @property
    def best(self) -> torch.Tensor:
        """(K, 2) the scaled point of the best seed at each angle."""
        return self.scaled[torch.arange(self.n_angles), self.best_seed]

    @property
    def mean_score(self) -> torch.Tensor:
        """(K,) mean C over seeds: the red loop's radius."""
        return self.score.mean(1)

    def quadrant_scores(self) -> Dict[str, float]:
        """Mean of :attr:`mean_score` over the angles strictly inside each quadrant, keyed by the signs of
        ``(y_a, y_b)`` there: ``"++"`` (both positive), ``"-+"``, ``"--"``, ``"+-"``."""
        th = self.theta.double() % (2 * math.pi)
        out = {}
        for q, name in enumerate(QUADRANTS):
            lo, hi = q * math.pi / 2, (q + 1) * math.pi / 2
            inside = (th > lo + 1e-6) & (th < hi - 1e-6)
            out[name] = float(self.mean_score[inside].mean()) if bool(inside.any()) else float("nan")
        return out

    def save(self, path: str) -> None:
        meta = {
            "kind": "CombinationResult",
            "feature_a": self.feature_a.to_dict(),
            "feature_b": self.feature_b.to_dict(),
            "scale": list(self.scale),
            "power": self.power,
            "info": self.info,
        }
        arrays = dict(theta=self.theta.numpy(), values=self.values.numpy(), score=self.score.numpy(),
                      images=_images_to_uint8(self.images))
        if self.scale_images is not None:
            arrays["scale_images"] = _images_to_uint8(self.scale_images)
        save_npz(path, arrays, meta)

    @classmethod
    def load(cls, path: str) -> "CombinationResult":
        """Load a saved result (images come back from 8-bit, within 1/510 of the originals)."""
        z, meta = load_npz(path, "CombinationResult")
        if meta.get("kind") != "CombinationResult":
            raise ValueError(f"{path} does not hold a CombinationResult (kind {meta.get('kind')!r})")
        return cls(
            Feature.from_dict(meta["feature_a"]),
            Feature.from_dict(meta["feature_b"]),
            torch.from_numpy(z["theta"]),
            torch.from_numpy(z["values"]),
            tuple(meta["scale"]),
            torch.from_numpy(z["score"]),
            _uint8_to_images(z["images"]),
            meta["power"],
            _uint8_to_images(z["scale_images"]) if "scale_images" in z else None,
            meta["info"],
        )


def sweep(
    model: nn.Module,
    feature_a: Feature,
    feature_b: Feature,
    n_angles: int = 60,
    n_seeds: int = 5,
    power: float = 4.0,
    steps: int = 256,
    image_size: int = 128,
    chunk: int = 60,
    scale: Optional[Tuple[float, float]] = None,
    scale_steps: Optional[int] = None,
    scale_seeds: int = 1,
    seed: int = 0,
    lr: float = 0.05,
    transforms=None,
    fixed_image_size: Optional[int] = None,
    progress: bool = True,
) -> CombinationResult:
    """Maximise the pair's cosdot toward ``n_angles`` angles from ``n_seeds`` noise seeds each.

    Args:
        model: a prepared model (eval mode).
        feature_a, feature_b: two different :class:`Feature` s (x and y axes).
        n_angles: number of target angles ``theta_k = 2 pi k / n_angles`` (at least 4; the paper: 60).
        n_seeds: noise seeds per angle (the paper: 5). Seed ``s`` starts every angle from the same noise.
        power: the cosine exponent ``p`` (the paper: 4).
        steps: optimisation steps of every render (Adam, ``lr``).
        image_size: side of the rendered images (Lucent's FFT, decorrelated ``param.image``).
        chunk: at most this many (angle, seed) images per ``render_vis`` batch (memory bound).
        scale: ``(s_a, s_b)`` axis scales; ``None`` computes them with :func:`axis_scales` (``scale_steps``,
            default ``steps``; ``scale_seeds`` seeds).
        seed: base noise seed (seed ``s`` of the sweep uses ``seed + s``).
        transforms: Lucent transforms (``None``: Lucent's standard ones).
        fixed_image_size: passed to ``render_vis``; the model-input size is then this instead of Lucent's
            224-px upsampling of smaller images.
        progress: tqdm bar over chunks.

    Returns:
        :class:`CombinationResult`: values (K, S, 2) and C (K, S) measured on the final images, the best
        image per angle.
    """
    fa, fb = as_feature(feature_a), as_feature(feature_b)
    if isinstance(n_angles, bool) or not isinstance(n_angles, (int, np.integer)) or n_angles < 4:
        raise ValueError(f"n_angles must be an integer >= 4 (at least one angle per quadrant), got {n_angles!r}")
    _check_common(steps, image_size, chunk, n_seeds)
    if not (isinstance(power, (int, float)) and math.isfinite(power) and power >= 0):
        raise ValueError(f"power must be a non-negative number, got {power!r}")
    if scale is not None:
        scale = _check_scale(scale)
    size = render_size(image_size, fixed_image_size)
    _check_pair(model, fa, fb, size)

    scale_images = None
    if scale is None:
        scales = axis_scales(model, fa, fb, steps=scale_steps or steps, image_size=image_size, n_seeds=scale_seeds,
                             seed=seed, lr=lr, transforms=transforms, fixed_image_size=fixed_image_size)
        scale, scale_images = scales.scale, scales.images
        log.info("axis scales: %s = %.4g, %s = %.4g", fa.name, scale[0], fb.name, scale[1])

    K, S = int(n_angles), int(n_seeds)
    theta = torch.arange(K, dtype=torch.float64) * (2 * math.pi / K)
    # element e of the flattened sweep: angle e // S, seed e % S
    el_theta = theta.repeat_interleave(S)
    el_seed = torch.arange(S).repeat(K) + seed
    n = K * S
    values = torch.zeros(n, 2)
    images = None
    bar = tqdm(total=n, disable=not progress, desc=f"combinations {fa.name} x {fb.name}", unit="img")
    for start in range(0, n, chunk):
        idx = slice(start, min(n, start + chunk))
        objective = feature_pair(fa, fb, theta=el_theta[idx].float().numpy(), power=power, scale=scale)
        imgs = _render(model, objective, image_size, el_seed[idx].tolist(), steps, lr, transforms, fixed_image_size)
        values[idx] = measure_pair(model, imgs, fa, fb, size=size)
        if images is None:
            images = torch.zeros(n, *imgs.shape[1:])
        images[idx] = imgs
        bar.update(imgs.shape[0])
    bar.close()

    values = values.view(K, S, 2)
    scaled = values / torch.tensor(scale)
    score = cosdot_value(scaled, pair_targets(theta.numpy())[:, None, :], power)
    best = score.argmax(1)
    best_images = images.view(K, S, *images.shape[1:])[torch.arange(K), best]
    info = {"steps": int(steps), "image_size": int(image_size), "render_size": size, "lr": lr, "seed": int(seed),
            "chunk": int(chunk), "model": model._get_name(),
            "transforms": "lucent standard" if transforms is None else f"{len(transforms)} custom"}
    return CombinationResult(fa, fb, theta.float(), values, tuple(scale), score, best_images, float(power),
                             scale_images, info)


# ------------------------------------------------------------------------------------------------
# 4. the figure
# ------------------------------------------------------------------------------------------------
def plot(
    result: CombinationResult,
    cloud=None,
    path: Optional[str] = None,
    image_every: int = 2,
    image_zoom: Optional[float] = None,
    title: Optional[str] = None,
    figsize: Tuple[float, float] = (9, 9),
):
    """The feature-combination figure of paper 004.

    Axes in scaled units (the tip of each axis, at 1, is the feature's own unconstrained maximum); the best
    point ``y*_theta`` over seeds for each angle (coloured by angle); the best image of every
    ``image_every``-th angle, placed just beyond its point on the ray from the origin; the dataset's
    activations as a grey cloud (``cloud``: (N, 2) raw values, e.g. :meth:`PairStatistics.values` or
    :func:`pair_cloud`, scaled here by ``result.scale``); and the red closed loop at polar coordinates
    ``(mean C over seeds, theta)`` centred at the origin (negative means drawn at radius 0).

    Returns the matplotlib Figure; writes a PNG when ``path`` is given.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    if not isinstance(result, CombinationResult):
        raise TypeError(f"plot expects a CombinationResult, got {type(result).__name__}")
    if image_every < 1:
        raise ValueError(f"image_every must be >= 1, got {image_every}")
    best = result.best.numpy()
    theta = result.theta.numpy().astype(np.float64)
    radius = np.clip(result.mean_score.numpy(), 0, None)
    loop = np.stack([radius * np.cos(theta), radius * np.sin(theta)], 1)
    extent = [1.0, float(np.abs(best).max()), float(np.abs(loop).max())]

    fig, ax = plt.subplots(figsize=figsize)
    if cloud is not None:
        c = np.asarray(torch.as_tensor(cloud, dtype=torch.float32))
        if c.ndim != 2 or c.shape[1] != 2:
            raise ValueError(f"cloud must be (N, 2) raw feature values, got shape {c.shape}")
        c = c / np.asarray(result.scale, dtype=np.float32)
        ax.scatter(c[:, 0], c[:, 1], s=6, c="0.6", alpha=0.5, lw=0, label=f"dataset ({len(c)})", zorder=1)
        extent.append(float(np.percentile(np.abs(c), 99.5)))
    lim = 1.35 * max(extent)

    ax.axhline(0, color="k", lw=0.8, zorder=2)
    ax.axvline(0, color="k", lw=0.8, zorder=2)
    ax.plot([1, 0], [0, 1], "o", color="k", ms=5, ls="none", zorder=3)
    ax.annotate("", xy=(1, 0), xytext=(0, 0), arrowprops=dict(arrowstyle="->", lw=1.6), zorder=3)
    ax.annotate("", xy=(0, 1), xytext=(0, 0), arrowprops=dict(arrowstyle="->", lw=1.6), zorder=3)
    ax.set_xlabel(f"{result.feature_a.name}  / {result.scale[0]:.3g}")
    ax.set_ylabel(f"{result.feature_b.name}  / {result.scale[1]:.3g}")

    closed = np.concatenate([loop, loop[:1]])
    ax.plot(closed[:, 0], closed[:, 1], "-", color="red", lw=2, zorder=4, label="mean C over seeds")
    ax.scatter(best[:, 0], best[:, 1], c=theta, cmap="hsv", vmin=0, vmax=2 * np.pi, s=28, edgecolor="k", lw=0.4,
               zorder=5, label="best y* per angle")

    n_img = len(range(0, result.n_angles, image_every))
    zoom = image_zoom
    if zoom is None:
        side_px = result.images.shape[-1]
        target_px = fig.dpi * figsize[0] * min(0.075, 1.1 / max(n_img, 1))  # ~ a ring of images without overlap
        zoom = target_px / side_px
    for k in range(0, result.n_angles, image_every):
        p = best[k]
        r = float(np.hypot(*p))
        u = p / r if r > 0.05 * lim else np.array([math.cos(theta[k]), math.sin(theta[k])])
        pos = p + u * 0.16 * lim
        img = result.images[k].permute(1, 2, 0).clamp(0, 1).numpy()
        ab = AnnotationBbox(OffsetImage(img, zoom=zoom), pos, frameon=True, pad=0.1,
                            bboxprops=dict(edgecolor=plt.cm.hsv(theta[k] / (2 * np.pi)), lw=1.2), zorder=6)
        ax.add_artist(ab)
        lim = max(lim, float(np.abs(pos).max()) * 1.12)

    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.legend(loc="lower left", fontsize=8, framealpha=0.8)
    q = result.quadrant_scores()
    ax.set_title(title or (f"{result.n_angles} angles x {result.n_seeds} seeds, p={result.power:g}; mean C by "
                           f"quadrant ++ {q['++']:.2f}  -+ {q['-+']:.2f}  -- {q['--']:.2f}  +- {q['+-']:.2f}"),
                 fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=fig.dpi)
    return fig
