"""Stages 3 and 4 of the atlas: a 2-D layout of the vectors and the grid over it (Carter et al. 2019).

:func:`project_layout` runs UMAP (McInnes et al. 2018) with the cosine metric (optional PCA first) and
maps the 1st..99th percentiles of each coordinate onto the unit square; :func:`grid_cells` lays a grid
over the square and averages the vectors of every cell holding at least ``min_points`` points.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Optional, Tuple, Union

import numpy as np

from ..core.results import Result
from ..core.validate import MAX_MIN_DIST, check_int, check_number
from .vectors import AtlasPoints

MIN_UMAP_POINTS = 5


@dataclass
class AtlasLayout(Result):
    """Stage 3: 2-D positions of the points.

    Attributes:
        xy: (M, 2) float32 in the unit square (the ``clip`` percentiles of ``raw`` mapped to 0 and 1,
            points beyond them clipped to the border); y points up.
        raw: (M, 2) float32 UMAP output.
        n_neighbors: the UMAP neighbourhood actually used (smaller than asked for when there are few points).
        params: min_dist, metric, pca, clip, seed.
    """

    xy: np.ndarray
    raw: np.ndarray
    n_neighbors: int
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.xy.shape[0])

    def summary(self) -> dict:
        return {"type": self.kind(), "points": len(self), "n_neighbors": int(self.n_neighbors), **self.params}

    def plot(self, path=None, ax=None, **style):
        """The points in the unit square; returns the Figure (a PNG at ``path`` when given)."""
        from .figures import plot_layout

        return plot_layout(self, path, ax, **style)


def normalize_layout(raw: np.ndarray, clip: Tuple[float, float] = (1.0, 99.0)) -> np.ndarray:
    """Map the ``clip`` percentiles of each coordinate of ``raw`` (M, 2) to 0 and 1 and clip to [0, 1]."""
    lo_q, hi_q = clip
    if not (0 <= lo_q < hi_q <= 100):
        raise ValueError(f"clip must be two percentiles 0 <= low < high <= 100, got {clip!r}")
    lo = np.percentile(raw, lo_q, axis=0)
    hi = np.percentile(raw, hi_q, axis=0)
    span = hi - lo
    out = np.where(span > 0, (raw - lo) / np.where(span > 0, span, 1), 0.5)
    return np.clip(out, 0, 1).astype(np.float32)


def _neighbours(m: int, n_neighbors) -> int:
    if m < MIN_UMAP_POINTS:
        raise ValueError(
            f"only {m} atlas points; UMAP needs at least {MIN_UMAP_POINTS}: select more images or use mode='position'"
        )
    used = check_int("n_neighbors", n_neighbors, low=2)
    if used >= m:
        used = m - 1
        warnings.warn(
            f"only {m} atlas points, fewer than n_neighbors + 1 = {n_neighbors + 1}; using n_neighbors={used}. "
            "Select more images (or use mode='position') for a meaningful layout."
        )
    return used


def _pca(X: np.ndarray, pca: int, seed: int) -> np.ndarray:
    pca = check_int("pca", pca, low=2)
    k = min(pca, X.shape[0], X.shape[1])
    if k < pca:
        warnings.warn(f"pca={pca} exceeds min(points, channels) = {k}; using {k} components")
    from sklearn.decomposition import PCA

    return PCA(n_components=k, random_state=seed).fit_transform(X).astype(np.float32)


def project_layout(
    points: Union[AtlasPoints, np.ndarray],
    n_neighbors: int = 10,
    min_dist: float = 0.1,
    pca: Optional[int] = None,
    clip: Tuple[float, float] = (1.0, 99.0),
    seed: int = 0,
) -> AtlasLayout:
    """Stage 3: UMAP (cosine metric) of the vectors, normalised to the unit square.

    Args:
        points: :class:`AtlasPoints` or an (M, C) array.
        n_neighbors: UMAP neighbourhood (the paper: 10). With ``M <= n_neighbors`` points it is lowered
            to ``M - 1`` with a warning; fewer than 5 points raise ``ValueError``.
        min_dist: UMAP's minimum distance (0.1).
        pca: reduce to this many principal components first (``None``: no PCA).
        clip: percentiles mapped to the square's borders (outliers beyond them sit on the border).
        seed: UMAP's random state (deterministic single-threaded run).
    """
    X = points.vectors if isinstance(points, AtlasPoints) else np.asarray(points, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"expected (M, C) vectors, got shape {X.shape}")
    m = X.shape[0]
    used = _neighbours(m, n_neighbors)
    min_dist = check_number("min_dist", min_dist, 0, MAX_MIN_DIST)
    seed = check_int("seed", seed, low=0)
    X = X.astype(np.float32)
    if pca is not None:
        X = _pca(X, pca, seed)
    import umap

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")
        warnings.filterwarnings("ignore", message=".*Spectral initialisation failed.*")
        warnings.filterwarnings("ignore", message=".*k >= N.*")
        reducer = umap.UMAP(n_neighbors=used, min_dist=min_dist, metric="cosine", random_state=seed,
                            n_jobs=1, init="spectral" if m > 2 * used + 2 else "random")
        raw = reducer.fit_transform(X).astype(np.float32)
    params = {"min_dist": min_dist, "metric": "cosine", "pca": pca, "clip": list(clip), "seed": seed,
              "n_neighbors_requested": int(n_neighbors)}
    return AtlasLayout(normalize_layout(raw, clip), raw, used, params)


@dataclass
class AtlasGrid(Result):
    """Stage 4: the occupied cells of a ``size`` x ``size`` grid over the unit square.

    Cells (K of them, with at least ``min_points`` points):
        cells: (K, 2) int64 (column, row) with row 0 at the bottom (y up).
        count: (K,) int64 points in the cell.
        vectors: (K, C) float32 mean vector of the cell's points.
        net: (K,) float32 mean net attribution of the cell's points (for the attribution atlas the sum
            of ``vectors``): > 0 excitatory, < 0 inhibitory.
        activation: (K,) float32 mean feature activation of the cell's points' images.
        members: point ids of all cells, concatenated; cell k owns ``members[offsets[k]:offsets[k + 1]]``.
    """

    size: int
    min_points: int
    cells: np.ndarray
    count: np.ndarray
    vectors: np.ndarray
    net: np.ndarray
    activation: np.ndarray
    members: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return int(self.cells.shape[0])

    def points_of(self, k: int) -> np.ndarray:
        """Point ids of cell ``k``."""
        return self.members[self.offsets[k]: self.offsets[k + 1]]

    def summary(self) -> dict:
        return {"type": self.kind(), "size": int(self.size), "min_points": int(self.min_points), "cells": len(self),
                "points": int(self.count.sum()), "net_positive": int((self.net > 0).sum()),
                "net_negative": int((self.net < 0).sum())}

    def plot(self, path=None, ax=None, **style):
        """The occupied cells coloured by their net attribution; returns the Figure (a PNG at ``path`` when given)."""
        from .figures import plot_grid

        return plot_grid(self, path, ax, **style)


def _occupancy(xy: np.ndarray, size: int, min_points: int) -> Tuple[float, float]:
    """(share of the ``size`` x ``size`` cells holding >= ``min_points`` points, median points of those cells)."""
    ij = np.clip(np.floor(xy * size).astype(np.int64), 0, size - 1)
    counts = np.bincount(ij[:, 1] * size + ij[:, 0], minlength=size * size)
    full = counts[counts >= min_points]
    return full.size / float(size * size), float(np.median(full)) if full.size else 0.0


def auto_grid_size(n_points: int, min_points: int = 3, max_size: int = 30, xy: Optional[np.ndarray] = None) -> int:
    """A grid side for ``n_points`` points, between 2 and ``max_size`` (the paper's 30).

    Without a layout: about ``2 * min_points`` points per cell if the points were spread evenly,
    ``round(sqrt(n_points / (2 * min_points)))``. With the layout ``xy`` (M, 2) in the unit square (what
    :func:`grid_cells` uses): the largest side up to that bound whose grid is a dense mosaic, i.e. at least
    half of its cells hold ``min_points`` points or more and those cells hold a median of at least
    ``2 * min_points`` points. UMAP packs points into islands, so the even-spread side alone leaves most
    cells empty; the smallest side 2 is the fallback.
    """
    bound = int(np.clip(round(math.sqrt(n_points / (2.0 * max(1, min_points)))), 2, max_size))
    if xy is None:
        return bound
    for size in range(bound, 2, -1):
        share, median = _occupancy(np.asarray(xy), size, min_points)
        if share >= 0.5 and median >= 2 * min_points:
            return size
    return 2


def check_grid_size(size: int, n_points: int, min_points: int) -> int:
    """``size`` if ``n_points`` could fill a quarter of its cells with ``min_points`` each, else ValueError."""
    size = check_int("grid size", size, low=1)
    if n_points < min_points * size * size / 4.0:
        largest = max(1, int(math.sqrt(4.0 * n_points / min_points)))
        raise ValueError(
            f"atlas with too few points for the requested grid: {n_points} points cannot give a quarter of the "
            f"{size}x{size} cells min_points={min_points} each; use a grid size of at most {largest} or None "
            "(chosen from the layout)"
        )
    return size


def _cell_means(points: AtlasPoints, flat: np.ndarray, counts: np.ndarray, occupied: np.ndarray):
    order = np.argsort(flat, kind="stable")
    starts = np.searchsorted(flat[order], occupied, side="left")
    members, offsets, vec, net, act = [], [0], [], [], []
    pact = points.point_activation
    for c, s in zip(occupied, starts):
        ids = order[s: s + counts[c]]
        members.append(ids)
        offsets.append(offsets[-1] + ids.size)
        vec.append(points.vectors[ids].mean(0))
        net.append(points.net[ids].mean())
        act.append(pact[ids].mean())
    return (np.stack(vec).astype(np.float32), np.asarray(net, np.float32), np.asarray(act, np.float32),
            np.concatenate(members).astype(np.int64), np.asarray(offsets, np.int64))


def grid_cells(points: AtlasPoints, layout: AtlasLayout, size: Optional[int] = None, min_points: int = 3) -> AtlasGrid:
    """Stage 4: average the vectors of the points in every grid cell with at least ``min_points`` points.

    Args:
        points, layout: stages 2 and 3 (same number of points).
        size: grid side (cells per axis); ``None`` picks :func:`auto_grid_size` from the layout (the
            largest side, at most 30, whose grid is a dense mosaic). An explicit side too fine for the
            points (fewer than ``min_points * size**2 / 4`` points) is refused (:func:`check_grid_size`).
        min_points: cells with fewer points are left empty.
    """
    xy = np.asarray(layout.xy)
    if xy.shape[0] != len(points):
        raise ValueError(f"layout has {xy.shape[0]} points but the atlas points are {len(points)}; use the layout "
                         "projected from these points")
    min_points = check_int("min_points", min_points, low=1)
    size = (auto_grid_size(len(points), min_points, xy=xy) if size is None
            else check_grid_size(size, len(points), min_points))
    ij = np.clip(np.floor(xy * size).astype(np.int64), 0, size - 1)
    flat = ij[:, 1] * size + ij[:, 0]
    counts = np.bincount(flat, minlength=size * size)
    occupied = np.nonzero(counts >= min_points)[0]
    if occupied.size == 0:
        raise ValueError(
            f"no cell of the {size}x{size} grid holds at least min_points={min_points} of the {len(points)} points "
            f"(the densest holds {int(counts.max())}); use a smaller grid size or a lower min_points, or select more images"
        )
    vec, net, act, members, offsets = _cell_means(points, flat, counts, occupied)
    cells = np.stack([occupied % size, occupied // size], 1).astype(np.int64)
    return AtlasGrid(size, min_points, cells, counts[occupied].astype(np.int64), vec, net, act, members, offsets)
