"""The whole atlas: :class:`AtlasConfig` (every choice that is not a render setting), :class:`Atlas` (the
stages' results in one file) and :func:`build_atlas` (stages 1-5; Hamblin et al. 2024, section 4;
Carter et al. 2019)."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np
from torch import nn

from ..attribution.attribute import METHODS
from ..attribution.totals import TENSION_SCORES
from ..core.results import Result
from ..core.settings import ICON_RENDER, PassSettings, RenderSettings, as_pass_settings, as_settings
from ..core.validate import MAX_MIN_DIST, MAX_POWER, check_choice, check_int, check_number
from .control import member_cosines
from .icons import AtlasIcons, render_icons
from .layout import AtlasGrid, AtlasLayout, grid_cells, project_layout
from .selection import CRITERIA, Selection, select_images
from .spool import MAP_BUDGET
from .targets import ICON_TARGETS
from .vectors import KINDS, MODES, AtlasPoints, check_crop, collect_vectors


def _check_clip(clip) -> None:
    if isinstance(clip, (str, bytes)) or not isinstance(clip, Sequence) or len(clip) != 2:
        raise ValueError(f"AtlasConfig.clip must be two percentiles (low, high), got {clip!r}")
    lo, hi = (check_number("AtlasConfig.clip", v, low=0, high=100) for v in clip)
    if lo >= hi:
        raise ValueError(f"AtlasConfig.clip must be two percentiles 0 <= low < high <= 100, got {clip!r}")


@dataclass(frozen=True)
class AtlasConfig:
    """What an atlas is built from and how, apart from the render (:class:`~lucent_inhibit.RenderSettings`).

    Vectors (:func:`collect_vectors`): ``kind`` ``"attribution"`` (the attribution atlas) or
    ``"activation"`` (the activation atlas); ``mode`` ``"sum"`` (one vector per image) or ``"position"``
    (one per position of the receptive-field box); ``crop`` (box threshold, a fraction in [0, 1), or None
    for the whole map); ``method`` (attribution method); ``thumbnail_size`` (pixels); ``memory_budget`` (bytes of whole layer maps held in memory until the box
    is known; beyond it they go to a temporary file: :mod:`lucent_inhibit.atlas.spool`).

    Selection, used only when ``build_atlas`` is given a scan (:func:`select_images`): ``top_abs``,
    ``top_activation``, ``bottom_activation``, ``top_tension`` (the ``k`` of each ranking), ``score``
    (tension score) and ``granularity``.

    Layout (:func:`project_layout`): ``n_neighbors`` (UMAP, the paper's 10), ``min_dist``, ``pca``
    (components before UMAP, or None), ``clip`` (percentiles mapped to the square's borders),
    ``umap_seed``. Grid (:func:`grid_cells`): ``grid_size`` (None: :func:`auto_grid_size`),
    ``min_points``.

    Icons (:func:`render_icons`): ``icon_target`` (``"box"``, ``"center"`` or ``"positions"``; the last
    needs ``mode="position"``), ``power`` (cosine exponent of the spatial cosdot, finite, >= 0; 4, as in
    paper 004's combination plots: on the demo's atlas it raised the median icon cosine to its target from
    0.50 to 0.53 over 2) and
    ``icon_batch_size`` (icons per ``render_vis`` call) and ``crop_size`` (pixels of the displayed
    receptive-field crop of each icon, :meth:`AtlasIcons.crops`), ``zoom_crops`` (random zooms per step about
    a ``"center"`` target, MaCo's many crops; 0: none, the default: on the demo's cells they lowered the median
    cosine, BENCHMARKS.md "atlas icons").
    """

    kind: str = "attribution"
    mode: str = "sum"
    crop: Optional[float] = 0.01
    method: str = "gradient_x_activation"
    thumbnail_size: int = 48
    memory_budget: int = MAP_BUDGET
    top_abs: int = 128
    top_activation: int = 64
    bottom_activation: int = 64
    top_tension: int = 64
    score: str = "min"
    granularity: str = "element"
    n_neighbors: int = 10
    min_dist: float = 0.1
    pca: Optional[int] = None
    clip: Tuple[float, float] = (1.0, 99.0)
    umap_seed: int = 0
    grid_size: Optional[int] = None
    min_points: int = 3
    icon_target: str = "box"
    power: float = 4.0
    icon_batch_size: int = 64
    crop_size: int = 128
    zoom_crops: int = 0

    def __post_init__(self):
        for name, choices in (("kind", KINDS), ("mode", MODES), ("method", METHODS), ("score", TENSION_SCORES),
                              ("granularity", ("element", "channel")), ("icon_target", ICON_TARGETS)):
            check_choice(f"AtlasConfig.{name}", getattr(self, name), choices)
        check_crop(self.crop, "AtlasConfig.crop")
        lows = (("thumbnail_size", 1), ("n_neighbors", 2), ("umap_seed", 0), ("min_points", 1),
                ("icon_batch_size", 1), ("crop_size", 8), ("memory_budget", 0), ("zoom_crops", 0))
        lows += tuple((c, 0) for c in CRITERIA)
        for name, low in lows:
            check_int(f"AtlasConfig.{name}", getattr(self, name), low=low)
        for name, low in (("pca", 2), ("grid_size", 1)):
            if getattr(self, name) is not None:
                check_int(f"AtlasConfig.{name}", getattr(self, name), low=low)
        check_number("AtlasConfig.min_dist", self.min_dist, 0, MAX_MIN_DIST)
        check_number("AtlasConfig.power", self.power, 0, MAX_POWER)
        _check_clip(self.clip)
        if self.icon_target == "positions" and self.mode != "position":
            raise ValueError(f"AtlasConfig.icon_target='positions' needs mode='position', got mode={self.mode!r}")
        if self.zoom_crops and self.icon_target != "center":
            raise ValueError(f"AtlasConfig.zoom_crops={self.zoom_crops} needs icon_target='center', got "
                             f"{self.icon_target!r}")

    def replace(self, **changes) -> "AtlasConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def criteria(self) -> dict:
        """The selection criteria as :func:`select_images` keywords."""
        return {**{c: getattr(self, c) for c in CRITERIA}, "score": self.score, "granularity": self.granularity}


@dataclass
class Atlas(Result):
    """An attribution (or activation) atlas: stages 2-5 together. ``save(path)`` writes one ``.npz``.

    ``member_cosine`` (K,) float32, the icons' control: per cell, the median cosine of its own member images'
    activation to the cell's target, measured as the icons' ``cosine`` is
    (:func:`~lucent_inhibit.atlas.control.member_cosines`); None where not measured."""

    points: AtlasPoints
    layout: AtlasLayout
    grid: AtlasGrid
    icons: AtlasIcons
    member_cosine: Optional[np.ndarray] = None

    def activation_by_sign(self) -> dict:
        """Mean feature activation of the icons of net-positive and of net-negative cells.

        Returns ``{"positive_mean", "negative_mean", "n_positive", "n_negative"}`` (means are NaN when a
        side has no cell). The attribution atlas's claim: ``negative_mean < positive_mean``.
        """
        pos, neg = self.grid.net > 0, self.grid.net < 0
        a = self.icons.activation
        return {
            "positive_mean": float(a[pos].mean()) if pos.any() else float("nan"),
            "negative_mean": float(a[neg].mean()) if neg.any() else float("nan"),
            "n_positive": int(pos.sum()),
            "n_negative": int(neg.sum()),
        }

    def cell_images(self, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """Rows (into the per-image arrays of ``points``) of the images with points in cell ``k``, and how
        many of the cell's points each contributes."""
        rows, counts = np.unique(self.points.point_image[self.grid.points_of(k)], return_counts=True)
        return rows, counts

    def quality(self) -> dict:
        """How dense the mosaic is and how well the icons reached their targets: ``occupancy`` (share of the
        grid's cells with an icon), ``median_points`` (per icon), ``median_cosine`` (icon to its target, the
        spatial cosdot's cosine) and ``median_contrast`` (RMS contrast of the displayed crops)."""
        ic = self.icons
        contrast = ic.contrast if ic.contrast is not None else np.full(len(ic), np.nan)
        members = self.member_cosine if self.member_cosine is not None else np.full(len(ic), np.nan)
        return {"occupancy": len(self.grid) / float(self.grid.size ** 2),
                "median_points": float(np.median(self.grid.count)), "median_cosine": float(np.median(ic.cosine)),
                "median_member_cosine": float(np.nanmedian(members)) if np.isfinite(members).any() else float("nan"),
                "median_contrast": float(np.median(contrast))}

    def summary(self) -> dict:
        """The points, grid and icons in numbers, the mosaic's quality and the mean icon activation by the
        sign of its cell."""
        return {"type": self.kind(), "feature": self.points.feature.name, "layer": self.points.layer,
                "vector_kind": self.points.vector_kind, "mode": self.points.mode, "images": len(self.points.image_index),
                "points": len(self.points), "grid": int(self.grid.size), "icons": len(self.icons),
                "mean_cosine": float(self.icons.cosine.mean()), **self.quality(), **self.activation_by_sign()}

    def plot(self, path=None, ax=None, **style):
        """The static atlas figure (:func:`plot_atlas`, frames by icon activation); returns the Figure (a PNG
        at ``path`` when given)."""
        from .figures import plot_atlas

        return plot_atlas(self, path, ax, **style)


def _as_config(config) -> AtlasConfig:
    if config is None:
        return AtlasConfig()
    if isinstance(config, dict):
        return AtlasConfig(**config)
    if not isinstance(config, AtlasConfig):
        raise TypeError(f"config must be an AtlasConfig (or a dict of its fields), got {type(config).__name__}")
    return config


def _selection(selection, feature, layer: str, config: AtlasConfig):
    """A scan (``ScanResult`` or the path of one) becomes a :class:`Selection` by ``config``'s criteria."""
    from ..scanning.result import ScanResult

    if isinstance(selection, (ScanResult, str, os.PathLike)):
        return select_images(selection, feature, layer, **config.criteria())
    return selection


def build_atlas(
    model: nn.Module,
    dataset,
    feature,
    layer: str,
    selection: Union[Selection, Sequence[int], "os.PathLike", str, None] = None,
    config: Optional[AtlasConfig] = None,
    render: Optional[RenderSettings] = None,
    settings: Optional[PassSettings] = None,
    checkpoint: Optional[str] = None,
) -> Atlas:
    """Stages 1-5: :func:`select_images` (when ``selection`` is a scan), :func:`collect_vectors`,
    :func:`project_layout`, :func:`grid_cells` and :func:`render_icons`.

    Args:
        model: a prepared model; dataset: the images the vectors come from (see :func:`collect_vectors`).
        feature: the feature explained; layer: the atlas (attribution) layer, run once per forward pass.
        selection: a :class:`Selection`, dataset indices, ``None`` (the whole dataset), or a
            :class:`~lucent_inhibit.scanning.result.ScanResult` (or its file) from which ``config``'s criteria select.
        config: :class:`AtlasConfig` (None: its defaults; a dict of its fields is accepted).
        render: :class:`~lucent_inhibit.RenderSettings` of the icons (None:
            :data:`~lucent_inhibit.core.settings.ICON_RENDER`, 48 steps at lr 0.1; see :func:`render_icons` for
            the icon defaults of size, model size and parameterization).
        settings: the vector pass's :class:`~lucent_inhibit.core.settings.PassSettings` (images per pass,
            input normalisation, progress bars over the vector batches and the icon chunks).
        checkpoint: a folder where the vectors' pass saves its chunks (``collect_vectors(checkpoint=...)``): a
            rerun after an interruption resumes there.

    Returns:
        :class:`Atlas`. ``config.kind="activation"`` builds the activation atlas.
    """
    config = _as_config(config)
    passes = as_pass_settings(settings)
    render = ICON_RENDER if render is None else as_settings(render)
    render = render.replace(progress=render.progress or passes.progress)
    selection = _selection(selection, feature, layer, config)
    points = collect_vectors(model, dataset, feature, layer, selection, kind=config.kind, mode=config.mode,
                             crop=config.crop, thumbnail_size=config.thumbnail_size, method=config.method,
                             memory_budget=config.memory_budget, settings=passes, checkpoint=checkpoint)
    layout = project_layout(points, config.n_neighbors, config.min_dist, config.pca, tuple(config.clip),
                            seed=config.umap_seed)
    grid = grid_cells(points, layout, config.grid_size, config.min_points)
    icons = render_icons(model, points, grid, render, config.icon_batch_size, config.power, config.icon_target,
                         config.crop_size, config.zoom_crops)
    return Atlas(points, layout, grid, icons, member_cosines(model, dataset, points, grid, config.icon_target))
