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

from ..attribution.interventions import channel_means, model_inputs
from ..attribution.passes import dataset_pass
from ..attribution.totals import top_indices
from ..core.hooks import capture
from ..core.layers import model_device
from ..core.settings import MICROSCOPE_RENDER, PassSettings, RenderSettings, as_settings
from ..synthesis.channels import visualize_channels


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
               sources: Optional[np.ndarray]) -> np.ndarray:
    """(V, k) int64 dataset indices of the images with the largest mean activation (over positions or tokens) of
    each shown channel, one per source image first when ``sources`` is given; one forward pass for all layers."""
    layers = list(dict.fromkeys(layer for layer, _ in shown))
    run = dataset_pass(model, dataset, layers, [], settings)
    means: Dict[str, list] = {layer: [] for layer in layers}
    with run.evaluating(), run.bar(run.size, f"channel means of {len(layers)} layers") as bar, torch.no_grad():
        for _, images in run.batches():
            acts = capture(run.model, model_inputs(run, images), layers)
            for layer in layers:
                means[layer].append(channel_means(acts[layer].float()).cpu().numpy())
            bar.update(len(images))
    table = {layer: np.concatenate(v).astype(np.float64) for layer, v in means.items()}
    rows = np.arange(run.size)
    return np.stack([top_indices(rows, table[layer][:, c], min(k, run.size), True, None, sources)
                     for layer, c in shown]).astype(np.int64)


def float32(model):
    """A block with autocast switched off on the model's device: renders run in float32 also where the dataset
    passes run under ``torch.autocast`` (its agreement check covers the passes, not the renders)."""
    return torch.autocast(device_type=model_device(model).type, enabled=False)


def render_channels(model, shown: Sequence[Tuple[str, int]], render: Optional[RenderSettings], batch: int,
                    progress: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """``(images (V, 3, S, S) uint8, moved (V,) bool)``: the feature visualization of every shown channel, in
    renders of up to ``batch`` channels of one layer each, in float32 (``render``: None is
    :data:`~lucent_inhibit.core.settings.MICROSCOPE_RENDER`)."""
    from tqdm.auto import tqdm

    settings = as_settings(render if render is not None else MICROSCOPE_RENDER)
    by_layer: Dict[str, List[int]] = {}
    for i, (layer, _) in enumerate(shown):
        by_layer.setdefault(layer, []).append(i)
    chunks = [(layer, rows[s:s + batch]) for layer, rows in by_layer.items() for s in range(0, len(rows), batch)]
    images: List[Optional[np.ndarray]] = [None] * len(shown)
    moved = np.zeros(len(shown), bool)
    for layer, rows in tqdm(chunks, desc="feature visualizations", disable=not progress):
        with float32(model):
            run = visualize_channels(model, layer, [shown[i][1] for i in rows], settings,
                                     f"feature visualizations of {layer}")
        pixels = (run.images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        for r, i in enumerate(rows):
            images[i], moved[i] = pixels[r], bool(run.motion.moved[r])
    return np.stack(images), moved
