"""Image parameterizations for Lucent's render loop, seeded from an image or from noise.

Each factory returns ``(params, image_f)`` exactly as ``render_vis(param_f=...)`` expects: ``params`` is a
list of leaf tensors (requires_grad) for the optimizer and ``image_f()`` returns the current images
(B, 3, H, W) in (0, 1).

- :func:`fourier_image`: decorrelated colour + Fourier basis with 1/f scaling (Lucent's choice), but
  initialised *from a seed*: the colour decorrelation, the sigmoid and the FFT are inverted so that step
  0 renders the seed (to within 1e-3). Without a seed it starts from small noise like Lucent's.
- :func:`phase_image`: magnitude-constrained parameterization: the Fourier magnitude is fixed (the
  seed's, or a natural 1/f spectrum for noise) and only the phase is optimised.
- :func:`masked`: restrict any parameterization's changes to a spatial mask (e.g. from
  :func:`lucent_inhibit.synthesis.objectives.attribution_mask`).
- :func:`build`: the parameterization a render setting names (``RenderSettings.param``): ``"fourier"``,
  ``"phase"``, ``"lucent"`` (Lucent's own ``param.image``) or a callable.
- :func:`from_faccent`: a faccent parameterizer (``faccent.param.fourier_phase`` ...) as ``render_vis`` needs
  it, its parameters marked ``requires_grad`` (faccent's own loop does that; Lucent's does not).

``with_seed=True`` appends the seed images after the rendered ones (batch ``[renders, seeds]``), so
that augmentations treat each render and its seed identically and
:func:`lucent_inhibit.synthesis.objectives.seed_l2` can compare them.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..core.validate import (MAX_BATCH, MAX_SIDE, InputError, check_flag, check_int, check_number, check_size,
                             check_values)

#: Square root of ImageNet's colour covariance (Lucid's values), columns normalised to max norm 1.
_COLOR_SQRT = np.asarray([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float64)
COLOR_MIX = torch.tensor(_COLOR_SQRT / np.max(np.linalg.norm(_COLOR_SQRT, axis=0)), dtype=torch.float32)
COLOR_UNMIX = torch.linalg.inv(COLOR_MIX.double()).float()

#: Seeds are clamped to [EPS, 1 - EPS] before the logit, so step 0 is within EPS of the seed.
EPS = 5e-4
#: Largest exponent of the 1/f spectrum scaling (Lucent uses 1): at 4096 px, 4096**4 = 2.8e14 still leaves
#: float32 room for the inverse FFT's sums; ~10 overflows to inf and NaN images.
MAX_DECAY_POWER = 4.0
#: Largest noise scale of an unseeded start, and pixel std of a natural magnitude: past ~10 the sigmoid is
#: saturated (the image is black and white) and larger values only risk overflow.
MAX_SD = 10.0

ParamResult = Tuple[List[torch.Tensor], Callable[[], torch.Tensor]]


def _size(size) -> Tuple[int, int]:
    """``(H, W)`` of a parameterised image: 2 to ``validate.MAX_SIDE`` (4096) px per side."""
    return check_size("size", size, 2, MAX_SIDE)


def _batch(batch: Optional[int]) -> int:
    """The number of images rendered at once: 1 (None) to ``validate.MAX_BATCH`` (4096)."""
    return check_int("batch", 1 if batch is None else batch, 1, MAX_BATCH)


def _device(device) -> torch.device:
    """``device`` (None: the CPU; a ``torch.device``, ``"cpu"``, ``"cuda:0"``, ... ) as a ``torch.device``."""
    if device is None:
        return torch.device("cpu")
    if not isinstance(device, (str, torch.device)):
        raise InputError(f"device must be a torch.device or a string such as 'cpu' or 'cuda', got {device!r:.60}")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"device {device!r} is not a torch device ({exc})") from None


def check_generator(generator) -> Optional[torch.Generator]:
    """``generator`` if it is None or a ``torch.Generator``, else :class:`InputError`."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputError(f"generator must be a torch.Generator or None, got {generator!r:.60}")
    return generator


