"""Figures of the atlas (matplotlib, Agg, PNG): :func:`plot_atlas` (stage 6, the static atlas) and one
small figure per stage result (their ``plot(path)`` methods). Colours: red excites, blue inhibits, on
diverging scales centred at 0 (Hamblin et al. 2024, section 4)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..core.figures import finish, mark_still, new_axes, no_ax, pyplot


def symmetric_limit(values: np.ndarray) -> float:
    m = float(np.max(np.abs(values))) if values.size else 0.0
    return m if m > 0 else 1.0


def _square(ax, title: str) -> None:
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_title(title)


#: What the icon frames can show: the feature's activation measured on the icon (the paper's choice), or
#: the cell's net attribution.
FRAMES = ("activation", "net")


def frame_values(atlas, frame: str = "activation"):
    """``(values (K,), colour-bar label)`` of the icon frames: ``"activation"`` (the feature measured on each
    icon) or ``"net"`` (the mean net attribution of the cell's points)."""
    from ..core.validate import check_choice

    check_choice("frame", frame, FRAMES)
    if frame == "activation":
        return np.asarray(atlas.icons.activation), "feature activation on the icon (red excites, blue inhibits)"
    return np.asarray(atlas.grid.net), "cell net attribution (red excites, blue inhibits)"


def _icon_panel(fig, ax, atlas, tint: float, cmap, frame: str):
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    g = atlas.grid
    values, label = frame_values(atlas, frame)
    norm = Normalize(-symmetric_limit(values), symmetric_limit(values))
    crops = atlas.icons.crops()
    step = 1.0 / g.size
    width = max(0.6, 220.0 / g.size / 6)
    for k in range(len(g)):
        cx, cy = g.cells[k]
        x0, y0 = cx * step, cy * step
        ax.imshow(crops[k], extent=(x0, x0 + step, y0, y0 + step), interpolation="bilinear", zorder=1)
        col = cmap(norm(values[k]))
        if tint > 0:
            ax.add_patch(Rectangle((x0, y0), step, step, facecolor=col, alpha=tint, edgecolor="none", zorder=2))
        ax.add_patch(Rectangle((x0, y0), step, step, facecolor="none", edgecolor=col, linewidth=width, zorder=3))
        if _still(atlas.icons, k):  # hatched, no words: a cell is too small
            mark_still(ax, box=(x0, y0, step, step))
    word = "attribution" if atlas.points.vector_kind == "attribution" else "activation"
    still = sum(_still(atlas.icons, k) for k in range(len(g)))
    _square(ax, f"{word} atlas: {len(g)} icons ({g.size}x{g.size} grid, >= {g.min_points} points per cell)"
            + (f"\n{still} hatched: their render did not move" if still else ""))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_facecolor("#f4f4f4")
    sm = pyplot().cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, fraction=0.046, pad=0.02, label=label)


def _point_panel(fig, ax, atlas, cmap):
    from matplotlib.patches import Rectangle

    g, p = atlas.grid, atlas.points
    act = p.point_activation
    alim = symmetric_limit(act)
    mag = p.magnitude / (p.magnitude.max() if p.magnitude.max() > 0 else 1)
    sc = ax.scatter(atlas.layout.xy[:, 0], atlas.layout.xy[:, 1], c=act, cmap=cmap, vmin=-alim, vmax=alim,
                    s=4 + 60 * mag, alpha=0.75, edgecolors="k", linewidths=0.2)
    step = 1.0 / g.size
    for k in range(len(g)):
        cx, cy = g.cells[k]
        ax.add_patch(Rectangle((cx * step, cy * step), step, step, fill=False, edgecolor="0.7", linewidth=0.4))
    _square(ax, f"{len(p)} points ({p.mode} mode), colour: feature activation, size: |S|")
    fig.colorbar(sc, ax=ax, fraction=0.046, pad=0.02, label="feature activation of the point's image")


def plot_atlas(atlas, path=None, ax=None, title: Optional[str] = None, tint: float = 0.0, dpi: int = 120,
               frame: str = "activation"):
    """Stage 6: the atlas figure.

    Left: every icon's receptive-field crop (:meth:`AtlasIcons.crops`, enlarged) at its cell, framed by
    ``frame`` on a diverging scale centred at 0 (red excitatory, blue inhibitory): ``"activation"`` (the
    feature's activation measured on the icon, as in Hamblin et al. 2024) or ``"net"`` (the cell's net
    attribution); ``tint`` > 0 also overlays the colour at that opacity. Right: the point
    map, each point coloured by its image's feature activation (diverging, centred at 0) and sized by
    its ``|S|_2``. An icon whose render did not move is hatched (counted in the title). Returns the matplotlib Figure; writes a PNG at ``dpi`` when ``path`` is given (two
    panels: no ``ax``).
    """
    no_ax(ax, "plot_atlas")
    plt = pyplot()
    p = atlas.points
    cmap = plt.get_cmap("RdBu_r")
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(18, 8.6), gridspec_kw={"width_ratios": [1.25, 1]})
    _icon_panel(fig, ax, atlas, tint, cmap, frame)
    _point_panel(fig, ax2, atlas, cmap)
    summ = atlas.activation_by_sign()
    word = "attribution" if p.vector_kind == "attribution" else "activation"
    fig.suptitle(title or (
        f"{p.feature.name}, {word} at {p.layer}; icon activation: net+ cells {summ['positive_mean']:.3g} "
        f"(n={summ['n_positive']}), net- cells {summ['negative_mean']:.3g} (n={summ['n_negative']})"), fontsize=10)
    fig.tight_layout()
    return finish(fig, path, dpi=dpi)


