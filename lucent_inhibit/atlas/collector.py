"""The atlas's points, collected image chunk by image chunk (:func:`lucent_inhibit.atlas.vectors.collect_vectors`):
each selected image's attribution (or activation) map cut to the receptive-field box, as one vector per image
(``mode="sum"``) or one per position in the box (``mode="position"``).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..synthesis.objectives import crop_box
from .spool import MapStore, PointBuffer

#: A receptive-field box ``(y0, y1, x0, x1)`` on a layer's map (positions ``y0 <= y < y1``, ``x0 <= x < x1``).
Box = Tuple[int, int, int, int]


def _spatial_points(S, H, kind: str, mode: str, box: Box, start: int = 0):
    """(vectors, net, magnitude, point_image, position) of (n, C, h, w) maps inside ``box``; the maps are of
    selected images ``start, start + 1, ...``."""
    n = S.shape[0]
    rows = torch.arange(start, start + n)
    y0, y1, x0, x1 = box
    Sb = S[:, :, y0:y1, x0:x1]
    Vb = Sb if H is None else H[:, :, y0:y1, x0:x1]
    if mode == "sum":
        vectors = Sb.sum((2, 3)) if kind == "attribution" else Vb.mean((2, 3))
        pos = torch.full((n, 2), -1, dtype=torch.long)
        return vectors, Sb.sum((1, 2, 3)), Sb.flatten(1).norm(dim=1), rows, pos
    h, w = y1 - y0, x1 - x0
    vectors = Vb.permute(0, 2, 3, 1).reshape(n * h * w, -1)
    Sp = Sb.permute(0, 2, 3, 1).reshape(n * h * w, -1)
    yy, xx = torch.meshgrid(torch.arange(y0, y1), torch.arange(x0, x1), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], 1).repeat(n, 1)
    return vectors, Sp.sum(1), Sp.norm(dim=1), rows.repeat_interleave(h * w), pos


def _points(S, H, kind: str, mode: str, box: Optional[Box], start: int):
    """The points of a batch of maps S (and activations H) of selected images ``start, ...``: cut to
    ``box``, or one per image for a linear layer (``box`` None)."""
    if box is not None:
        return _spatial_points(S, H, kind, mode, box, start)
    n = S.shape[0]
    vectors = S if kind == "attribution" else H
    return vectors, S.sum(1), S.norm(dim=1), torch.arange(start, start + n), torch.full((n, 2), -1, dtype=torch.long)


class PointCollector:
    """The points of all selected images, fed one batch of maps at a time (:meth:`add`). When the box is
    known from the first batch (``crop=None``, or a linear layer) each batch is cut at once; otherwise the
    maps wait in a :class:`MapStore` (memory up to ``budget`` bytes, else a temporary file) until
    :meth:`finish` has the box from the mean ``|S|`` of all images, and are then cut batch by batch. Only
    the cut points are kept, in a :class:`PointBuffer`."""

    def __init__(self, n: int, kind: str, mode: str, crop: Optional[float], budget: int):
        self.n, self.kind, self.mode, self.crop = n, kind, mode, crop
        self.store = MapStore(n, 1 if kind == "attribution" else 2, budget)
        self.map_shape: Tuple[int, ...] = ()
        self.box: Optional[Box] = None
        self.absmap: Optional[torch.Tensor] = None
        self.points: Optional[PointBuffer] = None

    def _begin(self, s: torch.Tensor) -> None:
        self.map_shape = tuple(s.shape[1:])
        if s.dim() == 4 and self.crop is not None:
            self.absmap = torch.empty((self.n,) + tuple(s.shape[2:]), dtype=torch.float32)
            return
        self.box = (0, s.shape[2], 0, s.shape[3]) if s.dim() == 4 else None
        self._allocate()

    def _allocate(self) -> None:
        per_image = 1
        if self.box is not None and self.mode == "position":
            per_image = (self.box[1] - self.box[0]) * (self.box[3] - self.box[2])
        self.points = PointBuffer(self.n * per_image, self.map_shape[0])

    def add(self, start: int, s: torch.Tensor, h: Optional[torch.Tensor]) -> None:
        if not self.map_shape:
            self._begin(s)
        if self.absmap is None:
            self.points.add(*_points(s, h, self.kind, self.mode, self.box, start))
            return
        self.absmap[start: start + s.shape[0]] = s.abs().sum(1)
        self.store.write([s] if h is None else [s, h])

    def finish(self, batch_size: int, layer: str):
        """``(box, (vectors, net, magnitude, point_image, position))`` of the kept points."""
        if self.absmap is not None:
            self.box = crop_box(self.absmap.mean(0, keepdim=True), float(self.crop))
            self.absmap = None
            self._allocate()
            for start, maps in self.store.read(batch_size):
                self.points.add(*_points(maps[0], maps[1] if len(maps) > 1 else None, self.kind, self.mode,
                                         self.box, start))
                del maps
        self.store.close()
        return self.box, self.points.arrays(self.kind, layer)
