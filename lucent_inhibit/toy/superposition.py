"""The superposition figure of Hamblin et al. 2024 (final section): the MTI motif from interference in a
trained superposed toy model beside the same motif from genuine inhibition in a hand-built model."""
from __future__ import annotations

from typing import Optional, Tuple

from .analysis import ToyAnalysis, analyze_toy, inhibition_model
from .figures import draw_superposition
from .model import ToyModel


def plot_superposition(
    superposed: ToyModel,
    inhibitory: Optional[ToyModel] = None,
    path: Optional[str] = None,
    analyses: Optional[Tuple[ToyAnalysis, ToyAnalysis]] = None,
    count: int = 256,
):
    """Interference vs inhibition: the same MTI motif from two different causes.

    One row per model (the trained superposed model; the hand-built inhibition model,
    :func:`inhibition_model` with the same ``n`` unless given). Columns: (1) the hidden weights
    (m x inputs), showing shared units; (2) P against N for every output on one-feature (circles) and
    two-feature (triangles) inputs, coloured by the output's pre-activation on a diverging map centred
    at 0; (3) the hidden-unit contributions for the most tense two-feature input, excitatory in red,
    inhibitory in blue, with their total. ``analyses`` (one :class:`ToyAnalysis` per model) are
    computed with :func:`analyze_toy` on ``count`` inputs of each kind when not given.

    Returns the matplotlib Figure; saves a PNG to ``path`` if given.
    """
    if inhibitory is None:
        inhibitory = inhibition_model(superposed.config.n, superposed.config.decay, superposed.config.S)
    models = [superposed, inhibitory]
    if analyses is None:
        analyses = tuple(analyze_toy(m, count=count) for m in models)
    titles = ["superposed (trained): interference", "hand-built: genuine inhibition"]
    return draw_superposition(models, analyses, titles, path)
