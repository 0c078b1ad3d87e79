"""Bounded memory for the atlas's vector collection (Hamblin et al. 2024, section 4; Carter et al. 2019).

The receptive-field box the vectors are cut to is known only once every selected image's attribution map
has been seen (it is where the mean ``|S_l|`` of the selection is large), so :func:`collect_vectors` keeps
the layer maps until then in a :class:`MapStore`: preallocated tensors when they fit ``budget`` bytes
(:data:`MAP_BUDGET` by default), else an unnamed temporary file (deleted by the system when it is closed,
also when the process is killed), written and read back with plain file I/O so the maps never count in
the process's resident memory. The points are written into a :class:`PointBuffer` of preallocated arrays,
only those with a non-zero vector, so the collection's peak memory is the points themselves plus one batch.
The icons' memory is checked before they render (:func:`check_icon_memory`).
"""
from __future__ import annotations

import errno
import os
import tempfile
import warnings
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..core.validate import check_int, check_memory

#: Bytes of layer maps :class:`MapStore` holds in memory (32 MiB); larger selections spill to a temporary file.
MAP_BUDGET = 32 * 2 ** 20


def icon_bytes(n_icons: int, icon_hw: Tuple[int, int], crop_size: int) -> int:
    """Bytes that ``n_icons`` icons of ``icon_hw`` (H, W) px and their displayed ``crop_size`` px crops hold at
    once, counted low: the uint8 icons and their float32 copy (5 bytes per value), the float32 crops and their
    uint8 copy (5 bytes per value), 3 values per pixel."""
    return 5 * 3 * int(n_icons) * (int(icon_hw[0]) * int(icon_hw[1]) + int(crop_size) ** 2)


def check_icon_memory(n_icons: int, icon_hw: Tuple[int, int], crop_size: int, name: str = "crop_size") -> None:
    """:class:`~lucent_inhibit.core.validate.InputError` saying how much memory ``n_icons`` icons with
    ``crop_size`` px crops would need (:func:`icon_bytes`) and how much this machine has, when that is more."""
    from ..census.run import available_memory

    what = (f"{n_icons} atlas icon(s) of {icon_hw[0]}x{icon_hw[1]} px with {crop_size}x{crop_size} px crops "
            f"({name} {crop_size})")
    check_memory(what, icon_bytes(n_icons, icon_hw, crop_size), available_memory(torch.device("cpu")))


