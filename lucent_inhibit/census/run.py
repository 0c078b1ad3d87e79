"""The census pass (:func:`layer_census`): one forward pass per batch for all K features, the backward in
chunks of ``chunk_size`` features, and per image and feature the totals ``P`` and ``N`` of the attribution
``S_l = grad_{h_l} f * h_l`` (Hamblin et al. 2024, section 2): the forward pass is the kernel ``attribute``
uses (:func:`~lucent_inhibit.attribution.attribute.feature_graph`), the backward and the element-L1 totals (the
scan's ``signed_stats[:, 0, 0]``) are :func:`lucent_inhibit.attribution.kernel.chunk_totals`.
"""
from __future__ import annotations

import gc
import os
import warnings
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..attribution.agreement import pearson
from ..attribution.attribute import feature_graph, prepare_inputs
from ..attribution.kernel import chunk_totals
from ..attribution.passes import DatasetPass, check_shape, dataset_pass
from ..attribution.totals import MIN_PERCENTILE_IMAGES
from ..core.checkpoints import checkpointed, chunk_images, split_chunks
from ..core.distributed import agree, all_gather, digest, init_from_env, rank_indices
from ..core.features import Feature, as_feature, check_position
from ..core.hooks import output_shapes
from ..core.layers import model_device
from ..core.settings import PassSettings, as_pass_settings
from ..core.validate import InputError, check_choice, check_int
from ..data.datasets import dataset_digest, describe_item
from .result import Census

#: how each chunk's backward runs: "batched" (``is_grads_batched``), "loop" (one pass per feature) or
#: "auto": batched on CUDA, a loop on CPU, where it measured as fast or faster (benchmarks/census.py).
BACKWARDS = ("auto", "batched", "loop")
#: Images per checkpoint of a census (rounded up to whole batches).
CHECKPOINT_IMAGES = 256


class ChunkMemoryError(InputError):
    """A census chunk (``chunk_size`` features' attributions at once) that does not fit in memory."""


# ------------------------------------------------------------------------------------------------
# the census
# ------------------------------------------------------------------------------------------------
def census_features(features, probe: dict, units=None, position="center") -> List[Feature]:
    """The census's features: every unit (or ``units``) of layer ``features`` at ``position``, or the given
    features. ``probe`` holds the layer's activation on one image (its shape is what is read)."""
    if not isinstance(features, str):
        if units is not None or position != "center":
            raise InputError(f"units= and position= select units of one layer (got units={units!r}, position="
                             f"{position!r}); give a layer name as features, or put them in the features listed")
        feats = [as_feature(f) for f in features]
        if not feats:
            raise InputError("features is empty: give a layer name or at least one feature")
        return list(dict.fromkeys(feats))
    position = check_position(position)
    act = probe[features]
    if act.dim() not in (2, 3, 4):
        raise InputError(f"layer {features!r} has activations of shape {tuple(act.shape)}; a census needs (B, C, H, W), "
                         "(B, C) or (B, T, C)")
    if act.dim() == 2 and position != "center":
        raise InputError(f"position {position!r}: layer {features!r} is linear (shape {tuple(act.shape)}) and has no "
                         "spatial positions; a census of a linear layer reads each unit as it is (position='center')")
    c = act.shape[-1] if act.dim() == 3 else act.shape[1]
    units = list(range(c)) if units is None else [check_int("units", u, 0, c - 1) for u in units]
    if not units:
        raise InputError(f"units is empty: give at least one of layer {features!r}'s {c} units (0..{c - 1})")
    feats = [Feature(features, unit=u, position=position) for u in dict.fromkeys(units)]
    feats[0].check(act)  # a (y, x) outside the layer's map
    return feats


def bytes_per_feature(probe: dict, layers: Sequence[str], batch_size: int) -> int:
    """Bytes one feature adds to a chunk of a batch of ``batch_size`` images: its gradient, ``g * a`` and the
    totals' temporaries at every attribution layer, about four float32 copies of the layers' activations
    (``probe``: the layers' activations on one image)."""
    return 4 * 4 * batch_size * sum(int(probe[l][:1].numel()) for l in layers)


