"""Batch views: objectives evaluated on a slice of the render batch.

An accentuation batch holds ``[renders, seeds]`` per crop block (``param.fourier_image(with_seed=True)``
and ``transform.box_crop(n_crops=...)``); its objective must see only the renders of each block.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ...core.layouts import NCHW, TOKENS, Layout
from ...core.probe import hook_layout


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


def hooked(T, layer: str) -> Tuple[torch.Tensor, Layout]:
    """Layer ``layer``'s tensor for the whole render batch as the model computed it, and its
    :class:`~lucent_inhibit.core.layouts.Layout`: for objectives that differentiate with respect to the hooked
    tensor (the gradient is taken on it and then read in the library's layout). Inside the library's render
    engine the layout comes from the model's probe; inside Lucent's own ``render_vis`` from the probe of the
    layer's module (:func:`lucent_inhibit.core.probe.hook_layout`)."""
    root = resolve_hook(T)[0]
    if getattr(root, "canonical", False):
        t, layout = root.raw(layer)
        return t, layout if layout is not None else Layout(NCHW if t.dim() == 4 else TOKENS, "not probed")
    t = root(layer)
    return t, hook_layout(root, layer, t)


def layer_tensor(T, layer: str) -> torch.Tensor:
    """``T(layer)`` in the library's layouts: maps (B, C, H, W) also where the model computes them
    channels-last; linear (B, C); token layers (B, T, C). Works on Lucent's own hook, the library's render
    engine and :class:`BatchView` s of either."""
    root = resolve_hook(T)[0]
    t = T(layer)
    if getattr(root, "canonical", False) or not torch.is_tensor(t):
        return t
    return hook_layout(root, layer, t).canonical(t)
