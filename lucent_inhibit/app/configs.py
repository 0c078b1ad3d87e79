"""Shared configs of the stages: the model, the images, the feature and the render settings.

Each is a small dataclass validated in ``__post_init__`` (messages name the command-line option);
stage configs nest them with :func:`~lucent_inhibit.app.options.group`. Their defaults are the library's:
the render options are :class:`~lucent_inhibit.core.settings.RenderSettings`' fields, the batch size is
:class:`~lucent_inhibit.core.settings.PassSettings`', the images are those of
:func:`~lucent_inhibit.sample_crops` (``tests/test_defaults.py`` holds every option to the library default of
the parameter it sets). Importing this module does not import torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

from ..core.settings import PassSettings, RenderSettings
from ..core.validate import (MAX_BATCH, MAX_IMAGES, MAX_LR, MAX_SEED, MAX_SIDE, MAX_STEPS, MAX_WORKERS, check_int,
                             check_memory, check_number, check_path_length)
from ..models.defaults import DEFAULT_ATTR_LAYER, DEFAULT_LAYER
from .options import flag, option

#: the library's defaults, which the options below take as theirs
RENDER, PASS = RenderSettings(), PassSettings()

Position = Union[str, Tuple[int, int]]
#: Help of the dataset passes' ``--autocast`` switch (scan, census).
AUTOCAST_HELP = ("run the forward and backward passes under torch.autocast (float16 on CUDA, bfloat16 on CPU): "
                 "the first batch is attributed both ways first and the run stops unless f, P and N agree with "
                 "float32 within 2% of float32's scale (lucent_inhibit.attribution.precision; the deviation is printed and "
                 "recorded in the result)")


def parse_position(text, name: str = "--position") -> Position:
    """``"center"``, ``"mean"``, ``"cls"``, ``"token:i"`` or ``"y,x"`` (also a (y, x) pair) -> a
    :class:`~lucent_inhibit.Feature` position (``cls`` and ``token:i`` on token layers (B, T, C))."""
    if text in ("center", "mean", "cls"):
        return text
    if isinstance(text, str) and text.startswith("token:"):
        try:
            return "token", check_int(name, int(text[len("token:"):]), low=0)
        except ValueError:
            raise ValueError(f"{name} 'token:i' needs an integer i >= 0, got {text!r}") from None
    if isinstance(text, (tuple, list)) and len(text) == 2:
        return check_int(name, text[0], low=0), check_int(name, text[1], low=0)
    try:
        y, x = (int(v) for v in str(text).split(","))
    except ValueError:
        raise ValueError(f"{name} must be 'center', 'mean', 'y,x' or, on a token layer, 'cls' or 'token:i'; got "
                         f"{text!r}") from None
    if y < 0 or x < 0:
        raise ValueError(f"{name} must be 'center', 'mean', 'y,x' with y, x >= 0, or on a token layer 'cls' or "
                         f"'token:i'; got {text!r}")
    return y, x


#: Bytes per input value that a batch of a dataset pass holds at once, counted low: the float32 images (4) and
#: their normalised copy (4); the activations and gradients of a model are many times more.
BATCH_BYTES_PER_VALUE = 8
#: Allocations smaller than this (bytes) are not checked against the machine's memory (no torch import).
CHECKED_FROM = 2 ** 30


def check_host_memory(what: str, needed: int) -> None:
    """``InputError`` saying ``what`` would need ``needed`` bytes and how much memory this machine has left, when
    that is more; amounts under :data:`CHECKED_FROM` are not checked (nor read: the check imports torch)."""
    if needed < CHECKED_FROM:
        return
    import torch

    from ..census.run import available_memory

    check_memory(what, needed, available_memory(torch.device("cpu")))


def check_optional_int(cls, obj, name: str, low: int, high: Optional[int] = None) -> None:
    """``check_int`` of field ``name`` of config ``obj`` (of class ``cls``) unless it is None, naming its flag."""
    value = getattr(obj, name)
    if value is not None:
        check_int(flag(cls, name), value, low=low, high=high)


@dataclass
class ModelConfig:
    """Which model runs, and where."""

    spec: str = option("efficientnet_lite0", "model spec: 'efficientnet_lite0' (embedded ImageNet weights), "
                       "'inceptionv1', 'torchvision:NAME', 'timm:NAME', 'clip:NAME' (a CLIP image tower: "
                       "ViT-B-32, ViT-B-16, ViT-L-14, their -quickgelu variants or ViT-B/32 etc. for OpenAI's "
                       "weights; --weights a local file or 'none') or 'package.module:constructor'",
                       flag="--model")
    weights: str = option("default", "'default' (the embedded weights; the library's pretrained weights for "
                          "torchvision / timm / InceptionV1, which download when not cached), 'none' (random "
                          "initialisation, nothing downloaded) or the path of a local state dict (loaded with "
                          "weights_only=True)")
    device: str = option("cpu", "torch device, e.g. 'cpu' or 'cuda'")

    def __post_init__(self):
        for name in ("spec", "weights", "device"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{flag(ModelConfig, name)} must be a non-empty string, got {getattr(self, name)!r}")

@dataclass
class DataConfig:
    """The images a stage reads: a folder of the user's, or deterministic crops of the bundled photos."""

    images: Optional[str] = option(None, "folder of your own images (recursive); default: deterministic crops "
                                   "of the bundled photos", metavar="DIR")
    n_images: int = option(256, f"number of bundled crops (1 to {MAX_IMAGES})")
    size: int = option(224, f"image side in pixels (8 to {MAX_SIDE})")
    seed: int = option(0, f"seed of the bundled crops (and of the stage's random choices; 0 to {MAX_SEED})")
    batch_size: int = option(PASS.batch_size, f"images per forward/backward pass (1 to {MAX_BATCH})")
    workers: int = option(0, f"processes that decode and resize the --images folder while the model runs (0: the "
                          f"main process; 0 to {MAX_WORKERS}; the bundled crops are already decoded)")
    limit: Optional[int] = option(None, "use only the first N images (default: all)", hidden=True)

    def __post_init__(self):
        check_int(flag(DataConfig, "n_images"), self.n_images, 1, MAX_IMAGES)
        check_int(flag(DataConfig, "workers"), self.workers, 0, MAX_WORKERS)
        check_int(flag(DataConfig, "size"), self.size, 8, MAX_SIDE)
        check_int(flag(DataConfig, "seed"), self.seed, 0, MAX_SEED)
        check_int(flag(DataConfig, "batch_size"), self.batch_size, 1, MAX_BATCH)
        check_optional_int(DataConfig, self, "limit", 1, MAX_IMAGES)
        if self.images is not None and not isinstance(self.images, str):
            raise ValueError(f"--images must be a folder path, got {self.images!r}")
        check_path_length(flag(DataConfig, "images"), self.images)
        rows = min(self.batch_size, self.n_images if self.images is None else self.batch_size, self.limit or MAX_BATCH)
        check_host_memory(f"a batch of {rows} images of {self.size}x{self.size} px ({flag(DataConfig, 'batch_size')} "
                          f"{self.batch_size}, {flag(DataConfig, 'size')} {self.size})",
                          rows * 3 * self.size ** 2 * BATCH_BYTES_PER_VALUE)

    def passes(self, progress: bool = True) -> PassSettings:
        """The :class:`~lucent_inhibit.core.settings.PassSettings` of these options (the rest: the library's)."""
        return PASS.replace(batch_size=self.batch_size, progress=bool(progress))


