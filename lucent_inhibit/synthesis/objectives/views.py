"""Batch views: objectives evaluated on a slice of the render batch.

An accentuation batch holds ``[renders, seeds]`` per crop block (``param.fourier_image(with_seed=True)``
and ``transform.box_crop(n_crops=...)``); its objective must see only the renders of each block.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch


class BatchView:
    """A render hook restricted to the batch rows ``start:stop``.

    ``BatchView(T, start, stop)(layer)`` is ``T(layer)[start:stop]``. Objectives that must differentiate
    with respect to a whole hooked tensor (:func:`~lucent_inhibit.synthesis.objectives.tense`) look through views
    with :func:`resolve_hook`, so any objective of this package (and any of Lucent's) can be evaluated on
    part of a batch, e.g. the rendered images of an accentuation batch that also holds their seeds, or one
    crop of several.
    """

    def __init__(self, T, start: int, stop: int):
        if start < 0 or stop <= start:
            raise ValueError(f"BatchView needs 0 <= start < stop, got {start}:{stop}")
        self.parent, self.start, self.stop = T, int(start), int(stop)

    def __call__(self, layer: str) -> torch.Tensor:
        t = self.parent(layer)
        if t.shape[0] < self.stop:
            raise ValueError(f"batch view {self.start}:{self.stop} of layer {layer!r} with only {t.shape[0]} rows")
        return t[self.start : self.stop]


def resolve_hook(T) -> Tuple[object, int, Optional[int]]:
    """Unwrap nested :class:`BatchView` s: ``(root_hook, start, stop)`` (``stop`` None = to the end)."""
    start, stop = 0, None
    while isinstance(T, BatchView):
        stop = T.stop if stop is None else min(T.start + stop, T.stop)
        start = T.start + start
        T = T.parent
    return T, start, stop
