"""The model's side of every pass: a prepared model (eval mode, no in-place activations) and the input
normalisation Lucent's ``render_vis(preprocess=True)`` applies for it.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

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
    if model._get_name() == "InceptionV1":
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
    return model._get_name() == "InceptionV1" or getattr(model, "input_normalization", None) is None
