"""Feature accentuation, +/- attribution inversions and tense synthesis, on Lucent's ``render_vis``.

- :func:`accentuate` (paper 003, SPEC 2.5): image-seeded feature visualization with a seeded Fourier
  (or phase) parameterization, box-crop augmentation over the full range of sizes, and an L2 seed
  regularizer at a latent layer whose weight is ``reg_lambda`` times a balance factor set at step 0.
- :func:`inversions` (SPEC 2.3): the excitatory and inhibitory images of one input, rendered as one
  batch of two against ``relu(S)`` and ``relu(-S)``; noise-seeded = inversion, image-seeded = accentuation.
- :func:`tense_image` (SPEC 2.4): synthesise a maximally tense image with the ``tense`` objective.

Every render goes through ``lucent.optvis.render.render_vis`` unchanged: this module builds the
``param_f``, the transforms and one Lucent objective (guarded so a non-finite loss stops the render with
the step number), and removes the forward hooks ``render_vis`` leaves on the model afterwards.
"""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from lucent.optvis import objectives as lucent_objectives
from lucent.optvis import render as lucent_render
from lucent.optvis import transform as lucent_transform

from . import param as _param
from . import transform as _transform
from .attribution import Feature, as_feature, attribute, check_images, model_device
from .models import preprocess_fn
from .storage import load_npz, save_npz
from .objectives import BatchView, seed_l2, signed_attribution, tense

log = logging.getLogger(__name__)

PARAMS = ("fourier", "phase")


# ------------------------------------------------------------------------------------------------
# plumbing around render_vis
# ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def released_hooks(model: torch.nn.Module):
    """Remove the forward hooks added to ``model`` inside the block (``render_vis`` never removes its own)."""
    before = {id(m): set(m._forward_hooks.keys()) for m in model.modules()}
    try:
        yield
    finally:
        for m in model.modules():
            for key in list(m._forward_hooks.keys()):
                if key not in before.get(id(m), set()):
                    del m._forward_hooks[key]


class NonFiniteLoss(FloatingPointError):
    """A render produced a NaN or infinite loss; the message names the step."""


class _Guarded:
    """The objective handed to render_vis: evaluates the parts, records them, stops on NaN/inf."""

    def __init__(self, parts: Callable, steps: int, what: str, callback: Optional[Callable] = None):
        self.parts, self.steps, self.what, self.callback = parts, steps, what, callback
        self.step = 0
        self.history: Dict[str, List[float]] = {}

    def __call__(self, T):
        self.step += 1
        loss, named = self.parts(T)
        for k, v in named.items():
            self.history.setdefault(k, []).append(float(v))
        if not torch.isfinite(loss).all():
            raise NonFiniteLoss(
                f"{self.what}: the loss became {float(loss.detach())} at step {self.step} of {self.steps} "
                f"(parts: {', '.join(f'{k}={float(v):.4g}' for k, v in named.items())}); lower the learning "
                "rate or the objective's power, or check the objective for divisions by zero"
            )
        if self.callback is not None:
            self.callback(self.step - 1)
        return loss


def _as_objective(obj):
    if obj is None:
        raise ValueError("objective is required (a Lucent Objective, e.g. lucent_inhibit.objectives.feature(...))")
    return lucent_objectives.as_objective(obj)


def _make_param(kind, seed, size, batch, with_seed, device, generator):
    if callable(kind):
        return kind(seed=seed, size=size, batch=batch, with_seed=with_seed)
    if kind not in PARAMS:
        raise ValueError(f"param must be one of {PARAMS} or a callable, got {kind!r}")
    f = _param.fourier_image if kind == "fourier" else _param.phase_image
    return f(size=size, seed=seed, batch=batch, with_seed=with_seed, device=device, generator=generator)


def _full_transform(model, transforms, out_size):
    """The transform stack render_vis builds with preprocess=True and fixed_image_size=out_size."""
    up = torch.nn.Upsample(size=out_size, mode="bilinear", align_corners=True)
    return _transform.compose(list(transforms) + [preprocess_fn(model), up])


