"""Choices that change how fast a pass runs, not what it computes (beyond float rounding), made in one place.

- :func:`channels_last`: a batch of images goes through the model in channels-last (NHWC) memory. Its shape and
  the layer names are unchanged (:func:`model_input`: only for models that run on it, which their probe tells);
  convolutions pick NHWC kernels, faster forward and backward on CPU (measured
  1.15-1.25x in the attribution passes, ``benchmarks/attribution.py``; 1.36x in a batched render of
  EfficientNet-Lite0, ``benchmarks/render_numerics.py``).
- :func:`subnormals_flushed`: inside the block, float results below 1.2e-38 in magnitude (subnormals) are
  computed as zero on the CPU. A render's gradients fall into that range, and x86 CPUs compute subnormals many
  times slower than normal floats (the same render: 1.32x faster with them flushed, 1.86x with both); a value of
  1e-38 is 38 orders of magnitude below anything a render's image or loss shows.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last memory when it is a (B, C, H, W) batch, else unchanged (same values and shape)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def model_input(model, x: torch.Tensor) -> torch.Tensor:
    """``x``, the input of ``model``, in channels-last memory when the model runs on it that way (its probe,
    :mod:`lucent_inhibit.core.probe`: a model whose ``.view`` needs NCHW memory gets ``x`` as it is)."""
    from .probe import probed

    return channels_last(x) if x.dim() == 4 and probed(model, x).channels_last else x


def flushing_subnormals() -> bool:
    """Whether the calling thread computes float subnormals as zero now (``torch.set_flush_denormal``)."""
    tiny = torch.tensor([1e-39], dtype=torch.float32)  # a float32 subnormal
    return bool((tiny * 0.5 == 0).item())


@contextlib.contextmanager
def subnormals_flushed() -> Iterator[bool]:
    """Flush float subnormals to zero on the CPU inside the block; the previous setting is restored on exit,
    also on error. Yields whether this CPU supports flushing (``torch.set_flush_denormal``: x86 with SSE3)."""
    before = flushing_subnormals()
    supported = torch.set_flush_denormal(True)
    try:
        yield supported
    finally:
        torch.set_flush_denormal(before)
