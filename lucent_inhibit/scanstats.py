"""What a dataset scan keeps of each image (Hamblin et al. 2024, section 2; SPEC 2.2).

For a batch of attributions ``S_l = grad_{h_l} f * h_l`` (one per attribution layer, shaped like the
layer), :func:`signed_stats` reduces each image to its excitatory and inhibitory totals
``P = sum relu(S)`` and ``N = sum relu(-S)`` in four variants (element / channel granularity, L1 / L2
norm) and, optionally, the spatial maps of ``relu(S)`` and ``relu(-S)`` summed over channels.
:func:`chunk_rows` streams one chunk of dataset indices through the model and returns the rows that
:class:`~lucent_inhibit.scanning.ScanResult` stores; the attributions themselves are dropped batch by batch.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch

from .attribution import Attribution
from .data import describe_item
from .datapass import DatasetPass
from .features import Feature


def signed_stats(scores: torch.Tensor, keep_maps: bool):
    """(B, C, H, W) or (B, C) attribution -> ``pos`` (B, 2, 2), ``neg`` (B, 2, 2) float32 arrays (axis 1:
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
    if s.dim() == 4:
        pm, nm = pos_el.sum(1), neg_el.sum(1)  # (B, H, W)
        pos[:, 0, 0], neg[:, 0, 0] = pm.flatten(1).sum(1), nm.flatten(1).sum(1)
        if keep_maps:
            maps = (pm.half().numpy(), nm.half().numpy())
        ch = s.flatten(2).sum(2)
    else:
        pos[:, 0, 0], neg[:, 0, 0] = pos_el.sum(1), neg_el.sum(1)
        ch = s
    pos[:, 0, 1] = torch.linalg.vector_norm(pos_el.reshape(b, -1), dim=1)
    neg[:, 0, 1] = torch.linalg.vector_norm(neg_el.reshape(b, -1), dim=1)
    pc, nc = ch.clamp(min=0), ch.clamp(max=0).neg()
    pos[:, 1, 0], neg[:, 1, 0] = pc.sum(1), nc.sum(1)
    pos[:, 1, 1], neg[:, 1, 1] = torch.linalg.vector_norm(pc, dim=1), torch.linalg.vector_norm(nc, dim=1)
    return pos.numpy(), neg.numpy(), maps


def check_shape(idx: np.ndarray, images: torch.Tensor, shape: tuple) -> None:
    """``ValueError`` unless the batch's images (B, 3, H, W) have the scan's image ``shape`` (3, H, W)."""
    if tuple(images.shape[1:]) != tuple(shape):
        raise ValueError(
            f"dataset item {int(idx[0])} has shape {tuple(images.shape[1:])}, but the scan's images have shape "
            f"{tuple(shape)}: all images of a scan must share one shape (resize them, e.g. ImageFolder(root, size=224))"
        )


def chunk_rows(run: DatasetPass, feature: Feature, idx: np.ndarray, keep_maps: bool, shape: tuple,
               first: Optional[Tuple[np.ndarray, Attribution]] = None, bar=None) -> Dict[str, object]:
    """Scan the dataset images ``idx`` (n,) in batches and return their rows: ``indices`` (n,) int64,
    ``activation`` (n,) float32, ``pos`` / ``neg`` (n, L, 2, 2) float32, ``items`` (n,) str and
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
        stats = [signed_stats(att.scores[l], keep_maps) for l in run.layers]
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
        "pos_maps": {l: np.concatenate(v) for l, v in pmaps.items() if v},
        "neg_maps": {l: np.concatenate(v) for l, v in nmaps.items() if v},
    }
