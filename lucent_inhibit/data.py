"""Images that need no download: the natural photos that scikit-image, scikit-learn and Matplotlib ship
(:data:`SAMPLE_NAMES`), their deterministic random crops, and user folders.

Every image is a float tensor (3, H, W) in [0, 1]. Datasets are sequences: ``len(ds)`` and ``ds[i]``
give an image tensor; :class:`ImageFolder` also keeps each image's path (``ds.paths[i]``).
"""
from __future__ import annotations

import os
import warnings
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .validate import (MAX_BATCH, MAX_IMAGES, MAX_SEED, MAX_SIDE, MAX_WORKERS, InputError, check_flag, check_int,
                       check_number, check_optional)

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

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """HxW, HxWx3 or HxWx4 uint8/float/bool array -> float tensor (3, H, W) in [0, 1]."""
    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.float32)
    elif np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    else:
        a = a.astype(np.float32)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an image array of shape (H, W), (H, W, 3) or (H, W, 4), got {a.shape}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    if a.shape[2] == 4:
        a = a[..., :3]
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).clamp(0, 1)


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


#: Pillow modes whose samples are not 8-bit, and the value that maps to 1.0.
_WIDE_MODES = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0}


def pil_to_tensor(im, name: str = "image") -> torch.Tensor:
    """A Pillow image of any mode -> (3, H, W) float RGB in [0, 1].

    8-bit modes (1, L, LA, P, RGB, RGBA, CMYK, YCbCr, ...) go through Pillow's RGB conversion (alpha is
    dropped); 16-bit modes (I;16*) are scaled by 1/65535; 32-bit integer ``I`` by 1/65535 (16-bit PNGs and
    TIFFs open as ``I``), or 1/255 when no value exceeds 255; float ``F`` is used as it is when inside
    [0, 1], scaled by 1/255 when inside [0, 255], and otherwise min-max normalised with a warning.
    Grey modes are repeated over the three channels.
    """
    mode = im.mode
    if mode in _WIDE_MODES or mode in ("I", "F"):
        a = np.asarray(im).astype(np.float32)
        if mode in _WIDE_MODES:
            a = a / _WIDE_MODES[mode]
        elif mode == "I":
            a = a / (65535.0 if a.max(initial=0) > 255 else 255.0)
        else:
            a = _float_samples(a, name)
        if a.ndim == 3:
            a = a[..., 0]
        return to_tensor(np.clip(a, 0, 1))
    return to_tensor(np.asarray(im.convert("RGB")))


def _float_samples(a: np.ndarray, name: str) -> np.ndarray:
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: the float image holds NaN or infinite samples")
    lo, hi = float(a.min(initial=0)), float(a.max(initial=0))
    if lo >= 0 and hi <= 1:
        return a
    if lo >= 0 and hi <= 255:
        return a / 255.0
    warnings.warn(f"{name}: float samples span [{lo:.4g}, {hi:.4g}], not [0, 1]; min-max normalised")
    return (a - lo) / max(hi - lo, 1e-12)


def load_image(path: str, size: int | None = None) -> torch.Tensor:
    """Read one image file as (3, H, W) in [0, 1], whatever its Pillow mode (see :func:`pil_to_tensor`).

    ``size`` (pixels, 1 to ``validate.MAX_SIDE``; None: the file's own size) resizes the shorter side to
    ``size`` and centre-crops a square. A file that cannot be decoded completely raises ``ValueError`` naming it.
    """
    from PIL import Image

    _check_path("path", path)
    size = check_optional(check_int, "size", size, 1, MAX_SIDE)

    try:
        with Image.open(path) as im:
            im.load()
            t = pil_to_tensor(im, os.fspath(path))
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"image file {os.fspath(path)!r} cannot be read: {exc}") from None
    return resize_center(t, size) if size else t


def _check_path(name: str, path) -> None:
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"{name} must be a file or folder path (str or os.PathLike), got {type(path).__name__}")


def readable_image(path: str) -> bool:
    """Whether ``path`` decodes completely (a truncated JPEG passes Pillow's ``verify`` but not this)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
        return True
    except Exception:
        return False


def resize_center(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side of a (3, H, W) image to ``size`` and centre-crop a square."""
    _, h, w = image.shape
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)[0]
    top, left = (nh - size) // 2, (nw - size) // 2
    return image[:, top : top + size, left : left + size].clamp(0, 1)


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


class ImageFolder(Sequence):
    """All readable images under ``root`` (recursive, sorted), converted to RGB, resized to ``size``.

    Every file is decoded once when the folder is opened: unreadable or truncated files are skipped, before
    any work starts, with one warning naming them; a folder with no readable image raises ``ValueError``.
    ``paths[i]`` is the file of item ``i``. ``workers`` > 0 decodes in that many processes, both this check and
    every batch a stage reads (:mod:`lucent_inhibit.pipeline`).
    """

    def __init__(self, root: str, size: int = 224, workers: int = 0):
        _check_path("root", root)
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
        from .pipeline import readable_paths

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


