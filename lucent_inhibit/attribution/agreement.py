"""Whether an attribution adds up to its feature (Hamblin et al. 2024, section 2: completeness): Pearson r of
f and E = P - N over images, the sum check (the slope of f on E and E's share of f) and the warning a dataset
pass gives when E does not account for f at its attribution layer.
"""
from __future__ import annotations

import math
import warnings
from typing import Optional, Tuple

import numpy as np

from ..core.features import as_feature
from ..core.validate import InputError, check_number

#: E "adds up" to f when the regression slope of f on E lies in this range ...
SLOPE_RANGE = (0.5, 2.0)


#: ... and the attribution accounts for at least this share of the feature (mean |E| / mean |f|).
MIN_SHARE = 0.1


class IncompletenessWarning(UserWarning):
    """The attribution at a layer does not add up to the feature (low Pearson r between E and f)."""


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two 1-D arrays; NaN when either is constant."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    scale = max(float(np.abs(a).max(initial=0)), float(np.abs(b).max(initial=0)), 1e-30)
    if den <= (1e-12 * scale) ** 2 * len(a):
        return float("nan")
    return float((a * b).sum() / den)


def sum_check(f: np.ndarray, e: np.ndarray) -> Tuple[float, float]:
    """How much of ``f`` the total attribution ``E`` accounts for, over images (1-D arrays):
    ``(slope, share)`` with ``slope`` the least-squares slope of f on E (1 when E tracks f, whatever the
    offset) and ``share = mean|E| / mean|f|``. Pearson r alone is blind to scale: across a LayerNorm, E can
    correlate with f at r = 0.98 while being 0.1% of it. NaN where undefined (constant E, f = 0)."""
    f, e = np.asarray(f, dtype=np.float64), np.asarray(e, dtype=np.float64)
    de = e - e.mean()
    var = float((de * de).sum())
    slope = float((de * (f - f.mean())).sum() / var) if var > 1e-300 else float("nan")
    mf = float(np.abs(f).mean())
    share = float(np.abs(e).mean() / mf) if mf > 0 else float("nan")
    return slope, share


def adds_up(slope: float, share: float) -> bool:
    """Whether ``(slope, share)`` from :func:`sum_check` say E accounts for f (see :data:`SLOPE_RANGE`,
    :data:`MIN_SHARE`)."""
    return bool(np.isfinite(slope) and SLOPE_RANGE[0] <= slope <= SLOPE_RANGE[1]
                and np.isfinite(share) and share >= MIN_SHARE)


def warn_if_incomplete(r: float, feature, layer: str, threshold: float = 0.5, slope: Optional[float] = None,
                       share: Optional[float] = None) -> bool:
    """Issue an :class:`IncompletenessWarning` if ``r`` (from :func:`completeness_pair`) is below
    ``threshold`` or undefined, or if E does not add up to f (``slope`` / ``share`` of :func:`sum_check`,
    read from a :class:`PairCompleteness` when not given), whatever r says. Returns True when it warned."""
    name = as_feature(feature).name if not isinstance(feature, str) else feature
    threshold = check_number("threshold", threshold, -1.0, 1.0)
    if isinstance(r, PairCompleteness):
        slope, share = (r.slope if slope is None else slope), (r.share if share is None else share)
    for label, v in (("r", r), ("slope", slope), ("share", share)):  # NaN allowed: an undefined r warns
        if v is not None and (isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.number))):
            raise InputError(f"{label} must be a number or None, got {v!r:.60}")
    low = r is None or not np.isfinite(r) or r < threshold
    short = slope is not None and share is not None and not adds_up(slope, share)
    if not (low or short):
        return False
    sums = "" if slope is None or share is None else f", slope of f on E {slope:.3g}, E/f share {share:.3g}"
    why = ("E does not add up to the feature (the attribution accounts for a different amount than f, e.g. across "
           "a LayerNorm)" if short and not low else "Pearson r between the feature and its total attribution E is low")
    warnings.warn(
        f"attribution of feature {name} at layer {layer!r} is incomplete: {why} (r = "
        f"{r if r is None else f'{float(r):.3f}'}, threshold {threshold}{sums}); rankings by P, N or tension at this "
        "layer may not reflect the feature. Pick a layer closer to the feature (see lucent_inhibit.attribution.completeness) "
        "or use method='integrated_gradients'.",
        IncompletenessWarning,
        stacklevel=2,
    )
    return True


class PairCompleteness(float):
    """Pearson r of one (feature, layer) pair (the float value), with ``slope`` and ``share`` of
    :func:`sum_check` and ``adds_up``: a pair is complete only when r is high *and* E adds up to f."""

    def __new__(cls, r: float, slope: float = float("nan"), share: float = float("nan")):
        obj = super().__new__(cls, r)
        obj.r, obj.slope, obj.share = float(r), float(slope), float(share)
        return obj

    @property
    def adds_up(self) -> bool:
        return adds_up(self.slope, self.share)

    def __repr__(self) -> str:
        return f"PairCompleteness(r={self.r:.3f}, slope={self.slope:.3g}, share={self.share:.3g})"
