"""Excitation, inhibition and tension (Hamblin et al. 2024, section 2): the signed totals P = sum relu(S) and
N = sum relu(-S) of an attribution S, the raw tension scores of P and N, and the scale-free tension of a
dataset (the smaller of P's and N's percentile ranks among the images), with the ranking helpers that
scans and censuses share.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from ..core.validate import InputError, check_int

TENSION_SCORES = ("min", "geometric", "harmonic", "product")


# ------------------------------------------------------------------------------------------------
# totals and tension
# ------------------------------------------------------------------------------------------------
def signed_totals(scores, granularity: str = "element", norm: str = "l1"):
    """Split attributions into excitatory and inhibitory totals.

    Args:
        scores: (B, C, H, W) or (B, C) attribution (torch tensor or numpy array).
        granularity: ``"element"`` splits every channel-position by sign (the paper's choice);
            ``"channel"`` sums over space first, then splits each channel by sign.
        norm: ``"l1"`` (sums; ``P - N = E``) or ``"l2"`` (root sum of squares).

    Returns:
        ``(P, N)``, each (B,), non-negative.
    """
    if granularity not in ("element", "channel"):
        raise ValueError(f"granularity must be 'element' or 'channel', got {granularity!r}")
    if norm not in ("l1", "l2"):
        raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
    if not (torch.is_tensor(scores) or isinstance(scores, np.ndarray)):
        raise TypeError(f"scores must be a torch tensor or numpy array, got {type(scores).__name__}")
    s = torch.as_tensor(scores)
    if s.dtype == torch.bool or s.is_complex():
        raise TypeError(f"scores must be real-valued, got dtype {s.dtype}")
    if s.dim() < 2:
        raise ValueError(f"scores must be batched, (B, C, ...), got shape {tuple(s.shape)}")
    if granularity == "channel" and s.dim() == 3:  # a token layer (B, T, C): channels last
        s = s.sum(1)
    elif granularity == "channel" and s.dim() > 2:
        s = s.flatten(2).sum(2)
    s = s.flatten(1)
    pos, neg = s.clamp(min=0), (-s).clamp(min=0)
    if norm == "l1":
        return pos.sum(1), neg.sum(1)
    return pos.pow(2).sum(1).sqrt(), neg.pow(2).sum(1).sqrt()


def tension(p, n, score: str = "min"):
    """Tension of excitatory total ``p`` and inhibitory total ``n`` (same shapes, non-negative).

    ``"min"``: min(P, N) (both must be large, the default); ``"geometric"``: sqrt(P N);
    ``"harmonic"``: 2PN / (P + N); ``"product"``: P N. Works on tensors and numpy arrays.
    """
    for name, v in (("p", p), ("n", n)):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            continue  # a plain number
        if not (torch.is_tensor(v) or isinstance(v, np.ndarray)) or v.dtype == bool or not (
                v.is_floating_point() if torch.is_tensor(v) else np.issubdtype(v.dtype, np.floating)):
            raise InputError(f"tension: {name} must be a number or a float tensor or numpy array, got "
                             f"{type(v).__name__}" + (f" of {v.dtype}" if hasattr(v, "dtype") else ""))
    if torch.is_tensor(p) != torch.is_tensor(n):
        raise InputError("tension: p and n must both be tensors or both numpy arrays (or numbers)")
    if callable(score):
        return score(p, n)
    if score not in TENSION_SCORES:
        raise ValueError(f"unknown tension score {score!r}; expected one of {TENSION_SCORES} or a callable")
    try:
        np.broadcast_shapes(np.shape(p), np.shape(n))
    except ValueError:
        raise ValueError(f"p and n must have the same shape, got {tuple(np.shape(p))} and {tuple(np.shape(n))}") from None
    lib = torch if torch.is_tensor(p) else np
    if score == "min":
        return lib.minimum(p, n)
    if score == "geometric":
        return lib.sqrt(p * n)
    if score == "harmonic":
        return 2 * p * n / (p + n + 1e-12)
    return p * n


# ------------------------------------------------------------------------------------------------
# scale-free tension: percentile ranks within the scanned dataset
# ------------------------------------------------------------------------------------------------
#: Fewest scanned images over which percentile ranks of P and N mean anything (one image moves a
#: percentile of a 10-image scan by 10 points).
MIN_PERCENTILE_IMAGES = 10


def percentile_ranks(values: np.ndarray) -> np.ndarray:
    """(n,) float64 percentile rank of each value within ``values`` (n,), in [0, 100]: the share of
    values below it plus half the share equal to it (``scipy.stats.percentileofscore(kind="mean")``), so
    ties share one rank. ``ValueError`` with fewer than :data:`MIN_PERCENTILE_IMAGES` values."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size < MIN_PERCENTILE_IMAGES:
        raise ValueError(
            f"percentile ranks of P and N need a scan of at least {MIN_PERCENTILE_IMAGES} images; this scan has "
            f"{v.size}: scan more images, or rank by a raw score (score='min', 'geometric', ...)")
    s = np.sort(v)
    below = np.searchsorted(s, v, side="left")
    equal = np.searchsorted(s, v, side="right") - below
    return 100.0 * (below + 0.5 * equal) / v.size


def warn_small_percentile(score, n: int) -> None:
    """Warn that a scan of ``n`` images is too small for its ``"percentile"`` ``score`` (fewer than
    :data:`MIN_PERCENTILE_IMAGES`): its percentile ranks will refuse."""
    if score == "percentile" and n < MIN_PERCENTILE_IMAGES:
        warnings.warn(f"score='percentile' ranks P and N within the scan and needs at least {MIN_PERCENTILE_IMAGES} "
                      f"images; this scan has {n}: its percentile ranks refuse, and its summary and the scan stage "
                      "rank MTIs by score='min' instead (scan more images for percentile ranks)", stacklevel=4)


def percentile_tension(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    """(n,) the smaller of the percentile ranks of ``p`` and of ``n`` within the scan: large only when
    both totals are large *for this feature* (SPEC 1: raw ``min(P, N)`` favours whichever total is
    usually smaller)."""
    return np.minimum(percentile_ranks(p), percentile_ranks(n))


class RepeatedSourcesWarning(UserWarning):
    """A top-k pick that asked for one image per source image found fewer than ``k`` sources and filled the
    rest with the next-best images of sources already shown."""


def top_indices(indices: np.ndarray, values: np.ndarray, k: int, descending: bool = True, then=None,
                sources=None) -> np.ndarray:
    """The dataset ``indices`` (n,) of the ``k`` rows with the largest (``descending``) or smallest ``values``
    (n,), in that order; ties broken by ``then`` (n,, larger first) when given, then by dataset index, so
    the order is stable. The one ranking rule of scans and censuses.

    ``sources`` (n,) names each row's source image (e.g. the photo a crop was cut from): given, the pick
    takes the best row of each source first, at most one per source, in rank order; when fewer than ``k``
    sources exist it then fills up with the next-best rows (a :class:`RepeatedSourcesWarning` says so), so
    it never returns fewer than ``min(k, n)`` rows. None: every row is its own source."""
    k = check_int("k", k, low=1)
    keys = (indices,) + (() if then is None else (-np.asarray(then),))
    order = np.lexsort(keys + (-values if descending else values,))
    if sources is not None:
        order = one_per_source(order, sources, k)
    return np.asarray(indices)[order[:k]].astype(np.int64)


def one_per_source(order: np.ndarray, sources, k: int) -> np.ndarray:
    """The first ``min(k, n)`` of the row ``order`` (n,) (best first) taking one row per source of
    ``sources`` (n,, any hashable values, one per row) before any source repeats: the best row of each
    source in rank order, then, when there are fewer than ``k`` sources, the next-best other rows in rank
    order (with a :class:`RepeatedSourcesWarning` naming how many are distinct)."""
    src = np.asarray(sources)
    if src.shape != (len(order),):
        raise InputError(f"sources must hold one source id per ranked image ({len(order)}), got shape {src.shape}")
    _, first = np.unique(src[order], return_index=True)
    best = order[np.sort(first)]
    m = min(k, len(order))
    if best.size >= m:
        return best[:m]
    rest = order[~np.isin(order, best)][: m - best.size]
    warnings.warn(f"only {best.size} distinct source images among the {len(order)} ranked: the top {m} show "
                  f"one image of each, then the next-best {rest.size} images of sources already shown (scan more "
                  "source images, or pass distinct=False for the plain ranking)", RepeatedSourcesWarning,
                  stacklevel=3)
    return np.concatenate([best, rest])