def describe_item(dataset, i: int) -> str:
    """The identity of item ``i`` (a path for folders, a crop box for sample crops, else the index)."""
    if hasattr(dataset, "describe"):
        return dataset.describe(i)
    return str(i)


def check_dataset(dataset):
    """``dataset`` unchanged if it is a tensor or a sized sequence (not a string), else :class:`InputError`."""
    if torch.is_tensor(dataset):
        return dataset
    if isinstance(dataset, (str, bytes)) or not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise InputError(f"dataset must be an image tensor (N, 3, H, W) or a sequence of (3, H, W) images "
                         f"(e.g. lucent_inhibit.ImageFolder), got {type(dataset).__name__}")
    return dataset


def dataset_identity(dataset) -> str:
    """A string naming the dataset, stored in result files so a resume checks it scans the same data."""
    if torch.is_tensor(check_dataset(dataset)):
        return f"tensor(n={len(dataset)})"
    return getattr(dataset, "identity", f"{type(dataset).__name__}(n={len(dataset)})")


def imagenet_classes() -> List[str]:
    """The 1000 ImageNet class descriptions in the embedded model's output order (from timm's tables)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(info.num_classes())]


# ------------------------------------------------------------------------------------------------
# batching: the one way every stage reads a dataset
# ------------------------------------------------------------------------------------------------
def dataset_item(dataset, i: int) -> torch.Tensor:
    """Item ``i`` of a dataset as a (3, H, W) float image (``(image, label)`` items give the image);
    :class:`InputError` for a dataset that is not a sequence of images or an index outside it."""
    if len(check_dataset(dataset)) == 0:
        raise InputError("the dataset is empty: no image to read")
    item = dataset[check_int("dataset index", i, 0, len(dataset) - 1)]
    if isinstance(item, (tuple, list)):
        item = item[0]
    if not torch.is_tensor(item):
        arr = np.asarray(item)
        if arr.dtype.kind not in "biuf":
            raise InputError(f"dataset item {int(i)} is a {type(item).__name__}; expected an image (3, H, W) in [0, 1]")
        item = torch.as_tensor(arr)
    if item.dim() != 3 or item.shape[0] != 3:
        raise ValueError(f"dataset item {int(i)} has shape {tuple(item.shape)}; expected an image (3, H, W) in [0, 1]")
    return item


def load_batch(dataset, indices, shape: Optional[tuple] = None) -> torch.Tensor:
    """Stack dataset items ``indices`` into (B, 3, H, W); all must share ``shape`` (default: the first's)."""
    if torch.is_tensor(dataset):
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return dataset[idx]
    images = []
    for i in indices:
        t = dataset_item(dataset, i)
        shape = tuple(t.shape) if shape is None else shape
        if tuple(t.shape) != tuple(shape):
            raise ValueError(
                f"dataset item {int(i)} has shape {tuple(t.shape)}, but the batch's images have shape {tuple(shape)}: "
                "all images of a dataset must share one shape (resize them, e.g. ImageFolder(root, size=224))"
            )
        images.append(t)
    return torch.stack(images)


def check_indices(name: str, indices, n: int) -> np.ndarray:
    """``indices`` as an (m,) int64 array of dataset indices in [0, n); :class:`InputError` naming ``name``
    for fractions, booleans, non-numbers, more than one dimension or indices outside the dataset."""
    idx = np.arange(indices.start, indices.stop, indices.step) if isinstance(indices, range) else np.asarray(indices)
    if idx.size == 0:
        return np.zeros(0, np.int64)
    if idx.ndim != 1 or idx.dtype.kind not in "iu":
        raise InputError(f"{name} must be a 1-D sequence of integer dataset indices, got {idx.dtype} of shape {idx.shape}")
    if int(idx.min()) < 0 or int(idx.max()) >= n:
        raise InputError(f"{name} must lie in [0, {n}) for a dataset of {n} images, got {int(idx.min())}..{int(idx.max())}")
    return idx.astype(np.int64)


def iter_batches(dataset, batch_size: int, indices=None, pin_memory: bool = False):
    """Yield ``(indices, images)`` over ``dataset`` (a tensor (N, 3, H, W) or a sequence of images) in
    batches of at most ``batch_size``; ``indices`` restricts and orders the items (default: all). A dataset
    with ``workers`` > 0 (``ImageFolder(..., workers=n)``) is decoded in worker processes, in the same order."""
    batch_size, pin_memory = check_int("batch_size", batch_size, 1, MAX_BATCH), check_flag("pin_memory", pin_memory)
    idx = np.arange(len(dataset)) if indices is None else check_indices("indices", indices, len(dataset))
    chunks = [idx[start: start + batch_size] for start in range(0, len(idx), batch_size)]
    workers = 0 if torch.is_tensor(dataset) else getattr(dataset, "workers", 0)
    if workers and len(chunks) > 1:
        from .pipeline import parallel_batches

        yield from parallel_batches(dataset, chunks, workers, pin_memory)
        return
    shape = None
    for chunk in chunks:
        images = load_batch(dataset, chunk, shape)
        shape = tuple(images.shape[1:])
        yield chunk, images
