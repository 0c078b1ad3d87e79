"""The census's backward: per feature and image the element-L1 totals ``P = sum relu(S)`` and
``N = sum relu(-S)`` of ``S_l = grad_{h_l} f * h_l`` (Hamblin et al. 2024, section 2), without keeping S.

A feature read at one position of a map has a gradient that is exactly zero outside its receptive field at
an earlier layer (a 1x1 convolution's: one position), so ``S`` is exactly zero there too. The totals of a
chunk of features are therefore taken on the smallest spatial box that holds every nonzero gradient of the
chunk (found on the gradients themselves, so the totals are exact, not an estimate of the receptive field);
a feature whose gradient fills the map (``position="mean"``) gets the whole map. With one backward per
feature, a gradient is first tested against the chunk's box so far (zero outside it: two whole-tensor
reductions) and only searched for its own support when it is not. This leaves the census with little more
work than its forward and backward passes (``benchmarks/census.py``: against that physical limit).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

from ..core.features import Feature

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


def _buffers(workspace: Optional[dict], j: int, k: int, a: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Layer ``j``'s two (k, B, ...) buffers (the chunk's gradients, then S; the clamped copy), shaped like
    ``a`` and kept in ``workspace`` across chunks and batches (the same memory every time: fresh chunk-sized
    allocations fragment the heap), made when missing or too small."""
    shape = (k,) + tuple(a.shape)
    have = None if workspace is None else workspace.get(j)
    if have is None or have[0].shape[0] < k or tuple(have[0].shape[1:]) != shape[1:] or have[0].dtype != a.dtype:
        dense = a.is_contiguous() or a.is_contiguous(memory_format=torch.channels_last)
        strides = ((a.numel(),) + tuple(a.stride())) if dense else None  # each row laid out like ``a``: plain copies
        have = tuple(torch.empty(shape, dtype=a.dtype, device=a.device) if strides is None else
                     torch.empty_strided(shape, strides, dtype=a.dtype, device=a.device) for _ in range(2))
        if workspace is not None:
            workspace[j] = have
    return have[0][:k], have[1][:k]


def _totals(s: torch.Tensor, tmp: torch.Tensor, a: torch.Tensor, box: Optional[Box]) -> Tuple[torch.Tensor, torch.Tensor]:
    """P, N (k, B) of ``S = g * a`` from the chunk's gradients ``s`` (k, B, ...) (overwritten with S inside
    ``box``), summed inside ``box`` (maps) or over everything (other layers); ``tmp`` (like ``s``) holds the
    clamped copies."""
    if box is not None:
        a, s, tmp = (t[..., box[0], box[1]] for t in (a, s, tmp))
    s = s.mul_(a.detach())
    dims = tuple(range(2, s.dim()))
    pos = torch.clamp(s, min=0, out=tmp).sum(dims)
    neg = torch.clamp(s, max=0, out=tmp).sum(dims).neg_()
    return pos, neg