def _render(
    model,
    params,
    image_f,
    parts,
    steps: int,
    lr: float,
    transforms,
    out_size,
    progress: bool,
    what: str,
    callback=None,
):
    if int(steps) < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    guard = _Guarded(parts, int(steps), what, callback)
    objective = lucent_objectives.Objective(guard, name=what)
    with released_hooks(model):
        lucent_render.render_vis(
            model,
            objective,
            param_f=lambda: (params, image_f),
            optimizer=lambda p: torch.optim.Adam(p, lr=lr),
            transforms=list(transforms),
            thresholds=(int(steps),),
            preprocess=True,
            progress=progress,
            show_image=False,
            fixed_image_size=out_size,
        )
    return guard.history


def _npz_save(path, arrays: Dict[str, np.ndarray], meta: dict) -> None:
    save_npz(path, arrays, meta)


def _npz_load(path):
    arrays, meta = load_npz(path)
    return {k: torch.from_numpy(v) for k, v in arrays.items()}, meta


# ------------------------------------------------------------------------------------------------
# feature accentuation
# ------------------------------------------------------------------------------------------------
@dataclass
class Accentuation:
    """Result of :func:`accentuate`.

    Attributes:
        images: (B, 3, H, W) accentuated images in [0, 1].
        seed: (B, 3, H, W) the seed images (resized to the render size).
        objective: (steps,) the objective's value (minus its loss) on the augmented renders at each step.
        regularizer: (steps,) seed distance at ``reg_layer`` per step (empty without regularization).
        balance: the step-0 balance factor (objective / regularizer gradient norms); 1 without regularizer.
        reg_layer, reg_lambda, steps: the settings.
    """

    images: torch.Tensor
    seed: torch.Tensor
    objective: torch.Tensor
    regularizer: torch.Tensor
    balance: float
    reg_layer: Optional[str]
    reg_lambda: float
    steps: int

    def save(self, path: str) -> None:
        _npz_save(
            path,
            {k: getattr(self, k).cpu().numpy() for k in ("images", "seed", "objective", "regularizer")},
            {"balance": self.balance, "reg_layer": self.reg_layer, "reg_lambda": self.reg_lambda, "steps": self.steps},
        )

    @classmethod
    def load(cls, path: str) -> "Accentuation":
        a, m = _npz_load(path)
        return cls(a["images"], a["seed"], a["objective"], a["regularizer"], m["balance"], m["reg_layer"], m["reg_lambda"], m["steps"])


def _split_parts(objective, reg, reg_layer, weight_fn, n: int, with_seed: bool, n_blocks: int):
    block = 2 * n if with_seed else n

    def parts(T):
        obj_losses, reg_losses = [], []
        for c in range(n_blocks):
            base = c * block
            obj_losses.append(objective(BatchView(T, base, base + n)))
            if reg is not None:
                reg_losses.append(reg(BatchView(T, base, base + block)))
        lo = torch.stack(obj_losses).mean()
        named = {"objective": -lo.detach()}
        if reg is None:
            return lo, named
        lr_ = torch.stack(reg_losses).mean()
        named["regularizer"] = lr_.detach()
        return lo + weight_fn() * lr_, named

    return parts


def _balance(model, params, image_f, obj_parts, reg_parts, transforms, out_size, lr) -> float:
    """Step-0 ratio of the objective's and the regularizer's gradient norms (w.r.t. the parameters).

    At step 0 every render equals its seed, where the L2 distance has no defined gradient; the
    regularizer's gradient is therefore taken one Adam-sized step (``lr * sign(grad)``) along the
    objective, under the same augmentation draw. The distance is an L2 norm (not squared), whose
    gradient magnitude does not depend on the size of that step to first order.
    """
    tf = _full_transform(model, transforms, out_size)
    state = torch.get_rng_state()
    with released_hooks(model), torch.enable_grad():
        hook = lucent_render.hook_model(model, image_f)
        model(tf(image_f()))
        g_obj = torch.autograd.grad(obj_parts(hook), params, allow_unused=True)
        g_obj = [torch.zeros_like(p) if g is None else g for p, g in zip(params, g_obj)]
        n_obj = math.sqrt(sum(float(g.pow(2).sum()) for g in g_obj))
        if not math.isfinite(n_obj) or n_obj == 0:
            raise ValueError(
                f"the objective's gradient at step 0 is {n_obj}: it does not depend on the image "
                "(wrong layer or unit?) or is not finite"
            )
        saved = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, g in zip(params, g_obj):
                p -= lr * g.sign()
        torch.set_rng_state(state)
        model(tf(image_f()))
        g_reg = torch.autograd.grad(reg_parts(hook), params, allow_unused=True)
        n_reg = math.sqrt(sum(float(g.pow(2).sum()) for g in g_reg if g is not None))
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
    torch.set_rng_state(state)
    if not math.isfinite(n_reg) or n_reg == 0:
        raise ValueError(f"the seed regularizer's gradient at step 0 is {n_reg}; pick another reg_layer")
    return n_obj / n_reg


