"""Models: the embedded pretrained EfficientNet-Lite0, Lucent's InceptionV1, and layer naming.

Layer names follow Lucent's convention (module paths joined with ``_``), so a name valid here is
valid in ``lucent.optvis.objectives`` and in ``render_vis``'s hook.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import os

import torch
from torch import nn

from ..core.preparation import prepare
from .embedded import efficientnet_lite0
from .inception import inceptionv1
from .weights import (
    INIT_SEED,
    WEIGHTS_CHOICES,
    WeightsError,
    load_state_file,
    load_weights,
)


def load_model(spec: str, weights: str = "default") -> nn.Module:
    """Build a prepared model from a spec string.

    Args:
        spec: ``"efficientnet_lite0"`` (the embedded model), ``"inceptionv1"``, ``"torchvision:NAME"``,
            ``"timm:NAME"``, ``"clip:NAME"`` (a CLIP image tower, e.g. ``clip:ViT-B-32``; outputs the image
            embedding; weights from a local OpenAI CLIP / open_clip / timm file only, see
            :func:`lucent_inhibit.models.clip.clip_tower`) or ``"package.module:callable"`` (an importable
            constructor of an ``nn.Module``).
        weights: ``"default"`` (the embedded weights; the library's pretrained weights for torchvision / timm
            / InceptionV1, which download when not cached; whatever the constructor builds), ``"none"``
            (random initialisation under torch seed :data:`INIT_SEED`, so every stage and every run builds
            the same model; nothing downloaded) or the path of a local state dict (loaded with
            ``weights_only=True``; missing or unexpected keys are listed).
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"model spec must be a non-empty string, got {spec!r}")
    if not isinstance(weights, str) or not weights:
        raise ValueError(f"weights must be 'default', 'none' or a file path, got {weights!r}")
    local = weights not in WEIGHTS_CHOICES
    if local and not os.path.isfile(weights):
        raise WeightsError(f"weights {weights!r} is neither 'default', 'none' nor an existing file")
    with torch.random.fork_rng(devices=[]):  # the same random model in every stage and run; global RNG untouched
        torch.manual_seed(INIT_SEED)
        if spec.startswith("clip:"):  # built and loaded in one step: the checkpoint decides the projection
            from .clip import clip_tower

            return prepare(clip_tower(spec.split(":", 1)[1], weights))
        model = _build(spec, "none" if local else weights)
    if local:
        state = load_state_file(weights)
        if spec in ("efficientnet_lite0", "embedded", "default"):
            return efficientnet_lite0(state_dict=state)
        if spec.split(":", 1)[-1] in BUILDER_CHANGES and spec.startswith("torchvision:"):
            return prepare(_as_builder_makes(spec.split(":", 1)[1], state, weights))
        load_weights(model, state, weights)
    return prepare(model)


#: torchvision builders that change the model when they load their ImageNet weights: they set
#: ``transform_input=True`` (the weights expect inputs re-normalised inside the model) and drop the auxiliary
#: classifiers after loading them. A weights file of those models gets the same model.
BUILDER_CHANGES = {"googlenet": ("aux1", "aux2"), "inception_v3": ("AuxLogits",)}


def _as_builder_makes(name: str, state: dict, source: str) -> nn.Module:
    """torchvision ``name`` with ``state`` loaded as its builder builds it with ImageNet weights (said)."""
    import logging

    import torchvision

    aux = BUILDER_CHANGES[name]
    has_aux = any(k.split(".", 1)[0] in aux for k in state)
    model = getattr(torchvision.models, name)(weights=None, transform_input=True, aux_logits=has_aux,
                                              init_weights=False)
    load_weights(model, state, source)
    if has_aux:
        model.aux_logits = False
        for attr in aux:
            setattr(model, attr, None)
    logging.getLogger("lucent_inhibit").info(
        "torchvision:%s from %s: transform_input=True%s, as torchvision's builder makes it with its ImageNet "
        "weights", name, os.path.basename(source), " and the auxiliary classifiers loaded, then dropped" if has_aux else "")
    return model


