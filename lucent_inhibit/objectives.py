"""Objectives for Lucent's render loop (``lucent.optvis.render.render_vis``).

Every factory here returns a Lucent :class:`~lucent.optvis.objectives.Objective`: it composes with
Lucent's own objectives through ``+``, ``-`` and ``*``, takes ``batch=`` like Lucent's, and returns a
*loss* (the negative of the quantity it maximises), as Lucent's objectives do. Inside the render loop
the objective receives Lucent's hook ``T``: ``T(layer)`` is that layer's activation for the batch.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import numpy as np
import torch
from lucent.optvis.objectives import handle_batch, wrap_objective

from .attribution import Feature, as_feature


# ------------------------------------------------------------------------------------------------
# cosdot (paper 004)
# ------------------------------------------------------------------------------------------------
def cosdot_value(y: torch.Tensor, target: torch.Tensor, power: float = 4.0, eps: float = 1e-8) -> torch.Tensor:
    """``dot(y, t) * |cos(y, t)|^power`` along the last dimension.

    Equals the paper's ``(y.t)^(p+1) / (|y||t|)^p`` for even ``p`` and keeps its sign (the sign of the dot
    product) for any ``p``, so odd and fractional powers behave and no region has zero gradient.
    ``y``: (..., D); ``target``: (D,) or broadcastable to ``y``. Returns shape ``y.shape[:-1]``.
    """
    if power < 0:
        raise ValueError(f"power must be non-negative, got {power}")
    dot = (y * target).sum(-1)
    norms = y.norm(dim=-1) * target.norm(dim=-1)
    cos = dot / (norms + eps)
    return dot * cos.abs().pow(power)


def _as_target(target, name="target") -> torch.Tensor:
    t = torch.as_tensor(np.asarray(target.detach().cpu() if torch.is_tensor(target) else target, dtype=np.float32))
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def crop_box(target: torch.Tensor, threshold: float = 0.01) -> Tuple[int, int, int, int]:
    """Bounding box ``(y0, y1, x0, x1)`` of the positions where ``|target|`` (summed over channels)
    exceeds ``threshold`` times its maximum. ``target``: (C, H, W). The whole map when all-zero."""
    if target.dim() != 3:
        raise ValueError(f"crop_box expects a (C, H, W) map, got shape {tuple(target.shape)}")
    mag = target.abs().sum(0)
    m = float(mag.max())
    if m <= 0:
        return 0, target.shape[1], 0, target.shape[2]
    ys, xs = torch.nonzero(mag > threshold * m, as_tuple=True)
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def layer_mask(mask, shape: Tuple[int, int], device=None, dtype=None) -> torch.Tensor:
    """Resize a spatial mask (H, W) with values in [0, 1] to a layer's (h, w) grid: (h, w) tensor.

    Objectives that take ``mask=`` multiply the layer's map (and their target) by it, so only the masked
    positions count and receive gradient. Build masks with :func:`attribution_mask`; they assume the
    render's transforms keep the geometry (jitter of a few pixels is fine, box crops are not).
    """
    m = _as_target(mask, "mask")
    if m.dim() != 2:
        raise ValueError(f"mask must be a spatial map (H, W), got shape {tuple(m.shape)}")
    if float(m.min()) < 0 or float(m.max()) > 1 or float(m.max()) == 0:
        raise ValueError(f"mask values must lie in [0, 1] and not all be zero, got range [{float(m.min()):.3g}, {float(m.max()):.3g}]")
    if tuple(m.shape) != tuple(shape):
        m = torch.nn.functional.interpolate(m[None, None], size=tuple(shape), mode="bilinear", align_corners=False)[0, 0]
    return m.to(device=device, dtype=dtype)


@wrap_objective()
def cosdot(layer: str, direction, power: float = 4.0, position: Union[str, Tuple[int, int]] = "mean", batch=None):
    """Cosdot toward a direction over a layer's channels.

    Args:
        layer: Lucent layer name; activations (B, C, H, W) or (B, C).
        direction: (C,) vector.
        power: the cosine's exponent ``p`` (0 gives the plain dot product).
        position: ``"mean"`` (average the per-position cosdot over space), ``"center"`` or ``(y, x)``.
        batch: Lucent batch index, or None for all.

    Loss: minus the mean over the batch (and positions) of ``dot(h, v) * |cos(h, v)|^p``.
    """
    v = _as_target(direction, "direction").flatten()

    @handle_batch(batch)
    def inner(T):
        h = T(layer)
        if h.shape[1] != v.numel():
            raise ValueError(f"direction has length {v.numel()}, but layer {layer!r} has {h.shape[1]} channels")
        if h.dim() == 4:
            if position == "mean":
                y = h.permute(0, 2, 3, 1)
            else:
                yx = (h.shape[2] // 2, h.shape[3] // 2) if position == "center" else position
                y = h[:, :, yx[0], yx[1]]
        else:
            y = h
        return -cosdot_value(y, v.to(h.device, h.dtype), power).mean()

    return inner


@wrap_objective()
def spatial_cosdot(layer: str, target, power: float = 2.0, crop: Optional[float] = 0.01, mask=None, batch=None):
    """Cosdot between a layer's whole activation map and a target map (the +/- inversion objective).

    Args:
        layer: Lucent layer name with activations (B, C, H, W).
        target: (C, H, W) map shared by the batch, or (B, C, H, W) with one target per batch element.
        power: the cosine's exponent.
        crop: crop both maps to the bounding box where ``|target|`` exceeds ``crop`` times its maximum
            (per target); ``None`` uses the whole map.
        mask: optional spatial mask (H, W) in [0, 1] (e.g. :func:`attribution_mask`), resized to the layer's
            grid; both maps are multiplied by it, so only masked positions count.
        batch: Lucent batch index, or None for all.

    Loss: minus the batch mean of ``dot(h, T) * |cos(h, T)|^p`` over the flattened (cropped) maps.
    """
    t = _as_target(target)
    if t.dim() == 3:
        t = t[None]
    if t.dim() != 4:
        raise ValueError(f"target must be (C, H, W) or (B, C, H, W), got shape {tuple(t.shape)}")
    if mask is not None:
        m = layer_mask(mask, t.shape[2:])
        t = t * m
    boxes = [crop_box(ti, crop) if crop is not None else (0, ti.shape[1], 0, ti.shape[2]) for ti in t]

    @handle_batch(batch)
    def inner(T):
        h = T(layer)
        if h.dim() != 4 or h.shape[1:] != t.shape[1:]:
            raise ValueError(
                f"target map has shape {tuple(t.shape[1:])} but layer {layer!r} gives {tuple(h.shape[1:])}; "
                "compute the target at the same layer and image size as the render"
            )
        n_t = 1 if isinstance(batch, int) else t.shape[0]
        if n_t not in (1, h.shape[0]):
            raise ValueError(f"{t.shape[0]} target maps for a batch of {h.shape[0]} images")
        values = []
        for i in range(h.shape[0]):
            k = (batch if isinstance(batch, int) else i) if t.shape[0] > 1 else 0
            y0, y1, x0, x1 = boxes[k]
            hi = h[i, :, y0:y1, x0:x1]
            if mask is not None:
                hi = hi * m[y0:y1, x0:x1].to(h.device, h.dtype)
            hi = hi.flatten()
            ti = t[k, :, y0:y1, x0:x1].flatten().to(h.device, h.dtype)
            values.append(cosdot_value(hi, ti, power))
        return -torch.stack(values).mean()

    return inner


@wrap_objective()
def feature(feature: Feature, batch=None):
    """Maximise a :class:`~lucent_inhibit.Feature` (unit or direction, at its position). Loss: minus its batch mean."""
    feat = as_feature(feature)

    @handle_batch(batch)
    def inner(T):
        return -feat(T(feat.layer)).mean()

    return inner


def pair_targets(theta) -> torch.Tensor:
    """Unit targets ``[cos theta, sin theta]`` for one or many angles (radians): (K, 2)."""
    th = torch.as_tensor(np.atleast_1d(np.asarray(theta, dtype=np.float32)))
    if th.dim() != 1 or not torch.isfinite(th).all():
        raise ValueError(f"theta must be a finite angle or a 1-D sequence of angles, got {theta!r}")
    return torch.stack([th.cos(), th.sin()], dim=1)


def pair_values(T, feature_a: Feature, feature_b: Feature, scale: Tuple[float, float]) -> torch.Tensor:
    """Scaled pair ``[f_a / s_a, f_b / s_b]`` for each batch element: (B, 2)."""
    ya = feature_a(T(feature_a.layer)) / float(scale[0])
    yb = feature_b(T(feature_b.layer)) / float(scale[1])
    return torch.stack([ya, yb], dim=1)


@wrap_objective()
def feature_pair(feature_a: Feature, feature_b: Feature, theta, power: float = 4.0, scale=None, batch=None):
    """The feature-combination objective of paper 004: cosdot of the scaled pair toward an angle.

    ``y = [f_a(x) / s_a, f_b(x) / s_b]`` is pushed toward ``h = [cos theta, sin theta]`` with
    ``C = dot(y, h) * |cos(y, h)|^power``.

    Args:
        feature_a, feature_b: the two :class:`Feature` s (may be on different layers).
        theta: one angle in radians for the whole batch, or a sequence with one angle per batch
            element (so a whole sweep renders as one batch).
        power: the cosine's exponent (the paper uses 4).
        scale: ``(s_a, s_b)``, each feature's unconstrained maximum (from its own visualization);
            required, positive.
        batch: Lucent batch index, or None for all.

    Loss: minus the batch mean of C.
    """
    fa, fb = as_feature(feature_a), as_feature(feature_b)
    if fa == fb:
        raise ValueError(f"feature_pair needs two different features, got {fa.name} twice")
    if scale is None:
        raise ValueError("feature_pair needs scale=(s_a, s_b), the features' unconstrained maxima; theta alone is ambiguous")
    scale = tuple(float(s) for s in scale)
    if len(scale) != 2 or any(not math.isfinite(s) or s <= 0 for s in scale):
        raise ValueError(f"scale must be two positive finite numbers (s_a, s_b), got {scale}")
    targets = pair_targets(theta)

    @handle_batch(batch)
    def inner(T):
        y = pair_values(T, fa, fb, scale)
        tg = targets[batch : batch + 1] if isinstance(batch, int) and targets.shape[0] > 1 else targets
        if tg.shape[0] not in (1, y.shape[0]):
            raise ValueError(f"{tg.shape[0]} angles for a batch of {y.shape[0]} images (expected 1 or {y.shape[0]})")
        return -cosdot_value(y, tg.to(y.device, y.dtype), power).mean()

    return inner


# ------------------------------------------------------------------------------------------------
# batch views: objectives evaluated on a slice of the render batch
# ------------------------------------------------------------------------------------------------
class BatchView:
    """A render hook restricted to the batch rows ``start:stop``.

    ``BatchView(T, start, stop)(layer)`` is ``T(layer)[start:stop]``. Objectives that must differentiate
    with respect to a whole hooked tensor (:func:`tense`) look through views with :func:`resolve_hook`,
    so any objective of this module (and any of Lucent's) can be evaluated on part of a batch, e.g. the
    rendered images of an accentuation batch that also holds their seeds, or one crop of several.
    """

    def __init__(self, T, start: int, stop: int):
        if start < 0 or stop <= start:
            raise ValueError(f"BatchView needs 0 <= start < stop, got {start}:{stop}")
        self.parent, self.start, self.stop = T, int(start), int(stop)

    def __call__(self, layer: str) -> torch.Tensor:
        t = self.parent(layer)
        if t.shape[0] < self.stop:
            raise ValueError(f"batch view {self.start}:{self.stop} of layer {layer!r} with only {t.shape[0]} rows")
        return t[self.start : self.stop]


def resolve_hook(T) -> Tuple[object, int, Optional[int]]:
    """Unwrap nested :class:`BatchView` s: ``(root_hook, start, stop)`` (``stop`` None = to the end)."""
    start, stop = 0, None
    while isinstance(T, BatchView):
        stop = T.stop if stop is None else min(T.start + stop, T.stop)
        start = T.start + start
        T = T.parent
    return T, start, stop


# ------------------------------------------------------------------------------------------------
# tense objective (SPEC 2.4)
# ------------------------------------------------------------------------------------------------
TENSE_MODES = ("fast", "exact")


@wrap_objective()
def tense(
    feature: Feature,
    layer: str,
    score="min",
    mode: str = "fast",
    granularity: str = "element",
    norm: str = "l1",
    mask=None,
    batch=None,
):
    """Maximise the tension of the rendered image: both excitation ``P`` and inhibition ``N`` large.

    Inside the render loop, for the images of the batch: ``f = feature(T(feature.layer))`` (B,),
    ``h = T(layer)`` (B, C, H, W) or (B, C), ``g = d sum(f) / d h`` (same shape as ``h``),
    ``S = g * h``, ``(P, N) = signed_totals(S, granularity, norm)`` (each (B,)) and the value is
    ``tension(P, N, score)`` (units of the feature for L1 sums).

    Args:
        feature: the :class:`Feature` (or ``(layer, unit)``).
        layer: attribution layer; it must feed ``feature.layer``.
        score: ``"min"`` (default), ``"geometric"``, ``"harmonic"``, ``"product"`` or a callable ``(P, N)``.
        mode: ``"exact"`` differentiates through ``g`` (double backprop; right for any network);
            ``"fast"`` treats ``g`` as a constant. Between ``layer`` and the feature, a network made of
            ReLU/ReLU6, max-pooling, convolutions, linear layers and eval-mode BatchNorm has ``g``
            piecewise constant in ``h``, so both modes give the same image gradient almost everywhere
            (tested); with smooth activations (SiLU, GELU, sigmoid, tanh) only ``exact`` is right.
        granularity, norm: as in :func:`lucent_inhibit.signed_totals`.
        mask: optional spatial mask (H, W) in [0, 1] (e.g. :func:`attribution_mask`): ``S`` is multiplied
            by it (resized to the layer's grid), so only tension inside the mask counts.
        batch: Lucent batch index, or None for all.

    Loss: minus the batch mean of the tension.
    """
    feat = as_feature(feature)
    if mode not in TENSE_MODES:
        raise ValueError(f"mode must be one of {TENSE_MODES}, got {mode!r}")
    from .attribution import TENSION_SCORES

    if not callable(score) and score not in TENSION_SCORES:
        raise ValueError(f"unknown tension score {score!r}; expected one of {TENSION_SCORES} or a callable")
    if granularity not in ("element", "channel") or norm not in ("l1", "l2"):
        raise ValueError(f"granularity must be 'element'/'channel' and norm 'l1'/'l2', got {granularity!r}, {norm!r}")

    if mask is not None:
        layer_mask(mask, (1, 1))  # validate now, resize inside the loop

    def inner(T):
        if mask is None:
            p, n = signed_parts(T, feat, layer, mode=mode, batch=batch, granularity=granularity, norm=norm)
        else:
            s = signed_attribution_scores(T, feat, layer, mode=mode, batch=batch)
            if s.dim() != 4:
                raise ValueError(f"mask given, but layer {layer!r} has no spatial dimensions (shape {tuple(s.shape)})")
            s = s * layer_mask(mask, s.shape[2:], s.device, s.dtype)
            p, n = signed_totals(s, granularity, norm)
        return -tension(p, n, score).mean()

    return inner


def signed_attribution_scores(T, feature: Feature, layer: str, mode: str = "fast", batch=None) -> torch.Tensor:
    """``S = grad_h f * h`` for the render batch inside an objective: shape of ``T(layer)`` rows.

    Differentiable with respect to the image: through ``h`` only (``mode="fast"``) or through ``h`` and
    the gradient (``mode="exact"``). ``T`` may be a :class:`BatchView`.
    """
    root, start, stop = resolve_hook(T)
    h = root(layer)
    act = root(feature.layer)
    if not torch.is_tensor(h) or not h.requires_grad:
        raise ValueError(
            f"layer {layer!r} has no gradient in this pass; tense needs the render loop's graph "
            "(run it inside render_vis, with gradients enabled)"
        )
    stop = act.shape[0] if stop is None else stop
    rows = list(range(start, stop))
    if isinstance(batch, int):
        if not 0 <= batch < len(rows):
            raise ValueError(f"batch={batch} out of range for {len(rows)} images")
        rows = [rows[batch]]
    f = feature(act)[rows]
    try:
        (g,) = torch.autograd.grad(
            f.sum(), h, create_graph=(mode == "exact"), retain_graph=True, allow_unused=True
        )
    except RuntimeError as exc:
        raise ValueError(f"cannot differentiate feature {feature.name} with respect to layer {layer!r}: {exc}") from exc
    if g is None:
        raise ValueError(
            f"attribution layer {layer!r} does not feed the feature at {feature.layer!r} (no gradient path "
            "from it to the feature); choose a layer that comes before the feature layer on a path into it"
        )
    if mode == "fast":
        g = g.detach()
    return (g * h)[rows]


def signed_parts(T, feature: Feature, layer: str, mode: str = "fast", batch=None, granularity="element", norm="l1"):
    """``(P, N)``, each (B,), of the render batch inside an objective (see :func:`tense`)."""
    s = signed_attribution_scores(T, as_feature(feature), layer, mode=mode, batch=batch)
    return signed_totals(s, granularity, norm)


# ------------------------------------------------------------------------------------------------
# +/- attribution inversion objective (SPEC 2.3)
# ------------------------------------------------------------------------------------------------
def _single_scores(scores, name="scores") -> torch.Tensor:
    s = _as_target(scores, name)
    if s.dim() == 4:
        if s.shape[0] != 1:
            raise ValueError(f"{name} must be one image's attribution (C, H, W) or (1, C, H, W), got {tuple(s.shape)}")
        s = s[0]
    if s.dim() != 3:
        raise ValueError(f"{name} must be one image's attribution map (C, H, W), got shape {tuple(s.shape)}")
    return s


def _check_sign(sign) -> int:
    if sign not in (1, -1) or isinstance(sign, bool):
        raise ValueError(f"sign must be +1 (excitatory) or -1 (inhibitory), got {sign!r}")
    return int(sign)


@wrap_objective()
def signed_attribution(
    layer: str, scores, sign: int = 1, power: float = 2.0, crop: Optional[float] = 0.01, mask=None, batch=None
):
    """The +/- attribution inversion objective: spatial cosdot against ``relu(sign * S)``.

    Args:
        layer: the layer the attribution was taken at (activations (B, C, H, W) at the render size).
        scores: one image's attribution ``S`` at ``layer``: (C, H, W) or (1, C, H, W).
        sign: +1 for the excitatory target ``relu(S)``, -1 for the inhibitory target ``relu(-S)``.
        power: cosine exponent of the cosdot.
        crop: crop to the box where the target exceeds ``crop`` times its maximum (None: whole map).
        mask: optional spatial mask (H, W) in [0, 1], e.g. ``attribution_mask(scores, sign)``: only the
            positions where the image excites (or inhibits) the feature count.
        batch: Lucent batch index, or None for all.

    Loss: minus the batch mean of ``dot(h, T) * |cos(h, T)|^power``.
    """
    s = _single_scores(scores)
    target = (_check_sign(sign) * s).clamp(min=0)
    if float(target.max()) <= 0:
        raise ValueError(
            f"the image has no {'positive' if sign == 1 else 'negative'} attribution at layer {layer!r}: "
            "the target map relu(sign * S) is all zero"
        )
    return spatial_cosdot(layer, target, power=power, crop=crop, mask=mask, batch=batch).objective_func


# ------------------------------------------------------------------------------------------------
# signed attribution masks (SPEC 2.5, last ingredient)
# ------------------------------------------------------------------------------------------------
def attribution_mask(
    scores,
    sign: int = 1,
    size: Optional[Tuple[int, int]] = None,
    threshold: float = 0.1,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Spatial mask (H, W) in [0, 1] of where an image excites (``sign=+1``) or inhibits (-1) a feature.

    Args:
        scores: one image's attribution ``S`` at a spatial layer: (C, H_l, W_l) or (1, C, H_l, W_l).
        sign: +1 uses ``relu(S)``, -1 uses ``relu(-S)``, each summed over channels.
        size: ``(H, W)`` of the output (e.g. the image size); bilinear upsampling. None: layer size.
        threshold: values below ``threshold`` times the maximum become 0.
        smooth: exponent applied to the normalised map (1 = linear ramp, 0 = binary).

    Returns:
        (H, W) float tensor: 0 where the image does not act with that sign, 1 at its strongest.
        Use it with :func:`lucent_inhibit.param.masked` (or ``accentuate(mask=...)``) so that
        optimization changes the image only there.
    """
    s = _single_scores(scores)
    m = (_check_sign(sign) * s).clamp(min=0).sum(0)
    mx = float(m.max())
    if mx <= 0:
        raise ValueError(f"the attribution has no {'positive' if sign == 1 else 'negative'} part: the mask would be empty")
    if not 0 <= threshold < 1:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    m = m / mx
    m = ((m - threshold) / (1 - threshold)).clamp(min=0)
    m = (m > 0).float() if smooth == 0 else m.pow(float(smooth))
    if size is not None:
        m = torch.nn.functional.interpolate(m[None, None], size=tuple(size), mode="bilinear", align_corners=False)[0, 0]
    return m.clamp(0, 1)


# ------------------------------------------------------------------------------------------------
# seed regularizer for accentuation (SPEC 2.5)
# ------------------------------------------------------------------------------------------------
@wrap_objective()
def seed_l2(layer: str, n: Optional[int] = None, batch=None):
    """L2 distance at a latent layer between rendered images and their seeds under the same augmentation.

    The render batch holds ``[renders (n), seeds (n)]`` (see :func:`lucent_inhibit.param.fourier_image`
    with ``with_seed=True``), transformed together, so each render and its seed share every crop and
    noise draw. ``h = T(layer)`` (2n, ...): the distance of render ``i`` is ``||h[i] - h[n + i]||_2``
    (seed side detached).

    Args:
        layer: Lucent layer name (an intermediate layer works best; SPEC 2.5).
        n: number of rendered images; None: half the batch.
        batch: index of one render, or None for all.

    Loss: the batch mean of the distances (a penalty, so it is *added*, e.g. ``obj + w * seed_l2``).
    """

    def inner(T):
        h = T(layer)
        k = h.shape[0] // 2 if n is None else int(n)
        if h.shape[0] < 2 * k or k < 1:
            raise ValueError(f"seed_l2 needs a batch [renders ({k}), seeds ({k})], got {h.shape[0]} rows at {layer!r}")
        r, s = h[:k], h[k : 2 * k].detach()
        d = (r - s).flatten(1).norm(dim=1)
        if isinstance(batch, int):
            d = d[batch : batch + 1]
        return d.mean()

    return inner


from .attribution import signed_totals, tension  # noqa: E402  (used above; kept at the end to avoid cycles)