def available_memory(device: torch.device) -> Optional[int]:
    """Bytes this process can still allocate on ``device``, or None when unknown. CUDA: ``mem_get_info``;
    CPU (Linux): the smallest of ``MemAvailable``, the cgroup's ``memory.max - memory.current`` and the
    address-space limit (``RLIMIT_AS``) minus the address space in use."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    bounds = [_read_kib("/proc/meminfo", "MemAvailable:")]
    limit, used = _read_int("/sys/fs/cgroup/memory.max"), _read_int("/sys/fs/cgroup/memory.current")
    if limit is not None and used is not None:
        bounds.append(limit - used)
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        size = _read_kib("/proc/self/status", "VmSize:")
        if soft != resource.RLIM_INFINITY and size is not None:
            bounds.append(soft - size)
    except (ImportError, OSError, ValueError):
        pass
    bounds = [b for b in bounds if b is not None]
    return max(0, min(bounds)) if bounds else None


def _read_int(path: str) -> Optional[int]:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):  # absent, or "max"
        return None


def _read_kib(path: str, key: str) -> Optional[int]:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _is_allocation_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text))


def chunk_memory_error(chunk: int, per_feature: int, free: Optional[int], batch_size: int) -> ChunkMemoryError:
    """The error for a chunk that failed to allocate: what it needs and how many features would fit."""
    mib = lambda b: f"{b / 2 ** 20:.0f} MiB"  # noqa: E731
    fits = None if free is None else min(int(0.75 * free // per_feature), chunk // 2)  # a margin: estimates
    if fits is None:
        advice = f"try chunk_size={max(1, chunk // 2)}"
    elif fits >= 1:
        advice = f"about {fits} features fit in the {mib(free)} that were free: use chunk_size={fits}"
    else:
        advice = (f"not even one feature fits in the {mib(free)} that were free: use a smaller batch_size than "
                  f"{batch_size}")
    return ChunkMemoryError(
        f"chunk_size={chunk} does not fit in memory: the backward of {chunk} features at once holds about "
        f"{mib(chunk * per_feature)} of attributions ({mib(per_feature)} per feature for a batch of {batch_size} "
        f"images); {advice}")


def layer_census(model: nn.Module, dataset, features, layers, units: Optional[Sequence[int]] = None,
                 position="center", chunk_size: int = 16, backward: str = "auto",
                 settings: Optional[PassSettings] = None, checkpoint: Optional[str] = None,
                 on_batch: Optional[Callable[[np.ndarray, Dict[str, torch.Tensor]], None]] = None) -> Census:
    """Excitation, inhibition and tension of many features over ``dataset`` in one pass (SPEC 2.2 for a layer).

    Args:
        model: a prepared model (:func:`lucent_inhibit.prepare`), run in eval mode (mode restored after).
        dataset: images (3, H, W) in [0, 1] of one shape, as for :func:`~lucent_inhibit.scan`.
        features: a layer name (every unit of it, or ``units``, at ``position``) or a sequence of
            :class:`~lucent_inhibit.Feature` / ``(layer, unit)``.
        layers: attribution layer(s) before the features, as for a scan.
        units: with a layer name, the units to follow (default: all of the layer's channels).
        position: with a layer name, ``"center"``, ``"mean"`` or ``(y, x)``; a linear layer has no position.
        chunk_size: features whose attributions exist at once (memory grows with it: about
            ``16 * batch_size * activations`` bytes per feature); a chunk that fails to allocate raises
            :class:`ChunkMemoryError` saying how many features would fit.
        backward: ``"auto"``, ``"batched"`` or ``"loop"`` (see :data:`BACKWARDS`); results agree to float
            tolerance.
        settings: the pass's :class:`~lucent_inhibit.core.settings.PassSettings` (images per forward pass,
            input normalisation, progress bar, the completeness threshold below which it warns for some
            features); None: the defaults.
        checkpoint: a folder where the census saves its rows every :data:`CHECKPOINT_IMAGES` images
            (:func:`lucent_inhibit.core.checkpoints.checkpointed`): a rerun with the same arguments after an
            interruption (SIGKILL included) resumes there and returns the census an uninterrupted run returns.
        on_batch: called after each batch's forward pass with its dataset indices (b,) and layer -> activation
            (detached, the library's layout: (b, C, H, W) maps, (b, T, C) tokens) of the attribution and feature
            layers, so that a caller reads more off the pass without a second one (the microscope's channel
            means). Batches resumed from a checkpoint, and other ranks' shards, are not passed.

    Under ``torchrun`` (``WORLD_SIZE > 1``; :mod:`lucent_inhibit.core.distributed`) rank ``r`` of ``w`` takes shard
    ``(r, w)`` of the images and every rank returns the whole census, equal to the one-process census.

    Returns:
        :class:`Census` with (n, K) values and (n, K, L) totals, rows sorted by dataset index.
    """
    rank, world = init_from_env()
    settings = as_pass_settings(settings)
    settings = settings.replace(progress=settings.progress and rank == 0)  # rank 0's bar only
    setup = lambda: _setup(model, dataset, features, layers, units, position, chunk_size, backward,  # noqa: E731
                           settings)
    plan = agree("census", setup) if world > 1 else setup()[0]
    run, feats, threshold = plan.run, plan.features, plan.threshold
    folder = None if checkpoint is None else os.fspath(checkpoint)
    folder = os.path.join(folder, f"rank-{rank}-of-{world}") if folder is not None and world > 1 else folder
    with run.evaluating():
        work = lambda: _census_rows(plan, rank_indices(run.size, rank, world), folder, on_batch)  # noqa: E731
        parts = all_gather(work) if world > 1 else [work()]
    values, pos, neg = (np.concatenate([p[k] for p in parts]) for k in "vpn")
    result = Census(
        features=feats, layers=list(run.layers), indices=np.arange(run.size, dtype=np.int64), activation=values,
        pos=pos, neg=neg, items=np.asarray([describe_item(dataset, i) for i in range(run.size)], dtype=str),
        completeness=completeness_table(values, pos, neg), dataset=run.name, dataset_size=run.size,
        info={"batch_size": run.batch_size, "chunk_size": plan.chunk, "backward": "batched" if plan.batched else "loop",
              "method": "gradient_x_activation", "granularity": "element", "norm": "l1", "preprocess": run.preprocess,
              "precision": run.precision()})
    with warnings.catch_warnings():
        if rank:
            warnings.simplefilter("ignore")  # rank 0 says it once
        _warn(result, threshold)
    return result


class CensusPlan(NamedTuple):
    """The checked arguments of one census."""

    run: DatasetPass
    features: List[Feature]
    chunk: int  # features whose attributions exist at once
    batched: bool  # the backward with is_grads_batched
    shape: tuple  # every image's (3, H, W)
    per_feature: int  # bytes of attributions per feature and batch
    threshold: float  # completeness below which it warns
    fingerprint: dict  # what every rank of a distributed census shares, and what a checkpoint holds


def _setup(model, dataset, features, layers, units, position, chunk_size, backward, settings: PassSettings):
    """``(plan, fingerprint)``: the checked arguments of a census (:class:`CensusPlan`) and its JSON
    fingerprint."""
    run = dataset_pass(model, dataset, layers, [], settings)
    chunk = check_int("chunk_size", chunk_size, 1)
    backward = check_choice("backward", backward, BACKWARDS)
    threshold = run.threshold
    with run.evaluating():
        idx0, first = next(run.batches(range(min(run.batch_size, run.size))))
        x0 = prepare_inputs(run.model, first, run.preprocess)
        probe = output_shapes(model, x0, run.layers + ([features] if isinstance(features, str) else []))
    feats = census_features(features, probe, units, position)
    run = dataset_pass(model, dataset, layers, feats, settings)
    batched = backward == "batched" or (backward == "auto" and x0.device.type == "cuda")
    fingerprint = {"features": [f.to_dict() for f in feats], "layers": list(run.layers), "dataset": run.name,
                   "dataset_size": run.size, "batch_size": run.batch_size, "chunk_size": chunk, "backward": backward,
                   "preprocess": run.preprocess, "image_shape": list(first.shape[1:]), "threshold": threshold,
                   "images": dataset_digest(dataset), "model": digest(run.model)}
    per_feature = bytes_per_feature(probe, run.layers, run.batch_size)
    return CensusPlan(run, feats, chunk, batched, tuple(first.shape[1:]), per_feature, threshold, fingerprint), \
        fingerprint


def _census_rows(plan: CensusPlan, indices: np.ndarray, folder: Optional[str], on_batch=None) -> dict:
    """``{"v": (n, K) values, "p", "n": (n, K, L) P and N}`` of the consecutive dataset ``indices``, in
    chunks of :data:`CHECKPOINT_IMAGES` images saved to (and resumed from) checkpoint ``folder``."""
    run = plan.run
    free = available_memory(model_device(run.model))  # before any chunk: what the chunks can have
    workspace: dict = {}  # the chunks' buffers, reused by every batch
    chunks = split_chunks(np.asarray(indices), chunk_images(run.batch_size, CHECKPOINT_IMAGES))
    with run.bar(len(indices), f"census of {len(plan.features)} features") as bar:
        compute = lambda c, idx: dict(zip("vpn", _census_pass(plan, idx, free, workspace, bar, on_batch)))  # noqa: E731
        parts = checkpointed(folder, "census", plan.fingerprint, chunks, compute,
                             skipped=lambda idx: bar.update(len(idx)))
    return {k: np.concatenate([p[k] for p in parts]) for k in "vpn"}


def _census_pass(plan: CensusPlan, indices: np.ndarray, free: Optional[int], workspace: dict, bar, on_batch=None):
    """(n, K) values and (n, K, L) P and N of the n consecutive dataset ``indices``, preallocated (memory
    flat in the dataset's size); ``on_batch`` as for :func:`layer_census`."""
    run, feats, chunk, batched, shape = plan.run, plan.features, plan.chunk, plan.batched, plan.shape
    k, n_layers, n, start = len(feats), len(run.layers), len(indices), int(indices[0])
    values = np.zeros((n, k), np.float32)
    pos, neg = np.zeros((n, k, n_layers), np.float32), np.zeros((n, k, n_layers), np.float32)
    for idx, images in run.batches(indices):
        check_shape(idx, images, shape)
        rows_of, failed, graph, x = idx - start, False, None, None
        try:
            x = prepare_inputs(run.model, images, run.preprocess)
            keep = None if on_batch is None else {}
            graph = feature_graph(run.model, x, feats, run.layers, keep)
            if on_batch is not None:
                on_batch(idx, {name: t.detach() for name, t in keep.items()})
            for begin in range(0, k, chunk):
                rows = range(begin, min(k, begin + chunk))
                p, q = chunk_totals(*graph, feats, run.layers, rows, rows.stop < k, batched, workspace)
                cols = slice(rows.start, rows.stop)
                values[rows_of, cols] = graph[0][cols].detach().T.float().cpu().numpy()
                pos[rows_of, cols] = p.transpose(0, 1).cpu().numpy()
                neg[rows_of, cols] = q.transpose(0, 1).cpu().numpy()
            del graph
        except (RuntimeError, MemoryError) as exc:
            if not (isinstance(exc, MemoryError) or _is_allocation_error(exc)):
                raise
            failed = True
        if failed:  # outside the handler, so that the failed chunk's tensors are released first
            graph = x = None  # noqa: F841 (the error's traceback keeps this frame: drop the batch's graph)
            workspace.clear()
            gc.collect()
            raise chunk_memory_error(chunk, plan.per_feature, free, run.batch_size)
        bar.update(len(idx))
    return values, pos, neg


def completeness_table(values: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """(K, L) Pearson r between each feature's values (n, K) and its ``E = P - N`` (n, K, L) over the
    images; NaN with fewer than 3 images or a constant."""
    k, n_layers = pos.shape[1], pos.shape[2]
    if values.shape[0] < 3:
        return np.full((k, n_layers), np.nan)
    return np.array([[pearson(values[:, j], pos[:, j, l] - neg[:, j, l]) for l in range(n_layers)] for j in range(k)])


def _warn(result: Census, threshold: float) -> None:
    """Warn (once) for features whose E does not track f, and for a census too small for percentile ranks."""
    r = result.completeness
    low = np.argwhere(np.isfinite(r) & (r < threshold))
    if low.size:
        names = [f"{result.features[j].name} at {result.layers[l]} (r={r[j, l]:.2f})" for j, l in low[:3]]
        warnings.warn(f"completeness r(f, E) is below {threshold} for {len(low)} of {r.size} "
                      f"feature-layer pairs, e.g. {'; '.join(names)}: their P and N do not account for f; pick "
                      "attribution layers closer to the features", stacklevel=3)
    if len(result) < MIN_PERCENTILE_IMAGES:
        warnings.warn(f"a census of {len(result)} images is too small for percentile tension (needs "
                      f"{MIN_PERCENTILE_IMAGES}); tension and MTIs will refuse: use more images", stacklevel=3)