def _build(spec: str, weights: str) -> nn.Module:
    pretrained = weights == "default"
    if spec in ("efficientnet_lite0", "embedded", "default"):
        return efficientnet_lite0() if pretrained else prepare(_timm_model("efficientnet_lite0", False))
    if spec == "inceptionv1":
        return inceptionv1(pretrained=pretrained)
    if spec.startswith("torchvision:"):
        return _torchvision_model(spec.split(":", 1)[1], pretrained)
    if spec.startswith("timm:"):
        return _timm_model(spec.split(":", 1)[1], pretrained)
    if ":" in spec:
        return _constructed(spec)
    raise ValueError(
        f"Unknown model spec {spec!r}: expected 'efficientnet_lite0', 'inceptionv1', "
        "'torchvision:NAME', 'timm:NAME', 'clip:NAME' or 'package.module:constructor'"
    )


def _torchvision_model(name: str, pretrained: bool) -> nn.Module:
    import torchvision

    if not hasattr(torchvision.models, name) or not callable(getattr(torchvision.models, name)):
        close = difflib.get_close_matches(name, dir(torchvision.models), n=5)
        raise ValueError(f"Unknown torchvision model {name!r}. Close matches: {close}")
    if not pretrained:
        return getattr(torchvision.models, name)(weights=None)
    try:
        return getattr(torchvision.models, name)(weights="DEFAULT")
    except OSError as exc:
        raise WeightsError(
            f"the torchvision {name} weights could not be downloaded ({type(exc).__name__}); pass a local file "
            "instead: weights=PATH (CLI: --weights PATH), or weights='none' for random weights"
        ) from None


def _timm_model(name: str, pretrained: bool) -> nn.Module:
    import timm

    if name not in timm.list_models():
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        raise ValueError(f"Unknown timm model {name!r}. Close matches: {close}")
    try:
        return timm.create_model(name, pretrained=pretrained)
    except (OSError, RuntimeError) as exc:
        raise WeightsError(
            f"the timm {name} weights could not be loaded ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
            "pass a local file instead: weights=PATH (CLI: --weights PATH), or weights='none' for random weights"
        ) from None


def _constructed(spec: str) -> nn.Module:
    module_name, attr = spec.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"Cannot import module {module_name!r} of model spec {spec!r}: {exc}") from exc
    except (Exception, SystemExit) as exc:  # a module that raises or exits while importing
        raise ValueError(f"Importing module {module_name!r} of model spec {spec!r} failed: "
                         f"{type(exc).__name__}: {exc}") from None
    if not hasattr(module, attr):
        raise ValueError(f"Module {module_name!r} has no attribute {attr!r} (model spec {spec!r})")
    model = _call_constructor(spec, getattr(module, attr))
    if not isinstance(model, nn.Module):
        raise ValueError(f"Model spec {spec!r} returned {type(model).__name__}, expected torch.nn.Module")
    return model


def _call_constructor(spec: str, constructor):
    """``constructor()``; ``ValueError`` naming the spec when it is not callable, needs arguments (a spec names
    a constructor called with none) or raises (its own message, first line)."""
    if not callable(constructor):
        raise ValueError(f"model constructor {spec!r} is a {type(constructor).__name__}, not a function or class")
    try:
        params = inspect.signature(constructor).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: call it and see
        params = []
    needed = [p.name for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if needed:
        raise ValueError(f"model constructor {spec!r} needs arguments ({', '.join(needed)}); a model spec names a "
                         "constructor called with none: wrap it in a function without arguments")
    try:
        return constructor()
    except (Exception, SystemExit) as exc:  # the user's code: whatever it raises is reported as its error
        message = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"model constructor {spec!r} raised: {type(exc).__name__}: {message}") from exc