def chunk_totals(values: torch.Tensor, acts: Sequence[torch.Tensor], features: Sequence[Feature],
                 layers: Sequence[str], rows: range, retain: bool, batched: bool,
                 workspace: Optional[dict] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Totals ``P``, ``N`` (k, B, L) float32 of the features ``rows`` of a
    :func:`~lucent_inhibit.attribution.attribute.feature_graph` (``values`` (K, B), ``acts`` at the L ``layers``).

    ``batched``: one backward pass vectorised over the chunk (``is_grads_batched``); else one backward per
    feature, each gradient copied into the chunk's buffer at once, inside the support box
    (:func:`_loop_gradients`). ``retain`` keeps the graph for later chunks; ``workspace`` (a dict the caller
    keeps) reuses the buffers across calls. Maps (B, C, H, W) are summed on the chunk's support box (see the
    module docstring); token and linear layers over everything.
    """
    f, k = values[rows.start:rows.stop], len(rows)
    if not f.requires_grad:
        raise unused_layer_error(layers[0], features[rows.start], "no gradient path from it to the feature")
    bufs = [_buffers(workspace, j, k, a) for j, a in enumerate(acts)]
    if batched and k > 1:
        eye = torch.eye(k, dtype=f.dtype, device=f.device)[:, :, None].expand(-1, -1, f.shape[1])
        stacked = torch.autograd.grad(f, list(acts), eye, allow_unused=True, retain_graph=retain,
                                      is_grads_batched=True)
        boxes = []
        for j, (l, g) in enumerate(zip(layers, stacked)):
            bufs[j][0].copy_(checked_gradient(g, l, features[rows.start]))
            boxes.append(support_box(grow_support(None, g), g.shape) if acts[j].dim() == 4 else None)
    else:
        boxes = _loop_gradients(f, acts, features, layers, rows, retain, bufs)
    pos, neg = [], []
    for j, a in enumerate(acts):
        p, n = _totals(bufs[j][0], bufs[j][1], a, boxes[j] if a.dim() == 4 else None)
        pos.append(p.float())
        neg.append(n.float())
    return torch.stack(pos, -1), torch.stack(neg, -1)


def _loop_gradients(f, acts, features, layers, rows: range, retain: bool, bufs) -> List[Optional[Box]]:
    """One backward per feature; each gradient is copied into its buffer row only inside the chunk's support
    box so far (the box grows when a feature's support reaches beyond it: the earlier rows are zero there, and
    are zeroed). Returns each map layer's final box (None for other layers)."""
    boxes: List[Optional[Box]] = [None] * len(acts)
    for i in range(len(rows)):
        per_layer = torch.autograd.grad(f[i].sum(), list(acts), allow_unused=True,
                                        retain_graph=retain or i < len(rows) - 1)
        own = _own_storage(per_layer)
        for j, (l, g) in enumerate(zip(layers, per_layer)):
            g, row = checked_gradient(g, l, features[rows.start + i]), bufs[j][0][i]
            if g.dim() != 4:
                row.copy_(g)
                continue
            box = boxes[j]
            if box is not None and own[j] and _copied_if_confined(g, row, box):
                continue
            if box != support_box(None, g.shape):
                grown = _union(box, support_box(grow_support(None, g), g.shape))
                if grown != box:
                    _grow(bufs[j][0], i, box, grown)
                    boxes[j] = grown
            r, c = boxes[j]
            row[..., r, c].copy_(g[..., r, c])
    return boxes


def _own_storage(grads) -> List[bool]:
    """Per gradient: whether it is dense and shares memory with no other gradient of the list (identity
    layers can hand two layers one tensor), so that :func:`_copied_if_confined` may write into it."""
    ptrs = [None if g is None else g.untyped_storage().data_ptr() for g in grads]
    return [g is not None and ptrs.count(ptrs[j]) == 1 and
            (g.is_contiguous() or g.is_contiguous(memory_format=torch.channels_last)) for j, g in enumerate(grads)]


def _copied_if_confined(g: torch.Tensor, row: torch.Tensor, box: Box) -> bool:
    """Copy ``g`` (B, C, H, W) into ``row`` inside ``box`` and say whether ``g`` is exactly zero outside it
    (then the box's totals are the map's). Checked by zeroing the box in ``g`` (a gradient no one else
    holds) and two whole-tensor reductions; when it is not, ``g`` is put back as it was."""
    inside, kept = g[..., box[0], box[1]], row[..., box[0], box[1]]
    kept.copy_(inside)
    inside.zero_()
    if g.amax().item() == 0 and g.amin().item() == 0:
        return True
    inside.copy_(kept)
    return False


def _union(a: Optional[Box], b: Box) -> Box:
    """The bounding box of two boxes (an empty box, or None, adds nothing)."""
    if a is None or a[0].start == a[0].stop:
        return b
    if b[0].start == b[0].stop:
        return a
    return (slice(min(a[0].start, b[0].start), max(a[0].stop, b[0].stop)),
            slice(min(a[1].start, b[1].start), max(a[1].stop, b[1].stop)))


def _grow(buf: torch.Tensor, i: int, old: Optional[Box], new: Box) -> None:
    """Rows ``< i`` of ``buf`` hold gradients inside ``old`` only (zero outside): make them valid on ``new``."""
    if i == 0:
        return
    rows = buf[:i]
    keep = None if old is None or old[0].start == old[0].stop else rows[..., old[0], old[1]].clone()
    rows[..., new[0], new[1]].zero_()
    if keep is not None:
        rows[..., old[0], old[1]].copy_(keep)


def unused_layer_error(layer: str, feature: Feature, reason: str) -> ValueError:
    return ValueError(
        f"attribution layer {layer!r} does not feed the feature at {feature.layer!r} ({reason}); "
        "choose a layer that comes before the feature layer on a path into it"
    )


def checked_gradient(g, layer, feature) -> torch.Tensor:
    """The gradient ``g`` of a layer, or the error saying that the layer does not feed ``feature``."""
    if g is None:
        raise unused_layer_error(layer, feature, "no gradient path from it to the feature")
    return g
