"""CLIP image towers as timm vision transformers, with weights from a local file.

CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision") trains an
image tower and a text tower contrastively; its ViT image tower (Dosovitskiy et al. 2021) is a pre-norm
transformer (a LayerNorm ``ln_pre`` before the first block), whose final-normed class token is multiplied by
a projection ``proj`` into the joint image-text embedding. timm builds these towers
(``vit_base_patch32_clip_224`` etc.), and :func:`timm.models.vision_transformer.checkpoint_filter_fn`
converts OpenAI CLIP / open_clip ``visual.*`` state dicts to its keys; the projection becomes timm's ``head``
(a ``Linear`` whose bias is zero).

Specs name architectures as open_clip does (``clip:ViT-B-32``, ``clip:ViT-B-32-quickgelu``, ...) or as
OpenAI's ``clip`` package does (``clip:ViT-B/32``, the OpenAI weights' architecture). Activation functions
are not stored in a checkpoint, so the spec decides them: OpenAI's weights (and open_clip's ``-quickgelu``
ones, e.g. MetaCLIP) were trained with QuickGELU ``x * sigmoid(1.702 x)``, open_clip's LAION / DataComp ViTs
with GELU. The wrong one loads without an error and gives wrong embeddings.

Nothing is downloaded: ``weights`` is ``"none"`` (random initialisation) or the path of a local state dict,
read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Tuple

import torch
from torch import nn

from ..core.validate import InputError
from .weights import WeightsError, load_state_file, load_weights

log = logging.getLogger(__name__)

#: CLIP's input normalisation (per channel, RGB, for images in [0, 1]); Radford et al. 2021's released code.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: open_clip architecture name -> (timm architecture, embedding dims: rows of the projection)
CLIP_TOWERS: Dict[str, Tuple[str, int]] = {
    "ViT-B-32": ("vit_base_patch32_clip_224", 512),
    "ViT-B-32-quickgelu": ("vit_base_patch32_clip_quickgelu_224", 512),
    "ViT-B-16": ("vit_base_patch16_clip_224", 512),
    "ViT-B-16-quickgelu": ("vit_base_patch16_clip_quickgelu_224", 512),
    "ViT-L-14": ("vit_large_patch14_clip_224", 768),
    "ViT-L-14-quickgelu": ("vit_large_patch14_clip_quickgelu_224", 768),
    "ViT-L-14-336": ("vit_large_patch14_clip_336", 768),
    "ViT-L-14-336-quickgelu": ("vit_large_patch14_clip_quickgelu_336", 768),
    "ViT-H-14": ("vit_huge_patch14_clip_224", 1024),
    "ViT-H-14-quickgelu": ("vit_huge_patch14_clip_quickgelu_224", 1024),
}
#: OpenAI ``clip`` package names -> the open_clip name of the same architecture (OpenAI's use QuickGELU)
OPENAI_NAMES = {
    "ViT-B/32": "ViT-B-32-quickgelu",
    "ViT-B/16": "ViT-B-16-quickgelu",
    "ViT-L/14": "ViT-L-14-quickgelu",
    "ViT-L/14@336px": "ViT-L-14-336-quickgelu",
}


def clip_names() -> List[str]:
    """Every name ``clip:NAME`` accepts: open_clip's architecture names, then OpenAI's."""
    return list(CLIP_TOWERS) + list(OPENAI_NAMES)


def clip_tower(name: str, weights: str = "none") -> nn.Module:
    """A CLIP ViT image tower (timm ``VisionTransformer``), the model of ``load_model("clip:NAME")``.

    Args:
        name: one of :func:`clip_names`, e.g. ``"ViT-B-32"`` (GELU), ``"ViT-B-32-quickgelu"`` or ``"ViT-B/32"``
            (QuickGELU; OpenAI's weights need it).
        weights: ``"none"`` (random initialisation; the caller seeds torch) or the path of a local state dict in
            any of three layouts: timm's keys; open_clip's (``visual.*``; text tower and ``logit_scale``
            ignored, said in a log line; a training checkpoint ``{"state_dict": {"module.visual...": ...}}``
            too); OpenAI CLIP's (the same ``visual.*`` keys, e.g. ``clip.load(name, jit=False)[0].state_dict()``;
            OpenAI's TorchScript ``.pt`` archives are refused by ``weights_only`` loading). ``"default"`` raises:
            nothing can be downloaded here.

    Inputs: (B, 3, S, S) with S the architecture's side (224, or 336 for ``-336``), CLIP-normalised by
    :func:`lucent_inhibit.core.preparation.preprocess_fn`. Output: the image embedding (B, E) (before CLIP's L2
    normalisation), the final-normed class token times the projection: E = 512 for ViT-B, 768 for ViT-L,
    1024 for ViT-H. A checkpoint without a projection gives the final-normed class token itself (B, width:
    768 / 1024 / 1280); a timm checkpoint with another head (e.g. an ImageNet fine-tune) gives that head's
    outputs. Layers: ``blocks_i`` (residual stream, (B, T, C) with T = 1 + patches), ``blocks_i_mlp_fc1``,
    ``head`` (the embedding).
    """
    arch, dims = _architecture(name)
    if weights == "default":
        raise WeightsError(
            f"clip:{name} has no built-in weights and nothing can be downloaded: pass a local file holding an "
            "OpenAI CLIP, open_clip or timm state dict (weights=PATH, CLI: --weights PATH), or weights='none' "
            "for random weights")
    import timm

    state = None if weights == "none" else load_state_file(weights)  # a bad file fails before the build
    model = timm.create_model(arch, pretrained=False, num_classes=dims)
    if state is not None:
        load_clip_weights(model, state, weights)
    model.input_normalization = (CLIP_MEAN, CLIP_STD)
    return model


def _architecture(name: str) -> Tuple[str, int]:
    key = OPENAI_NAMES.get(name, name)
    if key not in CLIP_TOWERS:
        raise InputError(f"Unknown CLIP image tower {name!r}: expected clip:NAME with NAME one of "
                         f"{', '.join(clip_names())} (OpenAI's weights need a -quickgelu or OpenAI name)")
    return CLIP_TOWERS[key]


def load_clip_weights(model: nn.Module, state: Dict[str, torch.Tensor], source: str) -> nn.Module:
    """Load a timm-, open_clip- or OpenAI-keyed ``state`` into the CLIP tower ``model`` (timm keys).

    ``visual.*`` keys are converted by timm's ``checkpoint_filter_fn``, after checking that the patch
    embedding and the positional embedding already have the model's shapes (timm would resample them,
    which is another model). The head follows the checkpoint: its projection's rows, or none. Then every
    key must match: :class:`~lucent_inhibit.models.weights.WeightsError` lists the missing, unexpected and
    mis-shaped ones, and ``model`` is left as it was. Returns ``model``.
    """
    if state and all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    if any(k.startswith("visual.") for k in state):
        state = _timm_keys(model, state, source)
    head, num_classes = model.head, model.num_classes
    _fit_head(model, state, source)
    try:
        return load_weights(model, state, source)
    except WeightsError:
        model.head, model.num_classes = head, num_classes
        raise


def _timm_keys(model: nn.Module, state: Dict[str, torch.Tensor], source: str) -> Dict[str, torch.Tensor]:
    """timm keys for an OpenAI / open_clip state dict (its ``visual.*`` keys; the rest is ignored)."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    if "visual.class_embedding" not in state:
        tower = "a timm trunk ('visual.trunk.*')" if any(k.startswith("visual.trunk.") for k in state) else \
            "no 'visual.class_embedding'"
        raise WeightsError(f"weights {source!r} hold a CLIP image tower with {tower}: not a CLIP ViT of OpenAI's "
                           "layout (ResNet towers such as RN50 and timm-trunk towers are not clip:NAME models)")
    expected = {"visual.conv1.weight": model.patch_embed.proj.weight.shape,
                "visual.positional_embedding": model.pos_embed.shape[1:]}
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(shape)}" for k, shape in expected.items()
             if k in state and tuple(state[k].shape) != tuple(shape)]
    if wrong:
        raise WeightsError(f"weights {source!r} are another CLIP architecture (patch size, image size or width): "
                           f"{'; '.join(wrong)}; pick the clip:NAME that matches the checkpoint")
    ignored = [k for k in state if not k.startswith("visual.")]
    if ignored:
        log.info("%s: OpenAI / open_clip layout; %d keys outside the image tower ignored (text tower and "
                 "logit scale, e.g. %s)", source, len(ignored), ", ".join(ignored[:3]))
    return checkpoint_filter_fn(state, model)


def _fit_head(model: nn.Module, state: Dict[str, torch.Tensor], source: str) -> None:
    """Give ``model`` the head the checkpoint has: a projection of its rows, or none (the class token)."""
    head = state.get("head.weight")
    rows = 0 if head is None else int(head.shape[0])
    if rows == model.num_classes:
        return
    model.reset_classifier(rows)
    what = "no projection: the output is the final-normed class token" if rows == 0 else \
        f"a head of {rows} outputs"
    log.info("%s: %s (%d dims)", source, what, rows or model.embed_dim)
