"""The :class:`Microscope` result: every unit of one or more layers with its excitation, inhibition and
tension over a dataset (Hamblin et al. 2024, section 2), its top images and the channels of the attribution
layer that inhibit and excite it most on its maximally tense images.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from ..core.features import Feature
from ..core.results import Result

#: the three image groups of every unit, in the order of ``tops``' second axis
GROUPS = ("meis", "miis", "mtis")
#: percentile band of f (among the dataset images) in which an MTI counts as quiet (f near its median)
QUIET_BAND = (25.0, 75.0)


@dataclass
class Microscope(Result):
    """Result of :func:`~lucent_inhibit.microscope.microscope`: K units (columns) over n images (rows).

    Attributes:
        layers: the feature layers; attr_layers: each one's attribution layer (a cut before it).
        features: the K units (each a :class:`Feature` of one of ``layers``).
        layer_index: (K,) int64 index into ``layers`` of each unit.
        indices: (n,) int64 dataset index of each row; items: (n,) str identity of each image.
        activation: (n, K) float32 ``f``; pos, neg: (n, K) float32 ``P`` and ``N`` at each unit's
            attribution layer (element granularity, L1; N non-negative).
        share: (K,) float64 share of inhibition ``sum N / sum (P + N)`` over the images.
        median_tension: (K,) float64 median over the images of the tension (the smaller of P's and N's
            percentile ranks, 0-100).
        quiet: (K,) float64 fraction of the unit's MTIs whose f has a percentile rank in :data:`QUIET_BAND`.
        tops: (K, 3, t) int64 dataset indices of the MEIs, MIIs and MTIs (:data:`GROUPS`), best first.
        top_percentiles: (K, 3, t, 3) float32 percentile ranks (0-100) of f, P and N of those images.
        inhibitors, exciters: (K, m) int64 channels of the attribution layer with the largest
            ``sum relu(-S)`` / ``sum relu(S)`` over the unit's MTIs and positions, largest first.
        inhibitor_share, exciter_share: (K, m) float64 those channels' shares of the MTIs' N / P.
        inhibitor_effect, exciter_effect: (K, m) float64 mean change of the unit's f over its MTIs when that
            channel alone is set to zero (forward re-run from the attribution layer): positive for a channel
            that held the unit down.
        completeness: (K,) float64 Pearson r of f and ``P - N`` over the images.
        image_ids: (u,) int64 dataset indices of every image shown; thumbnails: (u, 3, T, T) uint8 of them.
        shown_layers, shown_units: (V,) str and int64, every channel shown: the units, then the channels listed
            as inhibitors or exciters; shown_tops: (V, k) int64 the dataset images with each one's largest mean
            activation over positions.
        visuals: (V, 3, S, S) uint8 feature visualization of each shown channel (Lucent's channel objective),
            or (0, 3, 1, 1) when not rendered; visual_moved: (V,) bool whether each render moved
            (:mod:`lucent_inhibit.core.motion`; a still render shows noise, not the channel).
        inversions: (K, k, 2, 3, T, T) uint8 the excitatory and inhibitory inversions of each unit's first k
            MTIs (k = 0: none made); inversion_separated: (K, k) bool whether each pair separates (the
            excitatory render drives the unit more).
        dataset, dataset_size, info: identity of the images and the settings.
    """

    layers: List[str]
    attr_layers: List[str]
    features: List[Feature]
    layer_index: np.ndarray
    indices: np.ndarray
    items: np.ndarray
    activation: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    share: np.ndarray
    median_tension: np.ndarray
    quiet: np.ndarray
    tops: np.ndarray
    top_percentiles: np.ndarray
    inhibitors: np.ndarray
    inhibitor_share: np.ndarray
    exciters: np.ndarray
    exciter_share: np.ndarray
    completeness: np.ndarray
    image_ids: np.ndarray
    thumbnails: np.ndarray
    inhibitor_effect: np.ndarray
    exciter_effect: np.ndarray
    shown_layers: np.ndarray
    shown_units: np.ndarray
    shown_tops: np.ndarray
    visuals: np.ndarray
    visual_moved: np.ndarray
    inversions: np.ndarray
    inversion_separated: np.ndarray
    dataset: str = ""
    dataset_size: int = 0
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.features)

    def column(self, layer: str, unit: int) -> int:
        """The column of unit ``unit`` of feature layer ``layer``; ``KeyError`` when it is not in the microscope."""
        for j, f in enumerate(self.features):
            if f.layer == layer and f.unit == int(unit):
                return j
        raise KeyError(f"unit {unit} of layer {layer!r} is not in this microscope (layers {self.layers})")

    def find(self, layer: str, unit: int) -> Optional[int]:
        """:meth:`column`, or None when the unit is not in the microscope."""
        try:
            return self.column(layer, unit)
        except KeyError:
            return None

    def shown(self, layer: str, channel: int) -> Optional[int]:
        """The row of channel ``channel`` of ``layer`` in the shown channels (``shown_*``, ``visuals``), or None."""
        hit = np.flatnonzero((self.shown_layers == layer) & (self.shown_units == int(channel)))
        return int(hit[0]) if hit.size else None

    def visual(self, layer: str, channel: int) -> Optional[np.ndarray]:
        """(S, S, 3) uint8 feature visualization of channel ``channel`` of ``layer``, or None (not rendered)."""
        v = self.shown(layer, channel)
        return None if v is None or not len(self.visuals) else self.visuals[v].transpose(1, 2, 0)

    def attr_layer(self, j: int) -> str:
        """The attribution layer of column ``j``."""
        return self.attr_layers[int(self.layer_index[j])]

    def ranking(self) -> np.ndarray:
        """(K,) columns by share of inhibition, largest first (NaN last, ties by column)."""
        s = np.nan_to_num(self.share, nan=-1.0)
        return np.lexsort((np.arange(s.size), -s))

    def group(self, j: int, name: str) -> Tuple[np.ndarray, np.ndarray]:
        """``(indices (t,), percentiles (t, 3))`` of column ``j``'s group ``name`` (one of :data:`GROUPS`)."""
        g = GROUPS.index(name)
        return self.tops[j, g], self.top_percentiles[j, g]

    def thumbnail(self, index: int) -> np.ndarray:
        """(T, T, 3) uint8 thumbnail of dataset image ``index``."""
        row = int(np.flatnonzero(self.image_ids == int(index))[0])
        return self.thumbnails[row].transpose(1, 2, 0)

    def unit_row(self, j: int) -> dict:
        """Column ``j``'s numbers: unit, layer, share, median tension, quiet fraction, MTIs, top channels."""
        f = self.features[j]
        return {"layer": f.layer, "unit": int(f.unit), "attr_layer": self.attr_layer(j), "share": float(self.share[j]),
                "median_tension": float(self.median_tension[j]), "quiet": float(self.quiet[j]),
                "mtis": self.tops[j, 2].tolist(), "inhibitors": self.inhibitors[j].tolist(),
                "inhibitor_share": self.inhibitor_share[j].tolist(),
                "inhibitor_effect": self.inhibitor_effect[j].tolist(), "exciters": self.exciters[j].tolist(),
                "exciter_share": self.exciter_share[j].tolist(), "exciter_effect": self.exciter_effect[j].tolist()}

    def summary(self) -> dict:
        """Units, images, layers, the mean share of inhibition and the five most inhibited units."""
        return {"type": self.kind(), "units": len(self), "images": int(self.indices.size), "layers": list(self.layers),
                "attr_layers": list(self.attr_layers), "dataset": self.dataset,
                "mean_share": float(np.nanmean(self.share)) if len(self) else None,
                "mean_quiet": float(np.nanmean(self.quiet)) if len(self) else None,
                "most_inhibited": [self.unit_row(j) for j in self.ranking()[:5]]}

    def _repr_numbers(self) -> dict:
        top = self.ranking()[:1]
        return {"mean_share": float(np.nanmean(self.share)),
                **({"most_inhibited": self.features[top[0]].name} if top.size else {})}

    def plot(self, path=None, ax=None, **style):
        """Every unit's share of inhibition against its median tension (:func:`plot_microscope`)."""
        from .figures import plot_microscope

        return plot_microscope(self, path, ax, **style)
