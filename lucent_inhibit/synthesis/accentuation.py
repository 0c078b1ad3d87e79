"""Feature accentuation on Lucent's ``render_vis`` ("Feature Accentuation: Revealing 'What' Features
Respond to in Natural Images", Hamblin, Fel, Saha, Konkle, Alvarez; SPEC 2.5).

:func:`accentuate` is image-seeded feature visualization: a seeded Fourier (or magnitude-constrained
phase) parameterization, box-crop augmentation over the full range of crop sizes, and an L2 seed
regularizer at a latent layer whose weight is ``reg_lambda`` times a balance factor set at step 0 from
the ratio of the objective's and the regularizer's gradient norms.

The render runs through :func:`lucent_inhibit.core.rendering.run_render` (one ``render_vis`` call inside a
render session that leaves the model's hooks, ``requires_grad`` flags, mode and the global RNGs as they
were). The +/- inversions live in :mod:`lucent_inhibit.synthesis.inversion`, tense synthesis in
:mod:`lucent_inhibit.synthesis.tense`.
"""
from __future__ import annotations

import inspect
import logging
import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
from lucent.optvis.objectives import as_objective

from ..core.features import check_images
from ..core.layers import check_layer_names, model_device
from ..core.preparation import preprocess_fn
from ..core.motion import motion_fields
from ..core.rendering import Parts, as_parts, render_session, rng_restored, run_render
from ..core.results import Result
from ..core.settings import RenderSettings, as_settings
from ..core.validate import InputError, check_int, check_number
from . import param as _param
from . import transform as _transform
from .objectives import BatchView, seed_l2

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------
# the result
# ------------------------------------------------------------------------------------------------
@dataclass
class Accentuation(Result):
    """Result of :func:`accentuate`.

    Attributes:
        images: (B, 3, H, W) accentuated images in [0, 1].
        seed: (B, 3, H, W) the seed images (resized to the render size), in [0, 1].
        objective: (steps,) the objective's value (minus its loss) on the augmented renders at each step.
        regularizer: (steps,) seed distance at ``reg_layer`` per step (L2 norm of the activation
            difference; empty without regularization).
        balance: the step-0 balance factor (objective / regularizer gradient norms); 1 without regularizer.
        reg_layer: the regularizer's layer (None without regularization).
        reg_lambda: the regularizer's weight relative to the objective (0 without regularization).
        steps: optimisation steps.
        moved: (B,) bool, whether each accentuation moved from its seed (:mod:`lucent_inhibit.core.motion`;
            None: not measured); motion: (B, 2) float32 its ``[RMS image change, objective gain]``.
    """

    images: torch.Tensor
    seed: torch.Tensor
    objective: torch.Tensor
    regularizer: torch.Tensor
    balance: float
    reg_layer: Optional[str]
    reg_lambda: float
    steps: int
    moved: Optional[torch.Tensor] = None
    motion: Optional[torch.Tensor] = None

    def summary(self) -> dict:
        """Steps, balance and the objective / regularizer at the first and last step."""
        out = {"type": self.kind(), "images": list(self.images.shape), "steps": self.steps,
               "balance": self.balance, "reg_layer": self.reg_layer, "reg_lambda": self.reg_lambda}
        for name in ("objective", "regularizer"):
            values = getattr(self, name)
            if values.numel():
                out[f"{name}_start"], out[f"{name}_end"] = float(values[0]), float(values[-1])
        return out

    def plot(self, path=None, ax=None, **style):
        """Seeds, accentuations and the objective / regularizer per step (:func:`plot_accentuation`);
        returns the Figure (a PNG at ``path`` when given)."""
        from .figures import plot_accentuation

        return plot_accentuation(self, path, ax, **style)


