"""Lucent's InceptionV1 (the papers' model) with each mixed block's pre-ReLU concatenation as a layer.

The paper's features live on the concatenated pre-activation of a mixed block (its demo: ``mixed3b_pre_relu``
unit 379), which Lucent's model does not compute as one tensor: every branch (1x1, 3x3, 5x5, pool reduce)
applies its own ReLU before the concatenation. :func:`expose_pre_relu` replaces each block's concatenation
``mixedXY`` by :class:`PreReluConcat`, which concatenates the branches' pre-ReLU convolution outputs (child
``pre_relu``, Lucent name ``mixedXY_pre_relu``, shape (B, C, H, W) with every branch's channels in Lucent's
order) and applies the ReLU once (child ``relu``). The block's output, and so every later layer and the
logits, are unchanged; the per-branch ReLU modules (``mixedXY_1x1`` ...) still report their values but no
longer feed the network, so attributions at them are refused ("no gradient path") instead of being wrong.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import nn

from ..core.preparation import prepare
from .weights import download_state, load_weights

#: The branches of a mixed block, in the order Lucent concatenates them.
BRANCHES = ("1x1", "3x3", "5x5", "pool_reduce")


class PreReluConcat(nn.Module):
    """Concatenation of a mixed block's pre-ReLU branch outputs (child ``pre_relu``), then one ReLU."""

    def __init__(self, relu: nn.Module):
        super().__init__()
        self.pre_relu = nn.Identity()
        self.pre_relu.output_fmt = "NCHW"  # the concatenation of the branches' maps (core.layouts reads it)
        self.relu = relu
        self.__dict__["pending"] = {}

    def forward(self, tensor_list, dim: int = 1):
        pre = [self.pending.pop(b, None) for b in BRANCHES]
        self.pending.clear()
        if any(p is None for p in pre) or [p.shape for p in pre] != [t.shape for t in tensor_list]:
            raise RuntimeError("PreReluConcat: the branch pre-activations of this forward pass are missing")
        return self.relu(self.pre_relu(torch.cat(pre, dim)))


def expose_pre_relu(model: nn.Module) -> nn.Module:
    """Add ``mixedXY_pre_relu`` layers to a Lucent InceptionV1 in place (see the module docstring)."""
    blocks: List[str] = sorted({n.split("_")[0] for n, _ in model.named_children() if n.startswith("mixed")})
    for block in blocks:
        convs: Dict[str, nn.Module] = {b: getattr(model, f"{block}_{b}_pre_relu_conv", None) for b in BRANCHES}
        if any(c is None for c in convs.values()) or isinstance(getattr(model, block), PreReluConcat):
            continue
        relu = type(getattr(model, f"{block}_1x1"))()
        concat = PreReluConcat(relu)
        setattr(model, block, concat)
        for branch, conv in convs.items():
            conv.__dict__["pre_relu_target"] = (concat, branch)  # a plain attribute: copy.deepcopy maps it too
            conv.register_forward_hook(_keep)
    return model


def _keep(module, inputs, output) -> None:
    """Forward hook of a branch's pre-ReLU conv: hand its output to the block's :class:`PreReluConcat`, found
    through the conv itself (never a closure), so that a deep copy of the model feeds its own copy."""
    concat, branch = module.__dict__["pre_relu_target"]
    concat.pending[branch] = output


def pre_relu_layers(model: nn.Module) -> List[str]:
    """The ``mixedXY_pre_relu`` layer names of a model prepared by :func:`expose_pre_relu`."""
    return [f"{n}_pre_relu" for n, m in model.named_children() if isinstance(m, PreReluConcat)]


#: Where Lucent's loader downloads InceptionV1 from (the Lucid ``inception5h`` graph, converted).
INCEPTIONV1_URL = "https://github.com/ProGamerGov/pytorch-old-tensorflow-models/raw/master/inception5h.pth"


def inceptionv1(pretrained: bool = True, state_dict: Optional[dict] = None, redirected_relu: bool = False) -> nn.Module:
    """Lucent's InceptionV1 (the papers' model), prepared like the embedded model.

    Args:
        pretrained: load the Lucid weights, downloading them into torch's hub cache when missing (not
            possible on machines without internet) and always reading them with ``weights_only=True``.
        state_dict: weights you already have (e.g. :func:`load_state_file`); replaces ``pretrained``.
        redirected_relu: Lucent's redirected-ReLU gradient (lets gradients pass dead ReLUs early in a render).
            It changes every ReLU's gradient, so attributions are no longer grad x activation of the model:
            the default (False) keeps true ReLU gradients; use True only for rendering from scratch.

    Each mixed block's concatenated pre-ReLU activation is a layer, ``mixed3b_pre_relu`` etc. (the paper's
    features; :mod:`lucent_inhibit.models.inception`).

    Inputs: (B, 3, H, W) in [0, 1] scaled by :func:`preprocess_fn`.
    """
    from lucent.modelzoo.inceptionv1.InceptionV1 import InceptionV1

    model = InceptionV1(pretrained=False, redirected_ReLU=bool(redirected_relu))
    if state_dict is None and pretrained:
        state_dict = download_state(INCEPTIONV1_URL, "InceptionV1")
    if state_dict is not None:
        load_weights(model, state_dict, "state_dict")
    return prepare(expose_pre_relu(model))
