"""Impossible feature combinations (paper 004; SPEC 2.7): the rule on the mean cosdot a sweep reaches per quadrant.

Each claim is one sentence of the papers; each function computes the :class:`~lucent_inhibit.findings.verdicts.Finding`
(the number measured and a verdict by a bar named as a module constant) from numbers a result holds.
"""
from __future__ import annotations

import math
from typing import Optional

from .verdicts import Finding

#: A combination is out of reach when the weakest quadrant's mean cosdot score C is at most this fraction of
#: the best quadrant's (the red loop collapses there; C is 1 where the render reaches the target direction at
#: the axis scale).
COLLAPSE_FRACTION = 0.5
#: The quadrant the paper names for a picked pair: its most anti-correlated pair collapses where both features
#: rise (``++``, the combination a ReLU after them would pass; paper 004, Figure 2a), while other pairs need not.
#: A pair named here reproduces only when that quadrant is the weakest and collapsed.
NAMED_COLLAPSE = {"anticorrelated": "++"}


COMBINATION_CLAIM = ("Not every combination of two features' directions can be produced: the cosdot a render "
                     "reaches collapses in some directions (Hamblin, Alvarez & Konkle, paper 004)")


def combination_finding(quadrants, pair: str = "", expect: Optional[str] = None):
    """The :class:`~lucent_inhibit.findings.verdicts.Finding` of combination impossibility from the mean cosdot score C
    per quadrant (``{"++": C, ...}``, :meth:`~lucent_inhibit.combinations.CombinationResult.quadrant_scores`):
    reproduced when the best quadrant's C is positive and the weakest's is at most :data:`COLLAPSE_FRACTION`
    of it, and, with ``expect`` (a quadrant such as ``"++"``), when the weakest is that one. ``pair``: which pair
    this is (e.g. ``"anticorrelated pair, units 22 and 128, r = -0.99"``), said first in the measured text."""

    measured = ((f"{pair}: " if pair else "") + "mean C by quadrant (signs of a, b): "
                + ", ".join(f"{k} {v:.3f}" for k, v in quadrants.items()))
    finite = {k: v for k, v in quadrants.items() if math.isfinite(v)}
    if len(finite) < 2 or max(finite.values()) <= 0:
        return Finding.judge(COMBINATION_CLAIM, measured, None, "no quadrant was reached (no positive mean C): the "
                             "sweep cannot tell reachable from unreachable combinations")
    best, worst = max(finite, key=finite.get), min(finite, key=finite.get)
    ratio = finite[worst] / finite[best]
    why = (f"quadrant {worst} reaches {ratio:.2f} of quadrant {best}'s C (bar: at most {COLLAPSE_FRACTION:g})")
    if expect is not None and worst != expect:
        named = ("is the best reached here" if expect == best else
                 f"reaches {finite.get(expect, math.nan) / finite[best]:.2f} of quadrant {best}'s C")
        return Finding.judge(COMBINATION_CLAIM, measured, False, f"quadrant {expect}, where the paper finds the "
                             f"collapse, {named}; the weakest is {worst} ({ratio:.2f} of {best}'s)")
    return Finding.judge(COMBINATION_CLAIM, measured, ratio <= COLLAPSE_FRACTION,
                         why if ratio <= COLLAPSE_FRACTION else why + ": every combination was reached")


def sweep_finding(result) -> Finding:
    """:func:`combination_finding` of a :class:`~lucent_inhibit.CombinationResult`'s quadrant scores."""
    return combination_finding(result.quadrant_scores())


def pair_finding(name: str, r: float, result) -> Finding:
    """:func:`combination_finding` of the sweep of one picked pair (``name``: ``"anticorrelated"``,
    ``"correlated"``, ``"zero"`` or ``"units"``; ``r``: its correlation over the dataset), naming the pair; a pair
    in :data:`NAMED_COLLAPSE` must collapse in the quadrant the paper names."""
    pair = (f"{name} pair, units {result.feature_a.unit} and {result.feature_b.unit} of {result.feature_a.layer}, "
            f"r = {r:.2f}")
    return combination_finding(result.quadrant_scores(), pair, NAMED_COLLAPSE.get(name))
