"""The feature-combination figure of paper 004 (Hamblin, Alvarez & Konkle; SPEC 2.7).

Axes in scaled units, the best point per angle, the best images around them, the dataset's grey cloud
and the red loop of the mean cosdot C per angle: a collapse of the loop in a quadrant marks a
combination of the two features that the model cannot represent.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch

from ..core.features import position_name
from ..core.figures import finish, mark_still, new_axes, no_ax, pyplot
from ..core.results import expect_result
from ..core.validate import check_int


def plot_combinations(
    result,
    path=None,
    ax=None,
    cloud=None,
    image_every: int = 2,
    image_zoom: Optional[float] = None,
    title: Optional[str] = None,
    figsize: Tuple[float, float] = (9, 9),
):
    """The feature-combination figure of paper 004.

    Axes in scaled units (the tip of each axis, at 1, is the feature's own unconstrained maximum); the best
    point ``y*_theta`` over seeds for each angle (coloured by angle); the best image of every
    ``image_every``-th angle, placed just beyond its point on the ray from the origin (hatched when that
    render did not move); the dataset's activations as a grey cloud (``cloud``: (N, 2) raw values, e.g.
    :meth:`PairStatistics.values` or :func:`pair_cloud`, scaled here by ``result.scale``); and the red closed
    loop at polar coordinates ``(mean C over seeds, theta)`` centred at the origin (negative means drawn at
    radius 0).

    Returns the matplotlib Figure (``figsize`` inches); writes a PNG when ``path`` is given; ``ax``: draw
    into that Axes.
    """
    expect_result(result, "CombinationResult", "lucent_inhibit.sweep_combinations or load_result")
    image_every = check_int("image_every", image_every, low=1)
    cloud = _scaled_cloud(cloud, result.scale)
    best = result.best.numpy()
    theta = result.theta.numpy().astype(np.float64)
    radius = np.clip(result.mean_score.numpy(), 0, None)
    loop = np.stack([radius * np.cos(theta), radius * np.sin(theta)], 1)
    extent = [1.0, float(np.abs(best).max()), float(np.abs(loop).max())]

    fig, ax, own = new_axes(ax, figsize)
    if cloud is not None:
        ax.scatter(cloud[:, 0], cloud[:, 1], s=6, c="0.6", alpha=0.5, lw=0, label=f"dataset ({len(cloud)})",
                   zorder=1)
        extent.append(float(np.percentile(np.abs(cloud), 99.5)))
    _draw_axes(ax, result)
    closed = np.concatenate([loop, loop[:1]])
    ax.plot(closed[:, 0], closed[:, 1], "-", color="red", lw=2, zorder=4, label="mean C over seeds")
    ax.scatter(best[:, 0], best[:, 1], c=theta, cmap="hsv", vmin=0, vmax=2 * np.pi, s=28, edgecolor="k", lw=0.4,
               zorder=5, label="best y* per angle")
    lim, still = _draw_images(fig, ax, result, best, theta, 1.35 * max(extent), image_every, image_zoom)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    handles, _ = ax.get_legend_handles_labels()
    if still:
        from matplotlib.patches import Patch

        handles.append(Patch(facecolor="white", edgecolor="0.15", hatch="////",
                             label=f"hatched: render did not move ({still})"))
    ax.legend(handles=handles, loc="lower left", fontsize=8, framealpha=0.8)
    q = result.quadrant_scores()
    ax.set_title(title or (f"{result.n_angles} angles x {result.n_seeds} seeds, p={result.power:g}; mean C by "
                           f"quadrant ++ {q['++']:.2f}  -+ {q['-+']:.2f}  -- {q['--']:.2f}  +- {q['+-']:.2f}"),
                 fontsize=9)
    if own:
        fig.tight_layout()
    return finish(fig, path, own, dpi=fig.dpi)


def _scaled_cloud(cloud, scale) -> Optional[np.ndarray]:
    """The dataset cloud (N, 2) raw values in axis units, or None; ``ValueError`` for another shape."""
    if cloud is None:
        return None
    c = np.asarray(torch.as_tensor(cloud, dtype=torch.float32))
    if c.ndim != 2 or c.shape[1] != 2:
        raise ValueError(f"cloud must be (N, 2) raw feature values, got shape {c.shape}")
    return c / np.asarray(scale, dtype=np.float32)


def _draw_axes(ax, result) -> None:
    """The two feature axes with their tips at 1 (each feature's own maximum), labelled with the scales."""
    ax.axhline(0, color="k", lw=0.8, zorder=2)
    ax.axvline(0, color="k", lw=0.8, zorder=2)
    ax.plot([1, 0], [0, 1], "o", color="k", ms=5, ls="none", zorder=3)
    ax.annotate("", xy=(1, 0), xytext=(0, 0), arrowprops=dict(arrowstyle="->", lw=1.6), zorder=3)
    ax.annotate("", xy=(0, 1), xytext=(0, 0), arrowprops=dict(arrowstyle="->", lw=1.6), zorder=3)
    ax.set_xlabel(f"{result.feature_a.name}  / {result.scale[0]:.3g}")
    ax.set_ylabel(f"{result.feature_b.name}  / {result.scale[1]:.3g}")


def _draw_images(fig, ax, result, best, theta, lim, image_every, image_zoom) -> Tuple[float, int]:
    """Place every ``image_every``-th angle's best image just beyond its point (hatched when the render did
    not move); returns the axis limit and how many placed images did not move."""
    plt = pyplot()
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    n_img = len(range(0, result.n_angles, image_every))
    zoom = image_zoom
    if zoom is None:
        side_px = result.images.shape[-1]
        width_in = fig.get_size_inches()[0] * ax.get_position().width / 0.775  # the figure's width for own axes
        target_px = fig.dpi * width_in * min(0.075, 1.1 / max(n_img, 1))  # ~ a ring of images without overlap
        zoom = target_px / side_px
    moved = getattr(result, "moved", None)
    still = 0
    for k in range(0, result.n_angles, image_every):
        p = best[k]
        r = float(np.hypot(*p))
        u = p / r if r > 0.05 * lim else np.array([math.cos(theta[k]), math.sin(theta[k])])
        pos = p + u * 0.16 * lim
        img = result.images[k].permute(1, 2, 0).clamp(0, 1).numpy()
        if moved is not None and not bool(moved[k]):
            img, still = hatched(img), still + 1
        ab = AnnotationBbox(OffsetImage(img, zoom=zoom), pos, frameon=True, pad=0.1,
                            bboxprops=dict(edgecolor=plt.cm.hsv(theta[k] / (2 * np.pi)), lw=1.2), zorder=6)
        ax.add_artist(ab)
        lim = max(lim, float(np.abs(pos).max()) * 1.12)
    return lim, still


def hatched(image: np.ndarray, period: int = 6) -> np.ndarray:
    """(H, W, 3) ``image`` with dark diagonal stripes every ``period`` pixels: the mark of a render that
    did not move where a panel is too small for words."""
    h, w = image.shape[:2]
    stripe = ((np.arange(h)[:, None] + np.arange(w)[None, :]) % period) < max(1, period // 3)
    out = image.copy()
    out[stripe] = 0.15
    return out


def plot_pair_statistics(result, path=None, ax=None):
    """The (C, C) correlation matrix; returns the Figure (a PNG at ``path`` when given; ``ax``: draw into
    that Axes)."""
    fig, ax, own = new_axes(ax, (6, 5))
    im = ax.imshow(result.correlation.numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    fig.colorbar(im, ax=ax, label="Pearson r")
    ax.set_title(f"{result.layer} @ {position_name(result.position)}: unit correlations over "
                 f"{result.activations.shape[0]} images", fontsize=9)
    ax.set_xlabel("unit")
    ax.set_ylabel("unit")
    if own:
        fig.tight_layout()
    return finish(fig, path, own)


def plot_axis_scales(result, path=None, ax=None):
    """The two features' own visualizations side by side (two panels: no ``ax``; hatched when a render did
    not move), titled with their scales; returns the Figure (a PNG at ``path`` when given)."""
    no_ax(ax, "plot_axis_scales")
    fig, axes = pyplot().subplots(1, 2, figsize=(6, 3.4))
    moved = getattr(result, "moved", None)
    for i, (ax, img, s, name) in enumerate(zip(axes, result.images, result.scale, result.summary()["features"])):
        ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_title(f"{name}\nscale {s:.4g}", fontsize=8)
        ax.axis("off")
        if moved is not None and not bool(moved[i]):
            mark_still(ax)
    fig.tight_layout()
    return finish(fig, path)
