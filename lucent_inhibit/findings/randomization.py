"""The model-parameter randomization test (Adebayo et al. 2018, "Sanity checks for saliency maps"; paper 002, section 6.3): the rule on the tension ranking's rank correlation with the trained model's once the weights between the attribution layer and the feature are re-initialised.

Each claim is one sentence of the papers; each function computes the :class:`~lucent_inhibit.findings.verdicts.Finding`
(the number measured and a verdict by a bar named as a module constant) from numbers a result holds.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from .verdicts import Finding

#: The MTIs depend on the learned weights when, with every weight between the attribution layer and the feature
#: re-initialised, the Spearman rank correlation of the images' tension with the trained model's is at most this
#: (the whole 90% bootstrap interval over the images; the bar inside it: not measurable).
MAX_TENSION_CORRELATION = 0.5


#: Resamplings of the images behind the rank correlation's bootstrap interval.
BOOTSTRAP_DRAWS = 2000


RANDOMIZATION_CLAIM = ("The maximally tense images depend on the learned weights: with the weights between the "
                       "attribution layer and the feature re-initialised, the images' tension ranking no longer "
                       "follows the trained model's (model-parameter randomization test, Adebayo et al. 2018; "
                       "paper 002, section 6.3)")


DICTIONARY_CLAIM = ("The inhibitor dictionary depends on the learned weights: with the weights between the attribution "
                    "layer and the feature re-initialised, the ranking of the layer's channels by their inhibition of "
                    "the MTIs no longer follows the trained model's (model-parameter randomization test, Adebayo et "
                    "al. 2018)")


def _interval(trained: np.ndarray, randomized: np.ndarray):
    """``(rho, lo, hi)``: Spearman's rho of the two (n,) arrays and the 5% and 95% quantiles of its bootstrap over
    the images (:data:`BOOTSTRAP_DRAWS` resamplings, seeded; a draw with a constant side is left out)."""
    from ..causal.randomization import spearman

    rho = spearman(trained, randomized)
    draws = np.random.default_rng(0).integers(0, trained.size, size=(BOOTSTRAP_DRAWS, trained.size))
    boot = np.array([spearman(trained[d], randomized[d]) for d in draws])
    boot = boot[np.isfinite(boot)]
    lo, hi = (float(v) for v in np.quantile(boot, [0.05, 0.95])) if boot.size else (math.nan, math.nan)
    return rho, lo, hi


def partial_spearman(a, b, given) -> float:
    """Partial Spearman rank correlation of ``a`` and ``b`` (n,) given ``given`` (n,): the Pearson correlation of
    their ranks after each is regressed (least squares) on the ranks of ``given``; NaN when undefined."""
    from ..causal.randomization import ranks

    x = ranks(np.asarray(given, np.float64).ravel())
    res = []
    for y in (a, b):
        y = ranks(np.asarray(y, np.float64).ravel())
        design = np.stack([x, np.ones_like(x)], 1)
        res.append(y - design @ np.linalg.lstsq(design, y, rcond=None)[0])
    den = float(np.linalg.norm(res[0]) * np.linalg.norm(res[1]))
    return float(res[0] @ res[1]) / den if den > 1e-12 * res[0].size else math.nan


def _magnitude_text(t0: np.ndarray, t1: np.ndarray, magnitude) -> str:
    """The control of the tension ranking: how much of it the randomized model's total attribution explains.

    With random weights after the attribution layer, ``P`` and ``N`` both grow with how strongly an image drives
    that layer, so the randomized tension follows the images' total ``|S| = P + N``; so does part of the trained
    tension. The partial rank correlation given that total is what the two rankings share beyond it."""
    if magnitude is None:
        return ""
    from ..causal.randomization import spearman

    m = np.asarray(magnitude, np.float64).ravel()
    return (f"; control: the re-initialised tension follows the images' total |S| (rho {spearman(t1, m):.3f}), "
            f"the trained tension's rho with that total is {spearman(t0, m):.3f}, and its partial rho with the "
            f"re-initialised tension given the total {partial_spearman(t0, t1, m):.3f}")


def weight_dependence_finding(trained, randomized, label: str, step: int, curve: Optional[Sequence[float]] = None,
                              steps: Optional[Sequence[str]] = None, magnitude=None) -> Finding:
    """The :class:`~lucent_inhibit.findings.verdicts.Finding` of the randomization claim from the images' tension
    (n,) on the trained model (``trained``) and at cascade step ``step`` (``randomized``), the first step with
    every weight between the attribution layer and the feature re-initialised (``label``; ``step`` < 0: no such
    step). Reproduced when the 90% bootstrap interval of Spearman's rho lies at or below
    :data:`MAX_TENSION_CORRELATION` (also when the randomized model's tension is constant: no ranking left), not
    reproduced when it lies above it, not measurable when the bar lies inside it: which images are tense then follows from the architecture and the weights before the attribution layer.
    ``curve`` (rho per step) and ``steps`` (their labels) add where the cascade first falls below the bar;
    ``magnitude`` (n,), the images' total attribution ``P + N`` at that step, adds the control of
    :func:`_magnitude_text` (the verdict does not use it)."""
    bar = MAX_TENSION_CORRELATION
    if step < 0:
        return Finding.judge(RANDOMIZATION_CLAIM, "no cascade step re-initialised every weight between the attribution "
                             "layer and the feature", None, "none lies there, or the cascade stopped before (more "
                             "blocks)")
    t0, t1 = np.asarray(trained, np.float64).ravel(), np.asarray(randomized, np.float64).ravel()
    if t0.size < 3 or np.ptp(t0) == 0 or not np.isfinite(t0).all():
        return Finding.judge(RANDOMIZATION_CLAIM, f"tension of {t0.size} images", None, "the trained model's tension "
                             "ranks no image above another (constant, or too few images)")
    if np.isfinite(t1).all() and np.ptp(t1) == 0:
        return Finding.judge(RANDOMIZATION_CLAIM, f"the tension is constant once {label} is re-initialised (step "
                             f"{step})", True, "the randomized model ranks no image above another")
    rho, lo, hi = _interval(t0, t1)
    measured = (f"Spearman rho of the tension of {t0.size} images with the trained model's {rho:.3f} (90% bootstrap "
                f"interval {lo:.3f} to {hi:.3f}) once {label} is re-initialised (step {step})"
                + _first_below(curve, steps) + _magnitude_text(t0, t1, magnitude))
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= bar < hi:
        return Finding.judge(RANDOMIZATION_CLAIM, measured, None, f"the bar {bar:g} lies inside the interval: too few "
                             "images to tell (use more)")
    if hi <= bar:
        return Finding.judge(RANDOMIZATION_CLAIM, measured, True, f"bar: the whole interval at or below {bar:g}")
    return Finding.judge(RANDOMIZATION_CLAIM, measured, False, f"the tension ranking survives the re-initialisation "
                         f"(the whole interval above {bar:g}): which images are tense depends on the architecture and the "
                         "weights before the attribution layer, not on the learned weights between it and the feature")


def _first_below(curve, steps) -> str:
    """'; below the bar first at step s (label, rho r)' of a rho-per-step ``curve``, or that it never falls below."""
    if curve is None:
        return ""
    rho = np.asarray(curve, np.float64)
    below = np.flatnonzero(np.isfinite(rho) & (rho <= MAX_TENSION_CORRELATION))
    if not below.size:
        return f"; rho stays above {MAX_TENSION_CORRELATION:g} at every one of {rho.size - 1} steps"
    s = int(below[0])
    name = f"{steps[s]}, " if steps is not None else ""
    return f"; the cascade first falls to {MAX_TENSION_CORRELATION:g} or below at step {s} ({name}rho {rho[s]:.3f})"


def randomization_finding(result) -> Finding:
    """:func:`weight_dependence_finding` of a :class:`~lucent_inhibit.RandomizationCascade`."""
    t, step = result.tension(), int(result.between)
    return weight_dependence_finding(t[0], t[step] if step >= 0 else t[0], result.steps[step] if step >= 0 else "",
                                     step, result.tension_correlation(), result.steps,
                                     result.pos[step] + result.neg[step] if step >= 0 else None)


def dictionary_finding(result) -> Finding:
    """The inhibitor dictionary's randomization claim of a :class:`~lucent_inhibit.RandomizationCascade`: the
    Spearman rho of the channels' inhibition (``relu(-S)`` summed over each model's own top-``k`` MTIs, (C,)) at the
    step ``result.between`` with the trained model's, its 90% bootstrap interval over the channels against
    :data:`MAX_TENSION_CORRELATION`, as :func:`weight_dependence_finding` judges the images' tension."""
    step, bar = int(result.between), MAX_TENSION_CORRELATION
    c0 = np.asarray(result.inhibition[0], np.float64)
    if step < 0 or c0.size < 3 or np.ptp(c0) == 0:
        return Finding.judge(DICTIONARY_CLAIM, f"inhibition of {c0.size} channels", None, "no cascade step "
                             "re-initialised every weight between the layer and the feature, or the trained model's "
                             "MTIs have no inhibition to rank")
    c1 = np.asarray(result.inhibition[step], np.float64)
    if np.isfinite(c1).all() and np.ptp(c1) == 0:
        return Finding.judge(DICTIONARY_CLAIM, f"no channel inhibits the randomized model's MTIs (step {step})", True,
                             "the randomized model ranks no channel above another")
    rho, lo, hi = _interval(c0, c1)
    measured = (f"Spearman rho of the inhibition of {c0.size} channels with the trained model's {rho:.3f} (90% "
                f"bootstrap interval over the channels {lo:.3f} to {hi:.3f}) once {result.steps[step]} is "
                f"re-initialised (step {step})")
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= bar < hi:
        return Finding.judge(DICTIONARY_CLAIM, measured, None, f"the bar {bar:g} lies inside the interval")
    if hi <= bar:
        return Finding.judge(DICTIONARY_CLAIM, measured, True, f"bar: the whole interval at or below {bar:g}")
    return Finding.judge(DICTIONARY_CLAIM, measured, False, f"the channel ranking survives the re-initialisation "
                         f"(the whole interval above {bar:g})")
