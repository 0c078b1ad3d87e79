"""A folder of the user's images as a dataset: every readable image under a root, decoded to RGB and resized.
"""
from __future__ import annotations

import logging
import os
import warnings
from typing import List, Sequence

from ..core.validate import MAX_SIDE, MAX_WORKERS, check_int
from .images import check_path, load_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")

log = logging.getLogger("lucent_inhibit")


class ImageFolder(Sequence):
    """All readable images under ``root`` (recursive, sorted), upright, converted to RGB, resized to ``size``.

    Every file is decoded once when the folder is opened: FIFOs, sockets, devices and symlink loops (never
    opened), empty, unreadable and truncated files are skipped, before any work starts, with one warning each
    naming the file and why; a folder with no readable image raises ``ValueError``. Images are turned upright
    by their EXIF orientation (``exif_rotated`` counts them, said once at INFO on the ``lucent_inhibit``
    logger). ``paths[i]`` is the file of item ``i``; ``ds[i]`` is a (3, size, size) float image in [0, 1].
    ``workers`` > 0 decodes in that many processes, both this check and every batch a stage reads
    (:mod:`lucent_inhibit.data.workers`).
    """

    def __init__(self, root: str, size: int = 224, workers: int = 0):
        check_path("root", root)
        size = check_int("size", size, 1, MAX_SIDE)
        self.workers = check_int("workers", workers, 0, MAX_WORKERS)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder {root!r} does not exist or is not a directory")
        from .workers import inspect_paths

        candidates = _candidates(root)
        good, bad, rotated = [], 0, 0
        for path, (problem, turned) in zip(candidates, inspect_paths(candidates, self.workers)):
            if problem:
                bad += 1
                warnings.warn(f"skipped image file {path!r}: it {problem}", stacklevel=2)
            else:
                good.append(path)
                rotated += turned
        if not good:
            raise ValueError(
                f"image folder {root!r} contains no readable image "
                f"(looked for {', '.join(IMAGE_EXTENSIONS)} recursively; {bad} unreadable)"
            )
        if rotated:
            log.info("%r: %d image(s) rotated upright by their EXIF orientation", root, rotated)
        self.root, self.size, self.paths, self.exif_rotated = root, size, good, rotated

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        """Image ``i`` (negative: from the end) as (3, size, size) in [0, 1]; ``IndexError`` outside."""
        return load_image(self.paths[self._index(i)], self.size)

    def describe(self, i: int) -> str:
        return self.paths[self._index(i)]

    def source(self, i: int) -> str:
        """The source image of item ``i``: its own file (a folder's images are their own sources)."""
        return self.describe(i)

    def _index(self, i) -> int:
        n, k = len(self.paths), check_int("image index", i)
        if not -n <= k < n:
            raise IndexError(f"image index {k} out of range for {n} images in {self.root!r}")
        return k % n

    @property
    def identity(self) -> str:
        return f"ImageFolder({os.path.abspath(self.root)!r}, size={self.size}, n={len(self.paths)})"


def _candidates(root: str) -> List[str]:
    """Every file under ``root`` (recursive, sorted) whose name ends with one of :data:`IMAGE_EXTENSIONS`."""
    found = []
    for dirpath, _, files in os.walk(root):
        found.extend(os.path.join(dirpath, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS))
    return sorted(found)
