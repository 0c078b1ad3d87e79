"""What the library picks when the user names no feature: the feature layer, the attribution layer and the
unit, each a library function that says why it picked what it picked (the ``lucent_inhibit`` logger; the
command line prints it). Nothing here imports torch at import time.
"""
from __future__ import annotations

import logging
from typing import List, Optional, Tuple

log = logging.getLogger("lucent_inhibit")

#: The embedded model's default feature layer and its attribution layer (the ReLU6 output inside the
#: same block, where completeness r is ~1: SPEC 3). Other models name their layers explicitly.
DEFAULT_LAYER = "blocks_4_0_bn3_drop"
DEFAULT_ATTR_LAYER = "blocks_4_0_bn2_act"

#: Module types that count as activations for :func:`default_attribution_layer`.
ACTIVATIONS = ("ReLU", "ReLU6", "GELU", "SiLU", "Hardswish", "LeakyReLU", "ELU", "Tanh", "Sigmoid", "Mish")


def default_attribution_layer(model, feature_layer: str, size: int = 224) -> str:
    """The last single-call activation (ReLU-like module, or a name ending in ``_act`` that is not an
    ``Identity``) before
    ``feature_layer`` in the forward pass that is a cut to it (:func:`lucent_inhibit.core.hooks.separates`: every
    path into the feature layer passes through it, so attributions there can add up); the last single-call
    cut when no activation is one. When the nearest activation is a module run twice per forward (torchvision
    ResNet's ``relu``), block outputs come first (``layer3_0`` for ``layer3_1_conv2``); InceptionV1's
    ``mixedXY_pre_relu`` gets the block's input (the branches inside the block are not cuts).

    On the embedded model and the default feature this is ``blocks_4_0_bn2_act``, the ReLU6 output inside
    the same block, where completeness holds (Hamblin et al., SPEC section 3: far from the feature the
    attribution no longer adds up). ``ValueError`` when no layer before ``feature_layer`` is a cut.
    """
    from ..core.hooks import separates
    from ..core.layers import check_layer_names, layer_table
    from ..core.probe import forward_order, layers_before, probed
    from .layers import probe_input

    check_layer_names(model, [feature_layer], allow=())
    x = probe_input(model, size)
    before, table = layers_before(model, x, feature_layer), layer_table(model)
    order = forward_order(model, x)
    run = order[: order.index(feature_layer)]
    is_act = lambda n: type(table[n]).__name__ in ACTIVATIONS or (  # noqa: E731
        n.endswith("_act") and type(table[n]).__name__ != "Identity")  # timm's no-op act: the same tensor
    acts = [n for n in reversed(before) if is_act(n)]
    nearest = next((n for n in reversed(run) if is_act(n)), None)
    if nearest is not None and nearest not in before:  # a reused activation: its name has no single tensor
        candidates = [n for n in reversed(before) if len(table[n]._modules) > 0] + acts
    else:
        candidates = acts + list(reversed(before))
    shapes = probed(model, x).shapes
    rows_are_images = lambda n: shapes.get(n, ())[:1] == (x.shape[0],)  # noqa: E731  (not Swin's windows)
    for name in dict.fromkeys(candidates):
        if rows_are_images(name) and separates(model, x, name, feature_layer):
            return name
    raise ValueError(f"no single-call layer before feature layer {feature_layer!r} is a cut to it (every path "
                     "into the feature passes through it); pick a later feature layer or give the attribution layer")