def accentuate(
    model: torch.nn.Module,
    image: torch.Tensor,
    objective,
    reg_layer: Optional[str] = None,
    reg_lambda: float = 1.0,
    steps: int = 64,
    size=None,
    param: Union[str, Callable] = "phase",
    lr: float = 0.05,
    transforms: Optional[Sequence[Callable]] = None,
    n_crops: int = 1,
    crop_range: Tuple[float, float] = (0.05, 1.0),
    noise: float = 0.02,
    mask: Optional[torch.Tensor] = None,
    balance: Optional[float] = None,
    progress: bool = False,
    callback: Optional[Callable[[int, torch.Tensor], None]] = None,
    seed: Optional[int] = None,
) -> Accentuation:
    """Feature accentuation: optimise ``objective`` starting from ``image``, staying close to it.

    Args:
        model: a prepared model (eval, no in-place ops).
        image: seed (3, H, W) or (B, 3, H, W) in [0, 1].
        objective: a Lucent objective (any of Lucent's or :mod:`lucent_inhibit.objectives`), evaluated on
            the rendered images only (batch indices 0..B-1, whatever else the batch holds).
        reg_layer: latent layer of the L2 seed regularizer (:func:`~lucent_inhibit.objectives.seed_l2`);
            None (or ``reg_lambda=0``) disables it.
        reg_lambda: regularizer weight relative to the objective; the applied weight is
            ``reg_lambda * balance``.
        steps: optimisation steps (Adam, learning rate ``lr``).
        size: render size ``(H, W)`` or int; a seed of another size is resized. Default: the seed's size.
        param: ``"phase"`` (magnitude-constrained, default: on EfficientNet-Lite0 it keeps accentuations
            about half as far from the seed as ``"fourier"`` at the same activation), ``"fourier"`` (seeded
            Fourier) or a callable ``(seed=, size=, batch=, with_seed=) -> (params, image_f)``.
        transforms: render_vis transforms; default ``[box_crop(*crop_range, noise=noise, n_crops=n_crops)]``.
            Custom transforms must keep the batch layout ``n_crops`` blocks of ``[renders, seeds]``.
        n_crops: crops per step (each is a full copy of the batch, crop-major).
        crop_range: (min, max) crop side as a fraction of the image side.
        noise: uniform noise width of the default transform.
        mask: optional (H, W) weights in [0, 1] (e.g. :func:`~lucent_inhibit.objectives.attribution_mask`):
            the image only changes where the mask is positive.
        balance: fix the balance factor instead of measuring it at step 0.
        progress: tqdm bar.
        callback: ``callback(step, images)`` before each step (images: (B, 3, H, W), detached).
        seed: torch RNG seed for the augmentation draws (None: leave the global RNG alone).

    Returns:
        :class:`Accentuation`.

    Raises:
        NonFiniteLoss: the loss became NaN/inf (the message names the step).
    """
    images = check_images(image)
    dev = model_device(model)
    if size is not None:
        images = _param.check_seed(images, size)
    images = images.to(dev)
    b, out_size = images.shape[0], tuple(images.shape[2:])
    if reg_lambda < 0 or not math.isfinite(reg_lambda):
        raise ValueError(f"reg_lambda must be a finite non-negative weight, got {reg_lambda}")
    with_seed = reg_layer is not None and reg_lambda > 0
    if with_seed:
        from .models import layers as _layers, unknown_layer_message

        if reg_layer not in _layers(model):
            raise ValueError(unknown_layer_message(reg_layer, _layers(model)))
    if seed is not None:
        torch.manual_seed(seed)
        np.random.seed(seed)  # Lucent's transforms draw from numpy
    objective = _as_objective(objective)
    params, image_f = _make_param(param, images, out_size, b, with_seed, dev, None)
    if mask is not None:
        params, image_f = _param.masked((params, image_f), mask, base=images, n=b)
    if transforms is None:
        transforms = [_transform.box_crop(crop_range[0], crop_range[1], noise=noise, n_crops=n_crops)]
    reg = seed_l2(reg_layer, n=b) if with_seed else None
    if with_seed and balance is None:
        obj_only = _split_parts(objective, None, None, None, b, True, n_crops)
        reg_only = _split_parts(lambda T: torch.zeros(()), reg, reg_layer, lambda: 1.0, b, True, n_crops)
        balance = _balance(
            model, params, image_f, lambda T: obj_only(T)[0], lambda T: reg_only(T)[0], transforms, out_size, lr
        )
        log.info("accentuate: step-0 balance factor %.4g", balance)
    balance = 1.0 if balance is None else float(balance)
    weight = reg_lambda * balance
    parts = _split_parts(objective, reg, reg_layer, lambda: weight, b, with_seed, n_crops)
    cb = None if callback is None else (lambda i: callback(i, image_f()[:b].detach()))
    hist = _render(model, params, image_f, parts, steps, lr, transforms, out_size, progress, "accentuate", cb)
    with torch.no_grad():
        out = image_f()[:b].detach().cpu()
    if not torch.isfinite(out).all():
        raise NonFiniteLoss(f"accentuate: the rendered image holds NaN/inf after step {steps}")
    return Accentuation(
        out,
        images.cpu(),
        torch.tensor(hist.get("objective", [])),
        torch.tensor(hist.get("regularizer", [])),
        balance,
        reg_layer if with_seed else None,
        float(reg_lambda) if with_seed else 0.0,
        int(steps),
    )


