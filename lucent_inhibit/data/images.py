"""Images that need no download: the natural photos that scikit-image, scikit-learn and Matplotlib ship
(:data:`SAMPLE_NAMES`), their deterministic random crops, and user folders.

Every image is a float tensor (3, H, W) in [0, 1]. Datasets are sequences: ``len(ds)`` and ``ds[i]``
give an image tensor; :class:`ImageFolder` also keeps each image's path (``ds.paths[i]``).
"""
from __future__ import annotations

import errno
import os
import stat
import struct
import warnings
from typing import BinaryIO, Optional, Tuple

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
    """Read one image file as (3, H, W) in [0, 1], upright, whatever its Pillow mode (see :func:`pil_to_tensor`).

    The EXIF orientation is applied (a phone photo stored sideways is returned as a viewer shows it).
    ``size`` (pixels, 1 to ``validate.MAX_SIDE``; None: the file's own size) resizes the shorter side to
    ``size`` and centre-crops a square. A FIFO, socket, device, directory, symlink loop or empty file raises
    :class:`InputError` naming it without opening it; a file that cannot be decoded completely raises
    ``InputError`` (a ``ValueError``) naming it.
    """
    check_path("path", path)
    size = check_optional(check_int, "size", size, 1, MAX_SIDE)
    name = os.fspath(path)
    problem = file_problem(name)
    if problem:
        raise InputError(f"image file {name!r} {problem}")
    try:
        t, _ = decode_image(name)
    except bad_image_errors() as exc:
        raise InputError(f"image file {name!r} cannot be read: {_one_line(exc)}") from None
    return resize_center(t, size) if size else t


def check_path(name: str, path) -> None:
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"{name} must be a file or folder path (str or os.PathLike), got {type(path).__name__}")


#: What a path that is not a regular file is, by its ``stat`` mode test.
_SPECIAL_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                  (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"))


def file_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot hold an image, read from ``os.stat`` alone (the file is never opened): e.g.
    ``"is a FIFO, not a regular file"``, ``"is a symlink loop ..."``, ``"is empty (0 bytes)"``; None for a
    non-empty regular file (symlinks followed). Opening a FIFO would block until a writer comes."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symlink loop (too many levels of symbolic links)"
        return f"cannot be read: {exc.strerror or exc}"
    if not stat.S_ISREG(st.st_mode):
        kind = next((what for test, what in _SPECIAL_KINDS if test(st.st_mode)), "a special file")
        return f"is {kind}, not a regular file"
    return "is empty (0 bytes)" if st.st_size == 0 else None


def open_regular(path: str) -> BinaryIO:
    """``path`` opened for binary reading, refused (``OSError``) unless it is a regular file when opened.

    Call :func:`file_problem` first so that special files are never opened; this re-checks the opened
    descriptor (``O_NONBLOCK``: a FIFO swapped in since then cannot block) against that race.
    """
    return open(path, "rb", opener=_regular_opener)


def _regular_opener(path: str, flags: int) -> int:
    fd = os.open(path, flags | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def bad_image_errors() -> Tuple[type, ...]:
    """The exceptions a bad image file raises while Pillow decodes it (and nothing else: a signal handler's
    exception, ``KeyboardInterrupt`` or a bug propagate). ``UnidentifiedImageError`` is an ``OSError``."""
    from PIL import Image

    return (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)


#: EXIF orientations that ``ImageOps.exif_transpose`` turns or mirrors (1 is upright already).
_TURNED = frozenset(range(2, 9))


def decode_image(path: str, convert: bool = True) -> Tuple[Optional[torch.Tensor], bool]:
    """``(image (3, H, W) in [0, 1] or None when not ``convert``, rotated)`` of a regular file, upright:
    ``PIL.ImageOps.exif_transpose`` applied; ``rotated`` says whether its EXIF orientation changed it.
    Raises one of :func:`bad_image_errors` for a file that does not decode completely."""
    from PIL import Image, ImageOps

    with open_regular(path) as f:
        try:
            im = Image.open(f)
        except Image.UnidentifiedImageError:  # its own message names the file object, not the path
            raise Image.UnidentifiedImageError("not an image format Pillow can identify") from None
        with im:
            im.load()
            rotated = _orientation(im) in _TURNED
            if rotated:
                ImageOps.exif_transpose(im, in_place=True)
            return (pil_to_tensor(im, path) if convert else None), rotated


def _orientation(im) -> int:
    """The EXIF orientation tag (0x0112) of a Pillow image; 1 (as stored) when it has none or its EXIF block
    cannot be parsed (the pixels decode all the same)."""
    try:
        return im.getexif().get(0x0112, 1)
    except bad_image_errors():
        return 1


def inspect_image(path: str) -> Tuple[Optional[str], bool]:
    """``(None, rotated)`` when ``path`` decodes completely (a truncated JPEG passes Pillow's ``verify`` but
    not this), else ``(why, False)`` with ``why`` one line; special files are never opened (:func:`file_problem`)."""
    problem = file_problem(path)
    if problem:
        return problem, False
    try:
        return None, decode_image(path, convert=False)[1]
    except bad_image_errors() as exc:
        return f"is unreadable: {_one_line(exc)}", False


def _one_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def resize_center(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side of a (3, H, W) image to ``size`` and centre-crop a square."""
    _, h, w = image.shape
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)[0]
    top, left = (nh - size) // 2, (nw - size) // 2
    return image[:, top : top + size, left : left + size].clamp(0, 1)