# ------------------------------------------------------------------------------------------------
# the loss: objective on the renders of each crop block, seed regularizer on the block
# ------------------------------------------------------------------------------------------------
def _split_parts(objective, reg, weight: Callable[[], float], n: int, with_seed: bool, n_blocks: int):
    """``parts(T) -> (loss, {"objective", "regularizer"})`` over ``n_blocks`` crop blocks of the batch.

    Each block holds ``[renders (n), seeds (n)]`` with a seed regularizer (``with_seed``), else ``n``
    renders; the objective sees only the renders, the regularizer the whole block.
    """
    block = 2 * n if with_seed else n

    def parts(T):
        obj_losses, reg_losses = [], []
        for c in range(n_blocks):
            base = c * block
            if objective is not None:
                obj_losses.append(objective(BatchView(T, base, base + n)))
            if reg is not None:
                reg_losses.append(reg(BatchView(T, base, base + block)))
        lo = torch.stack(obj_losses).mean() if obj_losses else torch.zeros(())
        named = {"objective": -lo.detach()}
        if reg is None:
            return lo, named
        lr_ = torch.stack(reg_losses).mean()
        named["regularizer"] = lr_.detach()
        return lo + weight() * lr_, named

    return parts


def _gradient(model, tf, image_f, hook, loss_fn, params):
    """Gradients of ``loss_fn(hook)`` after one forward of the transformed render, w.r.t. ``params``.

    The forward runs inside :func:`rng_restored`, so two calls draw the same augmentation.
    """
    with rng_restored():
        model(tf(image_f()))
    grads = torch.autograd.grad(loss_fn(hook), params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def _norm(grads) -> float:
    return math.sqrt(sum(float(g.pow(2).sum()) for g in grads))


def _balance(model, param_f, obj_parts, reg_parts, settings: RenderSettings, transforms) -> float:
    """Step-0 ratio of the objective's and the regularizer's gradient norms (w.r.t. the parameters).

    At step 0 every render equals its seed, where the L2 distance has no defined gradient; the
    regularizer's gradient is therefore taken one Adam-sized step (``lr * sign(grad)``) along the
    objective, under the same augmentation draw as the render's first step (the render session seeds
    the RNGs as :func:`run_render` does, and restores them after). The distance is an L2 norm (not
    squared), whose gradient magnitude does not depend on the size of that step to first order.
    """
    from lucent.optvis import render as lucent_render

    params, image_f = param_f
    with torch.no_grad():
        hw = tuple(image_f().shape[2:])
    up = torch.nn.Upsample(size=settings.model_hw(hw), mode="bilinear", align_corners=True)
    tf = _transform.compose(list(transforms) + [preprocess_fn(model), up])
    with render_session(model, settings.seed), torch.enable_grad():
        hook = lucent_render.hook_model(model, image_f)
        g_obj = _gradient(model, tf, image_f, hook, lambda T: obj_parts(T)[0], params)
        n_obj = _norm(g_obj)
        if not math.isfinite(n_obj) or n_obj == 0:
            raise ValueError(f"the objective's gradient at step 0 is {n_obj}: it does not depend on the image "
                             "(wrong layer or unit?) or is not finite")
        saved = [p.detach().clone() for p in params]
        try:
            with torch.no_grad():
                for p, g in zip(params, g_obj):
                    p -= settings.lr * g.sign()
            n_reg = _norm(_gradient(model, tf, image_f, hook, lambda T: reg_parts(T)[0], params))
        finally:
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
    if not math.isfinite(n_reg) or n_reg == 0:
        raise ValueError(f"the seed regularizer's gradient at step 0 is {n_reg}; pick another reg_layer")
    return n_obj / n_reg


# ------------------------------------------------------------------------------------------------
# feature accentuation
# ------------------------------------------------------------------------------------------------
def stage_settings(render, hw: Tuple[int, int], param: str) -> RenderSettings:
    """``render`` with the image-stage defaults filled in where a setting is None: ``param``, and
    ``model_size`` = the render size ``hw`` (the model sees the image unresized, as the target maps of
    the inversions and the measured trajectories of tense synthesis assume)."""
    settings = as_settings(render)
    changes = {}
    if settings.param is None:
        changes["param"] = param
    if settings.model_size is None:
        changes["model_size"] = settings.hw(hw)
    return settings.replace(**changes) if changes else settings


def _seed_images(model, image, render):
    """(seed images (B, 3, H, W) on the model's device at the render size, settings)."""
    images = check_images(image)
    settings = stage_settings(render, tuple(images.shape[2:]), "phase")
    hw = settings.hw(tuple(images.shape[2:]))
    if tuple(images.shape[2:]) != hw:
        images = _param.check_seed(images, hw)
    return images.to(model_device(model)), settings


def _accentuation_param(model, images, settings, with_seed: bool, mask):
    with rng_restored(settings.seed):
        param_f = _param.build(settings.param, tuple(images.shape[2:]), seed=images, batch=images.shape[0],
                               with_seed=with_seed, device=model_device(model))
    if mask is not None:
        param_f = _param.masked(param_f, mask, base=images, n=images.shape[0])
    return param_f


def objective_name(objective) -> str:
    """A one-line name of ``objective``: a Lucent objective's description (``Channel [layer, 3, None]``)."""
    text = getattr(objective, "description", "") or getattr(objective, "name", "") or repr(objective)
    text = " ".join(str(text).split())
    return text if len(text) <= 100 else text[:97] + "..."


def _layer_reads(objective, seen=None):
    """The closure variables (a dict) of every part of a Lucent ``Objective`` that names a ``layer``: the layer
    and, for Lucent's ``channel`` / ``neuron``, the ``n_channel`` it indexes. Read from the objective's functions
    (sums and multiples are walked), without calling them: objectives of the user's may count their calls."""
    seen = set() if seen is None else seen
    func = getattr(objective, "objective_func", None)
    if func is None or id(func) in seen:
        return
    seen.add(id(func))
    for value in _nonlocals(func).values():
        if hasattr(value, "objective_func"):
            yield from _layer_reads(value, seen)
        elif callable(value) and not isinstance(value, type):
            inner = _nonlocals(value)
            if isinstance(inner.get("layer"), str):
                yield inner


def _nonlocals(func) -> dict:
    try:
        return dict(inspect.getclosurevars(func).nonlocals)
    except (TypeError, ValueError):  # a builtin or a callable object: nothing to read
        return {}


def check_objective(model, objective, model_hw: Tuple[int, int], what: str = "objective") -> None:
    """Check the layers and channels a Lucent objective reads before any render step: every layer it names must
    be a layer of ``model`` (else the unknown-layer error with close names), and the channel of Lucent's
    ``channel`` / ``neuron`` objectives must be below the layer's channel count on inputs of ``model_hw`` (H, W)
    px, else :class:`InputError` naming the objective, the layer, the channel and the count. The objective's
    functions are read, not called; what they compute at run time is left to the render."""
    from ..core.hooks import output_shapes

    probe = torch.zeros(1, 3, *model_hw, device=model_device(model))
    for read in _layer_reads(objective):
        layer, channel = read["layer"], read.get("n_channel")
        try:
            check_layer_names(model, [layer])
        except ValueError as exc:
            raise InputError(f"{what} {objective_name(objective)}: {exc}") from None
        if layer == "input" or not isinstance(channel, int) or isinstance(channel, bool):
            continue
        shape = tuple(output_shapes(model, probe, [layer])[layer].shape)
        if len(shape) in (2, 4) and not -shape[1] <= channel < shape[1]:
            raise InputError(f"{what} {objective_name(objective)} reads channel {channel} of layer {layer!r}, which "
                             f"has {shape[1]} channels (0 to {shape[1] - 1})")


def _check_crop_range(crop_range) -> Tuple[float, float]:
    """``(min, max)`` crop side fractions as two numbers (their range is checked by ``box_crop``)."""
    if isinstance(crop_range, (str, bytes)) or not isinstance(crop_range, (tuple, list)) or len(crop_range) != 2:
        raise InputError(f"crop_range must be a pair (min, max) of crop side fractions in (0, 1], "
                         f"got {crop_range!r:.60}")
    lo, hi = (check_number(f"crop_range {k}", v, 0, 1, low_open=True) for k, v in zip(("min", "max"), crop_range))
    if lo > hi:
        raise InputError(f"crop_range must be (min, max) with min <= max, got {crop_range!r}")
    return lo, hi


def accentuate(
    model: torch.nn.Module,
    image: torch.Tensor,
    objective,
    reg_layer: Optional[str] = None,
    reg_lambda: float = 1.0,
    render: Optional[RenderSettings] = None,
    n_crops: int = 1,
    crop_range: Tuple[float, float] = (0.05, 1.0),
    noise: float = 0.02,
    mask: Optional[torch.Tensor] = None,
    balance: Optional[float] = None,
    callback: Optional[Callable[[int, torch.Tensor], None]] = None,
) -> Accentuation:
    """Feature accentuation: optimise ``objective`` starting from ``image``, staying close to it.

    Args:
        model: a prepared model (eval, no in-place ops).
        image: seed (3, H, W) or (B, 3, H, W) in [0, 1].
        objective: a Lucent objective (any of Lucent's or :mod:`lucent_inhibit.synthesis.objectives`), evaluated on
            the rendered images only (batch indices 0..B-1, whatever else the batch holds).
        reg_layer: latent layer of the L2 seed regularizer (:func:`~lucent_inhibit.synthesis.objectives.seed_l2`);
            None (or ``reg_lambda=0``) disables it.
        reg_lambda: regularizer weight relative to the objective (>= 0); the applied weight is
            ``reg_lambda * balance``.
        render: :class:`~lucent_inhibit.core.settings.RenderSettings` (None: ``RenderSettings()``, 128 steps,
            lr 0.05, seed 0). Stage defaults where a setting is None: ``size`` the seed's size (a seed of
            another size is resized), ``model_size`` the render size, ``param="phase"`` (on
            EfficientNet-Lite0 it keeps accentuations about half as far from the seed as ``"fourier"`` at
            the same activation), ``transforms=[box_crop(*crop_range, noise=noise, n_crops=n_crops)]``.
            Custom transforms must keep the batch layout: ``n_crops`` blocks of ``[renders, seeds]``.
        n_crops: crops per step (each is a full copy of the batch, crop-major).
        crop_range: (min, max) crop side as a fraction of the image side, ``0 < min <= max <= 1``.
        noise: uniform noise width of the default transform (pixel units of the [0, 1] image).
        mask: optional (H, W) weights in [0, 1] (e.g. :func:`~lucent_inhibit.synthesis.objectives.attribution_mask`):
            the image only changes where the mask is positive.
        balance: fix the balance factor instead of measuring it at step 0.
        callback: ``callback(step, images)`` at each step (images: (B, 3, H, W), detached).

    Returns:
        :class:`Accentuation`.

    Raises:
        lucent_inhibit.core.rendering.NonFiniteLoss: the loss became NaN/inf (the message names the step).
    """
    as_parts(objective)  # refuses None, numbers and other non-objectives with one message
    objective = as_objective(objective)
    images, settings = _seed_images(model, image, render)
    reg_lambda = check_number("reg_lambda", reg_lambda, 0)
    n_crops = check_int("n_crops", n_crops, 1)
    crop_range = _check_crop_range(crop_range)
    if callback is not None and not callable(callback):
        raise InputError(f"callback must be a function (step, images) or None, got {callback!r:.60}")
    with_seed = reg_layer is not None and reg_lambda > 0
    if reg_layer is not None:  # checked also when reg_lambda=0 turns the regularizer off
        check_layer_names(model, [reg_layer], allow=())
    b = images.shape[0]
    check_objective(model, objective, settings.model_hw(tuple(images.shape[2:]), model))
    param_f = _accentuation_param(model, images, settings, with_seed, mask)
    transforms = [_transform.box_crop(crop_range[0], crop_range[1], noise=noise, n_crops=n_crops)]
    if settings.transforms is not None:
        transforms = list(settings.transforms)
    reg = seed_l2(reg_layer, n=b) if with_seed else None
    if with_seed and balance is None:
        balance = _balance(model, param_f, _split_parts(objective, None, None, b, True, n_crops),
                           _split_parts(None, reg, lambda: 1.0, b, True, n_crops), settings, transforms)
        log.info("accentuate: step-0 balance factor %.4g", balance)
    balance = 1.0 if balance is None else check_number("balance", balance, 0, low_open=True)
    weight = reg_lambda * balance
    parts = _split_parts(objective, reg, lambda: weight, b, with_seed, n_crops)
    image_f = param_f[1]
    cb = None if callback is None else (lambda i: callback(i, image_f()[:b].detach()))
    run = run_render(model, Parts(parts), param_f, settings, "accentuate", transforms=transforms, callback=cb,
                     labels=[f"accentuation {i}" for i in range(b)])
    return Accentuation(
        run.images[:b], images.cpu(), torch.tensor(run.history.get("objective", [])),
        torch.tensor(run.history.get("regularizer", [])), float(balance), reg_layer if with_seed else None,
        float(reg_lambda) if with_seed else 0.0, int(settings.steps), *motion_fields(run.motion.take(slice(0, b))),
    )