# ------------------------------------------------------------------------------------------------
# one figure per stage result
# ------------------------------------------------------------------------------------------------
def plot_selection(selection, path=None, ax=None):
    """Bar chart: images picked by each criterion and the size of their union; returns the Figure."""
    counts = selection.picked_by()
    fig, ax, own = new_axes(ax, (6, 3.2))
    names = list(counts) + ["union"]
    ax.bar(names, list(counts.values()) + [len(selection)], color=["0.55"] * len(counts) + ["tab:purple"])
    ax.set_ylabel("images")
    ax.set_title(f"atlas selection at {selection.layer} ({selection.feature.name})", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    return _done(fig, path, own)


def plot_points(points, path=None, ax=None):
    """Net attribution against ``|S|_2`` per point, coloured by its image's feature activation; returns the
    Figure."""
    act = points.point_activation
    lim = symmetric_limit(act)
    fig, ax, own = new_axes(ax, (5.5, 4.2))
    sc = ax.scatter(points.magnitude, points.net, c=act, cmap="RdBu_r", vmin=-lim, vmax=lim, s=8)
    ax.axhline(0, color="0.6", linewidth=0.6)
    ax.set_xlabel("|S|_2 of the point")
    ax.set_ylabel("net attribution of the point")
    ax.set_title(f"{len(points)} {points.vector_kind} points at {points.layer} ({points.mode} mode)", fontsize=9)
    fig.colorbar(sc, ax=ax, label="feature activation of the point's image")
    return _done(fig, path, own)


def plot_layout(layout, path=None, ax=None):
    """The laid-out points in the unit square; returns the Figure."""
    fig, ax, own = new_axes(ax, (4.5, 4.5))
    ax.scatter(layout.xy[:, 0], layout.xy[:, 1], s=5, color="0.3", alpha=0.7)
    _square(ax, f"UMAP layout: {len(layout)} points, n_neighbors={layout.n_neighbors}")
    return _done(fig, path, own)


def plot_grid(grid, path=None, ax=None):
    """The occupied cells of the grid coloured by net attribution (diverging, centred at 0); returns the
    Figure."""
    m = np.full((grid.size, grid.size), np.nan)
    for k in range(len(grid)):
        m[grid.cells[k, 1], grid.cells[k, 0]] = grid.net[k]
    lim = symmetric_limit(grid.net)
    fig, ax, own = new_axes(ax, (5, 4.2))
    im = ax.imshow(m, origin="lower", extent=(0, 1, 0, 1), cmap="RdBu_r", vmin=-lim, vmax=lim)
    _square(ax, f"{len(grid)} cells with >= {grid.min_points} points ({grid.size}x{grid.size})")
    fig.colorbar(im, ax=ax, label="cell net attribution")
    return _done(fig, path, own)


def plot_icons(icons, path=None, ax=None, columns: int = 8):
    """The icons' receptive-field crops in a montage (no ``ax``), each titled with the feature's activation
    ``f`` and the cosine ``c`` to its target; an icon whose render did not move hatched
    (:func:`~lucent_inhibit.core.figures.mark_still`). Returns the Figure (a PNG at ``path`` when given)."""
    no_ax(ax, "plot_icons")
    n = max(1, len(icons))
    cols = min(columns, n)
    rows = -(-n // cols)
    fig, axes = pyplot().subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    crops = icons.crops()
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < len(icons):
            ax.imshow(crops[k])
            ax.set_title(f"f={icons.activation[k]:.3g} c={icons.cosine[k]:.2f}", fontsize=7)
            if _still(icons, k):
                mark_still(ax)
    return _done(fig, path, True)


def _still(icons, k: int) -> bool:
    """Whether icon ``k``'s render did not move (its ``moved`` field; False when not measured)."""
    moved = getattr(icons, "moved", None)
    return moved is not None and k < len(moved) and not bool(moved[k])


def _done(fig, path, own: bool):
    """Lay out a figure this module made (``own``) and finish it (:func:`~lucent_inhibit.core.figures.finish`)."""
    if own:
        fig.tight_layout()
    return finish(fig, path, own)