def default_feature_layers(model, size: int = 224) -> Tuple[str, str, str]:
    """The feature layer and attribution layer the stages use when none is given, and why (one line).

    - The embedded EfficientNet-Lite0 (any model with its layer names): ``blocks_4_0_bn3_drop`` attributed at
      ``blocks_4_0_bn2_act`` (the ReLU6 inside the same block, where completeness holds: SPEC 3).
    - A vision transformer (:func:`lucent_inhibit.models.layers.transformer_blocks`): the MLP's hidden layer before
      its GELU in the block two thirds deep, ``blocks_k_mlp_fc1`` (a pre-activation, so both signs occur),
      attributed at the residual stream entering that block, ``blocks_{k-1}`` (checked to be a cut with
      :func:`lucent_inhibit.core.hooks.separates`: everything the block computes reads it).
    - Any other model: the pre-activation map (:func:`~lucent_inhibit.models.layers.preactivation_layers`, a
      layer with positions) about two thirds deep in the forward pass, attributed at
      :func:`default_attribution_layer` (a cut just before it); when no cut precedes that layer, the nearest
      pre-activation map that has one. ``ValueError`` naming some pre-activation layers when none has.
    """
    from ..core.hooks import separates
    from ..core.layers import layer_table
    from .layers import probe_input, transformer_blocks

    table = layer_table(model)
    if DEFAULT_LAYER in table and DEFAULT_ATTR_LAYER in table:
        return DEFAULT_LAYER, DEFAULT_ATTR_LAYER, "the embedded model's default feature layer"
    blocks = [b for b in transformer_blocks(model) if f"{b}_mlp_fc1" in table]
    if len(blocks) >= 2:
        k = max(1, (2 * len(blocks)) // 3)
        layer, attr = f"{blocks[k]}_mlp_fc1", blocks[k - 1]
        if separates(model, probe_input(model, size), attr, layer):
            return layer, attr, (f"a transformer's MLP hidden pre-GELU in block {k} of {len(blocks)}, attributed at "
                                 "the residual stream entering that block")
    return _two_thirds_deep(model, size)


def _two_thirds_deep(model, size: int) -> Tuple[str, str, str]:
    """The pre-activation map about two thirds deep with a cut before it (see :func:`default_feature_layers`)."""
    import torch

    from ..core.probe import probed
    from .layers import preactivation_layers, probe_input, usable_layers

    probe = probed(model, probe_input(model, size))
    pre = set(preactivation_layers(model))

    def positions(n):  # positions of the layer's map (H x W) or tokens (T), in the library's layout
        shape = tuple(probe.layouts[n].canonical(torch.empty(probe.shapes[n], device="meta")).shape)
        return shape[2] * shape[3] if len(shape) == 4 else shape[1] if len(shape) == 3 else 0

    maps = [n for n in usable_layers(model, size) if n in pre and positions(n) >= 4]  # not a 1x1 squeeze map
    if not maps:
        raise ValueError(f"no default feature layer for model {type(model).__name__}: no pre-activation layer with "
                         "positions runs once in its forward pass; give --layer (lucent_inhibit.preactivation_layers)")
    k = round(2 * (len(maps) - 1) / 3)
    for i in sorted(range(len(maps)), key=lambda i: (abs(i - k), -i)):
        try:
            attr = default_attribution_layer(model, maps[i], size)
        except ValueError:
            continue
        return maps[i], attr, (f"the pre-activation map {i + 1} of {len(maps)} in forward order (about two thirds deep), "
                               "attributed at the nearest cut before it")
    raise ValueError(f"no pre-activation layer of model {type(model).__name__} has a cut before it (a layer every path "
                     f"into it passes through); give --layer and --attr-layer (e.g. among {', '.join(maps[:4])})")


def resolve_feature_layers(model, layer: Optional[str], attr: Optional[str], size: int = 224) -> Tuple[str, str]:
    """``(layer, attr)`` with the defaults filled in and said: :func:`default_feature_layers` for a missing
    feature layer, :func:`default_attribution_layer` for a missing attribution layer of another feature
    layer. Each pick is logged (the CLI prints it), names checked against ``model``."""
    from ..core.layers import check_layer_names

    if layer is None:
        layer, default_attr, why = default_feature_layers(model, size)
        log.info("feature layer: %s (%s)", layer, why)
        if attr is None:
            attr = default_attr
            log.info("attribution layer: %s (the default feature's)", attr)
    check_layer_names(model, [layer])
    if attr is None:
        attr = DEFAULT_ATTR_LAYER if layer == DEFAULT_LAYER else default_attribution_layer(model, layer, size)
        log.info("attribution layer: %s (the nearest activation or layer before %s that is a cut to it)", attr, layer)
    check_layer_names(model, [attr])
    return layer, attr


def pick_unit(model, dataset, layer: str, n: int = 32, settings=None) -> int:
    """The channel of ``layer`` whose activation (at the centre: the middle of a map, the centre patch of a
    token layer) varies most over the first ``n`` images; ``settings``: the pass's
    :class:`~lucent_inhibit.core.settings.PassSettings` (its batch size and input normalisation)."""
    import torch

    from ..core.features import Feature, reading_feature
    from ..core.hooks import capture
    from ..core.layers import model_device
    from ..core.preparation import preprocess_fn
    from ..core.settings import as_pass_settings
    from ..data.batching import iter_batches

    settings = as_pass_settings(settings)
    vals: List[torch.Tensor] = []
    norm = preprocess_fn(model) if settings.preprocess else (lambda v: v)
    centre = Feature(layer, unit=0, position="center")
    for _, x in iter_batches(dataset, settings.batch_size, indices=range(min(n, len(dataset)))):
        x = norm(x.to(model_device(model)))
        with torch.no_grad():
            a = capture(model, x, [layer])[layer]
        vals.append(reading_feature(model, x, centre).vector(a))  # the one position reader, on the model's grid
    return int(torch.cat(vals).std(0).argmax())
