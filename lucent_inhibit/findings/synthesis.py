"""Rendering with the papers' objectives: +/- inversions separate by sign (papers 000 and 003) and the tense objective raises tension (paper 000).

Each claim is one sentence of the papers; each function computes the :class:`~lucent_inhibit.findings.verdicts.Finding`
(the number measured and a verdict by a bar named as a module constant) from numbers a result holds.
"""
from __future__ import annotations

import math

import numpy as np

from .verdicts import Finding

#: The inversions separate by sign when, in at least this share of the renders, the excitatory render's
#: activation exceeds the inverted image's and the inhibitory render's falls below it.
MIN_SEPARATED_SHARE = 0.75


SEPARATION_CLAIM = ("Inverting an image's excitatory attribution relu(S) gives an image that drives the feature up, "
                    "inverting its inhibitory attribution relu(-S) one that drives it down (Hamblin et al., papers 000 "
                    "and 003)")


def separation_finding(rows):
    """The :class:`~lucent_inhibit.findings.verdicts.Finding` of the sign separation of inversions, from ``rows``: one
    ``(original, excitatory, inhibitory)`` activation triple (feature units) per render pair. A pair
    separates when excitatory > original > inhibitory; reproduced when at least :data:`MIN_SEPARATED_SHARE`
    of the pairs do."""

    acts = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    up, down = acts[:, 1] > acts[:, 0], acts[:, 2] < acts[:, 0]
    n, both = len(acts), int((up & down).sum())
    measured = (f"{both} of {n} render pairs separate (excitatory raises f above the image's: {int(up.sum())}; "
                f"inhibitory lowers it: {int(down.sum())})")
    if not n or not np.isfinite(acts).all():
        return Finding.judge(SEPARATION_CLAIM, measured, None, "no finite activation of a render pair was measured")
    ok = both >= MIN_SEPARATED_SHARE * n
    why = f"bar: at least {MIN_SEPARATED_SHARE:.0%} of the pairs with excitatory f > image's f > inhibitory f"
    return Finding.judge(SEPARATION_CLAIM, measured, ok, why if ok else f"too few pairs separate ({why}); longer "
                         "renders (more steps) may separate them")


#: Tense synthesis works when the tension of the render at its last measured step is at least this many
#: times the tension at its start.
MIN_TENSION_GAIN = 1.5


TENSE_CLAIM = ("Optimising the tense objective raises excitation and inhibition together: the synthesised image's "
               "tension (here {score}(P, N)) grows over its start (Hamblin et al., paper 000)")


def tension_finding(start: float, end: float, score: str = "min"):
    """The :class:`~lucent_inhibit.findings.verdicts.Finding` of tense synthesis from the render's tension (``score``
    of P and N, attribution units) at its first and last measured steps: reproduced when ``end`` is positive
    and at least :data:`MIN_TENSION_GAIN` times ``start``."""

    claim = TENSE_CLAIM.format(score=score)
    measured = f"tension {start:.3g} at the start -> {end:.3g} at the end"
    if not (math.isfinite(start) and math.isfinite(end)):
        return Finding.judge(claim, measured, None, "the tension was not finite at the start or the end")
    ok = end > 0 and end >= MIN_TENSION_GAIN * start
    why = f"bar: end >= {MIN_TENSION_GAIN:g} x start"
    return Finding.judge(claim, measured, ok, why if ok else f"the render did not raise the tension enough ({why}); "
                         "try more steps")


def inversion_finding(results) -> Finding:
    """:func:`separation_finding` of one or more :class:`~lucent_inhibit.InversionResult` s (one render pair each)."""
    results = [results] if hasattr(results, "summary") else list(results)
    rows = [[r.summary()[k]["activation"] for k in ("original", "excitatory", "inhibitory")] for r in results]
    return separation_finding(rows)


def tense_finding(result) -> Finding:
    """:func:`tension_finding` of a :class:`~lucent_inhibit.TenseResult`: the first image's tension at its
    first and last recorded steps."""
    t = result.tension[:, 0]
    return tension_finding(float(t[0]), float(t[-1]), result.score)
