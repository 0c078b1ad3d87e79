"""What a dataset scan keeps of each image (Hamblin et al. 2024, section 2; SPEC 2.2).

For a batch of attributions ``S_l = grad_{h_l} f * h_l`` (one per attribution layer, shaped like the
layer), :func:`signed_stats` reduces each image to its excitatory and inhibitory totals
``P = sum relu(S)`` and ``N = sum relu(-S)`` in four variants (element / channel granularity, L1 / L2
norm) and, optionally, the spatial maps of ``relu(S)`` and ``relu(-S)`` summed over channels.
:func:`chunk_rows` streams one chunk of dataset indices through the model and returns the rows that
:class:`~lucent_inhibit.scanning.result.ScanResult` stores; the attributions themselves are dropped batch by batch.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch

from ..attribution.agreement import pearson, warn_if_incomplete
from ..attribution.attribute import Attribution
from ..attribution.passes import DatasetPass, check_shape
from ..attribution.totals import MIN_PERCENTILE_IMAGES
from ..core.features import Feature
from ..core.tokens import patch_maps
from ..data.datasets import describe_item, item_sources


def signed_stats(scores: torch.Tensor, keep_maps: bool, grid=None):
    """(B, C, H, W), (B, T, C) (a token layer; ``grid``: its :class:`~lucent_inhibit.core.tokens.TokenGrid`, None
    to infer it) or (B, C) attribution -> ``pos`` (B, 2, 2), ``neg`` (B, 2, 2) float32 arrays (axis 1:
    element, channel granularity; axis 2: L1, L2 norm) and ``maps``: ``(relu(S), relu(-S))`` summed over
    channels, each (B, H, W) float16, or None (linear layer or ``keep_maps=False``).

    Few passes over the attribution: relu(S), relu(-S) = relu(S) - S, their channel sums (the maps,
    whose spatial sums are the L1 totals), their L2 norms, and the spatial sum per channel.
    """
    s = scores.float().cpu()
    b = s.shape[0]
    pos_el = s.clamp(min=0)
    neg_el = pos_el - s
    pos, neg, maps = torch.empty(b, 2, 2), torch.empty(b, 2, 2), None
    if s.dim() in (3, 4):
        cdim = 2 if s.dim() == 3 else 1  # token layers keep channels last
        pm, nm = pos_el.sum(cdim), neg_el.sum(cdim)  # (B, H, W) or (B, T)
        pos[:, 0, 0], neg[:, 0, 0] = pm.flatten(1).sum(1), nm.flatten(1).sum(1)
        if keep_maps:
            if s.dim() == 3:  # maps over the patch grid; prefix tokens count in the totals only
                pm, nm = patch_maps(pm, grid), patch_maps(nm, grid)
            maps = (pm.half().numpy(), nm.half().numpy())
        ch = s.sum(1) if s.dim() == 3 else s.flatten(2).sum(2)
    else:
        pos[:, 0, 0], neg[:, 0, 0] = pos_el.sum(1), neg_el.sum(1)
        ch = s
    pos[:, 0, 1] = torch.linalg.vector_norm(pos_el.reshape(b, -1), dim=1)
    neg[:, 0, 1] = torch.linalg.vector_norm(neg_el.reshape(b, -1), dim=1)
    pc, nc = ch.clamp(min=0), ch.clamp(max=0).neg()
    pos[:, 1, 0], neg[:, 1, 0] = pc.sum(1), nc.sum(1)
    pos[:, 1, 1], neg[:, 1, 1] = torch.linalg.vector_norm(pc, dim=1), torch.linalg.vector_norm(nc, dim=1)
    return pos.numpy(), neg.numpy(), maps


def reducible(att: Attribution, layers, keep_maps: bool, grid=None) -> Attribution:
    """``att`` once :func:`signed_stats` has reduced its first image at every layer of ``layers``: a layer the
    statistics cannot take fails here, before a scan writes anything."""
    for l in layers:
        signed_stats(att.scores[l][:1], keep_maps, grid)
    return att


def chunk_rows(run: DatasetPass, feature: Feature, idx: np.ndarray, keep_maps: bool, shape: tuple,
               first: Optional[Tuple[np.ndarray, Attribution]] = None, bar=None) -> Dict[str, object]:
    """Scan the dataset images ``idx`` (n,) in batches and return their rows: ``indices`` (n,) int64,
    ``activation`` (n,) float32, ``pos`` / ``neg`` (n, L, 2, 2) float32, ``items`` and ``source`` (n,) str and
    ``pos_maps`` / ``neg_maps`` {layer: (n, h, w) float16}. ``first``, an already attributed batch that
    starts ``idx``, is used instead of reading those images again; ``bar`` counts the images done."""
    acts, pos, neg = [], [], []
    pmaps: Dict[str, list] = {l: [] for l in run.layers}
    nmaps: Dict[str, list] = {l: [] for l in run.layers}

    def attributions():
        if first is not None:
            yield first
        for bidx, images in run.batches(idx[0 if first is None else len(first[0]):]):
            check_shape(bidx, images, shape)
            yield bidx, run.attribute(images, feature)

    for bidx, att in attributions():
        acts.append(att.activation.float().cpu().numpy())
        stats = [signed_stats(att.scores[l], keep_maps, feature.grid) for l in run.layers]
        pos.append(np.stack([s[0] for s in stats], 1))
        neg.append(np.stack([s[1] for s in stats], 1))
        for l, (_, _, m) in zip(run.layers, stats):
            if m is not None:
                pmaps[l].append(m[0])
                nmaps[l].append(m[1])
        del att
        if bar is not None:
            bar.update(len(bidx))
    return {
        "indices": np.asarray(idx, np.int64), "activation": np.concatenate(acts).astype(np.float32),
        "pos": np.concatenate(pos).astype(np.float32), "neg": np.concatenate(neg).astype(np.float32),
        "items": np.asarray([describe_item(run.dataset, int(i)) for i in idx], dtype=str),
        "source": item_sources(run.dataset, idx),
        "pos_maps": {l: np.concatenate(v) for l, v in pmaps.items() if v},
        "neg_maps": {l: np.concatenate(v) for l, v in nmaps.items() if v},
    }


def concat_rows(parts: list, like):
    """The :class:`~lucent_inhibit.scanning.result.ScanResult` (of ``like``'s type) holding the rows of ``parts`` (at
    least one) sorted by dataset index; metadata from ``like``."""
    idx = np.concatenate([p.indices for p in parts])
    order = np.argsort(idx, kind="stable")
    if np.unique(idx).size != idx.size:
        dup = np.unique(idx[np.nonzero(np.diff(np.sort(idx)) == 0)[0]])[:5]
        raise ValueError(f"the parts overlap: dataset indices {dup.tolist()} appear more than once")
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])[order]  # noqa: E731
    map_layers = [l for l in like.layers if all(l in p.pos_maps for p in parts)]
    source = None if any(getattr(p, "source", None) is None for p in parts) else cat("source")
    return type(like)(
        feature=like.feature, layers=list(like.layers), indices=idx[order].astype(np.int64),
        activation=cat("activation"), pos=cat("pos"), neg=cat("neg"), items=cat("items"),
        pos_maps={l: np.concatenate([p.pos_maps[l] for p in parts])[order] for l in map_layers},
        neg_maps={l: np.concatenate([p.neg_maps[l] for p in parts])[order] for l in map_layers},
        dataset=like.dataset, dataset_size=like.dataset_size, info=dict(like.info), source=source,
    )


def percentiles_or_none(result, layer=None, granularity: str = "element", norm: str = "l1") -> Optional[np.ndarray]:
    """(n, 2) P and N percentile ranks (:meth:`~lucent_inhibit.scanning.result.ScanResult.percentiles`) of a scan's
    images, or None for a scan of fewer than :data:`MIN_PERCENTILE_IMAGES` images (figures and reports
    then show raw totals only)."""
    return None if len(result) < MIN_PERCENTILE_IMAGES else result.percentiles(layer, granularity, norm)


def completeness_r(result) -> Dict[str, float]:
    """Per layer, Pearson r between the activation and ``E = P - N`` over the scanned images of a
    :class:`~lucent_inhibit.scanning.result.ScanResult` (NaN with fewer than 3 images, too few for r to mean
    anything, or when either is constant)."""
    if len(result) < 3:
        return {l: float("nan") for l in result.layers}
    return {l: pearson(result.activation, result.total(l)) for l in result.layers}


def measure_completeness(result, threshold: float):
    """Store :func:`completeness_r` in ``result`` and warn for each layer where it is below ``threshold``
    or where E does not add up to the activation (:func:`~lucent_inhibit.attribution.agreement.sum_check`)."""
    result.completeness = completeness_r(result)
    sums = result.completeness_sums() if len(result) >= 3 else {}
    for layer, r in result.completeness.items():
        if np.isfinite(r):
            warn_if_incomplete(r, result.feature, layer, threshold, *sums.get(layer, (None, None)))
    return result
