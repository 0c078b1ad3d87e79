"""A folder of the user's images as a dataset: every readable image under a root, decoded to RGB and resized.
"""
from __future__ import annotations

import os
import warnings
from typing import Sequence

from ..core.validate import MAX_SIDE, MAX_WORKERS, check_int
from .images import check_path, load_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


class ImageFolder(Sequence):
    """All readable images under ``root`` (recursive, sorted), converted to RGB, resized to ``size``.

    Every file is decoded once when the folder is opened: unreadable or truncated files are skipped, before
    any work starts, with one warning naming them; a folder with no readable image raises ``ValueError``.
    ``paths[i]`` is the file of item ``i``. ``workers`` > 0 decodes in that many processes, both this check and
    every batch a stage reads (:mod:`lucent_inhibit.data.workers`).
    """

    def __init__(self, root: str, size: int = 224, workers: int = 0):
        check_path("root", root)
        size = check_int("size", size, 1, MAX_SIDE)
        self.workers = check_int("workers", workers, 0, MAX_WORKERS)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder {root!r} does not exist or is not a directory")
        candidates = []
        for dirpath, _, files in os.walk(root):
            for f in files:
                if f.lower().endswith(IMAGE_EXTENSIONS):
                    candidates.append(os.path.join(dirpath, f))
        candidates.sort()
        from .workers import readable_paths

        ok = readable_paths(candidates, self.workers)
        good, bad = [p for p, o in zip(candidates, ok) if o], [p for p, o in zip(candidates, ok) if not o]
        if bad:
            warnings.warn(f"skipped {len(bad)} unreadable image file(s): {', '.join(bad)}")
        if not good:
            raise ValueError(
                f"image folder {root!r} contains no readable image "
                f"(looked for {', '.join(IMAGE_EXTENSIONS)} recursively; {len(bad)} unreadable)"
            )
        self.root, self.size, self.paths = root, size, good

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i):
        return load_image(self.paths[i], self.size)

    def describe(self, i: int) -> str:
        return self.paths[i]

    @property
    def identity(self) -> str:
        return f"ImageFolder({os.path.abspath(self.root)!r}, size={self.size}, n={len(self.paths)})"
