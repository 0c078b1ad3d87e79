"""Layer census: excitation, inhibition and tension of many features from one pass over a dataset
(Hamblin et al. 2024, section 2, for every unit of a layer at once).

A scan (:mod:`~lucent_inhibit.scanning.result`) follows one feature; :func:`layer_census` follows K of them (every
unit of a layer, or a list of features) with one forward pass per batch and the backward in chunks of
``chunk_size`` features (the forward pass :func:`~lucent_inhibit.attribute`, and so the scan, runs for
K = 1; the backward and totals in :mod:`lucent_inhibit.attribution.kernel`). For every image and feature it keeps
the feature's value ``f`` and the element-granularity L1 totals ``P = sum relu(S)`` and ``N = sum relu(-S)``
of the attribution ``S_l = grad_{h_l} f * h_l`` at each attribution layer: a K-unit census equals K
one-feature scans of the same images, in ``3 n K L`` floats.

:class:`Census` ranks the units by their share of inhibition ``N / (P + N)`` (totals over the dataset),
gives each unit's tension distribution (per image, the scan's default scale-free tension: the smaller of
the percentile ranks of P and N among the census's images) and its maximally tense images (MTIs);
:func:`plot_census` draws the ranking.

Modules: ``result`` (:class:`Census`), ``run`` (:func:`layer_census`), ``figure`` (:func:`plot_census`).
"""
from .figures import plot_census
from .result import QUANTILES, Census
from .run import ChunkMemoryError, layer_census

__all__ = ["Census", "ChunkMemoryError", "QUANTILES", "layer_census", "plot_census"]
