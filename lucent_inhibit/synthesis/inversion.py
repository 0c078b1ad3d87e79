"""+/- attribution inversions and accentuations ("Understanding Inhibition Through Maximally Tense Images",
Hamblin, Saha, Konkle, Alvarez 2024; SPEC 2.3).

One image is split into what excites a feature and what inhibits it: ``S = grad_h f * h`` at an earlier
layer gives the excitatory target ``relu(S)`` and the inhibitory target ``relu(-S)``; a batch of two
renders maximises the spatial cosdot toward each. Started from noise this is an *inversion*; started at
the image (feature accentuation, :func:`lucent_inhibit.accentuate`) an *accentuation*. The check of
success: the excitatory render drives the feature above the inhibitory one.

The attribution layer is a spatial map (B, C, H, W) or a vision transformer's token layer (B, T, C)
(Dosovitskiy et al. 2021): there the targets and maps are the patch tokens on the model's patch grid
(:func:`lucent_inhibit.core.tokens.token_grid`), the class and register tokens left out, and the renders are
at the model's one input size.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
from lucent.optvis.objectives import Objective

from ..attribution.attribute import attribute
from ..core.features import Feature, as_feature, check_images
from ..core.layers import model_device
from ..core.motion import Motion
from ..core.rendering import Parts, RenderRun, rng_restored, run_render
from ..core.results import Result
from ..core.settings import RenderSettings
from ..core.tokens import TokenGrid, required_input_size, token_grid, token_maps
from ..core.validate import MAX_IMAGES, MAX_SIDE, InputError, check_flag, check_int, check_number
from . import param as _param
from . import transform as _transform
from .accentuation import accentuate, stage_settings
from .figures import ROWS
from .objectives import check_power, signed_attribution

log = logging.getLogger(__name__)



@dataclass
class InversionResult(Result):
    """Result of :func:`inversions`: the original image and its excitatory / inhibitory renders.

    Attributes:
        images: (3, 3, H, W) in [0, 1]: rows ``original``, ``excitatory``, ``inhibitory``.
        activation: (3,) the feature's value on each row.
        positive, negative: (3,) P and N at ``layer`` on each row (L1 sums over every position; on a
            token layer over every token, class and register tokens included; units of the feature).
        maps: (3, 2, h, w) per row, ``relu(S)`` and ``relu(-S)`` summed over channels at ``layer``; on a
            token layer (h, w) is the patch grid (prefix tokens left out).
        feature, layer: what was inverted (on a vision transformer with the model's token grid,
            ``Feature.grid``), and where.
        seeded: True for accentuations (start at the image), False for inversions (start from noise).
        steps: optimisation steps.
        objective: (steps, 2) cosdot value of the excitatory and inhibitory renders per step.
        moved: (3,) bool per row, whether the render moved (:mod:`lucent_inhibit.core.motion`; the original is
            not a render: True; None: not measured); motion: (3, 2) float32 ``[RMS image change, objective
            gain]`` per row (NaN for the original).
    """

    images: torch.Tensor
    activation: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor
    maps: torch.Tensor
    feature: Feature
    layer: str
    seeded: bool
    steps: int
    objective: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 2))
    moved: Optional[torch.Tensor] = None
    motion: Optional[torch.Tensor] = None

    @property
    def original(self) -> torch.Tensor:
        return self.images[0]

    @property
    def excitatory(self) -> torch.Tensor:
        return self.images[1]

    @property
    def inhibitory(self) -> torch.Tensor:
        return self.images[2]

    @property
    def separated(self) -> bool:
        """The method's check of success: the excitatory render activates the feature more."""
        return bool(self.activation[1] > self.activation[2])

    def summary(self) -> Dict[str, Dict[str, float]]:
        """Per row (``original``, ``excitatory``, ``inhibitory``): the feature's activation, P and N."""
        return {
            r: {"activation": float(self.activation[i]), "P": float(self.positive[i]), "N": float(self.negative[i])}
            for i, r in enumerate(ROWS)
        }

    def plot(self, path=None, ax=None, **style):
        """The three rows and their +/- attribution overlays (:func:`plot_inversions`);
        returns the Figure (a PNG at ``path`` when given)."""
        from .figures import plot_inversions

        return plot_inversions(self, path, ax, **style)


def attribution_maps(scores: torch.Tensor, layer: str, grid: Optional[TokenGrid] = None) -> torch.Tensor:
    """Attribution scores at ``layer`` as maps (B, C, h, w): a spatial layer's (B, C, H, W) as they are, a
    token layer's (B, T, C) as its patch tokens on the patch grid (``grid``: the model's token layout, None
    infers it from T; the class and register tokens left out, :func:`lucent_inhibit.core.tokens.token_maps`)."""
    if scores.dim() == 3:
        return token_maps(scores, grid, layer)
    if scores.dim() != 4:
        raise InputError(f"+/- inversions need a spatial attribution layer (B, C, H, W) or a token layer (B, T, C); "
                         f"{layer!r} gives {tuple(scores.shape)}")
    return scores


