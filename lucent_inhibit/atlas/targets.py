"""The targets of atlas icons (Carter et al. 2019; Hamblin et al. 2024): a cell's averaged vector as a map at the
atlas layer, the cosine by which an icon is judged against it, and the zoom crops that stay aligned with it.

A cell's averaged vector ``v`` (C,) becomes a (C, H, W) target at the layer by broadcasting over the
receptive-field box (``"box"``), at the box's centre position only (``"center"``, the activation atlas's
convention), or (position mode) by averaging the cell's points each at its own place (``"positions"``).
Attribution vectors enter as their absolute value (SPEC 2.6).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..core.validate import check_choice, check_int
from ..synthesis.objectives import crop_box
from ..synthesis.transform import zoom_crops
from .layout import AtlasGrid
from .vectors import AtlasPoints

ICON_TARGETS = ("box", "center", "positions")
#: Crop threshold of the icons' spatial cosdot: each target's bounding box of nonzero positions.
TARGET_CROP = 1e-6
#: Zoom range of :func:`zoom_transform`'s crops (fractions of the icon's side).
ZOOM_RANGE = (0.6, 1.0)


def _positions_targets(points: AtlasPoints, grid: Optional[AtlasGrid]) -> torch.Tensor:
    if grid is None or points.mode != "position" or len(points.map_shape) == 1:
        raise ValueError("icon_target='positions' needs position-mode points on a spatial layer and the grid")
    c, h, w = points.map_shape
    t = torch.zeros(len(grid), c, h, w)
    v = torch.as_tensor(np.asarray(points.vectors, np.float32))
    if points.vector_kind == "attribution":
        v = v.abs()
    pos = torch.as_tensor(np.asarray(points.point_position, np.int64))
    for k in range(len(grid)):
        ids = torch.as_tensor(grid.points_of(k), dtype=torch.long)
        t[k].index_put_((torch.arange(c)[:, None], pos[ids, 0][None], pos[ids, 1][None]), v[ids].T, accumulate=True)
        t[k] /= ids.numel()
    return t


def icon_targets(points: AtlasPoints, vectors: np.ndarray, icon_target: str = "box",
                 grid: Optional[AtlasGrid] = None) -> torch.Tensor:
    """Render targets for averaged vectors (K, C): (K, C, H, W) maps at the atlas layer, or (K, C) for a
    linear layer. Attribution vectors enter as their absolute value (SPEC 2.6); activation vectors as they are.

    ``icon_target="box"`` broadcasts each vector over the receptive-field box (zero outside);
    ``"center"`` puts it at the box's centre position only; ``"positions"`` (position mode; needs ``grid``)
    averages the cell's points each at its own (y, x), so a channel that excites the feature at one
    position and inhibits it at another keeps its place (``vectors`` is then unused).
    """
    check_choice("icon_target", icon_target, ICON_TARGETS)
    if icon_target == "positions":
        return _positions_targets(points, grid)
    v = torch.as_tensor(np.asarray(vectors, np.float32))
    if points.vector_kind == "attribution":
        v = v.abs()
    if len(points.map_shape) == 1:
        return v
    c, h, w = points.map_shape
    y0, y1, x0, x1 = points.box
    t = torch.zeros(v.shape[0], c, h, w)
    if icon_target == "box":
        t[:, :, y0:y1, x0:x1] = v[:, :, None, None]
    else:
        t[:, :, (y0 + y1 - 1) // 2, (x0 + x1 - 1) // 2] = v
    return t


def target_cosine(h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(K,) the spatial cosdot's cosine between layer activations ``h`` and ``targets`` (K, C, H, W), each
    inside its target's crop box (:func:`~lucent_inhibit.synthesis.objectives.crop_box` at ``TARGET_CROP``), or over
    the channels for (K, C) directions."""
    if h.dim() != 4:
        return F.cosine_similarity(h.flatten(1), targets.flatten(1), dim=1)
    out = []
    for hk, tk in zip(h, targets):
        y0, y1, x0, x1 = crop_box(tk, TARGET_CROP)
        out.append(F.cosine_similarity(hk[:, y0:y1, x0:x1].flatten(), tk[:, y0:y1, x0:x1].flatten(), dim=0))
    return torch.stack(out)


def zoom_transform(points: AtlasPoints, icon_target: str, n_crops: int) -> list:
    """``[]`` for ``n_crops`` 0, else ``[zoom_crops(...)]``: ``n_crops`` random zooms per step
    (:func:`~lucent_inhibit.synthesis.transform.zoom_crops`, :data:`ZOOM_RANGE`) about the centre of the box's centre
    position, the one place a ``"center"`` target occupies, so the target stays aligned with every crop. Other
    targets span several positions that a zoom would move: ``ValueError``, as for a layer without positions. The
    zooms draw from torch's global generator, which each render seeds (``RenderSettings.seed``)."""
    n_crops = check_int("zoom_crops", n_crops, low=0)
    if n_crops == 0:
        return []
    if icon_target != "center" or len(points.map_shape) != 3:
        raise ValueError(f"zoom_crops={n_crops} needs icon_target='center' on a layer with positions (a zoom keeps "
                         f"only one position in place), got icon_target={icon_target!r}, layer shape "
                         f"{points.map_shape}")
    _, h, w = points.map_shape
    y0, y1, x0, x1 = points.box
    about = (((y0 + y1 - 1) // 2 + 0.5) / h, ((x0 + x1 - 1) // 2 + 0.5) / w)
    return [zoom_crops(about, n_crops, *ZOOM_RANGE)]
