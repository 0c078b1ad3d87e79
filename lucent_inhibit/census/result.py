"""The :class:`Census` result: per image and feature, the value ``f`` and the totals ``P`` and ``N``
(Hamblin et al. 2024, section 2), with the rankings a census is for: the share of inhibition of each
feature, its tension distribution and its maximally tense images.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Union

import numpy as np

from ..attribution.totals import MIN_PERCENTILE_IMAGES, percentile_ranks, top_indices
from ..core.features import Feature
from ..core.results import Result

#: tension quantiles reported per unit (percent)
QUANTILES = (50.0, 90.0, 99.0)


@dataclass
class Census(Result):
    """Per-image excitation and inhibition of K features (rows are images in dataset-index order).

    Attributes:
        features: the K features (columns), e.g. every unit of one layer at one position.
        layers: the L attribution layers.
        indices: (n,) int64 dataset index of each row.
        activation: (n, K) float32 feature values ``f``.
        pos: (n, K, L) float32 excitatory totals ``P = sum relu(S)`` (element granularity, L1).
        neg: (n, K, L) float32 inhibitory totals ``N = sum relu(-S)`` (non-negative).
        items: (n,) str identity of each image (path, crop box or index).
        completeness: (K, L) float64 Pearson r between ``f`` and ``E = P - N`` over the images (NaN when
            undefined, fewer than 3 images).
        dataset, dataset_size: identity and length of the dataset; info: settings of the census.
    """

    features: List[Feature]
    layers: List[str]
    indices: np.ndarray
    activation: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    items: np.ndarray
    completeness: np.ndarray
    dataset: str = ""
    dataset_size: int = 0
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    # -- columns and layers -------------------------------------------------------------------------
    def column(self, unit: Union[int, Feature]) -> int:
        """The column of a feature: a :class:`Feature` of the census, or a unit number that one feature has."""
        if isinstance(unit, Feature):
            if unit not in self.features:
                raise KeyError(f"{unit.name} is not one of the census's {len(self.features)} features")
            return self.features.index(unit)
        hits = [j for j, f in enumerate(self.features) if f.unit is not None and f.unit == unit]
        if len(hits) != 1:
            units = [f.unit for f in self.features][:12]
            raise KeyError(f"unit {unit!r} names {len(hits)} features of this census (units {units}...); pass a Feature")
        return hits[0]

    def _layer(self, layer: Optional[str]) -> int:
        if layer is not None and layer not in self.layers:
            raise KeyError(f"layer {layer!r} was not attributed; census attribution layers: {self.layers}")
        return 0 if layer is None else self.layers.index(layer)

    def P(self, layer: Optional[str] = None) -> np.ndarray:
        """(n, K) excitatory totals at ``layer`` (default: the first attribution layer)."""
        return self.pos[:, :, self._layer(layer)]

    def N(self, layer: Optional[str] = None) -> np.ndarray:
        """(n, K) inhibitory totals (non-negative) at ``layer``."""
        return self.neg[:, :, self._layer(layer)]

    # -- inhibition and tension ---------------------------------------------------------------------
    def share(self, layer: Optional[str] = None) -> np.ndarray:
        """(K,) each feature's share of inhibition ``sum N / sum (P + N)`` over the images, in [0, 1]
        (NaN for a feature with no attribution at all): how much inhibition shapes it."""
        p, n = self.P(layer).astype(np.float64).sum(0), self.N(layer).astype(np.float64).sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(p + n > 0, n / (p + n), np.nan)

    def ranking(self, layer: Optional[str] = None) -> np.ndarray:
        """(K,) columns ordered by share of inhibition, largest first (NaN last; ties by column)."""
        s = self.share(layer)
        return np.lexsort((np.arange(s.size), -np.nan_to_num(s, nan=-1.0)))

    def percentiles(self, layer: Optional[str] = None) -> np.ndarray:
        """(n, K, 2) percentile ranks in [0, 100] of each image's P and N among the census's images, per
        feature (as :meth:`~lucent_inhibit.ScanResult.percentiles`); ``ValueError`` under 10 images."""
        p, n = self.P(layer), self.N(layer)
        return np.stack([np.stack([percentile_ranks(p[:, j]), percentile_ranks(n[:, j])], 1)
                         for j in range(p.shape[1])], 1)

    def tension(self, layer: Optional[str] = None) -> np.ndarray:
        """(n, K) scale-free tension: the smaller of P's and N's percentile ranks (the scan's default)."""
        return self.percentiles(layer).min(2)

    def tension_quantiles(self, q: Sequence[float] = QUANTILES, layer: Optional[str] = None) -> np.ndarray:
        """(K, len(q)) quantiles ``q`` (percent) of each feature's tension distribution over the images."""
        return np.percentile(self.tension(layer), list(q), axis=0).T

    def mtis(self, unit: Union[int, Feature], k: int = 10, layer: Optional[str] = None) -> np.ndarray:
        """Dataset indices of the ``k`` maximally tense images of one feature, ranked as a scan ranks them
        (smaller percentile rank descending, ties by the larger rank, then by dataset index)."""
        j = self.column(unit)
        pct = self.percentiles(layer)[:, j]
        return top_indices(self.indices, pct.min(1), k, True, pct.max(1))

    def meis(self, unit: Union[int, Feature], k: int = 10) -> np.ndarray:
        """Dataset indices of one feature's ``k`` maximally exciting images (activation descending)."""
        return top_indices(self.indices, self.activation[:, self.column(unit)].astype(np.float64), k, True)

    def summary(self) -> dict:
        """Features, images and, at the first layer: the mean and spread of the share of inhibition, the
        ten most inhibited features (share, tension quantiles, top-5 MTIs) and the completeness r range."""
        out = {"type": self.kind(), "features": len(self.features), "images": len(self), "layers": list(self.layers),
               "dataset": self.dataset, "dataset_size": int(self.dataset_size)}
        if not len(self):
            return out
        share = self.share()
        out.update(mean_share=float(np.nanmean(share)), min_share=float(np.nanmin(share)),
                   max_share=float(np.nanmax(share)), min_completeness_r=float(np.nanmin(self.completeness[:, 0]))
                   if np.isfinite(self.completeness[:, 0]).any() else None)
        enough = len(self) >= MIN_PERCENTILE_IMAGES
        quant = self.tension_quantiles() if enough else None
        top = []
        for j in self.ranking()[:10]:
            row = {"feature": self.features[j].name, "share": float(share[j])}
            if enough:
                row.update({f"tension_q{int(q)}": float(v) for q, v in zip(QUANTILES, quant[j])},
                           mtis=self.mtis(self.features[j], min(5, len(self))).tolist())
            top.append(row)
        out["most_inhibited"] = top
        return out

    def plot(self, path=None, ax=None, **style):
        """The units ranked by share of inhibition, with their tension quantiles (:func:`plot_census`);
        returns the Figure."""
        from .figures import plot_census

        return plot_census(self, path, ax, **style)


