"""The control of the atlas icons' cosines: how close the cell's own images come to the cell's target.

An icon's cosine (:func:`~lucent_inhibit.atlas.icons.target_cosine`) compares the layer's *activation* on the
icon with the cell's target, built from averaged *attribution* vectors (their absolute value, SPEC 2.6). Even
the dataset images whose vectors formed the cell do not have activations parallel to that target, so a bar
on the icons' cosine means little without the same number for them. :func:`member_cosines` measures it in
the same way: each member image's activation at the atlas layer, read as the icons are
(:func:`~lucent_inhibit.atlas.vectors.read_layer`, :func:`~lucent_inhibit.atlas.vectors.layer_map`), against its
cell's target, inside the target's crop box; per cell the median over its member images.
"""
from __future__ import annotations

import numpy as np
from torch import nn

from ..data.datasets import load_batch
from .icons import icon_targets, target_cosine
from .layout import AtlasGrid
from .vectors import AtlasPoints, layer_map, read_layer


def member_cosines(model: nn.Module, dataset, points: AtlasPoints, grid: AtlasGrid, icon_target: str = "box",
                   batch_size: int = 64) -> np.ndarray:
    """(K,) float32: for each cell of ``grid``, the median over its member images (the dataset images of its
    points) of the cosine between the image's activation at ``points.layer`` and the cell's target
    (:func:`~lucent_inhibit.atlas.icons.icon_targets` with ``icon_target``, as the icons were rendered towards)."""
    targets = icon_targets(points, grid.vectors, icon_target, grid)
    cells_of: dict = {}  # image row -> the cells it has points in
    for k in range(len(grid)):
        for r in np.unique(points.point_image[grid.points_of(k)]).tolist():
            cells_of.setdefault(r, []).append(k)
    rows, found = np.asarray(sorted(cells_of), np.int64), [[] for _ in range(len(grid))]
    for start in range(0, rows.size, batch_size):  # memory: one batch of maps, not every member's
        part = rows[start:start + batch_size]
        x = load_batch(dataset, points.image_index[part]).float()
        h = layer_map(model, points.feature, points.layer, x, read_layer(model, x, points.layer))
        pairs = [(i, k) for i, r in enumerate(part.tolist()) for k in cells_of[r]]
        cos = target_cosine(h[[i for i, _ in pairs]], targets[[k for _, k in pairs]])
        for (_, k), c in zip(pairs, cos.tolist()):
            found[k].append(c)
    return np.asarray([np.median(c) if c else np.nan for c in found], np.float32)