@dataclass
class FeatureConfig:
    """The feature (a unit of a layer at a position) and the layer where it is attributed."""

    layer: Optional[str] = option(None, f"feature layer (default on the embedded model: {DEFAULT_LAYER}, "
                                  "a pre-activation; on a vision transformer the MLP's hidden pre-GELU layer "
                                  "two thirds deep; on any other model the pre-activation map about two thirds "
                                  "deep: lucent_inhibit.default_feature_layers; the pick is said)")
    unit: Optional[int] = option(None, "channel of the feature (default: the unit whose activation at the centre "
                                 "varies most over the first 32 images, lucent_inhibit.pick_unit; said)")
    position: str = option("center", "feature position: 'center', 'mean' or 'y,x' (a token layer also takes 'cls' "
                           "and 'token:i'; its 'y,x' is a patch of the patch grid, 'mean' the patch tokens' mean)")
    attr_layer: Optional[str] = option(None, "attribution layer, before the feature and close to it (default "
                                       f"for the default feature: {DEFAULT_ATTR_LAYER}, inside the same block; for "
                                       "other feature layers the nearest activation or layer before it that every "
                                       "path into it passes through, said when picked)")

    def __post_init__(self):
        check_optional_int(FeatureConfig, self, "unit", 0)
        parse_position(self.position, flag(FeatureConfig, "position"))

    def feature(self, layer: Optional[str] = None, unit: Optional[int] = None):
        """The :class:`~lucent_inhibit.Feature` at ``layer`` and ``unit`` (defaults: ``self.layer`` and
        ``self.unit``; imports the library). Stages pick a missing layer and unit for their model first
        (:func:`lucent_inhibit.app.runtime.feature_and_layers`)."""
        from ..core.features import Feature

        layer = layer or self.layer
        unit = self.unit if unit is None else unit
        if layer is None or unit is None:
            raise ValueError("no feature layer or unit: give --layer and --unit")
        return Feature(layer, unit=unit, position=parse_position(self.position))


@dataclass
class RenderConfig:
    """The render settings every rendering stage shares (:class:`~lucent_inhibit.RenderSettings`)."""

    steps: int = option(RENDER.steps, f"optimisation steps (Adam; 1 to {MAX_STEPS})")
    lr: float = option(RENDER.lr, f"Adam learning rate (> 0, at most {MAX_LR:g})")
    size: Optional[int] = option(None, f"side of the rendered image in pixels (8 to {MAX_SIDE}; default: the stage's)",
                                 flag="--render-size")
    model_size: Optional[int] = option(None, f"side of the image the model sees (8 to {MAX_SIDE}; default: "
                                       "Lucent's rule, upsampled to 224 when smaller)")
    seed: Optional[int] = option(RENDER.seed, "seed of the render (torch and numpy)", flag="--render-seed")

    def __post_init__(self):
        cls = type(self)
        check_int(flag(cls, "steps"), self.steps, 1, MAX_STEPS)
        check_number(flag(cls, "lr"), self.lr, 0, MAX_LR, low_open=True)
        check_optional_int(cls, self, "size", 8, MAX_SIDE)
        check_optional_int(cls, self, "model_size", 8, MAX_SIDE)
        check_optional_int(cls, self, "seed", 0, MAX_SEED)

    def settings(self, progress: bool = False, **stage) -> RenderSettings:
        """The :class:`~lucent_inhibit.RenderSettings` of these options (``stage`` adds e.g. ``param``)."""
        fields = dict(steps=self.steps, lr=self.lr, size=self.size, model_size=self.model_size, seed=self.seed)
        return RenderSettings(**{**fields, **stage}, progress=bool(progress))
