"""One render engine around Lucent's ``render_vis`` for every stage that synthesises images.

:class:`RenderSettings` holds what every render needs (steps, learning rate, sizes, parameterization,
transforms, seed, progress); inversions, accentuation, tense synthesis, atlas icons and combination
sweeps all take one ``render=`` object of this type, with the same defaults.

:func:`run_render` calls ``lucent.optvis.render.render_vis`` unchanged, inside :func:`render_session`,
which leaves the model as it found it: no hooks added (Lucent never removes its own), parameters'
``requires_grad`` and train/eval mode restored, torch and numpy random states restored. The objective is
guarded (a NaN/inf loss stops the render with :class:`NonFiniteLoss` naming the stage, step and
settings), and the forward pass stops after the deepest layer the objective reads (learned at the first
step), so the rest of the network is never computed.

Attention: every render runs under PyTorch's math kernel of ``scaled_dot_product_attention``
(:func:`math_attention`). The fused kernels (flash / memory-efficient, on CPU and GPU) have no double
backward, which objectives that differentiate a gradient need (``tense(mode="exact")``, and
``mode="auto"``'s first-step comparison); the math kernel computes the same attention from differentiable
ops. Models that never call ``scaled_dot_product_attention`` (convolutional nets) are unaffected; on an
attention model a step costs more time and memory (timm ViT-Ti/16, one 224 px image, one CPU thread:
0.47-0.54 s instead of 0.41-0.52 s per forward + backward, about 1.1x; the math kernel also holds the
(tokens x tokens) attention matrices for the backward).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .hooks import protect_outputs
from .interrupts import raise_if_interrupted
from .layers import (StopForward, frozen_weights, get_layer, hooks_restored, layer_table, model_device,
                     unknown_layer_message)
from .motion import Motion, measure_motion, warn_still
from .numerics import channels_last, subnormals_flushed
from .probe import check_single_call, deepest, probed
from .settings import RenderSettings, check_render_size
from .tokens import required_input_size
from .validate import InputError


class Truncated(nn.Module):
    """A view of ``model`` that shares its children (Lucent's layer names are unchanged) and ends the
    forward pass once ``stop_layer`` has run; the rest of the network is skipped. ``stop_layer`` may be
    set after construction (``None`` runs the whole model; a ``RuntimeError`` there, e.g. a layer too small
    for the input, is kept in ``failure`` and the pass ends). Returns ``None`` when it stopped early."""

    def __init__(self, model: nn.Module, stop_layer: Optional[str] = None):
        super().__init__()
        self.__dict__["_wrapped"] = model
        self.__dict__["_modules"] = model._modules
        self.__dict__["stop_layer"] = stop_layer
        self.__dict__["failure"] = None

    def _get_name(self):
        return self._wrapped._get_name()

    def forward(self, x):
        x = channels_last(x) if self.__dict__.get("nhwc") else x  # set by run_render from the model's probe
        if self.stop_layer is None:
            try:
                return self._wrapped(x)
            except RuntimeError as exc:  # e.g. a late layer too small for this input: kept for messages
                self.__dict__["failure"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                return None
        module = get_layer(self._wrapped, self.stop_layer)

        def stop(m, i, o):
            raise StopForward

        handle = module.register_forward_hook(stop)
        try:
            return self._wrapped(x)
        except StopForward:
            return None
        finally:
            handle.remove()


class NonFiniteLoss(FloatingPointError):
    """A render produced a NaN or infinite loss; the message names the stage, the step and the settings."""


# ------------------------------------------------------------------------------------------------
# the session: the model as it was found
# ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def rng_restored(seed: Optional[int] = None, devices: Sequence[int] = ()) -> Iterator[None]:
    """Restore torch's (CPU and ``devices``) and numpy's global random states on exit; seed both first."""
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=list(devices)):
        if seed is not None:
            torch.manual_seed(int(seed))
            np.random.seed(int(seed))  # Lucent's transforms draw from numpy
        try:
            yield
        finally:
            np.random.set_state(np_state)


@contextlib.contextmanager
def render_session(model: nn.Module, seed: Optional[int] = None) -> Iterator[nn.Module]:
    """Freeze the weights, flush float subnormals (:mod:`~lucent_inhibit.core.numerics`), then restore hooks,
    ``requires_grad``, train/eval mode, RNGs and the subnormal setting on exit."""
    training = model.training
    dev = model_device(model)
    devices = [dev.index or 0] if dev.type == "cuda" else []
    try:
        with frozen_weights(model), hooks_restored(model), rng_restored(seed, devices), subnormals_flushed():
            yield model
    finally:
        model.train(training)


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """Run ``torch.nn.functional.scaled_dot_product_attention`` with the math kernel inside the block.

    The fused kernels' backward is not differentiable again ("derivative for
    aten::_scaled_dot_product_flash_attention_for_cpu_backward is not implemented"); the math kernel's is.
    Same values up to float rounding; no effect on models without attention.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        yield


#: Modules whose op has no double backward in PyTorch, and a twice-differentiable module of equal values and
#: equal first derivatives: ``hardsigmoid_backward`` (MobileNetV3's squeeze-excite gates) has no derivative.
EQUIVALENTS = {nn.Hardsigmoid: ("hardsigmoid", "relu6(x + 3) / 6", lambda x: torch.nn.functional.relu6(x + 3.0) / 6.0)}


@contextlib.contextmanager
def twice_differentiable(model: nn.Module) -> Iterator[List[str]]:
    """Inside the block, every op of ``model`` has a double backward, so objectives that differentiate a
    gradient (``tense(mode="exact")`` and ``"auto"``'s comparison) work: attention runs with the math kernel
    (:func:`math_attention`) and the modules of :data:`EQUIVALENTS` compute their twice-differentiable
    equivalent (the same values and first derivatives). Yields the names of the ops replaced; restored on
    exit, also on error."""
    patched, names = [], []
    for module in model.modules():
        for kind, (name, formula, fn) in EQUIVALENTS.items():
            if type(module) is kind and "forward" not in module.__dict__:
                module.forward = fn
                patched.append(module)
                names.append(f"{name} as {formula}")
    try:
        with math_attention():
            yield list(dict.fromkeys(names))
    finally:
        for module in patched:
            del module.forward


# ------------------------------------------------------------------------------------------------
# the guarded objective
# ------------------------------------------------------------------------------------------------
class _Recorder:
    """Lucent's hook in the library's layouts, recording which layers the objective reads (to stop the forward
    pass after them): ``T(layer)`` is the canonical view (maps (B, C, H, W) also where the model computes them
    channels-last), for the library's objectives and Lucent's alike; ``raw(layer)`` is ``(tensor as the model
    computed it, its Layout)``, for objectives that differentiate with respect to the hooked tensor."""

    canonical = True

    def __init__(self, hook, view=None, model_hw=None, layouts=None):
        self.hook, self.view, self.model_hw, self.layouts = hook, view, model_hw, layouts or {}
        self.read: List[str] = []

    def raw(self, layer: str):
        if not isinstance(layer, str):
            raise InputError(f"the objective reads layer {layer!r}; layers are Lucent layer names (str)")
        if layer not in self.read:
            self.read.append(layer)
        try:
            t = self.hook(layer)
        except AssertionError:  # Lucent's hook: the layer was not computed in this pass
            model = getattr(self.view, "_wrapped", None)
            if model is not None and layer not in ("input", "labels") and layer not in layer_table(model):
                raise ValueError(unknown_layer_message(layer, layer_table(model))) from None
            failure = getattr(self.view, "failure", None)
            raise ValueError(
                f"layer {layer!r} was not computed for a {self.model_hw[0]}x{self.model_hw[1]} model input"
                + (f": the forward pass failed before it ({failure})" if failure else "")
                + "; render at a larger model_size (InceptionV1's late layers need 224 px)"
            ) from None
        layout = self.layouts.get(layer)
        if layout is not None and torch.is_tensor(t):
            layout.check(layer, tuple(t.shape))
        return t, layout

    def __call__(self, layer: str):
        t, layout = self.raw(layer)
        return t if layout is None or not torch.is_tensor(t) else layout.canonical(t)


class Guarded:
    """The objective handed to ``render_vis``: evaluates ``parts``, records named values per step, stops
    on a non-finite loss, and after the first step truncates the model after the deepest layer read."""

    def __init__(self, parts: Callable, settings: RenderSettings, what: str, callback=None, on_first=None,
                 recorder=_Recorder):
        self.parts, self.settings, self.what, self.recorder = parts, settings, what, recorder
        self.callback, self.on_first = callback, on_first
        self.step = 0
        self.history: Dict[str, List[float]] = {}

    def __call__(self, T):
        self.step += 1
        rec = self.recorder(T)
        try:
            loss, named = self.parts(rec)
        except IndexError as exc:  # a unit or position beyond the layer, inside a user's objective
            raise InputError(f"{self.what}: the objective failed at step {self.step}: IndexError: "
                             f"{str(exc).splitlines()[0][:160]} (an index beyond the size of a layer it reads)"
                             ) from exc
        if self.step == 1 and self.on_first is not None:
            self.on_first(rec.read)
        for k, v in named.items():
            self.history.setdefault(k, []).append(float(v))
        if not torch.isfinite(loss).all():
            shown = ", ".join(f"{k}={float(v):.4g}" for k, v in named.items())
            raise NonFiniteLoss(
                f"{self.what}: the loss became {float(loss.detach().flatten()[0])} at step {self.step} of "
                f"{self.settings.steps} ({shown}; settings: {self.settings.describe()}); lower the learning "
                "rate or the objective's power, or check the objective for divisions by zero"
            )
        if self.callback is not None:
            self.callback(self.step - 1)
        return loss


def as_parts(objective) -> Callable:
    """A Lucent objective (or callable T -> loss) as ``parts(T) -> (loss, {"objective": -loss})``."""
    from lucent.optvis import objectives as lucent_objectives

    if objective is None:
        raise ValueError("objective is required (a Lucent Objective, e.g. lucent_inhibit.synthesis.objectives.feature(...))")
    if isinstance(objective, str) and ":" not in objective or not (callable(objective) or isinstance(objective, str)):
        raise InputError(f"objective must be a Lucent Objective, a callable T -> loss or 'layer:channel', got "
                         f"{objective!r:.60}")
    obj = lucent_objectives.as_objective(objective)

    def parts(T):
        loss = obj(T)
        return loss, {"objective": -loss.detach()}

    return parts


@dataclass
class RenderRun:
    """What :func:`run_render` returns: the final images (B, 3, H, W) in [0, 1] (CPU, detached) and the
    per-step values of the objective's named parts; ``notes``: one line each about choices made for the
    caller (e.g. the model input size a fixed-size model forced); ``motion``: how far each image moved
    (:class:`~lucent_inhibit.core.motion.Motion`: RMS change from its start image, the objective's gain)."""

    images: torch.Tensor
    history: Dict[str, List[float]]
    stopped_after: Optional[str]
    notes: List[str] = dataclasses.field(default_factory=list)
    motion: Optional[Motion] = None


def run_render(
    model: nn.Module,
    objective,
    param_f: Tuple[list, Callable],
    settings: RenderSettings,
    what: str,
    transforms: Optional[Sequence[Callable]] = None,
    callback: Optional[Callable[[int], None]] = None,
    truncate: bool = True,
    labels: Optional[Sequence[str]] = None,
) -> RenderRun:
    """Run Lucent's ``render_vis`` once for ``settings.steps`` steps and return the images.

    Args:
        objective: a Lucent objective (its value recorded per step as ``"objective"``), or a :class:`Parts`
            wrapping ``fn(T) -> (loss, named_values)`` whose named values are recorded per step.
        param_f: ``(params, image_f)`` already built (so the caller keeps ``image_f``).
        settings: :class:`RenderSettings` (steps, lr, model_size, seed, progress are used here).
        what: stage name, for messages.
        transforms: the transforms (the stage's default when ``settings.transforms`` is None).
        callback: ``callback(step)`` after each step's objective.
        truncate: stop the forward pass after the deepest layer the objective reads.
        labels: names of the first ``len(labels)`` batch images, the renders (None: every image, "image i");
            a render that did not move is named in a :class:`~lucent_inhibit.core.motion.StillRenderWarning`.

    The render runs under :func:`math_attention` (attention models: double backward works, at the math
    kernel's cost; see the module notes).
    """
    from lucent.optvis import render as lucent_render

    from .preparation import lucent_normalizes, preprocess_fn

    params, image_f = param_f
    counted = StepCounter()
    parts = objective.fn if isinstance(objective, Parts) else as_parts(objective)
    view = Truncated(model)
    model_hw, notes = _model_hw(image_f, settings, model)
    with torch.no_grad():
        start = image_f().detach().cpu()
    probe = torch.zeros(1, 3, *model_hw, device=model_device(model))

    def on_first(read):
        names = [n for n in read if n not in ("input", "labels")]
        check_single_call(model, probe, names)  # Lucent's hook keeps a reused module's last call only
        last = deepest(model, probe, names)
        if truncate:
            view.__dict__["stop_layer"] = last
        protect_outputs(model, [n for n in names if n != last])

    layouts = probed(model, probe).layouts
    view.__dict__["nhwc"] = probed(model, probe).channels_last
    guard = Guarded(parts, settings, what, callback, on_first, lambda T: _Recorder(T, view, model_hw, layouts))
    tf = settings.transforms if settings.transforms is not None else transforms
    lucent_norm = lucent_normalizes(model)  # else (CLIP) the model's own normalisation, as Lucent places it
    if not lucent_norm:
        tf = [*(tf if tf is not None else lucent_render.transform.standard_transforms), preprocess_fn(model)]
    with render_session(model, settings.seed), twice_differentiable(model) as replaced:
        _say_once([f"renders compute {op} (PyTorch has no double backward for it; equal values and first "
                   "derivatives)" for op in replaced])
        lucent_render.render_vis(
            view, _objective(guard, what), param_f=lambda: (params, image_f),
            optimizer=lambda p: counted(torch.optim.Adam(p, lr=settings.lr)),
            transforms=None if tf is None else list(tf), thresholds=(settings.steps,), preprocess=lucent_norm,
            progress=settings.progress, show_image=False, fixed_image_size=_fixed(settings, model_hw, notes),
        )
        stopped_early(what, counted.steps, settings.steps)
        with torch.no_grad():
            images = image_f().detach().cpu()
    if not torch.isfinite(images).all():
        raise NonFiniteLoss(f"{what}: the rendered images hold NaN/inf after {settings.steps} steps "
                            f"({settings.describe()})")
    motion = measure_motion(start, images, guard.history)
    warn_still(what, motion.take(slice(0, len(labels) if labels is not None else None)), labels)
    return RenderRun(images, guard.history, view.stop_layer, notes, motion)


class StepCounter:
    """Wraps an optimizer so that the optimisation steps it really took are counted (``.steps``)."""

    def __init__(self):
        self.steps = 0

    def __call__(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        step = optimizer.step

        def counted_step(*args, **kwargs):
            out = step(*args, **kwargs)
            self.steps += 1
            return out

        optimizer.step = counted_step
        return optimizer


def stopped_early(what: str, done: int, steps: int) -> None:
    """Raise the interrupt that stopped a render after ``done`` of ``steps`` steps: Lucent's ``render_vis``
    catches ``KeyboardInterrupt`` and returns its images as if finished, which must never pass for a
    finished render (:func:`lucent_inhibit.core.interrupts.raise_if_interrupted` names the signal)."""
    if done >= steps:
        return
    where = f" ({what}: the render stopped at step {done} of {steps})"
    raise_if_interrupted(where)
    raise KeyboardInterrupt(f"interrupted{where}")


class Parts:
    """Marks a ``parts(T) -> (loss, named_values)`` function for :func:`run_render`."""

    def __init__(self, fn: Callable):
        self.fn = fn


def _objective(guard: Guarded, what: str):
    from lucent.optvis import objectives as lucent_objectives

    return lucent_objectives.Objective(guard, name=what)


def _fixed(settings: RenderSettings, model_hw: Tuple[int, int], notes: List[str]):
    """Lucent's ``fixed_image_size``: the model input size when it is set or forced by the model, else None."""
    if settings.model_size is None and not notes:
        return None
    h, w = model_hw
    return h if h == w else (h, w)


def _model_hw(image_f, settings: RenderSettings, model: nn.Module) -> Tuple[Tuple[int, int], List[str]]:
    """The (H, W) the model sees and, when the model forced it, the note that says so."""
    with torch.no_grad():
        shape = image_f().shape
    hw = settings.model_hw((int(shape[2]), int(shape[3])), model)
    notes = []
    asked = None if settings.model_size is None else check_render_size("model_size", settings.model_size)
    if required_input_size(model) is not None and asked != hw:
        notes.append(f"rendered at {type(model).__name__}'s input size {hw[0]}x{hw[1]}, the only size it takes (a "
                     "strict patch embedding; " + ("no model_size set" if asked is None else f"model_size {asked} "
                     "replaced") + "): each step's transformed image is resized to it")
    _say_once(notes)
    return hw, notes


def _say_once(notes: Sequence[str]) -> None:
    """Log each note once per process (the CLI prints the library's INFO lines)."""
    for note in notes:
        if note not in _SAID:
            _SAID.add(note)
            logging.getLogger("lucent_inhibit").info("%s", note)


_SAID: set = set()  # the render notes already logged
