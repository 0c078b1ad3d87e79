"""Stage 1 of the atlas: the images it is built from, picked from a scan (Hamblin et al. 2024, section 4).

The attribution atlas samples images by several rankings of a :class:`~lucent_inhibit.scanning.result.ScanResult`
and takes their union: the images with the largest attribution norm ``|S|_2``, the maximally exciting
and inhibiting images (top / bottom activation) and the maximally tense images (tension of the
excitatory total P and the inhibitory total N).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from ..core.features import Feature, as_feature
from ..core.results import Result
from ..core.validate import InputError, check_choice, check_flag, check_int

#: The rankings :func:`select_images` can take the union of, in the order reasons name them.
CRITERIA = ("top_abs", "top_activation", "bottom_activation", "top_tension")


@dataclass
class Selection(Result):
    """Stage 1: the images an atlas is built from.

    Attributes:
        indices: (n,) int64 sorted unique dataset indices.
        reasons: n strings naming the criteria that picked each image (e.g. ``"top_abs+top_tension"``).
        feature: the scanned :class:`~lucent_inhibit.Feature`.
        layer: the attribution layer the criteria were ranked at.
        dataset: identity string of the scanned dataset.
        criteria: the ``k`` of each criterion.
    """

    indices: np.ndarray
    reasons: List[str]
    feature: Feature
    layer: str
    dataset: str
    criteria: Dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.indices = np.asarray(self.indices, np.int64)
        self.reasons = [str(r) for r in self.reasons]

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def picked_by(self) -> Dict[str, int]:
        """How many of the selected images each criterion picked (an image may count for several)."""
        return {c: sum(c in r.split("+") for r in self.reasons) for c in self.criteria}

    def summary(self) -> dict:
        return {"type": self.kind(), "images": len(self), "feature": self.feature.name, "layer": self.layer,
                "dataset": self.dataset, "criteria": dict(self.criteria), "picked_by": self.picked_by()}

    def plot(self, path=None, ax=None, **style):
        """Bar chart: images picked by each criterion, and the size of the union;
        returns the Figure (a PNG at ``path`` when given)."""
        from .figures import plot_selection

        return plot_selection(self, path, ax, **style)


def _check_scan(scan, feature, layer: Optional[str]):
    from ..scanning.result import ScanResult

    if isinstance(scan, (str, os.PathLike)):
        scan = ScanResult.load(os.fspath(scan))
    if not isinstance(scan, ScanResult):
        raise InputError(f"scan must be a ScanResult (lucent_inhibit.scan) or the path of a saved one, got "
                         f"{type(scan).__name__}")
    if feature is not None:
        feature = as_feature(feature)
        if feature != scan.feature:
            raise ValueError(
                f"the scan is of feature {scan.feature.name}, but the atlas explains {feature.name}; "
                "scan the same feature (or pass feature=None to use the scan's)"
            )
    if layer is None:
        layer = scan.layers[0]
    if layer not in scan.layers:
        raise ValueError(
            f"the scan has attributions at layers {scan.layers}, not at the atlas layer {layer!r}; scan that "
            "layer too or build the atlas at one of the scanned layers"
        )
    return scan, layer


def check_totals(scan, layer: str, granularity: str) -> None:
    """:class:`InputError` unless the scan's activations and its totals P and N at ``layer`` (both norms) are
    finite and P, N >= 0, as :func:`~lucent_inhibit.scan` computes them from finite attributions.

    Rankings of NaN are arbitrary (NaN sorts anywhere), so a scan holding them cannot pick images: NaN or
    infinite values come from a model whose forward or backward pass overflowed on those images, negative
    totals only from a file or a ``ScanResult`` not written by the scan. The message names the first rows.
    """
    from ..scanning.result import GRANULARITIES

    check_choice("granularity", granularity, GRANULARITIES)
    g, where = GRANULARITIES.index(granularity), scan.layers.index(layer)
    values = {"activation": scan.activation, "P": scan.pos[:, where, g], "N": scan.neg[:, where, g]}
    for name, v in values.items():
        v = np.asarray(v, np.float64).reshape(len(scan), -1)
        bad = ~np.isfinite(v).all(1)
        if bad.any():
            raise InputError(
                f"the scan's {name} {f'at {layer!r} ' if name != 'activation' else ''}is NaN or infinite for "
                f"{int(bad.sum())} of {len(scan)} images (dataset indices {scan.indices[bad][:5].tolist()}): the model's "
                "forward or backward pass was not finite on them, and rankings of NaN are arbitrary; fix the model "
                "or scan other images")
        if name != "activation" and (v < 0).any():
            rows = (v < 0).any(1)
            raise InputError(
                f"the scan's {name} at {layer!r} is negative for {int(rows.sum())} images (dataset indices "
                f"{scan.indices[rows][:5].tolist()}); totals are non-negative sums, so this scan was not written "
                "by lucent_inhibit.scan")


def select_images(
    scan,
    feature=None,
    layer: Optional[str] = None,
    top_abs: int = 0,
    top_activation: int = 0,
    bottom_activation: int = 0,
    top_tension: int = 0,
    score="min",
    granularity: str = "element",
    distinct: bool = True,
) -> Selection:
    """Stage 1: the union of several rankings of a scan (:class:`~lucent_inhibit.scanning.result.ScanResult`).

    Args:
        scan: a ``ScanResult`` or the path of a saved one.
        feature: the feature the atlas explains; ``ValueError`` if the scan is of another feature.
            ``None`` takes the scan's feature.
        layer: the atlas's attribution layer; it must be one of the scan's layers (``|S|`` and tension
            are ranked there). ``None`` takes the scan's first layer.
        top_abs: the ``k`` images with the largest ``|S|_2`` at ``layer``.
        top_activation / bottom_activation: the ``k`` maximally exciting / inhibiting images.
        top_tension: the ``k`` maximally tense images (tension ``score`` of P and N, L1).
        score, granularity: tension score and attribution granularity of the rankings.
        distinct: each ranking's top ``k`` takes one image per source image first (the photo a bundled crop
            is cut from, the scan's ``source``), then, when there are fewer than ``k`` sources, the next-best
            images (one warning says so); ``False``: the plain rankings, several crops of one photo allowed.

    Returns:
        :class:`Selection` (dataset indices sorted, with the criteria that picked each).

    Raises :class:`~lucent_inhibit.core.validate.InputError` for a scan whose activations or totals are not
    finite or whose totals are negative (:func:`check_totals`): rankings of them would be arbitrary.
    """
    scan, layer = _check_scan(scan, feature, layer)
    check_totals(scan, layer, granularity)
    given = (top_abs, top_activation, bottom_activation, top_tension)
    criteria = {name: check_int(name, k, low=0) for name, k in zip(CRITERIA, given)}
    if not any(criteria.values()):
        scan.select(layer=layer, score=score, granularity=granularity, **criteria)  # its error: no criterion
    picked = _picks(scan, criteria, layer, score, granularity, check_flag("distinct", distinct))
    indices = np.unique(np.concatenate([np.asarray(v, np.int64) for v in picked.values()]))
    sets = {k: set(int(i) for i in v) for k, v in picked.items()}
    reasons = ["+".join(k for k in CRITERIA if int(i) in sets[k]) for i in indices]
    return Selection(np.asarray(indices, np.int64), reasons, scan.feature, layer, scan.dataset, criteria)


def _picks(scan, criteria: Dict[str, int], layer: str, score, granularity: str, distinct: bool) -> Dict[str, np.ndarray]:
    """criterion -> (k,) dataset indices it picks (empty for k = 0); one warning, not one per criterion, when
    the scan has too few source images for a ``distinct`` pick of some ``k``."""
    from ..attribution.totals import RepeatedSourcesWarning

    pick = {"top_abs": lambda k: scan.top_abs(k, layer, granularity, distinct),
            "top_activation": lambda k: scan.meis(k, distinct), "bottom_activation": lambda k: scan.miis(k, distinct),
            "top_tension": lambda k: scan.mtis(k, score, layer, granularity, distinct=distinct)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RepeatedSourcesWarning)
        out = {c: pick[c](k) if k else np.zeros(0, np.int64) for c, k in criteria.items()}
    repeated = [w for w in caught if issubclass(w.category, RepeatedSourcesWarning)]
    for w in caught:
        if w not in repeated:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if repeated:
        n = len(np.unique(scan.source)) if scan.source is not None else len(scan)
        warnings.warn(f"the scan holds only {n} distinct source images: each ranking's top k shows one image per "
                      "source, then the next-best images of sources already shown (select_images(distinct=False): "
                      "the plain rankings)", RepeatedSourcesWarning, stacklevel=3)
    return out
