"""Augmentations for feature accentuation, as tensor -> tensor transforms in Lucent's style.

Each factory returns a function ``(B, 3, H, W) -> (B', 3, H', W')`` that ``render_vis(transforms=[...])``
applies every step. One random draw is shared by the whole batch, so a render and its seed in the same
batch (``param.fourier_image(with_seed=True)``) get the same crop and the same noise. They are plain
callables in a list, so they compose with Lucent's own transforms by list concatenation, e.g.
``lucent.optvis.transform.standard_transforms + [box_crop(size=224)]``.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..core.validate import MAX_BATCH, MAX_SIDE, check_int, check_number, check_optional, check_size
from .param import check_generator

Transform = Callable[[torch.Tensor], torch.Tensor]


def _size(size) -> Optional[Tuple[int, int]]:
    """Output ``(H, W)`` of an int or pair (1 to ``validate.MAX_SIDE`` px); None keeps the input size."""
    return check_optional(check_size, "size", size, 1, MAX_SIDE)


def box_crop(
    min_size: float = 0.05,
    max_size: float = 1.0,
    size=None,
    noise: float = 0.02,
    n_crops: int = 1,
    generator: Optional[torch.Generator] = None,
) -> Transform:
    """Random square box crops over a range of sizes, resized to a fixed output size, plus uniform noise.

    Every call draws ``n_crops`` boxes: each side is a fraction uniform in ``[min_size, max_size]`` of the
    image's shorter side (the paper's "full range of sizes each batch", e.g. 5%..100%), placed uniformly
    inside the image; each crop is resized (bilinear, antialiased) to ``size`` and gets uniform noise in
    ``[-noise / 2, noise / 2]``. The draw is shared by all images of the batch.

    Args:
        min_size, max_size: crop side range, fractions in (0, 1].
        size: output ``(H, W)`` or int; None keeps the input size.
        noise: width of the uniform noise (pixel units of the [0, 1] image); 0 disables it.
        n_crops: crops per call (1 to ``validate.MAX_BATCH``); the output is crop-major: (n_crops * B, 3, H, W), rows
            ``c * B : (c + 1) * B`` are crop ``c`` of every image.
        generator: torch generator for reproducible draws.

    Returns:
        a transform (B, 3, H_in, W_in) -> (n_crops * B, 3, H, W).
    """
    min_size, max_size = check_number("min_size", min_size), check_number("max_size", max_size)
    if not (0 < min_size <= max_size <= 1):
        raise ValueError(f"crop sizes must satisfy 0 < min_size <= max_size <= 1, got {min_size}, {max_size}")
    noise = check_number("noise", noise, 0)
    n_crops, generator = check_int("n_crops", n_crops, 1, MAX_BATCH), check_generator(generator)
    out_size = _size(size)

    def inner(image_t: torch.Tensor) -> torch.Tensor:
        if image_t.dim() != 4:
            raise ValueError(f"box_crop expects a batch (B, C, H, W), got shape {tuple(image_t.shape)}")
        h, w = image_t.shape[2:]
        oh, ow = out_size or (h, w)
        side = min(h, w)
        crops = []
        for _ in range(n_crops):
            frac = float(torch.rand((), generator=generator)) * (max_size - min_size) + min_size
            k = max(2, int(round(frac * side)))
            y0 = int(torch.randint(0, h - k + 1, (), generator=generator))
            x0 = int(torch.randint(0, w - k + 1, (), generator=generator))
            crops.append(_resized(image_t[:, :, y0 : y0 + k, x0 : x0 + k], (oh, ow), noise, generator))
        return torch.cat(crops, 0) if len(crops) > 1 else crops[0]

    return inner


def zoom_crops(
    about: Tuple[float, float] = (0.5, 0.5),
    n_crops: int = 4,
    min_zoom: float = 0.6,
    max_zoom: float = 1.0,
    noise: float = 0.02,
    generator: Optional[torch.Generator] = None,
) -> Transform:
    """Random zooms about a fixed point: MaCo's many crops per step (Fel et al. 2023) for spatially aligned targets.

    Every call draws ``n_crops`` square-ish boxes, each ``z`` times the image's height and width with ``z`` uniform
    in ``[min_zoom, max_zoom]``, placed so that the point ``about`` (fractions (y, x) of the image) keeps its place:
    box rows ``fy * H * (1 - z)`` to that plus ``z * H``, columns alike. Each box is resized (bilinear) back to
    (H, W) and gets uniform noise in ``[-noise / 2, noise / 2]``. The point ``about`` is therefore at the same
    pixel, and at the same position of every layer map, in every crop: a target placed at that position (an atlas
    icon's ``"center"`` target) stays aligned with each crop, while the image is seen at many scales. Targets
    spread over several positions are not (the positions away from ``about`` move with the zoom).

    Returns:
        a transform (B, 3, H, W) -> (n_crops * B, 3, H, W), crop-major: rows ``c * B : (c + 1) * B`` are crop ``c``.
    """
    fy, fx = (check_number("about", float(v), 0, 1) for v in about)
    min_zoom, max_zoom = check_number("min_zoom", min_zoom), check_number("max_zoom", max_zoom)
    if not (0 < min_zoom <= max_zoom <= 1):
        raise ValueError(f"zooms must satisfy 0 < min_zoom <= max_zoom <= 1, got {min_zoom}, {max_zoom}")
    noise = check_number("noise", noise, 0)
    n_crops, generator = check_int("n_crops", n_crops, 1, MAX_BATCH), check_generator(generator)

    def inner(image_t: torch.Tensor) -> torch.Tensor:
        h, w = image_t.shape[2:]
        crops = []
        for _ in range(n_crops):
            z = float(torch.rand((), generator=generator)) * (max_zoom - min_zoom) + min_zoom
            kh, kw = max(2, round(z * h)), max(2, round(z * w))
            y0, x0 = round(fy * (h - kh)), round(fx * (w - kw))
            crops.append(_resized(image_t[:, :, y0: y0 + kh, x0: x0 + kw], (h, w), noise, generator))
        return torch.cat(crops, 0)

    return inner


def _resized(crop: torch.Tensor, hw: Tuple[int, int], noise: float, generator) -> torch.Tensor:
    """A crop (B, C, h, w) resized (bilinear, antialiased when shrinking) to ``hw`` (H, W), plus one draw of uniform
    noise in ``[-noise / 2, noise / 2]`` shared by the batch (none when ``noise`` is 0)."""
    if tuple(crop.shape[2:]) != tuple(hw):
        crop = F.interpolate(crop, size=hw, mode="bilinear", align_corners=False, antialias=crop.shape[2] > hw[0])
    if noise > 0:
        u = (torch.rand((1, crop.shape[1], *hw), generator=generator) - 0.5) * noise
        crop = crop + u.to(crop.device, crop.dtype)
    return crop


def uniform_noise(amount: float = 0.02, generator: Optional[torch.Generator] = None) -> Transform:
    """Add the same uniform noise in ``[-amount / 2, amount / 2]`` to every image of the batch."""
    amount, generator = check_number("amount", amount, 0), check_generator(generator)

    def inner(image_t: torch.Tensor) -> torch.Tensor:
        u = (torch.rand((1,) + tuple(image_t.shape[1:]), generator=generator) - 0.5) * amount
        return image_t + u.to(image_t.device, image_t.dtype)

    return inner


def shift(max_shift: int = 4, generator: Optional[torch.Generator] = None) -> Transform:
    """Jitter by up to ``max_shift`` pixels (reflect-padded roll), keeping the image size.

    Spatially aligned objectives (:func:`~lucent_inhibit.synthesis.objectives.spatial_cosdot`) need the layer map to
    keep its geometry, so +/- inversions use this small jitter instead of box crops.
    """
    max_shift, generator = check_int("max_shift", max_shift, 0, MAX_SIDE), check_generator(generator)

    def inner(image_t: torch.Tensor) -> torch.Tensor:
        if max_shift == 0:
            return image_t
        d = max_shift
        h, w = image_t.shape[2:]
        padded = F.pad(image_t, [d, d, d, d], mode="reflect")
        dy = int(torch.randint(0, 2 * d + 1, (), generator=generator))
        dx = int(torch.randint(0, 2 * d + 1, (), generator=generator))
        return padded[:, :, dy : dy + h, dx : dx + w]

    return inner


def accentuation_transforms(extra: Sequence[Transform] = (), **crop) -> List[Transform]:
    """The paper's accentuation augmentation as a transform list: ``[*extra, box_crop(**crop)]``.

    ``crop``: keyword arguments of :func:`box_crop` (``min_size``, ``max_size``, ``size``, ``noise``,
    ``n_crops``, ``generator``; its defaults otherwise: 5%..100% crops, noise 0.02, one crop).
    ``extra``: transforms applied before the crop, e.g. some of Lucent's
    (``lucent.optvis.transform.jitter(4)``); the list is what ``render_vis(transforms=...)`` takes.
    """
    return list(extra) + [box_crop(**crop)]


def compose(transforms: Sequence[Transform]) -> Transform:
    """Apply ``transforms`` in order (like Lucent's ``transform.compose``)."""
    transforms = list(transforms)

    def inner(x):
        for t in transforms:
            x = t(x)
        return x

    return inner
