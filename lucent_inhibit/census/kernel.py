"""The census's backward: per feature and image the element-L1 totals ``P = sum relu(S)`` and
``N = sum relu(-S)`` of ``S_l = grad_{h_l} f * h_l`` (Hamblin et al. 2024, section 2), without keeping S.

A feature read at one position of a map has a gradient that is exactly zero outside its receptive field at
an earlier layer (a 1x1 convolution's: one position), so ``S`` is exactly zero there too. The totals of a
chunk of features are therefore taken on the smallest spatial box that holds every nonzero gradient of the
chunk (found on the gradients themselves, so the totals are exact, not an estimate of the receptive field);
a feature whose gradient fills the map (``position="mean"``) gets the whole map. This leaves the census with
little more work than its forward and backward passes (``benchmarks/census.py``: against that physical limit).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

from ..attribution import _checked_gradient, _unused_layer_error
from ..features import Feature

Box = Tuple[slice, slice]


def grow_support(support: Optional[torch.Tensor], g: torch.Tensor) -> torch.Tensor:
    """The spatial positions (H, W) bool where ``g`` (..., C, H, W) is nonzero for some leading index and
    channel, or-ed into ``support`` (None: none yet)."""
    lead = tuple(range(g.dim() - 3))  # batch dims; channels are dim -3
    hi, lo = g.amax(-3), g.amin(-3)  # one contiguous reduction each in channels_last memory
    nonzero = ((hi != 0) | (lo != 0)).any(lead[0]) if lead else (hi != 0) | (lo != 0)
    for _ in lead[1:]:
        nonzero = nonzero.any(0)
    return nonzero if support is None else support.logical_or_(nonzero)


def support_box(support: Optional[torch.Tensor], shape: Sequence[int]) -> Box:
    """The bounding box (rows, columns) of the True positions of ``support`` (H, W); the whole map of
    ``shape``'s last two dims when ``support`` is None; an empty box when nothing is nonzero."""
    if support is None:
        return slice(0, int(shape[-2])), slice(0, int(shape[-1]))
    rows = support.any(1).nonzero().flatten().tolist()
    cols = support.any(0).nonzero().flatten().tolist()
    if not rows:
        return slice(0, 0), slice(0, 0)
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _totals(grads: List[torch.Tensor], a: torch.Tensor, box: Optional[Box]) -> Tuple[torch.Tensor, torch.Tensor]:
    """P, N (k, B) of ``S = g * a`` for the k gradients ``grads`` of one layer (each shaped like ``a``, or one
    stacked (k, ...) tensor), summed inside ``box`` (maps) or over everything (other layers). ``grads`` is
    emptied as soon as S exists, so that at most two chunk-sized tensors are alive (S and one clamped copy)."""
    if box is not None:
        a = a[..., box[0], box[1]]
        grads[:] = [g[..., box[0], box[1]] for g in grads]
    one = len(grads) == 1 and grads[0].dim() == a.dim() + 1  # the batched backward's (k, ...) tensor
    s = grads[0] if one else torch.stack(grads)
    grads.clear()
    s = s.mul(a.detach()) if one else s.mul_(a.detach())  # autograd's own tensor may be an expanded view
    dims = tuple(range(2, s.dim()))
    tmp = torch.empty_like(s)
    pos = torch.clamp(s, min=0, out=tmp).sum(dims)
    neg = torch.clamp(s, max=0, out=tmp).sum(dims).neg_()
    return pos, neg


def chunk_totals(values: torch.Tensor, acts: Sequence[torch.Tensor], features: Sequence[Feature],
                 layers: Sequence[str], rows: range, retain: bool, batched: bool
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Totals ``P``, ``N`` (k, B, L) float32 of the features ``rows`` of a
    :func:`~lucent_inhibit.attribution.feature_graph` (``values`` (K, B), ``acts`` at the L ``layers``).

    ``batched``: one backward pass vectorised over the chunk (``is_grads_batched``); else one backward per
    feature. ``retain`` keeps the graph for later chunks. Maps (B, C, H, W) are summed on the chunk's support
    box (see the module docstring); token and linear layers over everything.
    """
    f = values[rows.start:rows.stop]
    if not f.requires_grad:
        raise _unused_layer_error(layers[0], features[rows.start], "no gradient path from it to the feature")
    if batched and len(rows) > 1:
        eye = torch.eye(len(rows), dtype=f.dtype, device=f.device)[:, :, None].expand(-1, -1, f.shape[1])
        stacked = torch.autograd.grad(f, list(acts), eye, allow_unused=True, retain_graph=retain,
                                      is_grads_batched=True)
        grads = [[_checked_gradient(g, l, features[rows.start])] for l, g in zip(layers, stacked)]
    else:
        grads = [[] for _ in layers]
        for i in range(len(rows)):
            per_layer = torch.autograd.grad(f[i].sum(), list(acts), allow_unused=True,
                                            retain_graph=retain or i < len(rows) - 1)
            for j, (l, g) in enumerate(zip(layers, per_layer)):
                grads[j].append(_checked_gradient(g, l, features[rows.start + i]))
    pos, neg = [], []
    for gs, a in zip(grads, acts):
        box = _chunk_box(gs, a) if a.dim() == 4 else None
        p, n = _totals(gs, a, box)
        pos.append(p.float())
        neg.append(n.float())
    return torch.stack(pos, -1), torch.stack(neg, -1)


def _chunk_box(grads: List[torch.Tensor], a: torch.Tensor) -> Box:
    """The support box of a chunk's gradients at a map layer; stops looking once the box fills the map."""
    support = None
    for g in grads:
        support = grow_support(support, g)
        if bool(support.all()):
            return support_box(None, a.shape)
    return support_box(support, a.shape)
