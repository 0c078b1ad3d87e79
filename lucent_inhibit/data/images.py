"""Images that need no download: the natural photos that scikit-image, scikit-learn and Matplotlib ship
(:data:`SAMPLE_NAMES`), their deterministic random crops, and user folders.

Every image is a float tensor (3, H, W) in [0, 1]. Datasets are sequences: ``len(ds)`` and ``ds[i]``
give an image tensor; :class:`ImageFolder` also keeps each image's path (``ds.paths[i]``).
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from ..core.validate import MAX_SIDE, InputError, check_int, check_optional


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

    check_path("path", path)
    size = check_optional(check_int, "size", size, 1, MAX_SIDE)

    try:
        with Image.open(path) as im:
            im.load()
            t = pil_to_tensor(im, os.fspath(path))
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"image file {os.fspath(path)!r} cannot be read: {exc}") from None
    return resize_center(t, size) if size else t


def check_path(name: str, path) -> None:
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