def _measure_rows(model, images, feature, layer, grid: Optional[TokenGrid]):
    """(activation, P, N (each (B,), P and N over every position or token), maps (B, 2, h, w) of relu(S)
    and relu(-S) summed over channels, the scores S at ``layer``)."""
    att = attribute(model, images, feature, layer)
    s = att.scores[layer]
    m = attribution_maps(s, layer, grid)
    maps = torch.stack([m.clamp(min=0).sum(1), (-m).clamp(min=0).sum(1)], 1)
    return att.activation.cpu(), att.positive(layer).cpu(), att.negative(layer).cpu(), maps.cpu(), s


def _check_completeness(model, img, feature, layer, n_images: int) -> None:
    """Warn (``IncompletenessWarning``) when Pearson r(f, E) of (feature, layer) is low on bundled crops."""
    if not n_images or img.shape[2] != img.shape[3]:
        return
    from ..attribution.agreement import warn_if_incomplete
    from ..attribution.completeness import completeness_pair
    from ..data.bundled import sample_crops

    crops = sample_crops(n_images, size=int(img.shape[2]), seed=0)
    warn_if_incomplete(completeness_pair(model, crops, feature, layer, n_images=n_images), feature, layer)


def _one_image(model, image, render, param: str):
    """(the image (1, 3, H, W) on the model's device at the render size, the stage's settings). A model
    that takes one input size (a strict ViT patch embedding) renders at that size, the image resized to it."""
    img = check_images(image)
    if img.shape[0] != 1:
        raise ValueError(f"inversions take one image (3, H, W), got a batch of {img.shape[0]}")
    need = required_input_size(model)
    default_hw = need or tuple(img.shape[2:])
    settings = stage_settings(render, default_hw, param)
    hw = settings.hw(default_hw)
    if need is not None and hw != tuple(need):
        raise InputError(f"inversions render at the input size of {type(model).__name__}, {need[0]}x{need[1]} px, the "
                         f"only size it takes (the target maps are computed on its patch grid there); got render size "
                         f"{hw[0]}x{hw[1]}: leave the render size unset or set it to {need[0]}")
    if tuple(img.shape[2:]) != hw:
        img = _param.check_seed(img, hw)
    if tuple(settings.model_hw(hw)) != hw:
        raise ValueError(f"inversions render at the image size {hw}: the target maps are computed there, so "
                         f"render.model_size must be None or {hw}, got {settings.model_size!r}")
    return img.to(model_device(model)), settings


def _render_from_noise(model, tracked, settings: RenderSettings, hw, transforms) -> RenderRun:
    """The render of the two targets from noise (``settings.param``, default Fourier): images (2, 3, H, W)."""
    with rng_restored(settings.seed):
        param_f = _param.build(settings.param, hw, batch=2, device=model_device(model))

    def parts(T):
        loss = tracked(T)
        return loss, {"objective": -loss.detach()}

    return run_render(model, Parts(parts), param_f, settings, "inversions", transforms=transforms,
                      labels=["excitatory render", "inhibitory render"])


