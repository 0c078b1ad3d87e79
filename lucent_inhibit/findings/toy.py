"""Superposition (Hamblin et al. 2024, last section): the rule on a toy model's tension on two- against one-feature inputs.

Each claim is one sentence of the papers; each function computes the :class:`~lucent_inhibit.findings.verdicts.Finding`
(the number measured and a verdict by a bar named as a module constant) from numbers a result holds.
"""
from __future__ import annotations

import math
from typing import Optional

from .verdicts import Finding

#: The interference motif needs co-active features: the superposed model's mean tension on two-feature inputs is
#: above this many times its tension on one-feature inputs. The bar is 1 (more tense, not a fixed multiple):
#: one-feature inputs already carry interference (a feature's shared units feed the outputs of the features
#: they share with), so the baseline without interference is the control below, not the one-feature inputs.
MIN_TENSION_RATIO = 1.0


#: The control: on the same two-feature inputs, the no-superposition model's mean tension is at most this
#: fraction of the superposed model's (the motif must come from the shared units, not from the task).
MAX_CONTROL_FRACTION = 0.5


INTERFERENCE_CLAIM = ("In superposition, interference alone produces the MTI motif: inputs with two active features "
                      "give large excitation and inhibition that cancel, with no inhibition mechanism, and the same "
                      "inputs through a model with enough units for no superposition do not (Hamblin et al., "
                      "paper 000, last section)")


def _control_problem(control: Optional[dict], tension_two: float) -> Optional[str]:
    """Why the control contradicts the claim (None when it supports it); raises nothing."""
    if control["shared_units"] > 0:
        return (f"the control shares {control['shared_units']} hidden units between features: it is not free of "
                f"superposition")
    if not control["mean_tension_two"] <= MAX_CONTROL_FRACTION * tension_two:
        return (f"the control without superposition is as tense on two-feature inputs ({control['mean_tension_two']:.3g}"
                f" > {MAX_CONTROL_FRACTION:g} x {tension_two:.3g}): the motif does not need shared units")
    return None


def interference_finding(n_represented: int, m: int, tension_one: float, tension_two: float,
                         control: Optional[dict] = None):
    """The :class:`~lucent_inhibit.findings.verdicts.Finding` of the interference motif from the number of features the
    toy model represents, its hidden units ``m``, its mean tension min(P, N) on one- and two-feature inputs and
    its ``control`` (:attr:`lucent_inhibit.toy.ToyAnalysis.control`: the same inputs through the task's exact
    solution without superposition, its ``shared_units`` and ``mean_tension_two``). Reproduced when
    ``n_represented > m // 2`` (superposition), ``tension_two`` is positive and above
    :data:`MIN_TENSION_RATIO` times ``tension_one``, and the control shares no unit and reaches at most
    :data:`MAX_CONTROL_FRACTION` of ``tension_two``; not measurable without a control.

    The control is what makes the verdict able to fail for the right reason: tension on two-feature inputs
    could come from the task itself (outputs that must cancel), and then a model without shared units would
    show it too; only when the same inputs leave the no-superposition model quiet is the motif interference."""

    measured = (f"{n_represented} features represented by {m} hidden units; mean tension one-feature inputs "
                f"{tension_one:.3g}, two-feature inputs {tension_two:.3g}")
    if control is not None:
        measured += (f"; control ({control['m']} units, {control['shared_units']} shared) two-feature inputs "
                     f"{control['mean_tension_two']:.3g}")
    if not (math.isfinite(tension_one) and math.isfinite(tension_two)):
        return Finding.judge(INTERFERENCE_CLAIM, measured, None, "the tension was not finite")
    if control is None or not math.isfinite(control["mean_tension_two"]):
        return Finding.judge(INTERFERENCE_CLAIM, measured, None, "no control model without superposition to "
                             "compare with (analyze_toy(control=True), kinds 'abs' and 'xor')")
    problems = []
    if n_represented <= m // 2:
        problems.append(f"no superposition: {n_represented} features represented, not more than the {m // 2} that "
                        f"{m} units fit without sharing; train longer or over more seeds")
    if not (tension_two > 0 and tension_two > MIN_TENSION_RATIO * tension_one):
        problems.append(f"two-feature inputs are not tenser than one-feature inputs (bar: > {MIN_TENSION_RATIO:g} x "
                        f"one-feature)")
    problems.append(_control_problem(control, tension_two))
    problems = [p for p in problems if p]
    why = (f"bar: superposition (> {m // 2} features), two-feature tension > {MIN_TENSION_RATIO:g} x one-feature, "
           f"and the control without superposition <= {MAX_CONTROL_FRACTION:g} x the superposed model's")
    return Finding.judge(INTERFERENCE_CLAIM, measured, not problems, "; ".join(problems) or why)


def toy_finding(analysis) -> Finding:
    """:func:`interference_finding` of a :class:`~lucent_inhibit.ToyAnalysis` of the trained toy model and its
    control."""
    m = int(analysis.config["m"])
    return interference_finding(int(analysis.represented.sum()), m, analysis.mean_tension_one,
                                analysis.mean_tension_two, analysis.control)
