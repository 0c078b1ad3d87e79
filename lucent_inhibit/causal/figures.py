"""Figures of the causal test of MTIs and of the inhibitor dictionary (matplotlib, PNG).
"""
from __future__ import annotations

import numpy as np

from ..core.figures import close, pyplot, save_figure, to_hwc


# ------------------------------------------------------------------------------------------------
# figures
# ------------------------------------------------------------------------------------------------
def plot_inhibitors(result, path: str) -> str:
    """One row per channel: its visualization (when rendered), its top dataset images, its share of the
    MTIs' N and the causal change in f when it alone is removed (PNG at ``path``)."""
    plt = pyplot()
    m, t = result.top_images.shape
    has_vis = result.visualizations.dim() == 4
    cols = t + int(has_vis)
    fig, axes = plt.subplots(m, cols, figsize=(1.6 * cols + 1.6, 1.7 * m), squeeze=False)
    for r in range(m):
        if has_vis:
            axes[r, 0].imshow(to_hwc(result.visualizations[r]))
            axes[r, 0].set_title("render" if r == 0 else "", fontsize=7)
        for j in range(t):
            axes[r, j + int(has_vis)].imshow(result.thumbnails[r, j].transpose(1, 2, 0))
            axes[r, j + int(has_vis)].set_title(f"#{int(result.top_images[r, j])}", fontsize=6)
        axes[r, 0].set_ylabel(f"ch {int(result.channels[r])}\nshare {100 * result.share[r]:.1f}%\n"
                              f"delta f {result.delta[r]:+.3g}", fontsize=7, rotation=0, ha="right", va="center")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    rm = result.removal
    fig.suptitle(f"Inhibitors of {result.feature.name} at {result.layer} on {result.mtis.size} MTIs (mean f "
                 f"{result.mti_activation.mean():.3g}); removing top {rm.get('n')}: {rm.get('top', float('nan')):+.3g}, "
                 f"random {rm.get('n')}: {rm.get('random_mean', float('nan')):+.3g}", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    close(fig)
    return path


def plot_disinhibition(result, path: str) -> str:
    """Bars per group (MEIs, MIIs, MTIs, random): mean f, mean disinhibited f and mean f + N with standard
    errors; the MEIs' mean f dashed; the verdict in the title (PNG at ``path``)."""
    plt = pyplot()
    groups = [g for g in ("meis", "miis", "mtis", "random") if g in result.indices]
    fig, ax = plt.subplots(figsize=(7.2, 3.8))
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
    fig.tight_layout()
    save_figure(fig, path)
    close(fig)
    return path