class MapStore:
    """The float32 layer maps of ``n`` images (``count`` per image, e.g. attribution and activation), written
    one batch at a time in image order and read back in batches; a context manager (``close`` frees them).

    Held in preallocated tensors ``(n, ...)`` when ``count * n * prod(map shape) * 4 <= budget`` bytes,
    else in temporary files in ``folder`` (default: ``tempfile.gettempdir()``, i.e. ``TMPDIR``).
    """

    def __init__(self, n: int, count: int = 1, budget: int = MAP_BUDGET, folder: Optional[str] = None):
        self.n = check_int("n", n, low=1)
        self.count = check_int("count", count, low=1)
        self.budget = check_int("memory_budget", budget, low=0)
        self.folder = folder
        self.shapes: Optional[List[Tuple[int, ...]]] = None
        self.tensors: Optional[List[torch.Tensor]] = None
        self.files: List = []
        self.written = 0

    @property
    def nbytes(self) -> int:
        """Bytes of all the maps (0 before the first batch)."""
        if self.shapes is None:
            return 0
        return sum(self.n * int(np.prod(s)) * 4 for s in self.shapes)

    @property
    def on_disk(self) -> bool:
        return bool(self.files)

    def _allocate(self, maps: Sequence[torch.Tensor]) -> None:
        self.shapes = [tuple(m.shape[1:]) for m in maps]
        if self.nbytes <= self.budget:
            self.tensors = [torch.empty((self.n,) + s, dtype=torch.float32) for s in self.shapes]
            return
        self.folder = self.folder or tempfile.gettempdir()
        self.files = [tempfile.TemporaryFile(prefix="lucent-inhibit-atlas-", dir=self.folder, buffering=0)
                      for _ in maps]

    def write(self, maps: Sequence[torch.Tensor]) -> None:
        """Append one batch: ``count`` float32 tensors (B, ...) of the same B, in image order."""
        if len(maps) != self.count:
            raise ValueError(f"MapStore holds {self.count} maps per image, got {len(maps)}")
        if self.shapes is None:
            self._allocate(maps)
        b = int(maps[0].shape[0])
        if self.written + b > self.n or [tuple(m.shape[1:]) for m in maps] != self.shapes:
            raise ValueError(f"MapStore of {self.n} images of maps {self.shapes} got a batch of {b} images of "
                             f"maps {[tuple(m.shape[1:]) for m in maps]} after {self.written} images")
        for i, m in enumerate(maps):
            m = m.detach().to("cpu", torch.float32)
            if self.tensors is not None:
                self.tensors[i][self.written: self.written + b].copy_(m)
            else:
                self._append(self.files[i], np.ascontiguousarray(m.numpy()))
        self.written += b

    def _append(self, f, arr: np.ndarray) -> None:
        """Write all of ``arr`` to unbuffered ``f``: a raw write may write part of it (a full disk first
        shows as a short write), so it is repeated until done; no progress is the disk being full."""
        view, done = memoryview(arr).cast("B"), 0
        try:
            while done < len(view):
                got = f.write(view[done:])
                if not got:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                done += got
        except OSError as e:
            raise OSError(e.errno, f"writing the atlas's layer maps ({self.nbytes / 2 ** 20:.0f} MiB in all) to a "
                          f"temporary file in {self.folder!r} failed ({e.strerror}); free space there, set TMPDIR to "
                          f"a folder with room, or give memory_budget >= {self.nbytes} bytes to keep them in memory") from e

    def read(self, batch_size: int) -> Iterator[Tuple[int, List[torch.Tensor]]]:
        """Yield ``(start, maps)`` over the written images in batches of at most ``batch_size``."""
        batch_size = check_int("batch_size", batch_size, low=1)
        for f in self.files:
            f.seek(0)
        for start in range(0, self.written, batch_size):
            b = min(batch_size, self.written - start)
            if self.tensors is not None:
                yield start, [t[start: start + b] for t in self.tensors]
            else:
                yield start, [_read_exact(f, (b,) + s) for f, s in zip(self.files, self.shapes)]

    def close(self) -> None:
        """Free the maps (tensors dropped, temporary files closed and so deleted)."""
        self.tensors = None
        for f in self.files:
            f.close()
        self.files = []

    def __enter__(self) -> "MapStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read_exact(f, shape: Tuple[int, ...]) -> torch.Tensor:
    """The next ``prod(shape)`` float32 values of binary file ``f`` as a tensor of ``shape``."""
    arr = np.empty(shape, np.float32)
    view, done = memoryview(arr).cast("B"), 0
    while done < arr.nbytes:
        got = f.readinto(view[done:])
        if not got:
            raise OSError(f"the atlas's temporary map file ended after {done} of {arr.nbytes} bytes of a batch")
        done += got
    return torch.from_numpy(arr)


class PointBuffer:
    """Preallocated point arrays for at most ``capacity`` points of ``channels``-vectors, filled batch by
    batch with the points whose vector is non-zero (all-zero vectors have no direction for UMAP's cosine
    metric). Arrays: vectors (M, C) float32, net and magnitude (M,) float32, image (M,) int64, position
    (M, 2) int64; pages past the points kept are never written, so they take no memory."""

    def __init__(self, capacity: int, channels: int):
        self.vectors = np.empty((capacity, channels), np.float32)
        self.net = np.empty(capacity, np.float32)
        self.magnitude = np.empty(capacity, np.float32)
        self.image = np.empty(capacity, np.int64)
        self.position = np.empty((capacity, 2), np.int64)
        self.kept = self.seen = 0

    def add(self, vectors, net, magnitude, image, position) -> None:
        """Append one batch of points (torch tensors, M_b rows each), dropping all-zero vectors."""
        keep = vectors.norm(dim=1) > 0
        k, at = int(keep.sum()), slice(self.kept, self.kept + int(keep.sum()))
        if self.kept + k > self.vectors.shape[0]:
            raise ValueError(f"PointBuffer of {self.vectors.shape[0]} points overflows at {self.kept + k}")
        for out, a in ((self.vectors, vectors), (self.net, net), (self.magnitude, magnitude), (self.image, image),
                       (self.position, position)):
            out[at] = a[keep].numpy()
        self.kept += k
        self.seen += int(keep.numel())

    def arrays(self, kind: str, layer: str):
        """``(vectors, net, magnitude, image, position)`` of the kept points (views, no copy); warns when
        points were dropped, ``ValueError`` when every vector was zero."""
        dropped = self.seen - self.kept
        if dropped:
            warnings.warn(f"dropped {dropped} of {self.seen} atlas points whose {kind} vector is all zero "
                          "(they have no direction for the cosine metric)")
            if not self.kept:
                raise ValueError(f"every {kind} vector at layer {layer!r} is zero for the selected images: nothing to lay out")
        m = self.kept
        return self.vectors[:m], self.net[:m], self.magnitude[:m], self.image[:m], self.position[:m]
