"""Reading a model's layers: where inhibition is visible (pre-activation layers, block outputs, a vision
transformer's MLP hidden layer and residual stream) and the one input size a model's logits take.
"""
from __future__ import annotations

from typing import List, Optional

from torch import nn

from ..core.layers import layer_table, layers
from ..core.probe import probed


def preactivation_layers(model: nn.Module) -> List[str]:
    """Layers whose outputs can be negative: where inhibition is visible.

    For timm models: the ``_drop`` child of every ``BatchNormAct`` (the batch-normalised value before its
    activation), block outputs (``blocks_i_j``, linear bottlenecks) and the classifier (logits). For vision
    transformers (Dosovitskiy et al. 2021; token layers (B, T, C)), per block ``i`` in depth order the MLP's
    hidden layer before its GELU (``blocks_i_mlp_fc1``) and the residual stream after the block
    (``blocks_i``), then the classifier. For other models: convolutions and linear layers (their outputs
    precede any activation). Only layers a feature can be read off (:func:`usable_layers`) are listed.
    """
    return [n for n in _candidate_preactivations(model) if n in usable_layers(model)]


def usable_layers(model: nn.Module, size: int = 224) -> List[str]:
    """Layers a feature can be read off, in forward order: their module runs exactly once in the model's eval
    forward pass (an auxiliary classifier that runs only in training, or a module run twice, is left out), its
    output's rows are the images (not a Swin block's attention windows) and its layout is readable
    (:mod:`lucent_inhibit.core.layouts`). Read off the forward-order probe on one image of ``size`` px (the
    model's own size when it takes one only)."""
    x = probe_input(model, size)
    probe = probed(model, x)
    counts: dict = {}
    for n in probe.order:
        counts[n] = counts.get(n, 0) + 1
    return [n for n in dict.fromkeys(probe.order) if counts[n] == 1 and n in probe.shapes and probe.shapes[n][:1] == (1,)
            and probe.layouts.get(n) is not None and probe.layouts[n].readable]


def _candidate_preactivations(model: nn.Module) -> List[str]:
    """Every layer whose type makes it a pre-activation (see :func:`preactivation_layers`), in registration order."""
    table = layer_table(model)
    blocks = transformer_blocks(model)
    if blocks:
        names = [n for b in blocks for n in (f"{b}_mlp_fc1", b) if n in table]
        return names + [n for n, m in table.items() if isinstance(m, nn.Linear) and not n.startswith("blocks_")]
    names = []
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


def transformer_blocks(model: nn.Module) -> List[str]:
    """The blocks ``blocks_i`` of a vision transformer (a patch embedding, blocks with an MLP ``mlp.fc1``),
    in depth order; empty for other models. Their outputs are the residual stream (B, T, C)."""
    from ..core.tokens import token_grid

    blocks = getattr(model, "blocks", None)
    if token_grid(model) is None or not isinstance(blocks, nn.Sequential):
        return []
    return [f"blocks_{i}" for i, b in enumerate(blocks) if isinstance(getattr(getattr(b, "mlp", None), "fc1", None),
                                                                      nn.Module)]


def block_outputs(model: nn.Module) -> List[str]:
    """timm block outputs ``blocks_i_j`` in depth order (empty for models without such blocks; a vision
    transformer's residual stream ``blocks_i`` is in :func:`preactivation_layers`)."""
    return [
        n
        for n in layers(model)
        if n.startswith("blocks_") and len(n.split("_")) == 3 and all(p.isdigit() for p in n.split("_")[1:])
    ]


def logits_input_size(model: nn.Module) -> Optional[int]:
    """The one input side (pixels) at which the model's logits are defined, or None when any size works.

    InceptionV1 (Szegedy et al. 2015, Lucent's port): 224, its classifier follows a fixed 7x7 average pool
    (smaller inputs collapse to negative sizes, larger ones give several rows per image); a timm ViT with a
    strict patch embedding: its ``img_size``. Its convolutional layers work at other sizes.
    """
    if type(model).__name__ == "InceptionV1":
        return 224
    embed = getattr(model, "patch_embed", None)
    if embed is not None and getattr(embed, "strict_img_size", False):
        return int(embed.img_size[0])
    return None


def probe_input(model, size: int = 224, n: int = 1):
    """``n`` random normalised (n, 3, size, size) inputs on the model's device (for forward-order probes); a
    model that takes one input size only (a strict ViT patch embedding) gets that size."""
    import torch

    from ..core.layers import model_device
    from ..core.preparation import preprocess_fn
    from ..core.tokens import required_input_size

    h, w = required_input_size(model) or (size, size)
    x = torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(0))
    return preprocess_fn(model)(x.to(model_device(model)))
