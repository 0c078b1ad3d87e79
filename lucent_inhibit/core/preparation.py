"""The model's side of every pass: a prepared model (eval mode, no in-place activations) and the input
normalisation Lucent's ``render_vis(preprocess=True)`` applies for it.
"""
from __future__ import annotations

from typing import Callable, List, Optional

import torch
from torch import nn

from .layers import check_model
from .validate import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


def prepare(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode with in-place activations disabled (they break hooked gradients).

    Returns the same module. Also probes it once on an image of its input size (224 px unless it takes one
    size only): the layout of every layer (:mod:`lucent_inhibit.core.layouts`) is then known also to the
    library's objectives inside Lucent's own ``render_vis``, which sees modules, not the model. A model that
    takes no image (a toy model) is left unprobed.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"prepare expects a torch.nn.Module, got {type(model).__name__}")
    for module in model.modules():
        if hasattr(module, "inplace") and isinstance(getattr(module, "inplace"), bool):
            module.inplace = False
    model.eval()
    _probe_images(model)
    return model


def available_devices() -> List[str]:
    """The devices this torch build and machine can run a model on: ``cpu``, each CUDA GPU, ``mps``."""
    found = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)]
    mps = getattr(torch.backends, "mps", None)
    return found + (["mps"] if mps is not None and mps.is_available() else [])


def _device_problem(dev: torch.device) -> Optional[str]:
    """Why a model cannot run on ``dev`` here (None: it can)."""
    if dev.type == "cpu":
        return None
    if dev.type == "meta":
        return "the meta device holds shapes only, no values, so a model cannot run on it"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return "no CUDA GPU is available (or this torch build has no CUDA)"
        count = torch.cuda.device_count()
        return None if dev.index is None or dev.index < count else f"this machine has {count} CUDA GPU(s)"
    if dev.type == "mps":
        if not torch.backends.mps.is_built():
            return "this torch build has no MPS support (Apple GPUs only)"
        return None if torch.backends.mps.is_available() else "no MPS device is available on this machine"
    backend = getattr(torch, dev.type, None)
    if callable(getattr(backend, "is_available", None)) and not backend.is_available():
        return f"no {dev.type} device is available (or this torch build does not support it)"
    try:
        torch.empty(1, device=dev)
    except Exception as exc:  # noqa: BLE001 (any backend error means: not usable here)
        return f"this torch build or machine cannot use it ({type(exc).__name__}: {str(exc).splitlines()[0][:100]})"
    return None


def usable_device(device, name: str = "device") -> torch.device:
    """``device`` (``"cpu"``, ``"cuda:0"``, ``"mps"``, ... or a ``torch.device``) as a ``torch.device`` a model can
    run on with this torch build and machine; else :class:`~lucent_inhibit.core.validate.InputError` naming
    ``name``, the device, why, and the devices available."""
    if not isinstance(device, (str, torch.device)):
        raise InputError(f"{name} must be a torch device such as 'cpu' or 'cuda', got {device!r:.60}")
    where = f"available on this machine: {', '.join(available_devices())}"
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        reason = str(exc).splitlines()[0][:100]
        raise InputError(f"{name} {device!r} is not a torch device ({reason}); {where}") from None
    problem = _device_problem(dev)
    if problem is not None:
        raise InputError(f"{name} {device!r}: {problem}; {where}")
    return dev


def _probe_images(model: nn.Module) -> None:
    """The forward-order probe of ``model`` on one image of its input size, when it takes images."""
    from .layers import model_device
    from .probe import probed
    from .tokens import required_input_size

    h, w = required_input_size(model) or (224, 224)
    first = next(model.parameters(), None)
    if first is not None and first.dim() == 4 and first.shape[1] != 3:  # a first conv that does not read RGB
        return
    probed(model, torch.zeros(1, 3, h, w, device=model_device(model)))


def preprocess_fn(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The input transform ``render_vis(preprocess=True)`` applies for ``model``.

    Images are (B, 3, H, W) in [0, 1]. Lucent's InceptionV1 gets ``x * 255 - 117``; a model whose builder set
    ``model.input_normalization = (mean, std)`` (CLIP towers, :mod:`lucent_inhibit.models.clip`) gets that mean/std;
    every other model gets ImageNet mean/std normalisation, exactly as in Lucent.
    """
    if check_model(model)._get_name() == "InceptionV1":
        return lambda x: x * 255 - 117
    mean, std = getattr(model, "input_normalization", None) or (IMAGENET_MEAN, IMAGENET_STD)
    mean = torch.tensor(mean).view(1, 3, 1, 1)
    std = torch.tensor(std).view(1, 3, 1, 1)

    def normalize(x):
        return (x - mean.to(x.device, x.dtype)) / std.to(x.device, x.dtype)

    return normalize


def lucent_normalizes(model: nn.Module) -> bool:
    """Whether Lucent's ``render_vis(preprocess=True)`` applies :func:`preprocess_fn` (InceptionV1's scaling or
    ImageNet's mean/std); False for a model with its own ``input_normalization`` (e.g. CLIP)."""
    return check_model(model)._get_name() == "InceptionV1" or getattr(model, "input_normalization", None) is None