def inversions(
    model: torch.nn.Module,
    image: torch.Tensor,
    feature,
    layer: str,
    seeded: bool = False,
    render: Optional[RenderSettings] = None,
    power: float = 2.0,
    crop: Optional[float] = 0.01,
    jitter: int = 2,
    reg_layer: Optional[str] = None,
    reg_lambda: float = 1.0,
    completeness_images: int = 16,
) -> InversionResult:
    """Split one image into what excites ``feature`` and what inhibits it, as two rendered images.

    ``S = grad_h f * h`` at ``layer`` for the image; a batch of two renders maximises the spatial cosdot
    toward ``relu(S)`` (excitatory) and ``relu(-S)`` (inhibitory), cropped to where the target is above
    ``crop`` of its maximum. Both renders are then measured: the feature's activation and P / N.

    Args:
        model: prepared model.
        image: (3, H, W) or (1, 3, H, W) in [0, 1].
        feature: :class:`Feature` (or ``(layer, unit)``); layer: attribution layer feeding it (close to
            the feature: completeness decays with distance, SPEC 3): a map (B, C, H, W), or a token layer
            (B, T, C) whose patch tokens, on the model's grid (``tokens.token_grid(model)``, else the
            feature's, else inferred from T), are the targets; the class / register tokens are not
            inverted (an ``InputError`` when all of one sign's attribution sits in them).
        seeded: False: start from noise (inversion); True: start at the image (accentuation).
        render: :class:`~lucent_inhibit.core.settings.RenderSettings` (None: ``RenderSettings()``: 128 steps,
            lr 0.05, seed 0, which seeds the noise start and the jitter draws). Stage defaults where a
            setting is None: ``size`` the image's size, or the model's one input size for a strict ViT
            (any other is refused; the image is resized to it), ``model_size`` the
            render size (any other is refused: the targets are computed there), ``param="fourier"`` from
            noise and ``"phase"`` when seeded (as :func:`~lucent_inhibit.accentuate`),
            ``transforms=[shift(jitter)]`` (none for ``jitter=0``).
        power, crop: of the spatial cosdot (``power`` in [0, ``objectives.MAX_POWER``], ``crop`` in [0, 1) or None).
        jitter: pixels of random shift per step (small, so the layer map keeps its geometry; 0 to
            ``validate.MAX_SIDE``).
        reg_layer, reg_lambda: optional seed regularizer for ``seeded=True``.
        completeness_images: estimate the completeness of (feature, layer) on this many bundled crops
            at the render size and warn (``IncompletenessWarning``) when Pearson r(f, E) is low, since the
            targets then do not add up to the feature (SPEC 3); 0 skips the check.

    Returns:
        :class:`InversionResult`; ``result.separated`` is the check of success.
    """
    feature, seeded = as_feature(feature), check_flag("seeded", seeded)
    jitter = check_int("jitter", jitter, 0, MAX_SIDE)
    completeness_images = check_int("completeness_images", completeness_images, 0, MAX_IMAGES)
    reg_lambda, power = check_number("reg_lambda", reg_lambda, 0), check_power(power)
    crop = None if crop is None else check_number("crop", crop, 0, 1, high_open=True)
    img, settings = _one_image(model, image, render, "phase" if seeded else "fourier")
    grid = token_grid(model, tuple(img.shape[2:])) or feature.grid  # a token layer's patch grid (None: inferred)
    feature = feature if feature.grid is not None or grid is None else feature.with_grid(grid)
    act0, p0, n0, _, s = _measure_rows(model, img, feature, layer, grid)
    _check_completeness(model, img, feature, layer, completeness_images)
    if float(p0[0]) <= 0 or float(n0[0]) <= 0:
        raise ValueError(
            f"the image has P={float(p0[0]):.4g}, N={float(n0[0]):.4g} at {layer!r}: both signs are needed for "
            "+/- inversions"
        )
    # batch element 0 renders relu(S), element 1 relu(-S); their values are tracked separately
    values = {"exc": [], "inh": []}
    target_grid = grid if s.dim() == 3 else None
    exc_obj = signed_attribution(layer, s[0], +1, power=power, crop=crop, batch=0, grid=target_grid)
    inh_obj = signed_attribution(layer, s[0], -1, power=power, crop=crop, batch=1, grid=target_grid)

    def tracked(T):
        a, b_ = exc_obj(T), inh_obj(T)
        values["exc"].append(-float(a.detach()))
        values["inh"].append(-float(b_.detach()))
        return a + b_

    transforms = [_transform.shift(jitter)] if jitter else []
    if seeded:
        tf = settings.transforms if settings.transforms is not None else transforms
        acc = accentuate(model, img.repeat(2, 1, 1, 1), Objective(tracked), reg_layer=reg_layer,
                         reg_lambda=reg_lambda if reg_layer else 0.0, render=settings.replace(transforms=tf))
        renders, motion = acc.images, acc.motion
    else:
        run = _render_from_noise(model, tracked, settings, tuple(img.shape[2:]), transforms)
        renders, motion = run.images, run.motion.table()
    return _result(model, img, renders, feature, layer, seeded, settings.steps, values, grid, motion)


def _result(model, img, renders, feature, layer, seeded, steps, values, grid, motion) -> InversionResult:
    """Measure the three rows; ``values`` are the per-step cosdots (the last ``steps`` of each: a seeded
    run with a regularizer also evaluates the objective once for the step-0 balance); ``motion`` (2, 2) the
    renders' ``[RMS image change, objective gain]``."""
    rows = torch.cat([img.cpu(), renders.cpu()], 0)
    act, p, n, maps, _ = _measure_rows(model, rows.to(img.device), feature, layer, grid)
    traj = torch.tensor([values["exc"][-steps:], values["inh"][-steps:]]).T if values["exc"] else torch.zeros(0, 2)
    motion = torch.cat([torch.full((1, 2), float("nan")), motion.float()])
    moved = torch.cat([torch.ones(1, dtype=torch.bool), Motion(motion[1:, 0], motion[1:, 1]).moved])
    res = InversionResult(rows, act, p, n, maps, feature, layer, bool(seeded), int(steps), traj, moved, motion)
    if not res.separated:
        log.warning(
            "inversions: the excitatory render does not activate %s more than the inhibitory one (%.4g <= %.4g)",
            feature.name, float(act[1]), float(act[2]),
        )
    return res

