"""Figures of the microscope: the units of its layers by share of inhibition and median tension, and one
unit's P against N over the images (Hamblin et al. 2024, section 2)."""
from __future__ import annotations

import numpy as np


def plot_microscope(scope, path=None, ax=None, label_top: int = 5):
    """One panel: each unit's share of inhibition ``N/(P+N)`` (x, 0-1) against its median tension (y,
    percentile rank 0-100), one colour per feature layer, the ``label_top`` most inhibited named. Returns the
    Figure (a PNG at ``path`` when given); draws into ``ax`` when given."""
    from ..core.figures import finish, new_axes

    fig, ax, own = new_axes(ax, (6, 4.5))
    for i, layer in enumerate(scope.layers):
        cols = np.flatnonzero(scope.layer_index == i)
        ax.scatter(scope.share[cols], scope.median_tension[cols], s=14, label=f"{layer} ({cols.size})", alpha=0.8)
    for j in scope.ranking()[:label_top]:
        ax.annotate(str(scope.features[j].unit), (scope.share[j], scope.median_tension[j]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("share of inhibition N/(P+N)")
    ax.set_ylabel("median tension (percentile rank)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 100)
    ax.set_title(f"{len(scope)} units over {scope.indices.size} images", fontsize=10)
    ax.legend(loc="lower right", fontsize=7)
    return finish(fig, path, own)


def plot_unit(scope, column: int, path=None, ax=None):
    """One panel: P (x) against N (y) of unit ``column`` on every image, its MTIs marked in red and its MEIs
    in orange. Returns the Figure (a PNG at ``path`` when given); draws into ``ax`` when given."""
    from ..core.figures import finish, new_axes

    fig, ax, own = new_axes(ax, (3.6, 3.4))
    p, n = scope.pos[:, column], scope.neg[:, column]
    ax.scatter(p, n, s=6, c="0.6", label="images")
    rows = {int(i): r for r, i in enumerate(scope.indices)}
    for g, colour, name in ((0, "tab:orange", "MEIs"), (2, "tab:red", "MTIs")):
        sel = [rows[int(i)] for i in scope.tops[column, g]]
        ax.scatter(p[sel], n[sel], s=14, c=colour, label=name)
    ax.set_xlabel(f"P at {scope.attr_layer(column)}", fontsize=8)
    ax.set_ylabel("N", fontsize=8)
    ax.set_title(f"{scope.features[column].name}", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, loc="upper left")
    if own:
        fig.tight_layout()
    return finish(fig, path, own)
