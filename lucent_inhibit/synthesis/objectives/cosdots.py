"""The cosdot family ("Optimizing For Possible Feature Combinations in Discriminative Vision Models",
Hamblin, Alvarez, Konkle; and the +/- inversions of "Understanding Inhibition Through Maximally Tense
Images", Hamblin, Saha, Konkle, Alvarez 2024).

``cosdot(y, t) = dot(y, t) * |cos(y, t)|^p`` rewards pointing toward a target *and* being large. Here it
is used toward a channel direction (:func:`cosdot`), toward a whole spatial attribution map
(:func:`spatial_cosdot`, the inversion objective) and toward an angle in the plane of two scaled features
(:func:`feature_pair`). Every factory returns a Lucent objective whose value is a loss (minus the
quantity maximised); ``T(layer)`` inside it is (read in the library's layouts by ``views.layer_tensor``) the layer's activation for the render batch.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np
import torch
from lucent.optvis.objectives import handle_batch, wrap_objective

from ...core.features import Feature, as_feature, check_position
from ...core.tokens import UNDERSTOOD_SHAPES, TokenGrid, infer_grid, token_maps
from ...core.validate import (MAX_POWER, InputError, check_number)  # MAX_POWER: the largest cosine exponent (documented there)
from .views import layer_tensor


def check_power(power, name: str = "power") -> float:
    """``power`` as a float in [0, :data:`MAX_POWER`], else ``ValueError`` (``validate.InputError``) naming it."""
    return check_number(name, power, 0, MAX_POWER)


def cosdot_value(y: torch.Tensor, target: torch.Tensor, power: float = 4.0, eps: float = 1e-8) -> torch.Tensor:
    """``dot(y, t) * |cos(y, t)|^power`` along the last dimension (``power`` in [0, :data:`MAX_POWER`]).

    Equals the paper's ``(y.t)^(p+1) / (|y||t|)^p`` for even ``p`` and keeps its sign (the sign of the dot
    product) for any ``p``, so odd and fractional powers behave and no region has zero gradient.
    ``y``: (..., D); ``target``: (D,) or broadcastable to ``y``. Returns shape ``y.shape[:-1]``.
    """
    power = check_power(power)
    dot = (y * target).sum(-1)
    norms = y.norm(dim=-1) * target.norm(dim=-1)
    cos = dot / (norms + eps)
    return dot * cos.abs().pow(power)


def as_target(target, name="target") -> torch.Tensor:
    """``target`` as a finite float32 CPU tensor (detached); ``ValueError`` naming ``name`` otherwise."""
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
    m = as_target(mask, "mask")
    if m.dim() != 2:
        raise ValueError(f"mask must be a spatial map (H, W), got shape {tuple(m.shape)}")
    if float(m.min()) < 0 or float(m.max()) > 1 or float(m.max()) == 0:
        raise ValueError(f"mask values must lie in [0, 1] and not all be zero, got range [{float(m.min()):.3g}, {float(m.max()):.3g}]")
    if tuple(m.shape) != tuple(shape):
        m = torch.nn.functional.interpolate(m[None, None], size=tuple(shape), mode="bilinear", align_corners=False)[0, 0]
    return m.to(device=device, dtype=dtype)


@wrap_objective()
def cosdot(layer: str, direction, power: float = 4.0, position: Union[str, Tuple[int, int]] = "mean", batch=None,
           grid: Optional[TokenGrid] = None):
    """Cosdot toward a direction over a layer's channels.

    Args:
        layer: Lucent layer name; activations (B, C, H, W), (B, C) or a token layer (B, T, C), whose
            channels are the last dimension.
        direction: (C,) vector.
        power: the cosine's exponent ``p`` (0 gives the plain dot product).
        position: ``"mean"`` (average the per-position cosdot over space; on a token layer over the patch
            tokens, prefix tokens excluded), ``"center"`` or ``(y, x)`` (a map position or a patch of the
            grid); token layers also take ``"cls"`` and ``("token", i)``.
        batch: Lucent batch index, or None for all.
        grid: the model's token layout (:func:`lucent_inhibit.core.tokens.token_grid`); None infers it from T.

    Loss: minus the mean over the batch (and positions) of ``dot(h, v) * |cos(h, v)|^p``.
    """
    power = check_power(power)
    position = check_position(position)
    v = as_target(direction, "direction").flatten()

    @handle_batch(batch)
    def inner(T):
        y = _channel_vectors(layer_tensor(T, layer), layer, position, v.numel(), grid)
        return -cosdot_value(y, v.to(y.device, y.dtype), power).mean()

    return inner


def _channel_vectors(h: torch.Tensor, layer: str, position, channels: int, grid: Optional[TokenGrid] = None):
    """The channel vectors (..., C) :func:`cosdot` compares at ``position``: (B, H, W, C) or (B, C) of a map,
    (B, C) of a linear layer, (B, P, C) (the P patch tokens, for ``"mean"``) or (B, C) of a token layer.
    :class:`InputError` for other shapes, a channel count other than ``channels`` or a position the layer lacks."""
    if h.dim() not in (2, 3, 4):
        raise InputError(f"layer {layer!r} has activations of shape {tuple(h.shape)}; cosdot needs {UNDERSTOOD_SHAPES}")
    c = h.shape[-1] if h.dim() == 3 else h.shape[1]
    if c != channels:
        raise InputError(f"direction has length {channels}, but layer {layer!r} has {c} channels")
    if h.dim() == 3:
        g = infer_grid(h.shape[1], layer) if grid is None else grid.for_tokens(h.shape[1], layer)
        return h[:, g.prefix:] if position == "mean" else h[:, g.index(position, layer)]
    if position == "cls" or (isinstance(position, tuple) and position[0] == "token"):
        raise InputError(f"position {position!r} names a token, but layer {layer!r} has shape {tuple(h.shape)}, "
                         "not a token layer (B, T, C)")
    if h.dim() == 2:
        return h
    if position == "mean":
        return h.permute(0, 2, 3, 1)
    y, x = (h.shape[2] // 2, h.shape[3] // 2) if position == "center" else position
    if not (y < h.shape[2] and x < h.shape[3]):
        raise InputError(f"position {position} is outside layer {layer!r}'s {h.shape[2]}x{h.shape[3]} map")
    return h[:, :, y, x]


def _spatial_targets(target, mask, crop):
    """(targets (K, C, H, W), mask (H, W) or None, crop boxes per target) of :func:`spatial_cosdot`."""
    t = as_target(target)
    if t.dim() == 3:
        t = t[None]
    if t.dim() != 4:
        raise ValueError(f"target must be (C, H, W) or (B, C, H, W), got shape {tuple(t.shape)}")
    m = None
    if mask is not None:
        m = layer_mask(mask, t.shape[2:])
        t = t * m
    boxes = [crop_box(ti, crop) if crop is not None else (0, ti.shape[1], 0, ti.shape[2]) for ti in t]
    return t, m, boxes


@wrap_objective()
def spatial_cosdot(layer: str, target, power: float = 2.0, crop: Optional[float] = 0.01, mask=None, batch=None,
                   grid: Optional[TokenGrid] = None):
    """Cosdot between a layer's whole activation map and a target map (the +/- inversion objective).

    Args:
        layer: Lucent layer name with activations (B, C, H, W), or a token layer (B, T, C): its patch
            tokens are read as a (B, C, grid_h, grid_w) map (channels = the last dimension, the class and
            register tokens left out; :func:`lucent_inhibit.core.tokens.token_maps`).
        target: (C, H, W) map shared by the batch, or (B, C, H, W) with one target per batch element (a batch of
            ``n * B`` rows, as crop-major transforms give, uses target ``i % B`` for row ``i``); for a
            token layer a map over its patch grid (convert token-layer scores (B, T, C) with ``token_maps``).
        power: the cosine's exponent.
        crop: crop both maps to the bounding box where ``|target|`` exceeds ``crop`` times its maximum
            (per target); ``None`` uses the whole map.
        mask: optional spatial mask (H, W) in [0, 1] (e.g. :func:`attribution_mask`), resized to the layer's
            grid; both maps are multiplied by it, so only masked positions count.
        batch: Lucent batch index, or None for all.
        grid: the model's token layout (:func:`lucent_inhibit.core.tokens.token_grid`) for a token layer; None
            infers it from T (a square patch grid).

    Loss: minus the batch mean of ``dot(h, T) * |cos(h, T)|^p`` over the flattened (cropped) maps.
    """
    power = check_power(power)
    crop = None if crop is None else check_number("crop", crop, 0, 1, high_open=True)
    t, m, boxes = _spatial_targets(target, mask, crop)

    @handle_batch(batch)
    def inner(T):
        raw = layer_tensor(T, layer)
        h = _layer_map(raw, layer, grid)
        if h.shape[1:] != t.shape[1:]:
            hint = (" (the patch grid of token layer shape {}; convert token-layer scores (B, T, C) with "
                    "lucent_inhibit.core.tokens.token_maps)".format(tuple(raw.shape[1:]))) if raw.dim() == 3 else ""
            raise ValueError(
                f"target map has shape {tuple(t.shape[1:])} but layer {layer!r} gives {tuple(h.shape[1:])}{hint}; "
                "compute the target at the same layer and image size as the render"
            )
        n_t = 1 if isinstance(batch, int) else t.shape[0]
        if h.shape[0] % n_t:  # a multiple: crop-major batches of transforms that crop (box_crop, zoom_crops)
            raise ValueError(f"{t.shape[0]} target maps for a batch of {h.shape[0]} images")
        values = []
        for i in range(h.shape[0]):
            k = (batch if isinstance(batch, int) else i % n_t) if t.shape[0] > 1 else 0
            y0, y1, x0, x1 = boxes[k]
            hi = h[i, :, y0:y1, x0:x1]
            if m is not None:
                hi = hi * m[y0:y1, x0:x1].to(h.device, h.dtype)
            ti = t[k, :, y0:y1, x0:x1].flatten().to(h.device, h.dtype)
            values.append(cosdot_value(hi.flatten(), ti, power))
        return -torch.stack(values).mean()

    return inner


def _layer_map(h: torch.Tensor, layer: str, grid: Optional[TokenGrid]) -> torch.Tensor:
    """A layer's activation as a (B, C, H, W) map: a map as is, a token layer's patch tokens on their grid."""
    if h.dim() == 3:
        return token_maps(h, grid, layer)
    if h.dim() != 4:
        raise InputError(f"layer {layer!r} has activations of shape {tuple(h.shape)}; spatial_cosdot needs a map "
                         "(B, C, H, W) or a token layer (B, T, C)")
    return h


@wrap_objective()
def feature(feature: Feature, batch=None):
    """Maximise a :class:`~lucent_inhibit.Feature` (unit or direction, at its position). Loss: minus its batch mean."""
    feat = as_feature(feature)

    @handle_batch(batch)
    def inner(T):
        return -feat(layer_tensor(T, feat.layer)).mean()

    return inner


def pair_targets(theta) -> torch.Tensor:
    """Unit targets ``[cos theta, sin theta]`` for one or many angles (radians): (K, 2)."""
    th = torch.as_tensor(np.atleast_1d(np.asarray(theta, dtype=np.float32)))
    if th.dim() != 1 or not torch.isfinite(th).all():
        raise ValueError(f"theta must be a finite angle or a 1-D sequence of angles, got {theta!r}")
    return torch.stack([th.cos(), th.sin()], dim=1)


def pair_values(T, feature_a: Feature, feature_b: Feature, scale: Tuple[float, float]) -> torch.Tensor:
    """Scaled pair ``[f_a / s_a, f_b / s_b]`` for each batch element: (B, 2)."""
    ya = feature_a(layer_tensor(T, feature_a.layer)) / float(scale[0])
    yb = feature_b(layer_tensor(T, feature_b.layer)) / float(scale[1])
    return torch.stack([ya, yb], dim=1)


def _pair_scale(scale) -> Tuple[float, float]:
    if scale is None:
        raise ValueError("feature_pair needs scale=(s_a, s_b), the features' unconstrained maxima; theta alone is ambiguous")
    try:
        s_a, s_b = (float(s) for s in scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be two positive finite numbers (s_a, s_b), got {scale!r}") from None
    return (check_number("scale[0]", s_a, 0, low_open=True), check_number("scale[1]", s_b, 0, low_open=True))


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
    power = check_power(power)
    scale = _pair_scale(scale)
    targets = pair_targets(theta)

    @handle_batch(batch)
    def inner(T):
        y = pair_values(T, fa, fb, scale)
        tg = targets[batch : batch + 1] if isinstance(batch, int) and targets.shape[0] > 1 else targets
        if tg.shape[0] not in (1, y.shape[0]):
            raise ValueError(f"{tg.shape[0]} angles for a batch of {y.shape[0]} images (expected 1 or {y.shape[0]})")
        return -cosdot_value(y, tg.to(y.device, y.dtype), power).mean()

    return inner
