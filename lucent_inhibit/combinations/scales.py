"""Axis scales of a feature pair and the render helpers of combination sweeps (paper 004; SPEC 2.7).

Every render of a combination sweep goes through :func:`lucent_inhibit.core.rendering.run_render` (one
``render_vis`` call per batch, hooks and model state restored, also on error), from Lucent's own
``param.image`` (FFT, decorrelated colour) whose initial noise is drawn per batch element from
``torch.Generator().manual_seed(seed)``: the same seed gives the same start whatever batch it is in.

:func:`axis_scales` renders each feature alone and measures its unconstrained maximum ``s``; the pair is
then studied in scaled units ``y = [f_a / s_a, f_b / s_b]`` (the tip of each axis, at 1, is the feature's
own visualization).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from ..core.features import Feature, as_feature
from ..core.hooks import capture
from ..core.layers import check_layer_names, model_device
from ..core.preparation import preprocess_fn
from ..core.motion import motion_fields
from ..core.rendering import RenderRun, run_render
from ..core.results import Result
from ..core.settings import RenderSettings, as_settings
from ..core.tokens import token_grid
from ..core.validate import MAX_BATCH, InputError, check_int
from ..synthesis.objectives import feature as feature_objective
from ..synthesis.param import build as build_param
from .statistics import measure_pair

#: Side of the parameterised image when ``render.size`` is None (Lucent upsamples it to 224 for the model).
DEFAULT_SIZE = 128
#: The parameterizations a sweep renders from: Lucent's ``param.image`` (None, ``"lucent"``) or ``"phase"``.
SWEEP_PARAMS = (None, "lucent", "phase")


# ------------------------------------------------------------------------------------------------
# render helpers
# ------------------------------------------------------------------------------------------------
def settings(render: Optional[RenderSettings]) -> RenderSettings:
    """The sweep's :class:`RenderSettings`: ``render`` or the defaults; ``param`` None or ``"lucent"`` (Lucent's
    ``param.image``, paper 004) or ``"phase"`` (magnitude fixed to a natural-image spectrum, MaCo's half)."""
    s = as_settings(render)
    if s.param not in SWEEP_PARAMS:
        raise ValueError(
            "combination sweeps render from per-seed initial noise (paper 004): render.param must be one of "
            f"{SWEEP_PARAMS}, got {getattr(s.param, '__name__', s.param)!r}"
        )
    return s


def render_size(render: Optional[RenderSettings] = None, model: Optional[nn.Module] = None) -> Tuple[int, int]:
    """(H, W) of the images the model sees inside ``render_vis`` for these settings (pixels): the one input
    size of a ``model`` that takes no other (a timm ViT with a strict patch embedding, as
    :func:`~lucent_inhibit.core.rendering.run_render` forces it), else ``render.model_size`` if given, else
    Lucent's rule for an image of ``render.hw(128)`` (upsampled to 224 when smaller than 224, else unchanged)."""
    return settings(render).model_hw(DEFAULT_SIZE, model)


def seeded_image_param(hw: Tuple[int, int], seeds: Sequence[int], sd: float = 0.01, param: Optional[str] = None):
    """Lucent's ``param.image`` for ``len(seeds)`` images of (H, W) ``hw`` whose initial spectrum is drawn
    per element from ``torch.Generator().manual_seed(seed)`` (std ``sd``); ``param="phase"``: the fixed-magnitude
    phase image (:func:`~lucent_inhibit.synthesis.param.phase_image`) whose initial phase is drawn per element,
    uniform in [-pi, pi), from the same generator. Returns ``(params, image_f)``."""
    if param == "phase":
        params, image_f = build_param("phase", (int(hw[0]), int(hw[1])), batch=len(seeds))
        draw = lambda shape, g: (torch.rand(shape, generator=g) * 2 - 1) * math.pi  # noqa: E731
    else:
        from lucent.optvis import param as lucent_param

        params, image_f = lucent_param.image(int(hw[1]), h=int(hw[0]), batch=len(seeds))
        draw = lambda shape, g: torch.randn(shape, generator=g) * sd  # noqa: E731
    start = params[0]
    with torch.no_grad():
        for i, s in enumerate(seeds):
            start[i].copy_(draw(start.shape[1:], torch.Generator().manual_seed(int(s))).to(start.device))
    return params, image_f


def render_batch(model: nn.Module, objective, seeds: Sequence[int], render: RenderSettings,
                 what: str, labels: Optional[Sequence[str]] = None) -> RenderRun:
    """One ``render_vis`` call through :func:`run_render` from :func:`seeded_image_param` noise: its
    :class:`~lucent_inhibit.core.rendering.RenderRun` (``images`` (len(seeds), 3, H, W) final images in [0, 1],
    ``motion`` how far each moved; ``labels`` name them in the warning about renders that did not move;
    ``render.progress``: Lucent's bar over the steps)."""
    param_f = seeded_image_param(render.hw(DEFAULT_SIZE), seeds, param=settings(render).param)
    return run_render(model, objective, param_f, render, what, labels=labels)


def base_seed(render: RenderSettings) -> int:
    """The noise seed of seed index 0: ``render.seed``, or one draw from torch's global RNG when None
    (the stages then render with that seed, so the result's ``info["seed"]`` reproduces it)."""
    if render.seed is not None:
        return int(render.seed)
    return int(torch.randint(0, 2 ** 31 - 1, ()).item())


def check_pair(model: nn.Module, fa: Feature, fb: Feature, size: Tuple[int, int]) -> Tuple[Feature, Feature]:
    """Validate the pair before any render: distinct, known layers, positions that exist at ``size``.

    Returns the pair to render and measure: a feature on a token layer (B, T, C) without a token layout gets
    the model's at ``size`` (:func:`lucent_inhibit.core.tokens.token_grid`), so its position names the same token
    in the objective and in every measurement (not one guessed from the token count). ``InputError`` (a
    ``ValueError``) naming the feature, its layer's shape and the position when a position is missing.
    """
    if fa == fb:
        raise ValueError(f"feature_a and feature_b are the same feature ({fa.name}); a combination needs two")
    check_layer_names(model, [fa.layer, fb.layer], allow=())
    x = preprocess_fn(model)(torch.full((1, 3, *size), 0.5, device=model_device(model)))
    with torch.no_grad():
        acts = capture(model, x, [fa.layer, fb.layer])
    grid = token_grid(model, size)
    fa, fb = (f.with_grid(grid) if acts[f.layer].dim() == 3 and f.grid is None and grid is not None else f
              for f in (fa, fb))
    for label, f, other in (("feature_a", fa, fb), ("feature_b", fb, fa)):
        try:
            f.check(acts[f.layer])
        except ValueError as exc:
            raise InputError(
                f"{label} ({f.name}) cannot be read at a {size[0]}x{size[1]} model input: {exc}. "
                f"Its layer's {_layout(acts[f.layer])}, the other feature's ({other.layer}) "
                f"{_layout(acts[other.layer])}; "
                "give each feature a position that exists in its own layer (or 'center' / 'mean')"
            ) from None
    return fa, fb


def _layout(act: torch.Tensor) -> str:
    """What positions a layer activation has, for error messages: a map's (H, W), a token layer's tokens."""
    if act.dim() == 3:
        return f"tokens are {int(act.shape[1])} (a token layer (B, T, C) of shape {tuple(act.shape)})"
    if act.dim() == 4:
        return f"map is {tuple(act.shape[2:])}"
    return f"activation is {tuple(act.shape)} (no positions)"


def check_scale(scale) -> Tuple[float, float]:
    """``(s_a, s_b)`` as two positive finite floats, else ``ValueError``."""
    try:
        s = tuple(float(v) for v in scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be two positive numbers (s_a, s_b), got {scale!r}") from None
    if len(s) != 2 or any(not math.isfinite(v) or v <= 0 for v in s):
        raise ValueError(
            f"scale must be two positive finite numbers (s_a, s_b), the features' unconstrained maxima; got {s}. "
            "A zero or negative scale means the feature visualization could not make that feature positive"
        )
    return s


def render_info(model: nn.Module, render: RenderSettings) -> Dict[str, Any]:
    """The render settings a result records (JSON)."""
    tf = render.transforms
    return {"steps": int(render.steps), "image_size": list(render.hw(DEFAULT_SIZE)),
            "render_size": list(render.model_hw(DEFAULT_SIZE, model)), "lr": float(render.lr), "seed": render.seed,
            "model": model._get_name(), "param": render.param or "lucent",
            "transforms": "lucent standard" if tf is None else f"{len(tf)} custom"}


# ------------------------------------------------------------------------------------------------
# axis scales
# ------------------------------------------------------------------------------------------------
@dataclass
class AxisScales(Result):
    """Each feature's unconstrained maximum from its own feature visualization.

    Attributes:
        scale: ``(s_a, s_b)``: the best value over seeds, raw feature units.
        values: (2, S) each feature's value on its own visualization for each seed, raw units.
        images: (2, 3, H, W) the best visualization of each feature, in [0, 1].
        feature_a, feature_b: the pair (None when not recorded).
        info: the render settings (steps, image_size, render_size, lr, seed, model).
        moved: (2,) bool, whether each image moved (:mod:`lucent_inhibit.core.motion`; None: not measured);
        motion: (2, 2) float32 its ``[RMS image change, objective gain]``.
    """

    scale: Tuple[float, float]
    values: torch.Tensor
    images: torch.Tensor
    feature_a: Optional[Feature] = None
    feature_b: Optional[Feature] = None
    info: Dict[str, Any] = field(default_factory=dict)
    moved: Optional[torch.Tensor] = None
    motion: Optional[torch.Tensor] = None

    def __post_init__(self):
        self.scale = tuple(float(v) for v in self.scale)

    def summary(self) -> Dict[str, Any]:
        """The two scales and every seed's value."""
        names = [f.name if f is not None else label for f, label in ((self.feature_a, "a"), (self.feature_b, "b"))]
        return {"type": self.kind(), "features": names, "scale": list(self.scale),
                "values": self.values.tolist(), "info": self.info}

    def plot(self, path=None, ax=None, **style):
        """The two features' own visualizations side by side, titled with their scales;
        returns the Figure (a PNG at ``path`` when given)."""
        from .figures import plot_axis_scales

        return plot_axis_scales(self, path, ax, **style)


def _pair_objective(fa: Feature, fb: Feature, n_seeds: int):
    """Lucent objective: ``feature_a`` alone on batch elements 0..S-1, ``feature_b`` on S..2S-1."""
    objective = sum(feature_objective(fa, batch=i) for i in range(n_seeds))
    return objective + sum(feature_objective(fb, batch=n_seeds + i) for i in range(n_seeds))


class NotExcitable(ValueError):
    """A feature's own visualization stayed at or below zero, so it has no positive axis scale.

    Attributes: ``feature`` (the :class:`~lucent_inhibit.core.features.Feature`) and ``value`` (its best value).
    """

    def __init__(self, feature, value: float):
        self.feature, self.value = feature, float(value)
        super().__init__(f"the feature visualization of {feature.name} reached at most {value:.4g}, so its axis "
                         "scale would be zero or negative; pick a feature that can be excited (or more steps)")


def axis_scales(
    model: nn.Module,
    feature_a: Feature,
    feature_b: Feature,
    n_seeds: int = 1,
    render: Optional[RenderSettings] = None,
) -> AxisScales:
    """Render each feature alone (all in one batch) and measure its maximum: the axes' scales.

    The batch holds ``n_seeds`` visualizations of ``feature_a`` then ``n_seeds`` of ``feature_b`` (Lucent's
    ``feature`` objective per batch element, Lucent's ``param.image`` from per-seed noise; seed ``s`` uses
    noise seed ``render.seed + s``). Each is measured on its final image at the render's model-input size
    (:func:`render_size`), with no augmentation.

    Args:
        model: a prepared model.
        feature_a, feature_b: two different features.
        n_seeds: visualizations per feature, 1 to ``validate.MAX_BATCH // 2`` (one batch of ``2 n_seeds``);
            the scale is the best over seeds.
        render: :class:`RenderSettings` (None: the defaults, steps=128, 128-px image, Lucent's standard
            transforms, ``param`` must be None or ``"lucent"``).

    Returns:
        :class:`AxisScales`. Raises :class:`NotExcitable` when a feature's maximum is not positive (a zero scale).
    """
    fa, fb = as_feature(feature_a), as_feature(feature_b)
    n_seeds = check_int("n_seeds", n_seeds, 1, MAX_BATCH // 2)
    s = settings(render)
    size = s.model_hw(DEFAULT_SIZE, model)  # the size run_render gives the model
    fa, fb = check_pair(model, fa, fb, size)
    s = s.replace(seed=base_seed(s))
    seeds = [s.seed + i for i in range(n_seeds)] * 2
    labels = [f"{f.name} seed {i}" for f in (fa, fb) for i in range(n_seeds)]
    run = render_batch(model, _pair_objective(fa, fb, n_seeds), seeds, s, "axis scales", labels)
    images = run.images
    y = measure_pair(model, images, fa, fb, size=size)
    values = torch.stack([y[:n_seeds, 0], y[n_seeds:, 1]])  # (2, S)
    best = values.argmax(1)
    scale = (float(values[0, best[0]]), float(values[1, best[1]]))
    for f, v in zip((fa, fb), scale):
        if not v > 0:
            raise NotExcitable(f, v)
    picked = [int(best[0]), n_seeds + int(best[1])]
    return AxisScales(scale, values, images[picked], fa, fb, render_info(model, s),
                      *motion_fields(run.motion.take(picked)))
