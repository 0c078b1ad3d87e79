"""Completeness of attribution near the feature (Hamblin et al. 2024, section 2): the rule on Pearson r of f and E and on the sum check.

Each claim is one sentence of the papers; each function computes the :class:`~lucent_inhibit.findings.verdicts.Finding`
(the number measured and a verdict by a bar named as a module constant) from numbers a result holds.
"""
from __future__ import annotations

import numpy as np

from .verdicts import Finding

#: Completeness holds at a layer when the Pearson r over the images between f and E reaches this and E
#: adds up to f (slope and share of :func:`lucent_inhibit.attribution.agreement.adds_up`). The paper's Figure 3
#: shows r near 1 close to the feature, falling with distance.
MIN_R = 0.8


COMPLETENESS_CLAIM = ("Near the feature, the gradient x activation attribution adds up to the feature: E = sum(S) "
                      "tracks f over the images (Hamblin et al., paper 000, Figure 3)")


def completeness_finding(where: str, r: float, slope: float, share: float):
    """The :class:`~lucent_inhibit.findings.verdicts.Finding` of the completeness claim from Pearson r of f and E at
    ``where`` (a layer, or a feature-layer pair) and the sum check's ``slope`` (of f on E) and ``share``
    (mean |E| / mean |f|): reproduced when r >= :data:`MIN_R` and E adds up to f (slope within
    :data:`~lucent_inhibit.attribution.agreement.SLOPE_RANGE`, share >= ``MIN_SHARE``)."""

    from ..attribution.agreement import MIN_SHARE, SLOPE_RANGE, adds_up

    measured = f"r = {r:.3f}, slope of f on E {slope:.3g}, E/f share {share:.3g} at {where}"
    bar = f"r >= {MIN_R:g}, slope in [{SLOPE_RANGE[0]:g}, {SLOPE_RANGE[1]:g}], share >= {MIN_SHARE:g}"
    if not np.isfinite(r):
        return Finding.judge(COMPLETENESS_CLAIM, measured, None, "Pearson r is undefined: f or E is constant over "
                             "the images (use more or more varied images)")
    if r >= MIN_R and adds_up(slope, share):
        return Finding.judge(COMPLETENESS_CLAIM, measured, True, f"bar: {bar}")
    short = "r is below the bar" if r < MIN_R else "E does not add up to f (the sum check fails)"
    return Finding.judge(COMPLETENESS_CLAIM, measured, False, f"{short} (bar: {bar}); attribute closer to the feature")


def completeness_study_finding(result):
    """:func:`completeness_finding` at the studied layer nearest the features (the last one), from the mean r
    and the median slope and share over the features."""

    def over_features(fn, values):  # NaN (not a warning) when no feature has a finite value
        values = values[np.isfinite(values)]
        return float(fn(values)) if values.size else float("nan")

    slope, share = result.sums()
    return completeness_finding(f"{result.layers[-1]} (mean over {len(result.features)} features)",
                                over_features(np.mean, result.r[:, -1]), over_features(np.median, slope[:, -1]),
                                over_features(np.median, share[:, -1]))
