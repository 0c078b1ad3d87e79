"""What the stage run functions share at run time: loading the model and images a config names,
checking layer names, and the default attribution layer. Torch is imported inside the functions.

:func:`shared_inputs` lets a composition of stages (the report) load the model and each image set
once: inside it, :func:`load_model` and :func:`load_data` return the same objects for the same config.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from typing import Dict, Iterator, List, Optional, Tuple

from .configs import DEFAULT_ATTR_LAYER, DEFAULT_LAYER, DataConfig, ModelConfig

log = logging.getLogger("lucent_inhibit")

#: Module types that count as activations for :func:`default_attribution_layer`.
ACTIVATIONS = ("ReLU", "ReLU6", "GELU", "SiLU", "Hardswish", "LeakyReLU", "ELU", "Tanh", "Sigmoid", "Mish")

_CACHE: Optional[Dict[tuple, object]] = None


@contextlib.contextmanager
def shared_inputs() -> Iterator[None]:
    """Within the block, equal model / data configs load once (the stages never modify either)."""
    global _CACHE
    previous, _CACHE = _CACHE, {} if _CACHE is None else _CACHE
    try:
        yield
    finally:
        _CACHE = previous


def _cached(key: tuple, make):
    if _CACHE is None:
        return make()
    if key not in _CACHE:
        _CACHE[key] = make()
    return _CACHE[key]


def load_model(cfg: ModelConfig):
    """The prepared model ``cfg.spec`` on ``cfg.device`` (``ValueError`` for an unknown spec)."""
    from ..models import load_model as _load

    return _cached(("model", cfg.spec, cfg.weights, cfg.device), lambda: _to_device(_load(cfg.spec, cfg.weights), cfg.device))


def _to_device(model, device: str):
    """``model.to(device)``, with one clear error for a device this machine does not have."""
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"--device {device!r} is not a torch device: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device!r}: no CUDA GPU is available on this machine; use --device cpu")
    return model.to(dev)


def load_data(cfg: DataConfig):
    """The images of ``cfg``: :class:`~lucent_inhibit.ImageFolder` of ``cfg.images`` or bundled crops,
    the first ``cfg.limit`` of them when set."""
    from ..data import ImageFolder, sample_crops

    if cfg.images is not None and not os.path.isdir(cfg.images):
        raise FileNotFoundError(f"image folder {cfg.images!r} does not exist or is not a directory")
    key = ("data", cfg.images, cfg.size, cfg.workers) if cfg.images else ("data", cfg.n_images, cfg.size, cfg.seed)
    data = _cached(key, lambda: ImageFolder(cfg.images, size=cfg.size, workers=cfg.workers) if cfg.images
                   else sample_crops(cfg.n_images, size=cfg.size, seed=cfg.seed))
    return First(data, cfg.limit) if cfg.limit is not None else data


def check_layers(model, *names: str) -> None:
    """``ValueError`` with close matches for the first name that is not a layer of ``model``."""
    from ..hooks import check_layer_names

    check_layer_names(model, [n for n in names if n is not None])


def out_folder(path: str) -> str:
    """Create output folder ``path`` (its checks, :func:`run_stage`, ran before the work)."""
    from ..outputs import check_target

    check_target(path)
    os.makedirs(path, exist_ok=True)
    return path


def input_folders(cfg) -> List[str]:
    """The input image folders a stage config names (``cfg.data.images``, ``cfg.images``)."""
    found = [getattr(getattr(cfg, "data", None), "images", None), getattr(cfg, "images", None)]
    return [f for f in found if isinstance(f, str)]


def run_stage(stage, cfg, progress: bool = True):
    """``stage.run(cfg, progress)`` with its output folder guarded (:mod:`lucent_inhibit.outputs`).

    Before any work: ``cfg.out`` must be a writable folder path apart from the input images, and hold no
    file of the stage's names that lucent-inhibit did not write. After the run (also when it fails) the
    files written are recorded in the folder's manifest. The demo guards its report folder itself
    (:class:`~lucent_inhibit.outputs.StagingDir`). SIGTERM raises
    :class:`~lucent_inhibit.outputs.Interrupted` so that temporary files are removed.
    """
    from ..distributed import env_world_size
    from ..outputs import stage_files, stage_output, terminate_raises

    out = getattr(cfg, "out", None)
    if out is None or stage.name == "demo":
        with terminate_raises():
            return stage.run(cfg, progress)
    first = env_world_size() == 1 or os.environ.get("RANK", "0") == "0"  # under torchrun rank 0 records the files
    with stage_output(out, stage.name, stage_files(stage), inputs=input_folders(cfg), record=first):
        return stage.run(cfg, progress)


class First(Sequence):
    """The first ``n`` items of a dataset, keeping its item descriptions and identity."""

    def __init__(self, ds, n: int):
        self.ds, self.n = ds, min(n, len(ds))
        self.workers = getattr(ds, "workers", 0)  # decoded as the whole dataset is (lucent_inhibit.pipeline)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} images")
        return self.ds[i % self.n]

    def describe(self, i):
        from ..data import describe_item

        return describe_item(self.ds, i)

    @property
    def identity(self):
        from ..data import dataset_identity

        return f"first {self.n} of {dataset_identity(self.ds)}"


def probe_input(model, size: int = 224, n: int = 1):
    """``n`` random normalised (n, 3, size, size) inputs on the model's device (for forward-order probes); a
    model that takes one input size only (a strict ViT patch embedding) gets that size."""
    import torch

    from ..hooks import model_device
    from ..models import preprocess_fn
    from ..tokens import required_input_size

    h, w = required_input_size(model) or (size, size)
    x = torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(0))
    return preprocess_fn(model)(x.to(model_device(model)))


def default_attribution_layer(model, feature_layer: str, size: int = 224) -> str:
    """The last single-call activation (ReLU-like module, or a name ending in ``_act`` that is not an
    ``Identity``) before
    ``feature_layer`` in the forward pass that is a cut to it (:func:`lucent_inhibit.hooks.separates`: every
    path into the feature layer passes through it, so attributions there can add up); the last single-call
    cut when no activation is one. When the nearest activation is a module run twice per forward (torchvision
    ResNet's ``relu``), block outputs come first (``layer3_0`` for ``layer3_1_conv2``); InceptionV1's
    ``mixedXY_pre_relu`` gets the block's input (the branches inside the block are not cuts).

    On the embedded model and the default feature this is ``blocks_4_0_bn2_act``, the ReLU6 output inside
    the same block, where completeness holds (Hamblin et al., SPEC section 3: far from the feature the
    attribution no longer adds up). ``ValueError`` when no layer before ``feature_layer`` is a cut.
    """
    from ..hooks import check_layer_names, forward_order, layer_table, layers_before, separates

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
    for name in dict.fromkeys(candidates):
        if separates(model, x, name, feature_layer):
            return name
    raise ValueError(f"no single-call layer before feature layer {feature_layer!r} is a cut to it (every path "
                     "into the feature passes through it); pick a later feature layer or give the attribution layer")


def default_feature_layers(model, size: int = 224) -> Tuple[str, str, str]:
    """The feature layer and attribution layer the stages use when none is given, and why (one line).

    - The embedded EfficientNet-Lite0 (any model with its layer names): ``blocks_4_0_bn3_drop`` attributed at
      ``blocks_4_0_bn2_act`` (the ReLU6 inside the same block, where completeness holds: SPEC 3).
    - A vision transformer (:func:`lucent_inhibit.models.transformer_blocks`): the MLP's hidden layer before
      its GELU in the block two thirds deep, ``blocks_k_mlp_fc1`` (a pre-activation, so both signs occur),
      attributed at the residual stream entering that block, ``blocks_{k-1}`` (checked to be a cut with
      :func:`lucent_inhibit.hooks.separates`: everything the block computes reads it).
    - Any other model: ``ValueError`` naming a few of its pre-activation layers; nothing is guessed.
    """
    from ..hooks import layer_table, separates
    from ..models import preactivation_layers, transformer_blocks

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
    names = preactivation_layers(model)
    raise ValueError(f"--layer is required for model {type(model).__name__} (no default feature layer is known for "
                     f"it); pre-activation layers, where inhibition is visible, include "
                     f"{', '.join(names[len(names) // 2:len(names) // 2 + 4]) or 'none found'} "
                     "(all: lucent_inhibit.preactivation_layers(model))")


def resolve_feature_layers(model, layer: Optional[str], attr: Optional[str], size: int = 224) -> Tuple[str, str]:
    """``(layer, attr)`` with the defaults filled in and said: :func:`default_feature_layers` for a missing
    feature layer, :func:`default_attribution_layer` for a missing attribution layer of another feature
    layer. Each pick is logged (the CLI prints it), names checked against ``model``."""
    if layer is None:
        layer, default_attr, why = default_feature_layers(model, size)
        log.info("feature layer: %s (%s)", layer, why)
        if attr is None:
            attr = default_attr
            log.info("attribution layer: %s (the default feature's)", attr)
    check_layers(model, layer)
    if attr is None:
        attr = DEFAULT_ATTR_LAYER if layer == DEFAULT_LAYER else default_attribution_layer(model, layer, size)
        log.info("attribution layer: %s (the nearest activation or layer before %s that is a cut to it)", attr, layer)
    check_layers(model, attr)
    return layer, attr


def pick_unit(model, dataset, layer: str, n: int = 32, batch_size: int = 16) -> int:
    """The channel of ``layer`` whose activation (at the centre: the middle of a map, the centre patch of a
    token layer) varies most over the first ``n`` images."""
    import torch

    from ..attribution import reading_feature
    from ..data import iter_batches
    from ..features import Feature
    from ..hooks import capture, model_device
    from ..models import preprocess_fn

    vals: List[torch.Tensor] = []
    norm, centre = preprocess_fn(model), Feature(layer, unit=0, position="center")
    for _, x in iter_batches(dataset, batch_size, indices=range(min(n, len(dataset)))):
        x = norm(x.to(model_device(model)))
        with torch.no_grad():
            a = capture(model, x, [layer])[layer]
        vals.append(reading_feature(model, x, centre).vector(a))  # the one position reader, on the model's grid
    return int(torch.cat(vals).std(0).argmax())


def feature_and_layers(model, feature_cfg, attr_layers=None, option_name: str = "--attr-layer", size: int = 224):
    """The :class:`~lucent_inhibit.Feature` of ``feature_cfg`` and its attribution layer(s), each name
    checked against ``model`` (the feature layer first, so a typo there is reported as such). A missing
    feature or attribution layer is picked and said by :func:`resolve_feature_layers`; ``attr_layers``
    (several, e.g. the scan's ``--attr-layers``) replace the feature config's one."""
    first = attr_layers[0] if attr_layers else feature_cfg.attr_layer
    layer, attr = resolve_feature_layers(model, feature_cfg.layer, first, size)
    layers = list(attr_layers) if attr_layers else [attr]
    check_layers(model, *layers)
    return feature_cfg.feature(layer), layers


def precision_context(enabled: bool, model, data, feature, layers, batch_size: int):
    """``(context, check)`` for a dataset pass: ``(nullcontext(), None)`` in float32, else ``torch.autocast``
    after :func:`lucent_inhibit.precision.checked_autocast` on the first batch passed (said; it raises
    :class:`~lucent_inhibit.precision.AutocastTooInexact` before any image is scanned otherwise)."""
    if not enabled:
        return contextlib.nullcontext(), None
    from ..data import iter_batches
    from ..hooks import model_device
    from ..precision import autocast, checked_autocast

    _, images = next(iter(iter_batches(data, batch_size, indices=range(min(batch_size, len(data))))))
    check = checked_autocast(model, images, feature, layers)
    log.info("%s: the pass runs under autocast", check.describe())
    return autocast(model_device(model)), check


def files_section(title: str, text: str, folder: str, root: str, figures=(), links=()):
    """A report :class:`~lucent_inhibit.report.Section` for files of ``folder``, named relative to ``root``."""
    from ..report import Section

    rel = os.path.relpath(folder, root)
    return Section(title, text, figures=[os.path.join(rel, f) for f in figures],
                   links=[os.path.join(rel, f) for f in links])
