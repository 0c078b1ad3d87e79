"""Maximally tense images in a dataset (Hamblin et al. 2024; SPEC 2.2): the rule on the top MTIs' P and N percentile ranks and their activation.

Each claim is one sentence of the papers; each function computes the :class:`~lucent_inhibit.findings.verdicts.Finding`
(the number measured and a verdict by a bar named as a module constant) from numbers a result holds.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from .verdicts import Finding

#: The paper's MTIs show the cancellation when the median P and the median N percentile ranks (within the
#: scan) of the top MTIs both reach this ...
MTI_MIN_PERCENTILE = 75.0


#: ... and their mean activation lies between the MIIs' and the MEIs' mean activations, within this fraction of
#: that range (MEIs' mean - MIIs' mean) of the typical (median) activation of the scanned images.
MTI_NEAR_TYPICAL = 0.25


MTI_CLAIM = ("Maximally tense images (MTIs) have large excitation P and large inhibition N at once, and they cancel: "
             "the feature stays near its typical value (Hamblin et al., paper 000)")


def mti_finding(p_median: float, n_median: float, mti_mean: float, mei_mean: float, mii_mean: float,
                typical: float, k: int):
    """The :class:`~lucent_inhibit.findings.verdicts.Finding` of the MTI claim from the top-``k`` MTIs' median P and N
    percentile ranks (0-100, NaN for a scan too small for ranks) and the mean activations (feature units) of
    the MTIs, MEIs and MIIs and the scan's median activation ``typical``: reproduced when both medians reach
    :data:`MTI_MIN_PERCENTILE` and the MTIs' mean lies between the MIIs' and the MEIs', at most
    :data:`MTI_NEAR_TYPICAL` of that range from ``typical``."""

    from ..attribution.totals import MIN_PERCENTILE_IMAGES

    measured = (f"top-{k} MTIs: median P percentile {p_median:.0f}, median N percentile {n_median:.0f}; mean f "
                f"{mti_mean:.3g} (MIIs {mii_mean:.3g}, typical {typical:.3g}, MEIs {mei_mean:.3g})")
    if not np.isfinite([p_median, n_median]).all():
        return Finding.judge(MTI_CLAIM, measured, None, f"percentile ranks need a scan of at least "
                             f"{MIN_PERCENTILE_IMAGES} images")
    if not np.isfinite([mti_mean, mei_mean, mii_mean, typical]).all() or not mei_mean > mii_mean:
        return Finding.judge(MTI_CLAIM, measured, None, "the MEIs' mean activation is not above the MIIs': the "
                             "feature does not vary over these images")
    offset = abs(mti_mean - typical) / (mei_mean - mii_mean)
    problems = []
    if min(p_median, n_median) < MTI_MIN_PERCENTILE:
        problems.append(f"P and N are not both high (bar: both medians >= {MTI_MIN_PERCENTILE:g})")
    if not mii_mean < mti_mean < mei_mean or offset > MTI_NEAR_TYPICAL:
        problems.append(f"the MTIs' mean f is {offset:.2f} of the MII-MEI range from the typical value (bar: between "
                        f"the MIIs' and MEIs', within {MTI_NEAR_TYPICAL:g})")
    bar = (f"both median percentiles >= {MTI_MIN_PERCENTILE:g}; mean f within {MTI_NEAR_TYPICAL:g} of the MII-MEI "
           f"range from the typical value ({offset:.2f})")
    return Finding.judge(MTI_CLAIM, measured, not problems, "; ".join(problems) or bar)


def scan_findings(result, k: int = 10, score: str = "percentile", layer: Optional[str] = None) -> List[Finding]:
    """The findings of a :class:`~lucent_inhibit.ScanResult`: the MTI claim (:func:`mti_finding`) from its
    top-``k`` MTIs by ``score`` (``"min"`` when the scan is too small for percentile ranks) at ``layer``
    (default: its first attribution layer), and completeness at that layer
    (:func:`~lucent_inhibit.findings.completeness.completeness_finding`)."""
    from ..attribution.totals import MIN_PERCENTILE_IMAGES
    from .completeness import completeness_finding

    layer = layer or result.layers[0]
    k = max(1, min(int(k), len(result)))
    score = "min" if score == "percentile" and len(result) < MIN_PERCENTILE_IMAGES else score
    mtis = result.mtis(k, score, layer=layer)

    def mean_f(indices):
        return float(result.activation[np.isin(result.indices, indices)].mean())

    nan = float("nan")
    pct = result.percentiles(layer) if len(result) >= MIN_PERCENTILE_IMAGES else None
    p_med, n_med = (nan, nan) if pct is None else np.median(pct[[result.row(int(i)) for i in mtis]], axis=0)
    mti = mti_finding(float(p_med), float(n_med), mean_f(mtis), mean_f(result.meis(k)), mean_f(result.miis(k)),
                      float(np.median(result.activation)), k)
    r = float(result.completeness.get(layer, nan))
    slope, share = result.completeness_sums()[layer] if len(result) >= 3 else (nan, nan)
    return [mti, completeness_finding(f"{layer} (attribution layer of {result.feature.name})", r, slope, share)]
