"""Figures of attribution: completeness against depth (Hamblin et al. 2024, Figure 3) and the P / N totals
of one :class:`~lucent_inhibit.attribution.attribute.Attribution` per layer (matplotlib, PNG)."""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from ..core.figures import finish, new_axes
from ..core.results import expect_result


def _merge_orders(orders: List[List[str]]) -> List[str]:
    """One layer order containing every list of ``orders``, each kept in its own order."""
    merged: List[str] = list(orders[0])
    for order in orders[1:]:
        prev = None
        for l in order:
            if l not in merged:
                merged.insert(0 if prev is None else merged.index(prev) + 1, l)
            prev = l
    return merged


def plot_completeness(result, path=None, ax=None, compare=None, title: Optional[str] = None):
    """Figure: Pearson r between feature and total attribution against layer depth (paper's Figure 3).

    ``result`` is a :class:`~lucent_inhibit.attribution.completeness.CompletenessResult`. One thin line per feature,
    the mean over features in bold; ``compare`` (another result or a list, e.g. the integrated-gradients
    result for some of the same features) is drawn on the same axes in another colour. x: layers in
    forward order, labelled. Returns the matplotlib Figure, written as a PNG at ``path`` when given; ``ax``:
    draw into that Axes.
    """
    results = [result] + ([] if compare is None else list(compare) if isinstance(compare, (list, tuple)) else [compare])
    for i, res in enumerate(results):
        expect_result(res, "CompletenessResult", "lucent_inhibit.completeness", "result" if i == 0 else "compare")
    xs = _merge_orders([r.layers for r in results])
    colours = ["tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange"]
    fig, ax, own = new_axes(ax, (max(6.0, 0.45 * len(xs) + 2), 4.2))
    for k, res in enumerate(results):
        c = colours[k % len(colours)]
        pos = [xs.index(l) for l in res.layers]
        for i in range(res.r.shape[0]):
            ax.plot(pos, res.r[i], color=c, lw=0.6, alpha=0.35)
        label = res.method.replace("_", " ") + (f" ({res.steps} steps)" if res.steps else "")
        ax.plot(pos, res.mean_r(), color=c, lw=2.5, marker="o", ms=4, label=f"{label}: mean of {res.r.shape[0]} feature(s)")
        short = ~res.adds_up().all(0)  # layers where E does not add up to f for some feature, whatever r says
        if short.any():
            ax.scatter(np.asarray(pos)[short], res.mean_r()[short], marker="X", s=90, color="black", zorder=5,
                       label="E does not add up to f (slope / share of f off)" if k == 0 else None)
    ax.axhline(1, color="grey", lw=0.5, ls=":")
    ax.set_xticks(range(len(xs)))
    ax.set_xticklabels(xs, rotation=60, ha="right", fontsize=8)
    ax.set_xlabel("attribution layer (forward order)")
    ax.set_ylabel("Pearson r(f, E)")
    ax.set_ylim(min(-0.2, float(np.nanmin([np.nanmin(r.r) for r in results] + [0])) - 0.05), 1.05)
    ax.set_title(title or f"Completeness of attribution over {result.n_images} images ({result.model})", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    if own:
        fig.tight_layout()
    return finish(fig, path, own, dpi=120)


def plot_attribution_totals(attribution, path=None, ax=None):
    """Mean excitatory (P) and inhibitory (N) attribution totals per layer of an
    :class:`~lucent_inhibit.attribution.attribute.Attribution`, with the mean activation as a line. Returns the
    Figure (a PNG at ``path`` when given; ``ax``: draw into that Axes)."""
    layers = expect_result(attribution, "Attribution", "lucent_inhibit.attribute", "attribution").layers
    p = [float(attribution.positive(l).mean()) for l in layers]
    n = [float(attribution.negative(l).mean()) for l in layers]
    fig, ax, own = new_axes(ax, (max(4.0, 1.2 * len(layers)), 3.2))
    xs = np.arange(len(layers))
    ax.bar(xs - 0.2, p, 0.4, color="#c0392b", label="P (excitatory)")
    ax.bar(xs + 0.2, n, 0.4, color="#2e6fbd", label="N (inhibitory)")
    ax.axhline(float(attribution.activation.float().mean()), color="k", lw=1, ls="--", label="mean f")
    ax.set_xticks(xs, layers, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("mean total attribution")
    ax.set_title(attribution.feature.name, fontsize=9)
    ax.legend(fontsize=7)
    if own:
        fig.tight_layout()
    return finish(fig, path, own)
