"""Batches: the one way every stage reads a dataset (in the main process, or in worker processes when the
dataset asks for them).
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.validate import MAX_BATCH, check_flag, check_int
from .datasets import check_indices, load_batch


def iter_batches(dataset, batch_size: int, indices=None, pin_memory: bool = False):
    """Yield ``(indices, images)`` over ``dataset`` (a tensor (N, 3, H, W) or a sequence of images) in
    batches of at most ``batch_size``; ``indices`` restricts and orders the items (default: all). A dataset
    with ``workers`` > 0 (``ImageFolder(..., workers=n)``) is decoded in worker processes, in the same order."""
    batch_size, pin_memory = check_int("batch_size", batch_size, 1, MAX_BATCH), check_flag("pin_memory", pin_memory)
    idx = np.arange(len(dataset)) if indices is None else check_indices("indices", indices, len(dataset))
    chunks = [idx[start: start + batch_size] for start in range(0, len(idx), batch_size)]
    workers = 0 if torch.is_tensor(dataset) else getattr(dataset, "workers", 0)
    if workers and len(chunks) > 1:
        from .workers import parallel_batches

        yield from parallel_batches(dataset, chunks, workers, pin_memory)
        return
    shape = None
    for chunk in chunks:
        images = load_batch(dataset, chunk, shape)
        shape = tuple(images.shape[1:])
        yield chunk, images
