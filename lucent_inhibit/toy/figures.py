"""Figures of the toy models (matplotlib, Agg backend, PNG): red = excitation, blue = inhibition.

:func:`plot_superposition` is the figure of Hamblin et al. 2024 (final section): the same MTI motif from
interference (a trained superposed model) and from genuine inhibition (:func:`inhibition_model`). The
other functions draw one result each (:meth:`ToySnapshot.plot`, :meth:`TrainResult.plot`,
:meth:`ToyAnalysis.plot`) from the same panels.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..core.figures import finish, no_ax, pyplot


def _draw_weights(fig, ax, weight: torch.Tensor, xlabel: str, ylabel: str, title: str) -> None:
    """A weight matrix as a diverging heatmap centred at 0."""
    w = weight.detach().cpu()
    lim = float(w.abs().max()) or 1.0
    im = ax.imshow(w.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)


def _hidden_xlabel(c) -> str:
    return "input" + (" (pairs: 2i, 2i+1)" if c.kind == "xor" else "")


def _draw_pn(fig, ax, an) -> None:
    """P against N for every output on one-feature (circles) and two-feature (triangles) inputs, coloured
    by the output's pre-activation on a diverging map centred at 0."""
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.lines import Line2D

    acts = torch.cat([an.act_one.flatten(), an.act_two.flatten()])
    vmax = float(acts.abs().max()) or 1.0
    norm = TwoSlopeNorm(0.0, -vmax, vmax)
    sc = None
    groups = ((an.P_one, an.N_one, an.act_one, "o", 10), (an.P_two, an.N_two, an.act_two, "^", 14))
    for P, N, act, marker, size in groups:
        sc = ax.scatter(P.flatten(), N.flatten(), c=act.flatten(), cmap="RdBu_r", norm=norm, marker=marker, s=size,
                        alpha=0.7, edgecolors="none")
    top = float(max(an.P_two.max(), an.N_two.max(), an.P_one.max(), an.N_one.max())) * 1.05 or 1.0
    ax.plot([0, top], [0, top], color="grey", lw=0.8, ls="--")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("P (excitatory attribution)")
    ax.set_ylabel("N (inhibitory attribution)")
    ax.set_title("every output on 1- and 2-feature inputs")
    handles = [
        Line2D([], [], marker=mk, ls="", color="dimgrey", label=f"{what} (mean tension {t:.3f})")
        for mk, what, t in (("o", "one feature", an.mean_tension_one), ("^", "two features", an.mean_tension_two))
    ]
    ax.legend(handles=handles, loc="upper left", fontsize=8)
    fig.colorbar(sc, ax=ax, fraction=0.046, label="output pre-activation")


def _draw_most_tense(ax, an) -> None:
    """The hidden-unit contributions for the most tense two-feature input: excitatory red, inhibitory blue."""
    b, i = an.most_tense()
    s = an.scores_two[b, i]
    colors = ["#c0392b" if v > 0 else "#2c6fbb" for v in s.tolist()]
    ax.bar(np.arange(len(s)), s.numpy(), color=colors)
    ax.axhline(0, color="black", lw=0.8)
    feats = torch.nonzero(an.active_two[b]).flatten().tolist()
    ax.set_xlabel("hidden unit")
    ax.set_ylabel(f"contribution to output {i}")
    target = an.target(b, i)
    ax.set_title(
        f"most tense 2-feature input {feats}, output {i} (target {target:.2f})\n"
        f"P={float(an.P_two[b, i]):.2f}  N={float(an.N_two[b, i]):.2f}  "
        f"sum={float(s.sum()):.2f}  pre-act.={float(an.act_two[b, i]):.2f}",
        fontsize=9,
    )


def draw_superposition(models: Sequence, analyses: Sequence, titles: Sequence[str], path=None, suptitle: str = ""):
    """One row per toy model: its hidden weights (m x inputs), P against N for every output on one- and
    two-feature inputs, and the hidden-unit contributions of its most tense two-feature input (see
    :func:`lucent_inhibit.toy.plot_superposition`). Returns the Figure; a PNG at ``path`` when given."""
    fig, axes = pyplot().subplots(len(models), 3, figsize=(15, 4.25 * len(models)), squeeze=False)
    for row, (model, an, title) in enumerate(zip(models, analyses, titles)):
        c = model.config
        _draw_weights(fig, axes[row, 0], model.hidden.weight, _hidden_xlabel(c), "hidden unit",
                      f"{title}\n{c.kind}: n={c.n}, m={c.m}; hidden weights")
        _draw_pn(fig, axes[row, 1], an)
        _draw_most_tense(axes[row, 2], an)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    return finish(fig, path)


def _draw_model(fig, axes, model) -> None:
    c = model.config
    _draw_weights(fig, axes[0], model.hidden.weight, _hidden_xlabel(c), "hidden unit",
                  f"{c.kind}: n={c.n}, m={c.m}; hidden weights")
    _draw_weights(fig, axes[1], model.out.weight, "hidden unit", "output", "output weights")


def plot_weights(model, path=None, ax=None):
    """A toy model's hidden (m x inputs) and output (n x m) weights as heatmaps (two panels: no ``ax``);
    returns the Figure, a PNG at ``path`` when given."""
    no_ax(ax, "plot_weights")
    fig, axes = pyplot().subplots(1, 2, figsize=(10, 4))
    _draw_model(fig, axes, model)
    fig.tight_layout()
    return finish(fig, path)


def plot_training(result, path=None, ax=None):
    """A :class:`TrainResult`: evaluation loss per kept seed (the best in red) against the all-zero
    predictor's loss (dashed), and the best model's weights (three panels: no ``ax``); returns the Figure,
    a PNG at ``path`` when given."""
    no_ax(ax, "plot_training")
    fig, axes = pyplot().subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    colors = ["#c0392b" if s == result.best_seed else "0.6" for s in result.seeds]
    ax.bar([str(s) for s in result.seeds], result.losses, color=colors)
    ax.axhline(result.zero_loss, color="black", lw=1, ls="--", label="all-zero predictor")
    ax.set_xlabel("seed" + (f" ({len(result.diverged)} diverged, discarded)" if result.diverged else ""))
    ax.set_ylabel("importance-weighted loss")
    ax.set_title(f"{result.steps} steps, batch {result.batch_size}, lr {result.lr:g}")
    ax.legend(fontsize=8)
    _draw_model(fig, axes[1:], result.model)
    fig.tight_layout()
    return finish(fig, path)


def plot_analysis(an, path=None, ax=None):
    """A :class:`ToyAnalysis`: P against N for every output and input, and the most tense two-feature
    input's hidden-unit contributions (two panels: no ``ax``); returns the Figure, a PNG at ``path`` when
    given."""
    no_ax(ax, "plot_analysis")
    fig, axes = pyplot().subplots(1, 2, figsize=(11, 4.5))
    _draw_pn(fig, axes[0], an)
    _draw_most_tense(axes[1], an)
    fig.tight_layout()
    return finish(fig, path)
