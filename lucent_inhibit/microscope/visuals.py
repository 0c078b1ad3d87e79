"""What shows a channel in the microscope: its dataset images with the largest mean activation (one forward
pass over the images for all layers at once) and its feature visualization (Lucent's ``channel`` objective,
Olah et al. 2017), rendered many channels per render (one batch item each: :func:`~lucent_inhibit.synthesis.
channels.visualize_channels`), not one ``render_vis`` call per channel.

The channels shown are every unit of the microscope and every channel listed as a unit's top inhibitor or
exciter (:func:`shown_channels`), each once.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..attribution.interventions import model_inputs
from ..attribution.passes import dataset_pass
from ..attribution.totals import top_indices
from ..core.checkpoints import checkpointed
from ..core.distributed import digest
from ..core.hooks import capture
from ..core.layers import model_device
from ..core.settings import MICROSCOPE_RENDER, PassSettings, RenderSettings, as_settings
from ..synthesis.channels import visualize_channels
from .readings import CensusReadings


def shown_channels(layers: Sequence[str], units: Sequence[Sequence[int]], attrs: Sequence[str],
                   listed: Sequence[np.ndarray]) -> List[Tuple[str, int]]:
    """Every ``(layer, channel)`` shown: the units of each feature layer, then the channels of each attribution
    layer listed for its units (``listed[i]``: any shape of channel numbers of ``attrs[i]``), each once."""
    seen: Dict[Tuple[str, int], None] = {}
    for layer, us in zip(layers, units):
        seen.update({(layer, int(u)): None for u in us})
    for attr, chans in zip(attrs, listed):
        seen.update({(attr, int(c)): None for c in np.unique(np.asarray(chans))})
    return list(seen)


def top_images(model, dataset, shown: Sequence[Tuple[str, int]], k: int, settings: PassSettings,
               sources: Optional[np.ndarray], means: Optional[Dict[str, Dict[int, np.ndarray]]] = None) -> np.ndarray:
    """(V, k) int64 dataset indices of the images with the largest mean activation (over positions or tokens) of
    each shown channel, one per source image first when ``sources`` is given. ``means`` (layer -> {dataset index
    -> (C,) mean activations}, read off the census: :class:`~lucent_inhibit.microscope.readings.CensusReadings`)
    gives what it holds; one forward pass over the other images computes the rest, for all layers at once."""
    layers = list(dict.fromkeys(layer for layer, _ in shown))
    run = dataset_pass(model, dataset, layers, [], settings)
    known = {layer: dict((means or {}).get(layer, {})) for layer in layers}
    missing = [i for i in range(run.size) if any(i not in known[layer] for layer in layers)]
    if missing:
        _fill_means(run, layers, missing, known)
    rows = np.arange(run.size)
    table = {layer: np.stack([known[layer][i] for i in rows]) for layer in layers}
    return np.stack([top_indices(rows, table[layer][:, c], min(k, run.size), True, None, sources)
                     for layer, c in shown]).astype(np.int64)


def _fill_means(run, layers: Sequence[str], indices: Sequence[int], known: Dict[str, Dict[int, np.ndarray]]) -> None:
    """Add the mean activation per channel of ``layers`` on the dataset images ``indices`` to ``known``, read as
    the census's batches are (:class:`~lucent_inhibit.microscope.readings.CensusReadings`, keeping no outputs)."""
    reader = CensusReadings("", None, budget=0)
    with run.evaluating(), run.bar(len(indices), f"channel means of {len(layers)} layers") as bar, torch.no_grad():
        for idx, images in run.batches(indices):
            reader(idx, capture(run.model, model_inputs(run, images), layers))
            bar.update(len(images))
    for layer in layers:
        known[layer].update(reader.means[layer])


def float32(model):
    """A block with autocast switched off on the model's device: renders run in float32 also where the dataset
    passes run under ``torch.autocast`` (its agreement check covers the passes, not the renders)."""
    return torch.autocast(device_type=model_device(model).type, enabled=False)


def render_channels(model, shown: Sequence[Tuple[str, int]], render: Optional[RenderSettings], batch: int,
                    progress: bool = False, checkpoint: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``(images (V, 3, S, S) uint8, moved (V,) bool)``: the feature visualization of every shown channel, in
    renders of up to ``batch`` channels of one layer each, in float32 (``render``: None is
    :data:`~lucent_inhibit.core.settings.MICROSCOPE_RENDER`). Each render is seeded by itself, so with a
    ``checkpoint`` folder every finished render is saved there and a rerun of the same renders (same channels,
    settings and model weights) after an interruption reuses them (:func:`~lucent_inhibit.core.checkpoints.
    checkpointed`)."""
    from tqdm.auto import tqdm

    settings = as_settings(render if render is not None else MICROSCOPE_RENDER)
    by_layer: Dict[str, List[int]] = {}
    for i, (layer, _) in enumerate(shown):
        by_layer.setdefault(layer, []).append(i)
    chunks = [(layer, rows[s:s + batch]) for layer, rows in by_layer.items() for s in range(0, len(rows), batch)]
    identity = {"shown": [[layer, int(c)] for layer, c in shown], "render": settings.describe(), "batch": batch,
                "model": digest(model)}
    with tqdm(total=len(chunks), desc="feature visualizations", disable=not progress) as bar:
        def compute(c, rows):
            with float32(model):
                run = visualize_channels(model, chunks[c][0], [shown[i][1] for i in rows], settings,
                                         f"feature visualizations of {chunks[c][0]}")
            bar.update(1)
            return {"pixels": (run.images.clamp(0, 1) * 255).round().to(torch.uint8).numpy(),
                    "moved": np.asarray(run.motion.moved, bool)}

        parts = checkpointed(checkpoint, "microscope renders", identity, [np.asarray(r) for _, r in chunks], compute,
                             skipped=lambda rows: bar.update(1))
    images: List[Optional[np.ndarray]] = [None] * len(shown)
    moved = np.zeros(len(shown), bool)
    for (_, rows), part in zip(chunks, parts):
        for r, i in enumerate(rows):
            images[i], moved[i] = part["pixels"][r], bool(part["moved"][r])
    return np.stack(images), moved
