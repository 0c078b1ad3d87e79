"""The causal claims about maximally tense images (Hamblin et al. 2024): the feature would fire on its MTIs were it not for inhibition, and the inhibitor dictionary's top channels are what holds it down.

Each claim is one sentence of the papers; each function computes the :class:`~lucent_inhibit.findings.verdicts.Finding`
(the number measured and a verdict by a bar named as a module constant) from numbers a result holds.
"""
from __future__ import annotations

import math
from typing import List

import numpy as np

from .verdicts import NOT_MEASURABLE, Finding

DISINHIBITION_CLAIM = ("The feature would fire erroneously on its MTIs were it not for inhibition: they carry the "
                       "feature's own evidence (their excitation points the MEIs' way), inhibition holds them below "
                       "images of the same excitation, and removing it releases them (Hamblin et al., paper 000)")


REMOVAL_CLAIM = ("The channels that carry the MTIs' inhibition are what holds the feature down: removing the top "
                 "inhibitory channels raises the feature on the MTIs more than removing as many random channels")


def disinhibition_finding(dis):
    """The :class:`~lucent_inhibit.findings.verdicts.Finding` of the causal MTI claim: the verdict of the
    :class:`~lucent_inhibit.causal.disinhibition.Disinhibition` result against its control (images matched to the
    MTIs on P with little inhibition: held down, released, the feature's evidence), explained by its numbers;
    not measurable without a matched group of positive mean f."""

    m = dis.means()
    if "matched" not in m or not m["matched"]["images"] or not math.isfinite(dis.released):
        measured = f"MTIs' f {m['mtis']['f']:.3g}, disinhibited {m['mtis']['disinhibited']:.3g}"
        return Finding(DISINHIBITION_CLAIM, measured, NOT_MEASURABLE, "no images matched to the MTIs on P with "
                       "little inhibition and a positive mean f: nothing to compare the MTIs with")
    cos = dis.cosines()
    measured = (f"MTIs' f {m['mtis']['f']:.3g} vs {m['matched']['f']:.3g} matched on P; disinhibited "
                f"{m['mtis']['disinhibited']:.3g} ({dis.released:.2f} x matched); excitation cosine to MEIs' "
                f"{float(np.mean(cos['mtis'])):.2f} vs random {float(np.mean(cos['random'])):.2f}")
    return Finding(DISINHIBITION_CLAIM, measured, dis.verdict, dis.explanation().removeprefix(f"{dis.verdict}: "))


def removal_finding(top: float, random: List[float], n: int):
    """The :class:`~lucent_inhibit.findings.verdicts.Finding` of the dictionary's causal claim from the mean change of f
    on the MTIs (feature units) when the top ``n`` inhibitory channels are removed together (``top``) and
    when ``n`` random channels are (``random``, one value per draw): reproduced when ``top`` is positive
    and above every random draw."""

    rand = np.asarray(random, dtype=np.float64)
    mean, largest = (float(rand.mean()), float(rand.max())) if rand.size else (float("nan"),) * 2
    measured = (f"change of f on the MTIs removing the top {n} channels {top:+.3g}; {n} random channels: mean "
                f"{mean:+.3g}, largest {largest:+.3g} over {rand.size} draws")
    if not rand.size or not np.isfinite(rand).all() or not np.isfinite(top):
        return Finding.judge(REMOVAL_CLAIM, measured, None, "no finite random-channel control was measured")
    ok = top > 0 and top > rand.max()
    why = ("bar: a positive change above every random draw" if ok else "the top channels' removal does not raise f "
           "above every random draw (bar: positive and above the largest random draw)")
    return Finding.judge(REMOVAL_CLAIM, measured, ok, why)


def inhibitor_finding(dictionary) -> Finding:
    """:func:`removal_finding` of an :class:`~lucent_inhibit.InhibitorDictionary`'s removal check."""
    rm = dictionary.removal
    return removal_finding(float(rm.get("top", float("nan"))), list(rm.get("random", [])), int(rm.get("n", 0)))
