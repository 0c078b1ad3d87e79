"""The settings every method shares, with the one set of defaults the library and the command line use:
:class:`RenderSettings` for every render (inversions, accentuations, tense synthesis, atlas icons,
combination sweeps, channel visualizations) and :class:`PassSettings` for every pass over a dataset (scans,
censuses, the completeness study, disinhibition, the inhibitor dictionary). Each stage of the command line
reads its option defaults from these classes. Nothing here imports torch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple, Union

from .validate import (MAX_BATCH, MAX_SEED, MAX_SIDE, MAX_STEPS, InputError, check_flag, check_int, check_number,
                       check_optional, check_size)

Size = Union[int, Tuple[int, int]]


PARAMS = ("fourier", "phase", "lucent")


#: Smallest side (pixels) of a rendered image or of the image the model sees.
MIN_RENDER_SIDE = 8


def check_render_size(name: str, value) -> Optional[Tuple[int, int]]:
    """``(H, W)`` of a render size setting in [MIN_RENDER_SIDE, MAX_SIDE] px, or None (the stage's)."""
    return check_optional(check_size, f"render setting {name}", value, MIN_RENDER_SIDE, MAX_SIDE)


@dataclass(frozen=True)
class RenderSettings:
    """Settings of one render (the same defaults in every stage).

    Attributes:
        steps: optimisation steps (Adam), 1 to ``validate.MAX_STEPS`` (10**6).
        lr: Adam learning rate (finite, > 0).
        size: side (or (H, W)) of the parameterised image, in pixels (8 to ``validate.MAX_SIDE``, 4096);
            None: the stage's natural size (the seed image's size for image-seeded renders, 128 otherwise).
        model_size: side (or (H, W)) of the image the model sees (Lucent's ``fixed_image_size``): renders
            are resized to it bilinearly after the transforms. None: Lucent's rule (upsampled to 224 when
            smaller than 224, else unchanged).
        param: ``"fourier"`` (Lucent-style decorrelated Fourier image; seeded when the stage has a seed
            image), ``"phase"`` (magnitude-constrained phase, the accentuation paper's choice), ``"lucent"``
            (Lucent's own ``param.image``), a callable ``(seed=, size=, batch=, with_seed=) ->
            (params, image_f)``, or None: ``"phase"`` for image-seeded accentuation, ``"fourier"`` otherwise.
        transforms: Lucent transforms applied before the model; None: the stage's documented default
            (Lucent's ``standard_transforms`` for renders from noise).
        seed: seeds torch and numpy for the render (restored afterwards), 0 to 2**32 - 1; None leaves the
            global RNGs alone.
        progress: a tqdm bar over the steps.
    """

    steps: int = 128
    lr: float = 0.05
    size: Optional[Size] = None
    model_size: Optional[Size] = None
    param: Union[str, Callable, None] = None
    transforms: Optional[Sequence[Callable]] = None
    seed: Optional[int] = 0
    progress: bool = False

    def __post_init__(self):
        check_int("render setting steps", self.steps, 1, MAX_STEPS)
        check_number("render setting lr", self.lr, low=0, low_open=True)
        check_render_size("size", self.size)
        check_render_size("model_size", self.model_size)
        if not (self.param is None or callable(self.param) or (isinstance(self.param, str) and self.param in PARAMS)):
            raise InputError(f"render setting param must be one of {PARAMS}, a callable or None, got {self.param!r}")
        if self.transforms is not None and not (isinstance(self.transforms, (list, tuple))
                                                and all(callable(t) for t in self.transforms)):
            raise InputError("render setting transforms must be a list of callables (Lucent transforms), got "
                             f"{self.transforms!r:.60}")
        if self.seed is not None:
            check_int("render setting seed", self.seed, 0, MAX_SEED)
        check_flag("render setting progress", self.progress)

    def replace(self, **changes) -> "RenderSettings":
        """A copy with some settings changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def hw(self, default: Size) -> Tuple[int, int]:
        """The parameterised image's (H, W): ``size`` or ``default``."""
        return check_render_size("size", self.size if self.size is not None else default)

    def model_hw(self, default: Size, model=None) -> Tuple[int, int]:
        """(H, W) the model sees for a render of ``hw(default)``: when ``model`` takes one input size only
        (:func:`~lucent_inhibit.core.tokens.required_input_size`, e.g. a timm ViT with a strict patch embedding),
        that size, whatever ``model_size`` says; else ``model_size``; else Lucent's rule (upsampled to 224
        when smaller than 224, else unchanged)."""
        from .tokens import required_input_size

        need = None if model is None else required_input_size(model)
        if need is not None:
            return need
        if self.model_size is not None:
            return check_render_size("model_size", self.model_size)
        h, w = self.hw(default)
        return (224, 224) if (h < 224 or w < 224) else (h, w)

    def describe(self) -> str:
        return (f"steps={self.steps}, lr={self.lr}, size={self.size}, model_size={self.model_size}, "
                f"param={getattr(self.param, '__name__', self.param)}, seed={self.seed}")


def as_settings(render: Optional[RenderSettings], **stage_defaults) -> RenderSettings:
    """``render`` itself, or ``RenderSettings(**stage_defaults)`` when None; a dict is accepted too."""
    if render is None:
        return RenderSettings(**stage_defaults)
    if isinstance(render, dict):
        return RenderSettings(**{**stage_defaults, **render})
    if not isinstance(render, RenderSettings):
        raise TypeError(f"render must be a RenderSettings (or a dict of its fields), got {type(render).__name__}")
    return render


#: The render settings of atlas icons when the caller gives none (:func:`lucent_inhibit.atlas.render_icons`):
#: with no transforms, icons reach their targets and a visible contrast in 48 steps at lr 0.1 (at 0.05 they
#: stay grey).
ICON_RENDER = RenderSettings(steps=48, lr=0.1)
#: the microscope's feature visualizations: 64 px images seen by the model at 128 px, 96 steps, one seed for all
MICROSCOPE_RENDER = RenderSettings(steps=96, size=64, model_size=128)


@dataclass(frozen=True)
class PassSettings:
    """Settings of one pass over a dataset (the same defaults in every method that streams images).

    Attributes:
        batch_size: images per forward / backward pass, 1 to ``validate.MAX_BATCH`` (4096). Memory grows
            with it; results do not depend on it (to float tolerance).
        preprocess: apply the model's input normalisation (as ``render_vis(preprocess=True)``); False for a
            model that takes the [0, 1] images (or vectors) as they are.
        progress: a tqdm bar over the images.
        completeness_threshold: warn (``IncompletenessWarning``) when Pearson r between the feature and its
            total attribution E at an attribution layer is below it, in [-1, 1].
    """

    batch_size: int = 16
    preprocess: bool = True
    progress: bool = True
    completeness_threshold: float = 0.5

    def __post_init__(self):
        check_int("pass setting batch_size", self.batch_size, 1, MAX_BATCH)
        check_flag("pass setting preprocess", self.preprocess)
        check_flag("pass setting progress", self.progress)
        check_number("pass setting completeness_threshold", self.completeness_threshold, -1.0, 1.0)

    def replace(self, **changes) -> "PassSettings":
        """A copy with some settings changed (validated again)."""
        return dataclasses.replace(self, **changes)


def as_pass_settings(settings: Optional[PassSettings], **defaults) -> PassSettings:
    """``settings`` itself, or ``PassSettings(**defaults)`` when None; a dict of its fields is accepted too."""
    if settings is None:
        return PassSettings(**defaults)
    if isinstance(settings, dict):
        return PassSettings(**{**defaults, **settings})
    if not isinstance(settings, PassSettings):
        raise TypeError(f"settings must be a PassSettings (or a dict of its fields), got {type(settings).__name__}")
    return settings
