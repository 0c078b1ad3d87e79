"""The census figure: a layer's units ranked by how much inhibition shapes them (Hamblin et al. 2024)."""
from __future__ import annotations

import os

import numpy as np


def plot_census(census, path, layer=None, label_top: int = 10) -> str:
    """Two panels over the features in the order of :meth:`~lucent_inhibit.census.Census.ranking`: the share
    of inhibition ``N / (P + N)`` (bars; the ``label_top`` most inhibited labelled with their unit) and the
    median and 90th percentile of each feature's tension (percentile ranks, 0-100; omitted for a census
    under 10 images). Writes a PNG at ``path`` and returns it."""
    from ..attribution.totals import MIN_PERCENTILE_IMAGES
    from ..core.figures import close, pyplot, save_figure

    plt = pyplot()
    order = census.ranking(layer)
    share = census.share(layer)[order]
    ranks = np.arange(order.size)
    fig, axes = plt.subplots(2, 1, figsize=(max(6.0, min(16.0, 0.08 * order.size + 4)), 6), sharex=True)
    axes[0].bar(ranks, share, width=0.9, color="tab:blue")
    axes[0].set_ylabel("share of inhibition N/(P+N)")
    axes[0].set_ylim(0, 1)
    layer_name = census.layers[census._layer(layer)]
    axes[0].set_title(f"{len(census.features)} features by inhibition at {layer_name} ({len(census)} images)")
    for r, j in enumerate(order[:label_top]):
        f = census.features[j]
        axes[0].annotate(str(f.unit if f.unit is not None else j), (r, share[r]), ha="center", va="bottom",
                         fontsize=7)
    if len(census) >= MIN_PERCENTILE_IMAGES:
        q = census.tension_quantiles((50.0, 90.0), layer)[order]
        axes[1].plot(ranks, q[:, 0], ".", color="tab:purple", label="median tension")
        axes[1].plot(ranks, q[:, 1], ".", color="tab:red", label="90th percentile")
        axes[1].set_ylim(0, 100)
        axes[1].legend(loc="lower left", fontsize=8)
    else:
        axes[1].text(0.5, 0.5, f"tension needs >= {MIN_PERCENTILE_IMAGES} images", ha="center",
                     transform=axes[1].transAxes)
    axes[1].set_ylabel("tension (percentile rank)")
    axes[1].set_xlabel("features, most inhibited first")
    fig.tight_layout()
    path = os.fspath(path)
    close(save_figure(fig, path))
    return path