# ------------------------------------------------------------------------------------------------
# +/- attribution inversions and accentuations (SPEC 2.3)
# ------------------------------------------------------------------------------------------------
ROWS = ("original", "excitatory", "inhibitory")


@dataclass
class InversionResult:
    """Result of :func:`inversions`: the original image and its excitatory / inhibitory renders.

    Attributes:
        images: (3, 3, H, W) in [0, 1]: rows ``original``, ``excitatory``, ``inhibitory``.
        activation: (3,) the feature's value on each row.
        positive, negative: (3,) P and N at ``layer`` on each row.
        maps: (3, 2, h, w) per row, ``relu(S)`` and ``relu(-S)`` summed over channels at ``layer``.
        feature, layer: what was inverted, and where.
        seeded: True for accentuations (start at the image), False for inversions (start from noise).
        steps: optimisation steps.
        objective: (steps, 2) cosdot value of the excitatory and inhibitory renders per step.
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
        return {
            r: {"activation": float(self.activation[i]), "P": float(self.positive[i]), "N": float(self.negative[i])}
            for i, r in enumerate(ROWS)
        }

    def save(self, path: str) -> None:
        _npz_save(
            path,
            {k: getattr(self, k).cpu().numpy() for k in ("images", "activation", "positive", "negative", "maps", "objective")},
            {"feature": self.feature.to_dict(), "layer": self.layer, "seeded": self.seeded, "steps": self.steps},
        )

    @classmethod
    def load(cls, path: str) -> "InversionResult":
        a, m = _npz_load(path)
        return cls(
            a["images"], a["activation"], a["positive"], a["negative"], a["maps"],
            Feature.from_dict(m["feature"]), m["layer"], m["seeded"], m["steps"], a["objective"],
        )


def _measure_rows(model, images, feature, layer):
    att = attribute(model, images, feature, layer)
    s = att.scores[layer]
    if s.dim() != 4:
        raise ValueError(f"+/- inversions need a spatial attribution layer (B, C, H, W); {layer!r} gives {tuple(s.shape)}")
    maps = torch.stack([s.clamp(min=0).sum(1), (-s).clamp(min=0).sum(1)], 1)
    return att.activation.cpu(), att.positive(layer).cpu(), att.negative(layer).cpu(), maps.cpu(), s


def inversions(
    model: torch.nn.Module,
    image: torch.Tensor,
    feature,
    layer: str,
    seeded: bool = False,
    steps: int = 128,
    size=None,
    power: float = 2.0,
    crop: Optional[float] = 0.01,
    lr: float = 0.05,
    param: Union[str, Callable] = "fourier",
    jitter: int = 2,
    reg_layer: Optional[str] = None,
    reg_lambda: float = 1.0,
    progress: bool = False,
    seed: Optional[int] = 0,
    completeness_images: int = 16,
) -> InversionResult:
    """Split one image into what excites ``feature`` and what inhibits it, as two rendered images.

    ``S = grad_h f * h`` at ``layer`` for the image; a batch of two renders maximises the spatial cosdot
    toward ``relu(S)`` (excitatory) and ``relu(-S)`` (inhibitory), cropped to where the target is above
    ``crop`` of its maximum. Both renders are then measured: the feature's activation and P / N.

    Args:
        model: prepared model.
        image: (3, H, W) or (1, 3, H, W) in [0, 1].
        feature: :class:`Feature` (or ``(layer, unit)``); layer: spatial attribution layer feeding it
            (close to the feature: completeness decays with distance, SPEC 3).
        seeded: False: start from noise (inversion); True: start at the image (accentuation).
        steps, lr: optimisation; size: render size (the image is resized to it; default its own size).
        power, crop: of the spatial cosdot.
        param: ``"fourier"`` or ``"phase"`` (or a callable, see :func:`accentuate`).
        jitter: pixels of random shift per step (small, so the layer map keeps its geometry).
        reg_layer, reg_lambda: optional seed regularizer for ``seeded=True``.
        progress: tqdm bar. seed: torch RNG seed (noise start and jitter draws).
        completeness_images: estimate the completeness of (feature, layer) on this many bundled crops
            at the render size and warn (``IncompletenessWarning``) when Pearson r(f, E) is low, since the
            targets then do not add up to the feature (SPEC 3); 0 skips the check.

    Returns:
        :class:`InversionResult`; ``result.separated`` is the check of success.
    """
    feature = as_feature(feature)
    img = check_images(image)
    if img.shape[0] != 1:
        raise ValueError(f"inversions take one image (3, H, W), got a batch of {img.shape[0]}")
    if size is not None:
        img = _param.check_seed(img, size)
    dev = model_device(model)
    img = img.to(dev)
    act0, p0, n0, maps0, s = _measure_rows(model, img, feature, layer)
    if completeness_images and img.shape[2] == img.shape[3]:
        from .completeness import completeness_pair, warn_if_incomplete
        from .data import sample_crops

        crops = sample_crops(int(completeness_images), size=int(img.shape[2]), seed=0)
        warn_if_incomplete(completeness_pair(model, crops, feature, layer, n_images=int(completeness_images)), feature, layer)
    if float(p0[0]) <= 0 or float(n0[0]) <= 0:
        raise ValueError(
            f"the image has P={float(p0[0]):.4g}, N={float(n0[0]):.4g} at {layer!r}: both signs are needed for "
            "+/- inversions"
        )
    # batch element 0 renders relu(S), element 1 relu(-S); their values are tracked separately
    values = {"exc": [], "inh": []}
    exc_obj = signed_attribution(layer, s[0], +1, power=power, crop=crop, batch=0)
    inh_obj = signed_attribution(layer, s[0], -1, power=power, crop=crop, batch=1)

    def tracked(T):
        a, b_ = exc_obj(T), inh_obj(T)
        values["exc"].append(-float(a.detach()))
        values["inh"].append(-float(b_.detach()))
        return a + b_

    transforms = [_transform.shift(jitter)] if jitter else []
    if seed is not None:
        torch.manual_seed(seed)
        np.random.seed(seed)  # Lucent's transforms draw from numpy
    if seeded:
        acc = accentuate(
            model, img.repeat(2, 1, 1, 1), lucent_objectives.Objective(tracked), reg_layer=reg_layer,
            reg_lambda=reg_lambda if reg_layer else 0.0, steps=steps, param=param, lr=lr, transforms=transforms,
            progress=progress,
        )
        renders = acc.images
    else:
        params, image_f = _make_param(param, None, tuple(img.shape[2:]), 2, False, dev, None)

        def parts(T):
            loss = tracked(T)
            return loss, {"objective": -loss.detach()}

        _render(model, params, image_f, parts, steps, lr, transforms, tuple(img.shape[2:]), progress, "inversions")
        with torch.no_grad():
            renders = image_f().detach().cpu()
        if not torch.isfinite(renders).all():
            raise NonFiniteLoss(f"inversions: the rendered images hold NaN/inf after step {steps}")
    rows = torch.cat([img.cpu(), renders.cpu()], 0)
    act, p, n, maps, _ = _measure_rows(model, rows.to(dev), feature, layer)
    objective_traj = torch.tensor([values["exc"], values["inh"]]).T if values["exc"] else torch.zeros(0, 2)
    res = InversionResult(rows, act, p, n, maps, feature, layer, bool(seeded), int(steps), objective_traj)
    if not res.separated:
        log.warning(
            "inversions: the excitatory render does not activate %s more than the inhibitory one (%.4g <= %.4g)",
            feature.name, float(act[1]), float(act[2]),
        )
    return res


def _overlay(ax, image, amap, scale, colour, title=None):
    """Grey image with one non-negative map (h, w) blended in ``colour``, intensity ``amap / scale``."""
    import torch.nn.functional as F

    h, w = image.shape[1:]
    grey = image.mean(0, keepdim=True).permute(1, 2, 0).numpy() * 0.6 + 0.2
    up = F.interpolate(amap[None, None].float(), size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    a = (up / scale).clamp(0, 1).numpy()[..., None] * 0.8
    ax.imshow(np.clip(grey * (1 - a) + np.asarray(colour) * a, 0, 1))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def plot_inversions(result: InversionResult, path: str) -> str:
    """Figure: columns original | excitatory | inhibitory; rows: the images, their excitation
    ``relu(S)`` overlay (red) and inhibition ``relu(-S)`` overlay (blue), all maps on one scale so
    intensities compare across columns. Writes a PNG; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 3, figsize=(8.4, 9.0))
    kind = "accentuation (image-seeded)" if result.seeded else "inversion (noise-seeded)"
    scale = float(result.maps.max()) or 1.0
    for i, r in enumerate(ROWS):
        ax = axes[0, i]
        ax.imshow(result.images[i].permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(
            f"{r}\nf={float(result.activation[i]):.3g}  P={float(result.positive[i]):.3g}  N={float(result.negative[i]):.3g}",
            fontsize=8,
        )
        _overlay(axes[1, i], result.images[i], result.maps[i, 0], scale, (0.85, 0.1, 0.1), "excitation relu(S)")
        _overlay(axes[2, i], result.images[i], result.maps[i, 1], scale, (0.1, 0.25, 0.9), "inhibition relu(-S)")
    fig.suptitle(f"+/- attribution {kind}\n{result.feature.name}, attribution at {result.layer}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------
# tense synthesis (SPEC 2.4)
# ------------------------------------------------------------------------------------------------
@dataclass
class TenseResult:
    """Result of :func:`tense_image`.

    Attributes:
        images: (B, 3, H, W) synthesised images in [0, 1].
        steps: (K,) steps at which the clean image was measured (0 = start, last = end).
        positive, negative, activation: (K, B) P, N at ``layer`` and the feature's value at those steps.
        feature, layer, score, mode: the settings.
    """

    images: torch.Tensor
    steps: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor
    activation: torch.Tensor
    feature: Feature
    layer: str
    score: str
    mode: str

    @property
    def tension(self) -> torch.Tensor:
        """(K, B) tension of P and N at each measured step (``score``)."""
        from .attribution import tension as _tension

        return _tension(self.positive, self.negative, self.score)

    def save(self, path: str) -> None:
        _npz_save(
            path,
            {k: getattr(self, k).cpu().numpy() for k in ("images", "steps", "positive", "negative", "activation")},
            {"feature": self.feature.to_dict(), "layer": self.layer, "score": self.score, "mode": self.mode},
        )

    @classmethod
    def load(cls, path: str) -> "TenseResult":
        a, m = _npz_load(path)
        return cls(a["images"], a["steps"], a["positive"], a["negative"], a["activation"],
                   Feature.from_dict(m["feature"]), m["layer"], m["score"], m["mode"])


def tense_image(
    model: torch.nn.Module,
    feature,
    layer: str,
    steps: int = 64,
    size=128,
    score: str = "min",
    mode: str = "fast",
    batch: int = 1,
    seed_image: Optional[torch.Tensor] = None,
    param: Union[str, Callable] = "fourier",
    lr: float = 0.05,
    transforms: Optional[Sequence[Callable]] = None,
    extra=None,
    record_every: int = 8,
    progress: bool = False,
    seed: Optional[int] = 0,
) -> TenseResult:
    """Synthesise maximally tense images: render :func:`~lucent_inhibit.objectives.tense` with render_vis.

    Args:
        model, feature, layer: as in :func:`~lucent_inhibit.objectives.tense` (``layer`` feeds the feature).
        steps, lr: optimisation; size: render side (int or (H, W)); batch: images rendered together.
        score, mode: tension score and gradient mode of the objective.
        seed_image: optional start image (3, H, W) in [0, 1] (else noise).
        param: ``"fourier"`` or ``"phase"`` or a callable as in :func:`accentuate`.
        transforms: render_vis transforms (default: Lucent's ``standard_transforms``).
        extra: an objective added to the loss (e.g. ``0.1 * lucent.optvis.objectives.channel(...)``).
        record_every: measure P, N and the feature on the clean image every this many steps.
        progress: tqdm bar. seed: torch RNG seed.

    Returns:
        :class:`TenseResult` with the images and the P / N / f trajectory.
    """
    feature = as_feature(feature)
    dev = model_device(model)
    if seed is not None:
        torch.manual_seed(seed)
        np.random.seed(seed)  # Lucent's transforms draw from numpy
    if seed_image is not None:
        seed_image = _param.check_seed(check_images(seed_image), size, batch).to(dev)
    hw = tuple(seed_image.shape[2:]) if seed_image is not None else _param._hw(size)
    objective = tense(feature, layer, score=score, mode=mode)
    if extra is not None:
        objective = objective + _as_objective(extra)
    params, image_f = _make_param(param, seed_image, hw, batch, False, dev, None)
    rec: Dict[str, list] = {"step": [], "P": [], "N": [], "f": []}

    def measure(step):
        with torch.no_grad():
            x = image_f().detach().clamp(0, 1)
        a = attribute(model, x, feature, layer)
        rec["step"].append(step)
        rec["P"].append(a.positive(layer).cpu())
        rec["N"].append(a.negative(layer).cpu())
        rec["f"].append(a.activation.cpu())

    every = max(1, int(record_every))

    def parts(T):
        loss = objective(T)
        return loss, {"objective": -loss.detach()}

    def callback(step):
        if step % every == 0:
            measure(step)

    if transforms is None:
        transforms = lucent_transform.standard_transforms
    _render(model, params, image_f, parts, steps, lr, transforms, hw, progress, "tense_image", callback)
    measure(int(steps))
    images = image_f().detach().cpu()
    if not torch.isfinite(images).all():
        raise NonFiniteLoss(f"tense_image: the rendered image holds NaN/inf after step {steps}")
    return TenseResult(
        images, torch.tensor(rec["step"]), torch.stack(rec["P"]), torch.stack(rec["N"]), torch.stack(rec["f"]),
        feature, layer, score if isinstance(score, str) else "custom", mode,
    )


def plot_tense(result: TenseResult, path: str) -> str:
    """Figure: the synthesised image(s) and the P, N, tension and feature trajectories (first image).
    Writes a PNG; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b = result.images.shape[0]
    fig, axes = plt.subplots(1, b + 1, figsize=(3.2 * (b + 1), 3.4))
    for i in range(b):
        axes[i].imshow(result.images[i].permute(1, 2, 0).clamp(0, 1).numpy())
        axes[i].set_xticks([])
        axes[i].set_yticks([])
        axes[i].set_title(
            f"f={float(result.activation[-1, i]):.3g} P={float(result.positive[-1, i]):.3g} N={float(result.negative[-1, i]):.3g}",
            fontsize=8,
        )
    ax = axes[-1]
    s = result.steps.numpy()
    ax.plot(s, result.tension[:, 0].numpy(), color="0.6", lw=4, alpha=0.6, label=f"tension ({result.score})")
    ax.plot(s, result.positive[:, 0].numpy(), color="tab:red", label="P")
    ax.plot(s, result.negative[:, 0].numpy(), color="tab:blue", label="N")
    ax.plot(s, result.activation[:, 0].numpy(), color="tab:green", label="f")
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
    fig.suptitle(f"tense synthesis ({result.mode}): {result.feature.name}, attribution at {result.layer}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
