"""Superposition (Hamblin et al. 2024, last section): the rule on a toy model's tension on two- against one-feature inputs.

Each claim is one sentence of the papers; each function computes the :class:`~lucent_inhibit.findings.verdicts.Finding`
(the number measured and a verdict by a bar named as a module constant) from numbers a result holds.
"""
from __future__ import annotations

import math

from .verdicts import Finding

#: The interference motif: the toy model's mean tension on two-feature inputs is at least this many times its
#: mean tension on one-feature inputs, in a model that is in superposition (more features represented than
#: m // 2, the number its m hidden units fit without sharing).
MIN_TENSION_RATIO = 2.0


INTERFERENCE_CLAIM = ("In superposition, interference alone produces the MTI motif: inputs with two active features "
                      "give large excitation and inhibition that cancel, with no inhibition mechanism (Hamblin et al., "
                      "paper 000, last section)")


def interference_finding(n_represented: int, m: int, tension_one: float, tension_two: float):
    """The :class:`~lucent_inhibit.findings.verdicts.Finding` of the interference motif from the number of features the
    toy model represents, its hidden units ``m`` and its mean tension min(P, N) on one- and two-feature
    inputs: reproduced when ``n_represented > m // 2`` (superposition) and ``tension_two`` is positive and at
    least :data:`MIN_TENSION_RATIO` times ``tension_one``."""

    measured = (f"{n_represented} features represented by {m} hidden units; mean tension one-feature inputs "
                f"{tension_one:.3g}, two-feature inputs {tension_two:.3g}")
    if not (math.isfinite(tension_one) and math.isfinite(tension_two)):
        return Finding.judge(INTERFERENCE_CLAIM, measured, None, "the tension was not finite")
    problems = []
    if n_represented <= m // 2:
        problems.append(f"no superposition: {n_represented} features represented, not more than the {m // 2} that "
                        f"{m} units fit without sharing; train longer or over more seeds")
    if not (tension_two > 0 and tension_two >= MIN_TENSION_RATIO * tension_one):
        problems.append(f"two-feature inputs are not tense enough (bar: >= {MIN_TENSION_RATIO:g} x one-feature)")
    why = (f"bar: superposition (> {m // 2} features) and two-feature tension >= {MIN_TENSION_RATIO:g} x one-feature")
    return Finding.judge(INTERFERENCE_CLAIM, measured, not problems, "; ".join(problems) or why)


def toy_finding(analysis) -> Finding:
    """:func:`interference_finding` of a :class:`~lucent_inhibit.ToyAnalysis` of the trained toy model."""
    m = int(analysis.config["m"])
    return interference_finding(int(analysis.represented.sum()), m, analysis.mean_tension_one,
                                analysis.mean_tension_two)
