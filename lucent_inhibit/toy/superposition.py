"""The superposition figure of Hamblin et al. 2024 (final section): the MTI motif from interference in a
trained superposed toy model, the same inputs through its control without superposition (no motif), and the
same motif from genuine inhibition in a hand-built model."""
from __future__ import annotations

from typing import Optional, Tuple

from ..core.figures import no_ax
from .analysis import ToyAnalysis, analyze_toy, inhibition_model
from .control import separated_model
from .figures import draw_superposition
from .model import ToyModel


def plot_superposition(
    superposed: ToyModel,
    path=None,
    ax=None,
    inhibitory: Optional[ToyModel] = None,
    analyses: Optional[Tuple[ToyAnalysis, ...]] = None,
    count: int = 256,
    control: bool = True,
):
    """Interference vs inhibition: the same MTI motif from two different causes.

    One row per model: the trained superposed model; when ``control`` (kinds ``abs`` and ``xor``), its control,
    the task's exact solution without superposition (:func:`~lucent_inhibit.toy.control.separated_model`),
    where the motif should vanish; the hand-built inhibition model (:func:`inhibition_model` with the same
    ``n`` unless given). Columns: (1) the hidden weights
    (m x inputs), showing shared units; (2) P against N for every output on one-feature (circles) and
    two-feature (triangles) inputs, coloured by the output's pre-activation on a diverging map centred
    at 0; (3) the hidden-unit contributions for the most tense two-feature input, excitatory in red,
    inhibitory in blue, with their total. ``analyses`` (one :class:`ToyAnalysis` per model) are
    computed with :func:`analyze_toy` on ``count`` inputs of each kind when not given (in the rows' order).

    Returns the matplotlib Figure; saves a PNG to ``path`` if given (a grid of panels: no ``ax``).
    """
    no_ax(ax, "plot_superposition")
    if inhibitory is None:
        inhibitory = inhibition_model(superposed.config.n, superposed.config.decay, superposed.config.S)
    with_control = control and superposed.config.kind in ("abs", "xor")
    models = [superposed] + ([separated_model(superposed.config)] if with_control else []) + [inhibitory]
    if analyses is None:
        analyses = tuple(analyze_toy(m, count=count, control=False) for m in models)
    if len(analyses) != len(models):
        raise ValueError(f"analyses must hold one ToyAnalysis per row ({len(models)}: superposed"
                         f"{', control' if with_control else ''}, inhibition), got {len(analyses)}")
    titles = (["superposed (trained): interference"] + (["control: enough units, no superposition"] if with_control
              else []) + ["hand-built: genuine inhibition"])
    suptitle = ("Two active features give the MTI motif (large + and - attributions cancelling) through interference "
                "in superposition" + (", not in the control without it," if with_control else "")
                + " and through designed inhibition")
    return draw_superposition(models, analyses, titles, path, suptitle=suptitle)
