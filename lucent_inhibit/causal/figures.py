"""Figures of the causal test of MTIs, of the inhibitor dictionary and of the model-parameter randomization
cascade (matplotlib, PNG).
"""
from __future__ import annotations

import textwrap

import numpy as np

from ..core.figures import diverging_norm, finish, mark_still, new_axes, no_ax, pyplot, to_hwc
from ..core.motion import still_reason


# ------------------------------------------------------------------------------------------------
# figures
# ------------------------------------------------------------------------------------------------
def plot_inhibitors(result, path=None, ax=None):
    """One row per channel: its visualization (when rendered; a channel that could not be visualized, its
    render flat or its objective not rising, hatched with the reason and the numbers), its top dataset
    images, its share of the MTIs' N and the causal change in f when it alone is removed. Returns the Figure
    (a PNG at ``path`` when given; a grid of panels: no ``ax``)."""
    no_ax(ax, "plot_inhibitors")
    m, t = result.top_images.shape
    has_vis = result.visualizations.dim() == 4
    cols = t + int(has_vis)
    fig, axes = pyplot().subplots(m, cols, figsize=(1.6 * cols + 1.6, 1.7 * m + 0.5), squeeze=False)
    moved, motion = getattr(result, "moved", None), getattr(result, "motion", None)
    for r in range(m):
        if has_vis:
            axes[r, 0].imshow(to_hwc(result.visualizations[r]))
            axes[r, 0].set_title("render" if r == 0 else "", fontsize=7)
            if moved is not None and r < len(moved) and not bool(moved[r]):
                mark_still(axes[r, 0], still_reason(float(motion[r, 0]), float(motion[r, 1])))
        for j in range(t):
            axes[r, j + int(has_vis)].imshow(result.thumbnails[r, j].transpose(1, 2, 0))
            axes[r, j + int(has_vis)].set_title(f"#{int(result.top_images[r, j])}", fontsize=6)
        axes[r, 0].set_ylabel(f"ch {int(result.channels[r])}\nshare {100 * result.share[r]:.1f}%\n"
                              f"delta f {result.delta[r]:+.3g}", fontsize=7, rotation=0, ha="right", va="center")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    rm = result.removal
    title = (f"Inhibitors of {result.feature.name} at {result.layer} on {result.mtis.size} MTIs (mean f "
             f"{result.mti_activation.mean():.3g}); removing top {rm.get('n')}: {rm.get('top', float('nan')):+.3g}, "
             f"random {rm.get('n')}: {rm.get('random_mean', float('nan')):+.3g}")
    fig.suptitle("\n".join(textwrap.wrap(title, int(fig.get_figwidth() * 14))), fontsize=8)
    fig.tight_layout()
    return finish(fig, path)


def plot_disinhibition(result, path=None, ax=None):
    """Bars per group (MEIs, MIIs, MTIs, random): mean f, mean disinhibited f and mean f + N with standard
    errors; the MEIs' mean f dashed; the verdict in the title. Returns the Figure (a PNG at ``path`` when
    given; ``ax``: draw into that Axes)."""
    groups = [g for g in ("meis", "miis", "mtis", "random") if g in result.indices]
    fig, ax, own = new_axes(ax, (7.2, 3.8))
    series = (("f", result.activation, "0.5"), ("disinhibited f", result.disinhibited, "#c0392b"),
              ("f + N (linear)", result.linear, "#e6a19a"))
    xs = np.arange(len(groups))
    for j, (label, values, colour) in enumerate(series):
        mean = [float(values[g].mean()) for g in groups]
        se = [float(values[g].std(ddof=1) / np.sqrt(values[g].size)) if values[g].size > 1 else 0.0 for g in groups]
        ax.bar(xs + (j - 1) * 0.27, mean, 0.27, yerr=se, color=colour, label=label, capsize=2)
    ax.axhline(float(result.activation["meis"].mean()), color="k", ls="--", lw=0.8, label="MEIs' mean f")
    ax.axhline(0, color="0.3", lw=0.5)
    ax.set_xticks(xs, [g.upper()[:-1] + "s" if g != "random" else "random" for g in groups])
    ax.set_ylabel(f"{result.feature.name}")
    ax.set_title(f"Removing inhibition at {result.layer} ({result.baseline} baseline): {result.verdict}\n"
                 f"MTIs' disinhibited f / MEIs' f = {result.ratio:.2f}", fontsize=9)
    ax.legend(fontsize=7)
    if own:
        fig.tight_layout()
    return finish(fig, path, own)


