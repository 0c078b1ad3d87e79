"""The control of the atlas icons' cosines: how close the cell's own images come to the cell's target.

An icon's cosine (:func:`~lucent_inhibit.atlas.targets.target_cosine`) compares the layer's *activation* on the
icon with the cell's target, built from averaged *attribution* vectors (their absolute value, SPEC 2.6). Even
the dataset images whose vectors formed the cell do not have activations parallel to that target, so a bar
on the icons' cosine means little without the same number for them. :func:`member_cosines` measures it in
the same way: each member image's activation at the atlas layer, read as the icons are
(:func:`~lucent_inhibit.atlas.vectors.read_layer`, :func:`~lucent_inhibit.atlas.vectors.layer_map`), against its
cell's target, inside the target's crop box; per cell the median over its member images.

One exception keeps the control fair: a ``"center"`` target of a position-mode atlas puts the cell's vector at
the box's centre, but each member point's vector was read at its own position, so the member is measured
there: the cosine of the point's activation (C,) at its own (y, x) with the cell's vector, median over points.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.datasets import load_batch
from .targets import icon_targets, target_cosine
from .layout import AtlasGrid
from .vectors import AtlasPoints, layer_map, read_layer


def _at_own_position(points: AtlasPoints, icon_target: str) -> bool:
    return icon_target == "center" and points.mode == "position" and len(points.map_shape) == 3


def _members(points: AtlasPoints, grid: AtlasGrid, per_point: bool) -> dict:
    """image row -> [(cell, point)]: every point (``per_point``) or one entry per (image, cell)."""
    found: dict = {}
    for k in range(len(grid)):
        ids = grid.points_of(k)
        rows = points.point_image[ids]
        keep = np.ones(len(ids), bool) if per_point else np.unique(rows, return_index=True)[1]
        for i, r in zip(np.asarray(ids)[keep].tolist(), rows[keep].tolist()):
            found.setdefault(int(r), []).append((k, int(i)))
    return found


def _pair_cosines(h: torch.Tensor, targets: torch.Tensor, points: AtlasPoints, pairs, own: bool) -> list:
    """Cosines of the (batch row, cell, point) ``pairs``: whole target crops, or at each point's own position."""
    js, ks = [j for j, _, _ in pairs], [k for _, k, _ in pairs]
    if not own:
        return target_cosine(h[js], targets[ks]).tolist()
    pos = torch.as_tensor(np.asarray(points.point_position, np.int64)[[i for _, _, i in pairs]])
    hv = h[torch.as_tensor(js), :, pos[:, 0], pos[:, 1]]
    return F.cosine_similarity(hv, targets[ks].flatten(2).sum(2), dim=1).tolist()


def member_cosines(model: nn.Module, dataset, points: AtlasPoints, grid: AtlasGrid, icon_target: str = "box",
                   batch_size: int = 64) -> np.ndarray:
    """(K,) float32: for each cell of ``grid``, the median over its member images (the dataset images of its
    points) of the cosine between the image's activation at ``points.layer`` and the cell's target
    (:func:`~lucent_inhibit.atlas.targets.icon_targets` with ``icon_target``, as the icons were rendered towards).
    A ``"center"`` target in position mode: the median over its member points, each at its own position."""
    targets = icon_targets(points, grid.vectors, icon_target, grid)
    own = _at_own_position(points, icon_target)
    members = _members(points, grid, per_point=own)
    rows, found = np.asarray(sorted(members), np.int64), [[] for _ in range(len(grid))]
    for start in range(0, rows.size, batch_size):  # memory: one batch of maps, not every member's
        part = rows[start:start + batch_size]
        x = load_batch(dataset, points.image_index[part]).float()
        h = layer_map(model, points.feature, points.layer, x, read_layer(model, x, points.layer))
        pairs = [(j, k, i) for j, r in enumerate(part.tolist()) for k, i in members[r]]
        for (_, k, _), c in zip(pairs, _pair_cosines(h, targets, points, pairs, own)):
            found[k].append(c)
    return np.asarray([np.median(c) if c else np.nan for c in found], np.float32)
