"""The bundled photos (scikit-image, scikit-learn and matplotlib sample images: no download) and
deterministic multi-scale crops of them, the default dataset of every stage.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..core.validate import MAX_IMAGES, MAX_SEED, MAX_SIDE, InputError, check_int, check_number
from .images import to_tensor

#: The natural photographs that ship inside the installed dependencies (no download), in a fixed order:
#: scikit-image's colour photos, scikit-learn's two sample images (``load_sample_images``), Matplotlib's
#: ``grace_hopper.jpg`` sample, and two of scikit-image's grey photos (repeated over the three channels).
SAMPLE_NAMES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "stereo_motorcycle",
    "hubble_deep_field",
    "retina",
    "immunohistochemistry",
    "china",
    "flower",
    "grace_hopper",
    "camera",
    "coins",
)


def _skimage_photo(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # stereo_motorcycle returns (left, right, disparity)
        img = img[0]
    return np.asarray(img)


def _sklearn_photo(name: str) -> np.ndarray:
    from sklearn.datasets import load_sample_image

    return np.asarray(load_sample_image(f"{name}.jpg"))


def _matplotlib_photo(name: str) -> np.ndarray:
    import matplotlib.cbook
    from PIL import Image

    with matplotlib.cbook.get_sample_data(f"{name}.jpg") as f, Image.open(f) as im:
        return np.asarray(im.convert("RGB"))


_PHOTO_SOURCES = {"china": _sklearn_photo, "flower": _sklearn_photo, "grace_hopper": _matplotlib_photo}


@lru_cache(maxsize=1)
def _sample_arrays() -> Tuple[Tuple[str, np.ndarray], ...]:
    """``(name, (H, W, 3) or (H, W) uint8 array)`` of every :data:`SAMPLE_NAMES` photo, read once."""
    return tuple((name, _PHOTO_SOURCES.get(name, _skimage_photo)(name)) for name in SAMPLE_NAMES)


def sample_images() -> Dict[str, torch.Tensor]:
    """The photos of :data:`SAMPLE_NAMES` (scikit-image, scikit-learn and Matplotlib ship them), name ->
    (3, H, W) float tensor in [0, 1] (grey photos repeated over the three channels)."""
    return {name: to_tensor(a) for name, a in _sample_arrays()}


class SampleCrops(Sequence):
    """Deterministic random multi-scale square crops of :func:`sample_images`.

    Crop ``i`` is drawn from its own generator seeded by ``(seed, i)``: a random source photo (of
    ``photos``, default all of :data:`SAMPLE_NAMES`), a random
    side between ``min_scale`` and 1 of the photo's shorter side, a random position, a random horizontal
    flip, then resized to ``size`` x ``size``. Items are (3, size, size) float tensors in [0, 1].
    ``n`` is 1 to ``validate.MAX_IMAGES``, ``size`` 8 to ``validate.MAX_SIDE`` px, ``seed`` 0 to 2**32 - 1.
    """

    def __init__(self, n: int = 256, size: int = 224, seed: int = 0, min_scale: float = 0.2,
                 photos: Optional[Sequence[str]] = None):
        self.n, self.size = check_int("n", n, 1, MAX_IMAGES), check_int("size", size, 8, MAX_SIDE)
        self.seed = check_int("seed", seed, 0, MAX_SEED)
        self.min_scale = check_number("min_scale", min_scale, 0.0, 1.0, low_open=True)
        ok = photos is None or (isinstance(photos, (list, tuple)) and photos
                                and all(isinstance(p, str) and p in SAMPLE_NAMES for p in photos))
        if not ok:
            raise InputError(f"photos must be a non-empty subset (list) of {SAMPLE_NAMES}, got {photos!r}")
        self.sources = list(SAMPLE_NAMES) if photos is None else list(photos)

    def __len__(self) -> int:
        return self.n

    def describe(self, i: int) -> str:
        """Human-readable identity of crop ``i`` (source photo and crop box)."""
        name, top, left, side, flip = self._box(i)
        return f"{name}[{top}:{top + side},{left}:{left + side}]{' flipped' if flip else ''}"

    def source(self, i: int) -> str:
        """The name of the photo crop ``i`` is cut from (one of ``sources``): crops of one photo share it."""
        return self._box(i)[0]

    def _box(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(f"crop index {i} out of range for {self.n} crops")
        rng = np.random.default_rng([self.seed, i])
        name = self.sources[int(rng.integers(len(self.sources)))]
        arr = dict(_sample_arrays())[name]
        h, w = arr.shape[:2]
        side = int(round(min(h, w) * rng.uniform(self.min_scale, 1.0)))
        side = max(side, 8)
        top = int(rng.integers(0, h - side + 1))
        left = int(rng.integers(0, w - side + 1))
        flip = bool(rng.integers(2))
        return name, top, left, side, flip

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        i = int(i)
        if i < 0:
            i += self.n
        name, top, left, side, flip = self._box(i)
        arr = dict(_sample_arrays())[name][top : top + side, left : left + side]
        t = to_tensor(arr)
        t = F.interpolate(t[None], size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)[0]
        if flip:
            t = t.flip(-1)
        return t.clamp(0, 1)

    @property
    def identity(self) -> str:
        photos = "" if self.sources == list(SAMPLE_NAMES) else f", photos={tuple(self.sources)}"
        return f"sample_crops(n={self.n}, size={self.size}, seed={self.seed}, min_scale={self.min_scale}{photos})"


#: The eight scikit-image photos of the first release (tests calibrated on them pin them).
FIRST_RELEASE_PHOTOS = SAMPLE_NAMES[:8]


def sample_crops(n: int = 256, size: int = 224, seed: int = 0, min_scale: float = 0.2,
                 photos: Optional[Sequence[str]] = None) -> SampleCrops:
    """A dataset of ``n`` deterministic multi-scale crops of the bundled photos (all of them, or the named
    subset ``photos`` of :data:`SAMPLE_NAMES`), each (3, size, size)."""
    return SampleCrops(n=n, size=size, seed=seed, min_scale=min_scale, photos=photos)


def imagenet_classes() -> List[str]:
    """The 1000 ImageNet class descriptions in the embedded model's output order (from timm's tables)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(info.num_classes())]