# ------------------------------------------------------------------------------------------------
# the model-parameter randomization test
# ------------------------------------------------------------------------------------------------
#: metric -> colour of the randomization cascade's curves
CASCADE_COLOURS = ("#c0392b", "#2c3e50", "#2980b9", "#8e44ad")


def draw_randomization_curves(result, ax) -> None:
    """The cascade's metrics (``result.curves()``) against its steps on ``ax``: the verdict's bar (0.5) dashed,
    the step that re-initialised the last block between the attribution layer and the feature dotted."""
    xs = np.arange(len(result.steps))
    for (name, values), colour in zip(result.curves().items(), CASCADE_COLOURS):
        ax.plot(xs, values, "o-", color=colour, label=name, lw=1.4, ms=3.5)
    ax.axhline(0.5, color="0.4", ls="--", lw=0.8, label="bar 0.5")
    ax.axhline(0, color="0.7", lw=0.5)
    if result.between >= 0:
        ax.axvline(result.between, color="0.3", ls=":", lw=1.0, label="attribution layer to feature randomised")
    ax.set_xticks(xs, [label.replace(" (", "\n(") for label in result.steps], rotation=60, ha="right", fontsize=6)
    ax.set_ylim(-0.55, 1.05)
    ax.set_ylabel("similarity to the trained model")
    ax.set_xlabel("cumulative re-initialisation, from the feature backwards")
    ax.legend(fontsize=6, loc="lower left")


def plot_randomization(result, path=None, ax=None, n_maps: int = 3):
    """Adebayo et al.'s cascade for the MTIs: one row per top MTI of the trained model (its image, then its
    attribution map at the input, gradient x input summed over colours, at each step; red excitation, blue
    inhibition, each map on its own scale) above the curves of :func:`draw_randomization_curves`. With ``ax``
    only the curves, drawn there. Returns the Figure (a PNG at ``path`` when given)."""
    plt = pyplot()
    if ax is not None:
        draw_randomization_curves(result, ax)
        return finish(ax.figure, path, own=False)
    rows, cols = min(int(n_maps), result.maps.shape[1]), len(result.steps) + 1
    fig = plt.figure(figsize=(max(6.0, 1.05 * cols), 1.15 * rows + 3.4))
    grid = fig.add_gridspec(rows + 1, cols, height_ratios=[1] * rows + [2.6])
    for r in range(rows):
        image = fig.add_subplot(grid[r, 0])
        image.imshow(result.thumbnails[r].transpose(1, 2, 0))
        image.set_ylabel(f"MTI #{int(result.mtis(0)[r])}", fontsize=7)
        axes = [image] + [fig.add_subplot(grid[r, s + 1]) for s in range(len(result.steps))]
        for s, a in enumerate(axes[1:]):
            m = result.maps[s, r]
            a.imshow(m, cmap="RdBu_r", norm=diverging_norm(m))
            if r == 0:
                a.set_title(result.steps[s].replace(" (", "\n("), fontsize=6)
        for a in axes:
            a.set_xticks([])
            a.set_yticks([])
    draw_randomization_curves(result, fig.add_subplot(grid[rows, :]))
    title = (f"Model-parameter randomization of {result.feature.name} attributed at {result.layer} "
             f"({result.indices.size} images, top-{result.k} MTIs)")
    fig.suptitle("\n".join(textwrap.wrap(title, int(fig.get_figwidth() * 13))), fontsize=9)
    fig.tight_layout()
    return finish(fig, path)
