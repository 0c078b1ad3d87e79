"""The measurement behind :func:`lucent_inhibit.completeness_check.completeness`: per feature and image its value
``f`` and, at each attribution layer, its total attribution ``E`` (Hamblin et al. 2024, section 2: E adds up to
f where attribution is complete). Gradient x activation shares one forward pass among the features of a batch;
integrated gradients attribute one feature at a time.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

from .datapass import DatasetPass
from .features import Feature


def measure(run: DatasetPass, feats: List[Feature], n: int, method: str, steps: int):
    """``(layers in forward order, f (F, N), E (F, N, L), baseline (F, N, L) or None)`` over the first ``n``
    images: gradient x activation in one forward pass per batch for all features (:func:`_shared_forward_totals`),
    integrated gradients in one :func:`~lucent_inhibit.attribution.attribute` call per feature and batch."""
    ig = method == "integrated_gradients"
    f_vals = np.zeros((len(feats), n), dtype=np.float64)
    e_vals = np.zeros((len(feats), n, len(run.layers)), dtype=np.float64)
    base = np.zeros_like(e_vals) if ig else None
    order, workspace = None, {}  # the backward's buffers, reused by every feature and batch
    with run.bar(n, "completeness") as bar:
        for idx, images in run.batches(np.arange(n)):
            order = order or run.forward_sorted(images)
            if not ig:  # one forward pass for every feature, a backward per feature
                f_vals[:, idx], e_vals[:, idx] = _shared_forward_totals(run, images, feats, workspace)
                bar.update(len(idx))
                continue
            for i, feat in enumerate(feats):
                att = run.attribute(images, feat, method, steps)
                f_vals[i, idx] = att.activation.double().cpu().numpy()
                for j, l in enumerate(run.layers):
                    e_vals[i, idx, j] = att.total(l).double().cpu().numpy()
                    base[i, idx, j] = att.baseline_activation[l].double().cpu().numpy()
            bar.update(len(idx))
    perm = [run.layers.index(l) for l in order]
    return order, f_vals, e_vals[:, :, perm], None if base is None else base[:, :, perm]


def _shared_forward_totals(run: DatasetPass, images, feats: List[Feature], workspace: dict
                           ) -> Tuple[np.ndarray, np.ndarray]:
    """``f`` (F, B) and ``E = P - N`` (F, B, L) of gradient x activation for one batch: one forward pass
    (:func:`~lucent_inhibit.attribution.feature_graph`), then one backward per feature
    (:func:`~lucent_inhibit.census.kernel.chunk_totals`, one feature per chunk: memory as for one feature)."""
    from .attribution import feature_graph, prepare_inputs
    from .census.kernel import chunk_totals

    values, acts = feature_graph(run.model, prepare_inputs(run.model, images, run.preprocess), feats, run.layers)
    e = np.zeros((len(feats), len(images), len(run.layers)))
    for i in range(len(feats)):
        p, q = chunk_totals(values, acts, feats, run.layers, range(i, i + 1), i < len(feats) - 1, False, workspace)
        e[i] = (p[0].double() - q[0].double()).cpu().numpy()
    return values.detach().double().cpu().numpy(), e
