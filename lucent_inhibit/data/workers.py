"""Parallel image decoding: folder images read in worker processes (a torch ``DataLoader``) for every stage
that batches a dataset through :func:`lucent_inhibit.data.batching.iter_batches`.

A dataset opts in with a ``workers`` attribute (``ImageFolder(root, size, workers=4)``; the CLI's
``--workers``): each batch of indices is decoded, turned upright by its EXIF orientation, converted to RGB
and resized (``ImageFolder`` items, :func:`lucent_inhibit.data.images.load_image`) in one of ``workers``
processes, in order, while the main process runs the model on the previous batch. Tensor datasets (the
bundled crops) are already decoded and are always read in the main process. The readability check of a
folder (every file decoded once when it is opened; special files never opened) runs in the same number of
processes.
"""
from __future__ import annotations

from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch


class _Batches(torch.utils.data.Dataset):
    """Item ``i`` is batch ``i``: ``(indices, images (B, 3, H, W))`` stacked in the worker."""

    def __init__(self, dataset, chunks: Sequence[np.ndarray]):
        self.dataset, self.chunks = dataset, list(chunks)

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int):
        from .datasets import load_batch

        return self.chunks[i], load_batch(self.dataset, self.chunks[i])


def parallel_batches(dataset, chunks: Sequence[np.ndarray], workers: int,
                     pin_memory: bool = False) -> Iterator[Tuple[np.ndarray, torch.Tensor]]:
    """Yield ``(indices, images)`` for each of ``chunks`` in order, decoded by ``workers`` processes.

    Every batch must have the first batch's image shape (as in the main-process path); ``pin_memory`` pins
    the batches for a fast copy to CUDA.
    """
    loader = torch.utils.data.DataLoader(_Batches(dataset, chunks), batch_size=None, shuffle=False,
                                         num_workers=workers, pin_memory=pin_memory, prefetch_factor=2)
    shape = None
    for chunk, images in loader:
        chunk = np.asarray(chunk)
        if shape is not None and tuple(images.shape[1:]) != shape:
            raise ValueError(f"dataset items {chunk.tolist()[:4]} have shape {tuple(images.shape[1:])}, but the "
                             f"earlier batches' images have shape {shape}: all images of a dataset must share "
                             "one shape (resize them, e.g. ImageFolder(root, size=224))")
        shape = tuple(images.shape[1:])
        yield chunk, images


def inspect_paths(paths: Sequence[str], workers: int) -> List[Tuple[Optional[str], bool]]:
    """``[inspect_image(p) for p in paths]`` (``(why unreadable or None, rotated by EXIF)`` per file),
    computed by ``workers`` processes (0: this process). An exception that is not a bad file (a signal
    handler's, Ctrl-C) cancels the files not yet started and propagates."""
    from .images import inspect_image

    if workers == 0 or len(paths) < 2:
        return [inspect_image(p) for p in paths]
    import concurrent.futures
    import multiprocessing

    ctx = multiprocessing.get_context("spawn" if torch.cuda.is_initialized() else None)
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        try:
            return list(pool.map(inspect_image, paths, chunksize=max(1, len(paths) // (8 * workers))))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
