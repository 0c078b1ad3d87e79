"""Dataset scans: maximally exciting, inhibiting and tense images (Hamblin et al. 2024, section 2).

:func:`scan` streams a dataset through a model in batches. For every image it keeps only summary
statistics of the layer-to-feature attribution ``S_l = grad_{h_l} f * h_l`` at each attribution layer:

- the feature's activation ``f_v(x)``;
- ``P = sum relu(S)`` and ``N = sum relu(-S)`` with L1 and L2 norms, at element granularity (every
  channel-position split by sign) and channel granularity (space summed first);
- the spatial maps of ``relu(S)`` and ``relu(-S)`` summed over channels (float16, one small map per
  layer, optional);
- the image's dataset index and identity (path for folders, crop box for the bundled crops).

The attributions are never kept (:mod:`~lucent_inhibit.scanning.stats`), so memory does not grow with the
dataset. With ``out=`` the chunks go to a :mod:`~lucent_inhibit.scanning.store` folder as they complete: a
killed scan resumes where it stopped, and ``shard=(i, n)`` plus :func:`merge_scans` spread a scan over machines.

:class:`ScanResult` ranks images: :meth:`~ScanResult.meis` (top activation), :meth:`~ScanResult.miis`
(bottom activation), :meth:`~ScanResult.mtis` (top tension: by default the smaller of the percentile ranks of P and N
within the scan, :meth:`~ScanResult.percentiles`; raw scores such as ``min(P, N)`` on request) and
:meth:`~ScanResult.select` (unions of criteria, as the attribution atlas needs). All return dataset
indices.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..attribution.agreement import sum_check
from ..attribution.totals import (MIN_PERCENTILE_IMAGES, TENSION_SCORES, RepeatedSourcesWarning, percentile_ranks,
                                  top_indices)
from ..attribution.totals import tension as _tension
from ..core.features import Feature
from ..core.results import Result, result_path
from ..core.validate import InputError, check_choice, check_flag, check_int
from .stats import chunk_rows, completeness_r, concat_rows, measure_completeness, reducible  # noqa: F401
from .store import load_chunks, stage_scan_file

GRANULARITIES = ("element", "channel")
NORMS = ("l1", "l2")
#: tension scores of a scan: the raw scores of :func:`~lucent_inhibit.attribution.totals.tension` and
#: ``"percentile"``, the smaller of P's and N's percentile ranks within the scan (the default).
SCAN_SCORES = TENSION_SCORES + ("percentile",)
DEFAULT_SCORE = "percentile"


class NotInScanError(InputError, KeyError):
    """A dataset index or layer that a :class:`ScanResult` does not hold (a ``KeyError`` and an ``InputError``)."""

    __str__ = InputError.__str__


# ---------------------------------------- result ------------------------------------------------
@dataclass
class ScanResult(Result):
    """Per-image statistics of a dataset scan (rows are images, in dataset-index order).

    Attributes:
        feature: the scanned :class:`~lucent_inhibit.Feature`.
        layers: attribution layers, in the order given to :func:`scan`.
        indices: (n,) int64 dataset index of each row.
        activation: (n,) float32 feature value ``f_v(x)``.
        pos: (n, L, 2, 2) float32 excitatory totals ``P``; axis 2 is granularity (element, channel),
            axis 3 the norm (l1, l2).
        neg: (n, L, 2, 2) float32 inhibitory totals ``N`` (non-negative), same layout.
        items: (n,) str identity of each image (path, crop box or index; see ``describe_item``).
        pos_maps / neg_maps: layer -> (n, h, w) float16 maps of ``relu(S)`` / ``relu(-S)`` summed over
            channels at that layer's resolution (absent for linear layers or ``keep_maps=False``).
        dataset: identity string of the scanned dataset; dataset_size: its length.
        completeness: layer -> Pearson r between ``activation`` and ``E = P_l1 - N_l1`` over the rows
            (NaN with fewer than 3 rows or a constant).
        info: batch size, shard, tension score and other settings of the scan.
        source: (n,) str id of each image's source image (the photo a bundled crop is cut from; a folder's
            file; see :func:`~lucent_inhibit.data.datasets.item_sources`), or None (files written before
            it was stored): every image its own source. The top-k selections show one image per source.
    """

    feature: Feature
    layers: List[str]
    indices: np.ndarray
    activation: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    items: np.ndarray
    pos_maps: Dict[str, np.ndarray] = field(default_factory=dict)
    neg_maps: Dict[str, np.ndarray] = field(default_factory=dict)
    dataset: str = ""
    dataset_size: int = 0
    completeness: Dict[str, float] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    source: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    # -- statistics ---------------------------------------------------------------------------------
    def _layer(self, layer: Optional[str]) -> int:
        if layer is not None and layer not in self.layers:
            raise NotInScanError(f"layer {layer!r} was not scanned; scanned attribution layers: {self.layers}")
        return 0 if layer is None else self.layers.index(layer)

    def _stat(self, which: np.ndarray, layer, granularity: str, norm: str) -> np.ndarray:
        g = GRANULARITIES.index(check_choice("granularity", granularity, GRANULARITIES))
        k = NORMS.index(check_choice("norm", norm, NORMS))
        return which[:, self._layer(layer), g, k]

    def P(self, layer: Optional[str] = None, granularity: str = "element", norm: str = "l1") -> np.ndarray:
        """(n,) excitatory total at ``layer`` (default: the first scanned layer)."""
        return self._stat(self.pos, layer, granularity, norm)

    def N(self, layer: Optional[str] = None, granularity: str = "element", norm: str = "l1") -> np.ndarray:
        """(n,) inhibitory total (non-negative) at ``layer``."""
        return self._stat(self.neg, layer, granularity, norm)

    def total(self, layer: Optional[str] = None, granularity: str = "element") -> np.ndarray:
        """(n,) ``E = P - N`` (L1): the attribution's sum, which approximates the activation."""
        return self.P(layer, granularity, "l1") - self.N(layer, granularity, "l1")

    def abs_l2(self, layer: Optional[str] = None, granularity: str = "element") -> np.ndarray:
        """(n,) L2 norm of the whole attribution ``|S|_2 = sqrt(P_l2^2 + N_l2^2)``."""
        return np.sqrt(self.P(layer, granularity, "l2") ** 2 + self.N(layer, granularity, "l2") ** 2)

    def percentiles(self, layer: Optional[str] = None, granularity: str = "element", norm: str = "l1") -> np.ndarray:
        """(n, 2) float64 percentile ranks in [0, 100] of each image's P (column 0) and N (column 1) among
        the scanned images; ``ValueError`` for a scan of fewer than ``MIN_PERCENTILE_IMAGES`` (10) images."""
        return np.stack([percentile_ranks(self.P(layer, granularity, norm)),
                         percentile_ranks(self.N(layer, granularity, norm))], 1)

    def tension(self, layer: Optional[str] = None, score=DEFAULT_SCORE, granularity: str = "element",
                norm: str = "l1") -> np.ndarray:
        """(n,) tension of P and N: ``"percentile"`` (min of their percentile ranks in the scan, the
        default: scale-free), ``"min"``, ``"geometric"``, ``"harmonic"``, ``"product"`` or a callable."""
        if isinstance(score, str) and score == "percentile":
            return self.percentiles(layer, granularity, norm).min(1)
        return _tension(self.P(layer, granularity, norm), self.N(layer, granularity, norm), score)

    def row(self, index: int) -> int:
        """Row of dataset index ``index`` in this result."""
        hits = np.nonzero(self.indices == int(index))[0]
        if hits.size == 0:
            raise NotInScanError(f"dataset index {index} is not in this scan ({len(self)} images)")
        return int(hits[0])

    def maps(self, index: int, layer: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
        """(h, w) float32 positive and negative attribution maps of dataset index ``index``."""
        name = self.layers[self._layer(layer)]
        if name not in self.pos_maps:
            raise NotInScanError(f"no spatial maps stored for layer {name!r} (linear layer, or scanned with keep_maps=False)")
        r = self.row(index)
        return self.pos_maps[name][r].astype(np.float32), self.neg_maps[name][r].astype(np.float32)

    # -- selection ----------------------------------------------------------------------------------
    def _top(self, values: np.ndarray, k: int, descending: bool = True, then=None, distinct: bool = True) -> np.ndarray:
        """:func:`~lucent_inhibit.attribution.totals.top_indices` of ``values`` (n,); with ``distinct``, one
        image per :attr:`source` first (filled with repeats, and a warning, when fewer sources exist)."""
        sources = self.source if check_flag("distinct", distinct) and self.source is not None else None
        return top_indices(self.indices, values, k, descending, then, sources)

    def meis(self, k: int = 10, distinct: bool = True) -> np.ndarray:
        """Dataset indices of the ``k`` maximally exciting images (activation descending; ``distinct``: at
        most one per source image while there are enough, ``False``: every crop)."""
        return self._top(self.activation.astype(np.float64), k, True, None, distinct)

    def miis(self, k: int = 10, distinct: bool = True) -> np.ndarray:
        """Dataset indices of the ``k`` maximally inhibiting images (activation ascending; ``distinct`` as in
        :meth:`meis`)."""
        return self._top(self.activation.astype(np.float64), k, False, None, distinct)

    def mtis(self, k: int = 10, score=DEFAULT_SCORE, layer: Optional[str] = None, granularity: str = "element",
             norm: str = "l1", distinct: bool = True) -> np.ndarray:
        """Dataset indices of the ``k`` maximally tense images (tension descending; for ``"percentile"``,
        ties of the smaller rank are broken by the larger one; ``distinct`` as in :meth:`meis`)."""
        then = None
        if isinstance(score, str) and score == "percentile":
            then = self.percentiles(layer, granularity, norm).max(1)
        return self._top(self.tension(layer, score, granularity, norm).astype(np.float64), k, True, then, distinct)

    def top_abs(self, k: int = 10, layer: Optional[str] = None, granularity: str = "element",
                distinct: bool = True) -> np.ndarray:
        """Dataset indices of the ``k`` images with the largest total attribution ``|S|_2`` (``distinct`` as
        in :meth:`meis`)."""
        return self._top(self.abs_l2(layer, granularity).astype(np.float64), k, True, None, distinct)

    def select(self, top_activation: int = 0, bottom_activation: int = 0, top_abs: int = 0, top_tension: int = 0,
               layer: Optional[str] = None, score=DEFAULT_SCORE, granularity: str = "element",
               norm: str = "l1", distinct: bool = True) -> np.ndarray:
        """Union of several selections, as the attribution atlas samples images: ``top_activation`` MEIs,
        ``bottom_activation`` MIIs, the ``top_abs`` images with the largest ``|S|_2`` at ``layer`` and the
        ``top_tension`` MTIs at ``layer`` by ``score`` (with ``granularity`` and ``norm``), each ``distinct`` as in
        :meth:`meis`. Returns (m,) int64
        sorted unique dataset indices (m <= the sum of the k's)."""
        top_activation, bottom_activation, top_abs, top_tension = (
            check_int(name, k, low=0) for name, k in (("top_activation", top_activation),
                                                      ("bottom_activation", bottom_activation),
                                                      ("top_abs", top_abs), ("top_tension", top_tension)))
        parts = []
        if top_activation:
            parts.append(self.meis(top_activation, distinct))
        if bottom_activation:
            parts.append(self.miis(bottom_activation, distinct))
        if top_abs:
            parts.append(self.top_abs(top_abs, layer, granularity, distinct))
        if top_tension:
            parts.append(self.mtis(top_tension, score, layer, granularity, norm, distinct))
        if not parts:
            raise ValueError("select needs at least one criterion > 0: top_activation, bottom_activation, top_abs "
                             "or top_tension")
        return np.unique(np.concatenate(parts)).astype(np.int64)

    def summary(self) -> dict:
        """Mean activation of the top-10 MEIs, MIIs and (per layer, by the scan's tension score) MTIs with
        the MTIs' median P and N percentiles, mean P and N and the completeness r at every layer. A scan
        too small for percentile ranks reports its MTIs by ``"min"`` (``mti_score`` says which)."""
        out = {"type": self.kind(), "feature": self.feature.name, "dataset": self.dataset, "images": len(self),
               "dataset_size": int(self.dataset_size)}
        if not len(self):
            return out
        with warnings.catch_warnings():  # the grids say it; a summary of a few-photo dataset need not
            warnings.simplefilter("ignore", RepeatedSourcesWarning)
            return self._summary(out)

    def _summary(self, out: dict) -> dict:
        k, score = min(10, len(self)), self.info.get("score", "min")
        small = len(self) < MIN_PERCENTILE_IMAGES
        score = "min" if small and score == "percentile" else score
        mean = lambda idx: float(self.activation[np.isin(self.indices, idx)].mean())  # noqa: E731
        out.update(k=k, mti_score=score, mean_activation=float(self.activation.mean()), mei_mean_activation=mean(self.meis(k)),
                   mii_mean_activation=mean(self.miis(k)))
        sums = self.completeness_sums()
        out["layers"] = {l: {"completeness_r": self.completeness.get(l), "completeness_slope": sums[l][0],
                             "completeness_share": sums[l][1], "mean_P": float(self.P(l).mean()),
                             "mean_N": float(self.N(l).mean()), "mti_mean_activation": mean(self.mtis(k, score, l))}
                         for l in self.layers}
        for l in [] if small else self.layers:
            pct = self.percentiles(l)[np.isin(self.indices, self.mtis(k, score, l))]
            out["layers"][l].update(mti_median_P_percentile=float(np.median(pct[:, 0])),
                                    mti_median_N_percentile=float(np.median(pct[:, 1])))
        return out

    def completeness_sums(self) -> Dict[str, Tuple[float, float]]:
        """Per layer ``(slope, share)`` of :func:`~lucent_inhibit.attribution.agreement.sum_check`: whether
        ``E = P - N`` adds up to the activation over the scanned images (r alone is blind to scale)."""
        return {l: sum_check(self.activation, self.total(l)) for l in self.layers}

    def plot(self, path=None, ax=None, **style):
        """The MTI selection scatter (:func:`plot_scan_scatter`: P against N at the first layer, coloured by
        activation); returns the Figure, a PNG at ``path`` when given."""
        from .figures import plot_scan_scatter

        return plot_scan_scatter(self, path, ax, **style)

    @classmethod
    def load(cls, path) -> "ScanResult":
        """Read a result file written by :meth:`save` (``path`` as given when it exists, else with ``.npz``
        appended: :func:`~lucent_inhibit.core.results.load_path`), or a finished scan
        folder written by ``scan(out=...)`` (read through :func:`lucent_inhibit.scanning.store.load_chunks`), or a
        stage's output folder holding ``scan.npz``."""
        result_path(path)  # InputError for a path that is not a str or os.PathLike
        path = stage_scan_file(path)
        if os.path.isdir(os.fspath(path)):
            manifest, parts = load_chunks(os.fspath(path), cls)
            result = concat_rows(parts, parts[0])
            result.completeness = manifest.get("completeness", {})
            result.info = manifest.get("info", result.info)
            return result
        return super().load(path)

