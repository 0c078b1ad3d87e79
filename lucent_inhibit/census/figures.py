"""The census figure: a layer's units ranked by how much inhibition shapes them (Hamblin et al. 2024)."""
from __future__ import annotations

import numpy as np


def plot_census(census, path=None, ax=None, layer=None, label_top: int = 10):
    """Two panels over the features in the order of :meth:`~lucent_inhibit.census.Census.ranking`: the share
    of inhibition ``N / (P + N)`` (bars; the ``label_top`` most inhibited named in the title and labelled
    with their unit upright above their bars, thinned where labels would run together) and the median and
    90th percentile of each feature's tension (percentile ranks, 0-100; omitted for a census under 10
    images). Returns the Figure (a PNG at ``path`` when given); two panels: no ``ax``."""
    from ..attribution.totals import MIN_PERCENTILE_IMAGES
    from ..core.figures import finish, no_ax, place_labels, pyplot

    no_ax(ax, "plot_census")
    order = census.ranking(layer)
    share = census.share(layer)[order]
    ranks = np.arange(order.size)
    fig, axes = pyplot().subplots(2, 1, figsize=(max(6.0, min(16.0, 0.08 * order.size + 4)), 6), sharex=True)
    axes[0].bar(ranks, share, width=0.9, color="tab:blue")
    axes[0].set_ylabel("share of inhibition\nN/(P+N)")
    axes[0].set_ylim(0, 1.25)  # room above the bars for the unit labels
    axes[0].set_yticks(np.linspace(0, 1, 6))
    layer_name = census.layers[census._layer(layer)]
    names = [_unit_name(census, j) for j in order[:label_top]]
    axes[0].set_title(f"{len(census.features)} features by inhibition at {layer_name} ({len(census)} images)"
                      + (f"\nmost inhibited units: {', '.join(names)}" if names else ""), fontsize=10)
    if len(census) >= MIN_PERCENTILE_IMAGES:
        q = census.tension_quantiles((50.0, 90.0), layer)[order]
        axes[1].plot(ranks, q[:, 0], ".", color="tab:purple", label="median tension")
        axes[1].plot(ranks, q[:, 1], ".", color="tab:red", label="90th percentile")
        axes[1].set_ylim(0, 100)
        axes[1].legend(loc="lower left", fontsize=8)
    else:
        axes[1].text(0.5, 0.5, f"tension needs >= {MIN_PERCENTILE_IMAGES} images", ha="center",
                     transform=axes[1].transAxes)
    axes[1].set_ylabel("tension\n(percentile rank)")
    axes[1].set_xlabel("features, most inhibited first")
    fig.tight_layout()
    if names:  # upright above their bars, the ones that fit (neighbours' labels would run together)
        place_labels(axes[0], np.stack([np.arange(len(names)), share[:len(names)]], 1), names, fontsize=7,
                     offsets=((0, 2, "center", "bottom"),), rotation=90)
    return finish(fig, path)


def _unit_name(census, j: int) -> str:
    """The unit of feature ``j`` of the census (its index among the features when it has none)."""
    unit = census.features[j].unit
    return str(unit if unit is not None else j)
