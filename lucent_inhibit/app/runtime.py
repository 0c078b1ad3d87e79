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
from typing import Dict, Iterator, List, Optional

from .configs import DataConfig, ModelConfig

log = logging.getLogger("lucent_inhibit")


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
    from ..models.loading import load_model as _load

    _to_device(None, cfg.device)  # a device this machine lacks is refused before the model is built
    return _cached(("model", cfg.spec, cfg.weights, cfg.device), lambda: _to_device(_load(cfg.spec, cfg.weights), cfg.device))


def _to_device(model, device: str):
    """``model.to(device)`` (None: only check ``device``), with one error line naming a device this torch build
    or machine lacks, or one no model runs on (``meta``), and the devices available
    (:func:`lucent_inhibit.core.preparation.usable_device`)."""
    from ..core.preparation import usable_device

    dev = usable_device(device, "--device")
    return None if model is None else model.to(dev)


def load_data(cfg: DataConfig):
    """The images of ``cfg``: :class:`~lucent_inhibit.ImageFolder` of ``cfg.images`` or bundled crops,
    the first ``cfg.limit`` of them when set."""
    from ..data.bundled import sample_crops
    from ..data.folders import ImageFolder

    if cfg.images is not None and not os.path.isdir(cfg.images):
        raise FileNotFoundError(f"image folder {cfg.images!r} does not exist or is not a directory")
    key = ("data", cfg.images, cfg.size, cfg.workers) if cfg.images else ("data", cfg.n_images, cfg.size, cfg.seed)
    data = _cached(key, lambda: ImageFolder(cfg.images, size=cfg.size, workers=cfg.workers) if cfg.images
                   else sample_crops(cfg.n_images, size=cfg.size, seed=cfg.seed))
    return First(data, cfg.limit) if cfg.limit is not None else data


def check_layers(model, *names: str) -> None:
    """``ValueError`` with close matches for the first name that is not a layer of ``model``."""
    from ..core.layers import check_layer_names

    check_layer_names(model, [n for n in names if n is not None])


def out_folder(path: str) -> str:
    """Create output folder ``path`` (its checks, :func:`run_stage`, ran before the work)."""
    from .outputs import check_target

    check_target(path)
    os.makedirs(path, exist_ok=True)
    return path


def input_folders(cfg) -> List[str]:
    """The input image folders a stage config names (``cfg.data.images``, ``cfg.images``)."""
    found = [getattr(getattr(cfg, "data", None), "images", None), getattr(cfg, "images", None)]
    return [f for f in found if isinstance(f, str)]


def run_stage(stage, cfg, progress: bool = True):
    """``stage.run(cfg, progress)`` with its output folder guarded (:mod:`lucent_inhibit.app.staging`).

    Before any work: ``cfg.out`` must be a writable folder path apart from the input images, and hold no
    file of the stage's names that lucent-inhibit did not write. The stage writes into a staging folder
    (``cfg.out`` as the stage sees it) whose files replace the previous ones only when it finishes; an
    interrupted or failed run leaves ``cfg.out`` as it was, except for its resumable checkpoints. The demo
    guards its report folder itself (:class:`~lucent_inhibit.app.staging.StagingDir`). SIGTERM raises
    :class:`~lucent_inhibit.core.interrupts.Interrupted` so that ``finally`` clauses run.
    """
    import copy

    from ..core.distributed import env_world_size
    from .outputs import stage_files
    from .staging import stage_output, terminate_raises, transient_folders, work_folders

    out = getattr(cfg, "out", None)
    if out is None or stage.name == "demo":
        with terminate_raises():
            return stage.run(cfg, progress)
    first = env_world_size() == 1 or os.environ.get("RANK", "0") == "0"  # under torchrun rank 0 writes the files
    with stage_output(out, stage.name, stage_files(stage), inputs=input_folders(cfg), record=first,
                      work=work_folders(stage, cfg), transient=transient_folders(stage)) as folder:
        staged = copy.copy(cfg)
        staged.out = folder
        return stage.run(staged, progress)


class First(Sequence):
    """The first ``n`` items of a dataset, keeping its item descriptions and identity."""

    def __init__(self, ds, n: int):
        self.ds, self.n = ds, min(n, len(ds))
        self.workers = getattr(ds, "workers", 0)  # decoded as the whole dataset is (lucent_inhibit.data.workers)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} images")
        return self.ds[i % self.n]

    def describe(self, i):
        from ..data.datasets import describe_item

        return describe_item(self.ds, i)

    @property
    def identity(self):
        from ..data.datasets import dataset_identity

        return f"first {self.n} of {dataset_identity(self.ds)}"


def feature_and_layers(model, feature_cfg, attr_layers=None, option_name: str = "--attr-layer", size: int = 224,
                       data=None):
    """The :class:`~lucent_inhibit.Feature` of ``feature_cfg`` and its attribution layer(s), each name
    checked against ``model`` (the feature layer first, so a typo there is reported as such). A missing
    feature or attribution layer is picked and said by :func:`~lucent_inhibit.resolve_feature_layers`, a missing
    unit by :func:`~lucent_inhibit.pick_unit` on ``data`` (default: 32 bundled crops of ``size`` px);
    ``attr_layers`` (several, e.g. the scan's ``--attr-layers``) replace the feature config's one."""
    from ..models.defaults import pick_unit, resolve_feature_layers

    first = attr_layers[0] if attr_layers else feature_cfg.attr_layer
    layer, attr = resolve_feature_layers(model, feature_cfg.layer, first, size)
    layers = list(attr_layers) if attr_layers else [attr]
    check_layers(model, *layers)
    unit = feature_cfg.unit
    if unit is None:
        from ..core.tokens import check_input_size

        check_input_size(model, (size, size))  # the unit is picked on images of --size px (a strict ViT: 224 only)
        data = data if data is not None else load_data(DataConfig(n_images=32, size=size))
        unit = pick_unit(model, data, layer)
        log.info("unit: %d of %s (its activation at the centre varies most over the first %d images)", unit, layer,
                 min(32, len(data)))
    return feature_cfg.feature(layer, unit), layers


def precision_context(enabled: bool, model, data, feature, layers, batch_size: int):
    """``(context, check)`` for a dataset pass: ``(nullcontext(), None)`` in float32, else ``torch.autocast``
    after :func:`lucent_inhibit.attribution.precision.checked_autocast` on the first batch passed (said; it raises
    :class:`~lucent_inhibit.attribution.precision.AutocastTooInexact` before any image is scanned otherwise)."""
    if not enabled:
        return contextlib.nullcontext(), None
    from ..attribution.precision import autocast, checked_autocast
    from ..core.layers import model_device
    from ..data.batching import iter_batches

    _, images = next(iter(iter_batches(data, batch_size, indices=range(min(batch_size, len(data))))))
    check = checked_autocast(model, images, feature, layers)
    log.info("%s: the pass runs under autocast", check.describe())
    return autocast(model_device(model)), check


def files_section(title: str, text: str, folder: str, root: str, figures=(), links=()):
    """A report :class:`~lucent_inhibit.app.page.Section` for files of ``folder``, named relative to ``root``."""
    from .page import Section

    rel = os.path.relpath(folder, root)
    return Section(title, text, figures=[os.path.join(rel, f) for f in figures],
                   links=[os.path.join(rel, f) for f in links])