def check_seed(seed, size=None, batch: Optional[int] = None, resize: bool = True) -> torch.Tensor:
    """Validate a seed image: (3, H, W) or (B, 3, H, W), float in [0, 1]. Returns (B, 3, H, W).

    ``size``: wanted ``(H, W)`` (or one int); a seed of another size is resized (bilinear, antialiased)
    when ``resize`` is True, else rejected. ``batch``: repeat a single seed to this batch size (a batch
    of seeds must already have it).
    """
    if not torch.is_tensor(seed):
        raise TypeError(f"seed must be a torch.Tensor image (3, H, W) or (B, 3, H, W), got {type(seed).__name__}")
    s = seed.detach().float()
    if s.dim() == 3:
        s = s[None]
    if s.dim() != 4 or s.shape[1] != 3:
        raise ValueError(f"seed must have shape (3, H, W) or (B, 3, H, W), got {tuple(seed.shape)}")
    if not torch.isfinite(s).all():
        raise ValueError("seed contains NaN or infinite values")
    lo, hi = float(s.min()), float(s.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"seed must be in [0, 1], got range [{lo:.3g}, {hi:.3g}]")
    if size is not None:
        hw = _size(size)
        if tuple(s.shape[2:]) != hw:
            if not resize:
                raise ValueError(f"seed is {s.shape[2]}x{s.shape[3]} but the render is {hw[0]}x{hw[1]}; resize it first")
            s = F.interpolate(s, size=hw, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    if batch is not None:
        batch = _batch(batch)
        if s.shape[0] == 1:
            s = s.repeat(batch, 1, 1, 1)
        elif s.shape[0] != batch:
            raise ValueError(f"{s.shape[0]} seed images for a batch of {batch}")
    return s


def freqs(h: int, w: int) -> torch.Tensor:
    """Radial frequency (cycles/pixel) of each ``rfft2`` coefficient of an h x w image: (h, w // 2 + 1)."""
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


def _mix(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    # x (B, 3, H, W); per-pixel colour vector c -> m @ c
    return torch.einsum("ij,bjhw->bihw", m.to(x.device, x.dtype), x)


def to_rgb(z: torch.Tensor, decorrelate: bool = True) -> torch.Tensor:
    """Pre-activation image (B, 3, H, W) in decorrelated colour space -> RGB in (0, 1)."""
    return torch.sigmoid(_mix(z, COLOR_MIX) if decorrelate else z)


def from_rgb(rgb: torch.Tensor, decorrelate: bool = True) -> torch.Tensor:
    """Inverse of :func:`to_rgb` (RGB clamped to [EPS, 1 - EPS] first)."""
    z = torch.logit(rgb.clamp(EPS, 1 - EPS))
    return _mix(z, COLOR_UNMIX) if decorrelate else z


def _with_seed(image_f, seed: Optional[torch.Tensor], with_seed: bool):
    if not check_flag("with_seed", with_seed):
        return image_f
    if seed is None:
        raise ValueError("with_seed=True needs a seed image")
    return lambda: torch.cat([image_f(), seed], 0)


def fourier_image(
    size=None,
    seed: Optional[torch.Tensor] = None,
    batch: Optional[int] = None,
    sd: float = 0.01,
    decay_power: float = 1.0,
    decorrelate: bool = True,
    with_seed: bool = False,
    device=None,
    generator: Optional[torch.Generator] = None,
) -> ParamResult:
    """Fourier-basis image parameterization, optionally seeded.

    The image is ``sigmoid(colour(irfft2(scale * spectrum)))`` with ``scale = 1 / max(f, 1/max(H, W))^decay``
    (so Adam steps favour low frequencies, as in Lucent). With a seed, ``spectrum`` starts at the exact
    inverse of the seed; without, at Gaussian noise of std ``sd``.

    Args:
        size: ``(H, W)`` or an int; default: the seed's size (required without a seed).
        seed: (3, H, W) or (B, 3, H, W) in [0, 1]; resized if ``size`` differs.
        batch: number of images; default: the seed's batch, or 1.
        sd: noise scale of an unseeded start (0 to :data:`MAX_SD`).
        decay_power: exponent of the 1/f scaling (0 to :data:`MAX_DECAY_POWER`).
        decorrelate: use ImageNet's decorrelated colour space.
        with_seed: ``image_f()`` returns ``[renders (B), seeds (B)]`` (2B, 3, H, W) for seed regularization.
        device: torch device of the parameters.
        generator: torch generator for the noise (reproducible starts).

    Returns:
        ``(params, image_f)``: params is ``[spectrum]`` of shape (B, 3, H, W // 2 + 1, 2);
        ``image_f()`` gives (B, 3, H, W) (or (2B, ...) with ``with_seed``).
    """
    dev, generator = _device(device), check_generator(generator)
    sd, decay_power = check_number("sd", sd, 0, MAX_SD), check_number("decay_power", decay_power, 0, MAX_DECAY_POWER)
    if seed is not None:
        seed = check_seed(seed, size, batch).to(dev)
        b, (h, w) = seed.shape[0], tuple(seed.shape[2:])
    else:
        if size is None:
            raise ValueError("fourier_image needs size=(H, W) when no seed image is given")
        (h, w), b = _size(size), _batch(batch)
    scale = (1.0 / freqs(h, w).clamp(min=1.0 / max(h, w)).pow(decay_power)).to(dev)[None, None, :, :, None]
    if seed is not None:
        spec = torch.fft.rfft2(from_rgb(seed, decorrelate), norm="ortho")
        init = torch.view_as_real(spec) / scale
    else:
        init = torch.randn((b, 3, h, w // 2 + 1, 2), generator=generator).to(dev) * sd
    spectrum = init.clone().contiguous().requires_grad_(True)

    def image_f():
        z = torch.fft.irfft2(torch.view_as_complex((scale * spectrum).contiguous()), s=(h, w), norm="ortho")
        return to_rgb(z, decorrelate)

    return [spectrum], _with_seed(image_f, seed, with_seed)


def natural_magnitude(size, decay_power: float = 1.0, pixel_sd: float = 1.0) -> torch.Tensor:
    """A 1/f^decay Fourier magnitude (3, H, W // 2 + 1) whose image has std ``pixel_sd`` (no DC term)."""
    h, w = _size(size)
    decay_power = check_number("decay_power", decay_power, 0, MAX_DECAY_POWER)
    pixel_sd = check_number("pixel_sd", pixel_sd, 0, MAX_SD)
    mag = 1.0 / freqs(h, w).clamp(min=1.0 / max(h, w)).pow(decay_power)
    mag[0, 0] = 0.0
    # energy of the real image from a half spectrum (ortho norm): columns 1..(w-1)//2 count twice
    weight = torch.full((w // 2 + 1,), 2.0)
    weight[0] = 1.0
    if w % 2 == 0:
        weight[-1] = 1.0
    energy = float((mag.pow(2) * weight[None, :]).sum())
    mag = mag * (pixel_sd * math.sqrt(h * w / energy))
    return mag[None].repeat(3, 1, 1)


def phase_image(
    size=None,
    seed: Optional[torch.Tensor] = None,
    batch: Optional[int] = None,
    magnitude: Optional[torch.Tensor] = None,
    decorrelate: bool = True,
    with_seed: bool = False,
    device=None,
    generator: Optional[torch.Generator] = None,
) -> ParamResult:
    """Magnitude-constrained parameterization: fixed Fourier magnitude, optimised phase.

    The image is ``sigmoid(colour(irfft2(M * exp(i phi))))``. Seeded: ``M`` and the start of ``phi`` are the
    seed's own (step 0 renders the seed); from noise: ``M`` is ``magnitude`` or :func:`natural_magnitude`
    and ``phi`` is uniform in [-pi, pi). Every coefficient keeps its magnitude exactly except those of the
    self-conjugate columns 0 and W/2, whose imaginary parts ``irfft2`` projects out.

    Args:
        size, seed, batch, decorrelate, with_seed, device, generator: as in :func:`fourier_image`.
        magnitude: (3, H, W // 2 + 1) fixed magnitude for a noise start.

    Returns:
        ``(params, image_f)``: params is ``[phase]`` (B, 3, H, W // 2 + 1).
    """
    dev, generator = _device(device), check_generator(generator)
    if seed is not None:
        seed = check_seed(seed, size, batch).to(dev)
        b, (h, w) = seed.shape[0], tuple(seed.shape[2:])
        spec = torch.fft.rfft2(from_rgb(seed, decorrelate), norm="ortho")
        mag, phase0 = spec.abs(), spec.angle()
    else:
        if size is None:
            raise ValueError("phase_image needs size=(H, W) when no seed image is given")
        (h, w), b = _size(size), _batch(batch)
        if magnitude is None:
            magnitude = natural_magnitude((h, w))
        mag = torch.as_tensor(check_values("magnitude", magnitude, low=0), dtype=torch.float32)
        if mag.shape != (3, h, w // 2 + 1):
            raise ValueError(f"magnitude must have shape (3, {h}, {w // 2 + 1}) for a {h}x{w} image, got {tuple(mag.shape)}")
        mag = mag[None].repeat(b, 1, 1, 1).to(dev)
        phase0 = ((torch.rand((b, 3, h, w // 2 + 1), generator=generator) * 2 - 1) * math.pi).to(dev)
    phase = phase0.clone().contiguous().requires_grad_(True)

    def image_f():
        z = torch.fft.irfft2(torch.polar(mag, phase), s=(h, w), norm="ortho")
        return to_rgb(z, decorrelate)

    return [phase], _with_seed(image_f, seed, with_seed)


def masked(param: ParamResult, mask: torch.Tensor, base: Optional[torch.Tensor] = None, n: Optional[int] = None) -> ParamResult:
    """Restrict a parameterization's changes to a spatial mask.

    Args:
        param: ``(params, image_f)`` from any parameterization.
        mask: (H, W) or (B, 1, H, W) weights in [0, 1] (e.g. :func:`~lucent_inhibit.synthesis.objectives.attribution_mask`).
        base: (3, H, W) or (B, 3, H, W) image kept where the mask is 0 (the seed for accentuation): the
            output is ``base + mask * (image - base)``. None: the image is unchanged but its gradient is
            multiplied by the mask.
        n: only the first ``n`` rows of ``image_f()`` are masked (the renders of a ``with_seed`` batch);
            default: all rows.

    Returns:
        ``(params, image_f)`` with the same params.
    """
    params, image_f = param
    if getattr(mask, "dtype", None) in (torch.bool, np.bool_):
        mask = mask.float() if torch.is_tensor(mask) else mask.astype(np.float32)  # True: changes allowed
    m = torch.as_tensor(check_values("mask", mask), dtype=torch.float32)
    if m.dim() == 2:
        m = m[None, None]
    if m.dim() != 4 or m.shape[1] != 1:
        raise ValueError(f"mask must be (H, W) or (B, 1, H, W), got shape {tuple(m.shape)}")
    if not torch.isfinite(m).all() or float(m.min()) < 0 or float(m.max()) > 1:
        raise ValueError("mask must hold finite weights in [0, 1]")
    x0 = image_f().detach()
    if tuple(m.shape[2:]) != tuple(x0.shape[2:]):
        raise ValueError(f"mask is {m.shape[2]}x{m.shape[3]} but the images are {x0.shape[2]}x{x0.shape[3]}")
    m = m.to(x0.device)
    if base is not None:
        base = check_seed(base, tuple(x0.shape[2:]), None, resize=False).to(x0.device)
    k = x0.shape[0] if n is None else check_int("n", n, 0, x0.shape[0])

    def image_f2():
        x = image_f()
        head, tail = x[:k], x[k:]
        if base is None:
            head = head.detach() + m * (head - head.detach())
        else:
            head = base + m * (head - base)
        return torch.cat([head, tail], 0) if tail.shape[0] else head

    return params, image_f2


KINDS = ("fourier", "phase", "lucent")


def build(kind, size, seed: Optional[torch.Tensor] = None, batch: Optional[int] = None, with_seed: bool = False,
          device=None, generator: Optional[torch.Generator] = None) -> ParamResult:
    """The parameterization named by a render setting (``RenderSettings.param``), as ``(params, image_f)``.

    Args:
        kind: ``"fourier"`` (:func:`fourier_image`), ``"phase"`` (:func:`phase_image`), ``"lucent"``
            (Lucent's ``lucent.optvis.param.image``: decorrelated FFT image from noise, on Lucent's device;
            no seed image) or a callable ``(seed=, size=, batch=, with_seed=) -> (params, image_f)``.
        size: ``(H, W)`` or an int.
        seed: optional seed images (B, 3, H, W) in [0, 1] (the image-seeded stages).
        batch, with_seed, device, generator: as in :func:`fourier_image` (``generator`` draws the noise of a
            noise start; Lucent's parameterization draws from torch's global generator).
    """
    if callable(kind):
        return kind(seed=seed, size=size, batch=batch, with_seed=with_seed)
    if kind not in KINDS:
        raise ValueError(f"param must be one of {KINDS} or a callable, got {kind!r}")
    if kind == "lucent":
        if seed is not None or with_seed:
            raise ValueError("param 'lucent' (Lucent's param.image) starts from noise; use 'fourier' or 'phase' "
                             "for an image-seeded render")
        from lucent.optvis import param as lucent_param

        h, w = _size(size)
        return lucent_param.image(w, h=h, batch=_batch(batch))
    f = fourier_image if kind == "fourier" else phase_image
    return f(size=size, seed=seed, batch=batch, with_seed=with_seed, device=device, generator=generator)


def from_faccent(param_f) -> ParamResult:
    """A faccent parameterization as Lucent's ``(params, image_f)``, its parameters ready to optimise.

    faccent's parameterizers (``faccent.param.fourier_phase``, ``fourier``, ``pixel``; faccent installed with
    ``pip install --no-deps faccent``) return tensors that do not require grad: faccent's own render loop marks
    them, Lucent's ``render_vis`` does not, and its optimiser then leaves the image where it started without a
    word. This marks them (in place: the parameterizer's image function reads these same tensors)::

        pz = faccent.param.fourier_phase(init_img=seed, img_size=(224, 224), device="cpu")
        render.render_vis(model, obj, param_f=lambda: li.param.from_faccent(pz),
                          transforms=[faccent.transform.box_crop_2()])

    Args:
        param_f: a faccent parameterizer, or any function of no arguments returning ``(params, image_f)``
            (one tensor or a list of tensors, and a function returning the images (B, 3, H, W) in [0, 1]).

    Returns:
        ``(params, image_f)``: ``params`` the list of leaf tensors (``requires_grad`` set), ``image_f`` as given.

    Raises:
        InputError: ``param_f`` is not callable, does not return ``(params, image_f)``, or a parameter is not
            a floating-point leaf tensor (one computed from a tensor that requires grad: detach its source).
    """
    if not callable(param_f):
        raise InputError(f"from_faccent needs a faccent parameterizer such as faccent.param.fourier_phase(...) or a "
                         f"function returning (params, image_f), got {type(param_f).__name__}")
    out = param_f()
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and callable(out[1])):
        raise InputError(f"from_faccent: the parameterizer returned {type(out).__name__}, not (params, image_f); pass "
                         "the faccent parameterizer object itself (e.g. faccent.param.fourier_phase(...)), not its "
                         "params or image")
    params, image_f = out
    params = [params] if isinstance(params, torch.Tensor) else list(params)
    if not params:
        raise InputError("from_faccent: the parameterizer returned no parameters to optimise")
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor) or not (p.is_floating_point() or p.is_complex()):
            raise InputError(f"from_faccent: parameter {i} is {type(p).__name__}"
                             f"{'' if not isinstance(p, torch.Tensor) else ' of ' + str(p.dtype)}, not a floating-point "
                             "tensor the optimiser can change")
        if not p.is_leaf:
            raise InputError(f"from_faccent: parameter {i} was computed from a tensor that requires grad, so the "
                             "optimiser cannot change it; build the parameterizer from a detached image "
                             "(init_img=image.detach())")
        p.requires_grad_(True)
    return params, image_f
