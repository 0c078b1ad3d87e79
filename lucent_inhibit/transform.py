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

Transform = Callable[[torch.Tensor], torch.Tensor]


def _size(size) -> Optional[Tuple[int, int]]:
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    h, w = (int(v) for v in size)
    if h < 1 or w < 1:
        raise ValueError(f"output size must be positive, got {size}")
    return h, w


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
        n_crops: crops per call; the output is crop-major: (n_crops * B, 3, H, W), rows
            ``c * B : (c + 1) * B`` are crop ``c`` of every image.
        generator: torch generator for reproducible draws.

    Returns:
        a transform (B, 3, H_in, W_in) -> (n_crops * B, 3, H, W).
    """
    if not (0 < min_size <= max_size <= 1):
        raise ValueError(f"crop sizes must satisfy 0 < min_size <= max_size <= 1, got {min_size}, {max_size}")
    if noise < 0:
        raise ValueError(f"noise must be non-negative, got {noise}")
    if int(n_crops) < 1:
        raise ValueError(f"n_crops must be at least 1, got {n_crops}")
    out_size = _size(size)

    def inner(image_t: torch.Tensor) -> torch.Tensor:
        if image_t.dim() != 4:
            raise ValueError(f"box_crop expects a batch (B, C, H, W), got shape {tuple(image_t.shape)}")
        b, c, h, w = image_t.shape
        oh, ow = out_size or (h, w)
        side = min(h, w)
        crops = []
        for _ in range(int(n_crops)):
            frac = float(torch.rand((), generator=generator)) * (max_size - min_size) + min_size
            k = max(2, int(round(frac * side)))
            y0 = int(torch.randint(0, h - k + 1, (), generator=generator))
            x0 = int(torch.randint(0, w - k + 1, (), generator=generator))
            crop = image_t[:, :, y0 : y0 + k, x0 : x0 + k]
            if (k, k) != (oh, ow):
                crop = F.interpolate(crop, size=(oh, ow), mode="bilinear", align_corners=False, antialias=k > oh)
            if noise > 0:
                u = (torch.rand((1, c, oh, ow), generator=generator) - 0.5) * noise
                crop = crop + u.to(crop.device, crop.dtype)
            crops.append(crop)
        return torch.cat(crops, 0) if len(crops) > 1 else crops[0]

    return inner


def uniform_noise(amount: float = 0.02, generator: Optional[torch.Generator] = None) -> Transform:
    """Add the same uniform noise in ``[-amount / 2, amount / 2]`` to every image of the batch."""
    if amount < 0:
        raise ValueError(f"noise amount must be non-negative, got {amount}")

    def inner(image_t: torch.Tensor) -> torch.Tensor:
        u = (torch.rand((1,) + tuple(image_t.shape[1:]), generator=generator) - 0.5) * amount
        return image_t + u.to(image_t.device, image_t.dtype)

    return inner


def shift(max_shift: int = 4, generator: Optional[torch.Generator] = None) -> Transform:
    """Jitter by up to ``max_shift`` pixels (reflect-padded roll), keeping the image size.

    Spatially aligned objectives (:func:`~lucent_inhibit.objectives.spatial_cosdot`) need the layer map to
    keep its geometry, so +/- inversions use this small jitter instead of box crops.
    """
    if max_shift < 0:
        raise ValueError(f"max_shift must be non-negative, got {max_shift}")

    def inner(image_t: torch.Tensor) -> torch.Tensor:
        if max_shift == 0:
            return image_t
        d = int(max_shift)
        h, w = image_t.shape[2:]
        padded = F.pad(image_t, [d, d, d, d], mode="reflect")
        dy = int(torch.randint(0, 2 * d + 1, (), generator=generator))
        dx = int(torch.randint(0, 2 * d + 1, (), generator=generator))
        return padded[:, :, dy : dy + h, dx : dx + w]

    return inner


def accentuation_transforms(
    min_size: float = 0.05,
    max_size: float = 1.0,
    size=None,
    noise: float = 0.02,
    n_crops: int = 1,
    extra: Sequence[Transform] = (),
) -> List[Transform]:
    """The paper's accentuation augmentation as a transform list: ``[*extra, box_crop(...)]``.

    ``extra``: transforms applied before the crop, e.g. some of Lucent's
    (``lucent.optvis.transform.jitter(4)``); the list is what ``render_vis(transforms=...)`` takes.
    """
    return list(extra) + [box_crop(min_size, max_size, size=size, noise=noise, n_crops=n_crops)]


def compose(transforms: Sequence[Transform]) -> Transform:
    """Apply ``transforms`` in order (like Lucent's ``transform.compose``)."""
    transforms = list(transforms)

    def inner(x):
        for t in transforms:
            x = t(x)
        return x

    return inner
