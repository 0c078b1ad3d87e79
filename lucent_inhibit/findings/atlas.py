"""The atlas icons reach their targets (Hamblin et al. 2024, the attribution atlas; SPEC 2.6): the rule on the icons' cosines to their averaged attributions.

Each claim is one sentence of the papers; each function computes the :class:`~lucent_inhibit.findings.verdicts.Finding`
(the number measured and a verdict by a bar named as a module constant) from numbers a result holds.
"""
from __future__ import annotations

import numpy as np

from .verdicts import Finding

#: The icons reach their targets when their median cosine to their target attribution vectors is at least this.
MIN_ICON_COSINE = 0.5


#: Resamplings of the icons behind the median cosine's bootstrap interval.
BOOTSTRAP_DRAWS = 2000


ATLAS_CLAIM = ("Each atlas icon is a feature visualization of its cell's averaged attribution: optimised, it "
               "reaches that target direction (Hamblin et al., paper 000 atlas; paper 002)")


def icon_finding(cosines, members=None):
    """The :class:`~lucent_inhibit.findings.verdicts.Finding` of the atlas icons from their cosines to their targets (K,):
    reproduced when a 90% bootstrap interval of the median (:data:`BOOTSTRAP_DRAWS` resamplings of the icons,
    seeded) lies at or above :data:`MIN_ICON_COSINE`, not reproduced when it lies below, and not measurable
    when the bar lies inside it (too few icons to tell: a median of some twenty icons moves by about 0.1
    when the layout moves, as it does for float-level changes of the vectors).

    ``members`` (K,), the control (:func:`~lucent_inhibit.atlas.control.member_cosines`): the same cosine for
    each cell's own dataset images. The target is built from attribution vectors and the cosine is taken with
    activations, so natural images do not reach 1 either; the measured text states both medians."""

    c = np.asarray(cosines, np.float64).ravel()
    c = c[np.isfinite(c)]
    if c.size == 0:
        return Finding.judge(ATLAS_CLAIM, "no icon cosine", None, "no icon with a measurable cosine was rendered")
    draws = np.random.default_rng(0).choice(c, size=(BOOTSTRAP_DRAWS, c.size), replace=True)
    lo, hi = (float(v) for v in np.quantile(np.median(draws, axis=1), [0.05, 0.95]))
    measured = (f"median cosine of {c.size} icons to their targets {float(np.median(c)):.3f} (90% bootstrap "
                f"interval {lo:.3f} to {hi:.3f})" + _control_text(members))
    why = f"bar: median cosine >= {MIN_ICON_COSINE:g}, the whole interval on one side"
    if lo < MIN_ICON_COSINE <= hi:
        return Finding.judge(ATLAS_CLAIM, measured, None, f"the bar {MIN_ICON_COSINE:g} lies inside the interval: too "
                             "few icons, or icons too uneven, to tell (render more cells, or more steps)")
    ok = lo >= MIN_ICON_COSINE
    return Finding.judge(ATLAS_CLAIM, measured, ok, why if ok else f"the icons fall short of their targets ({why}); "
                         "give the icon renders more steps")


def _control_text(members) -> str:
    m = np.asarray([] if members is None else members, np.float64).ravel()
    m = m[np.isfinite(m)]
    if m.size == 0:
        return ""
    return (f"; control: the cells' own images reach {float(np.median(m)):.3f} (median over {m.size} cells of "
            "their member images' median cosine to the same target)")


def atlas_finding(atlas) -> Finding:
    """:func:`icon_finding` of an :class:`~lucent_inhibit.Atlas`'s icons, with its member-image control."""
    return icon_finding(atlas.icons.cosine, atlas.member_cosine)
