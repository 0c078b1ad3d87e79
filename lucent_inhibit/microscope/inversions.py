"""The +/- attribution inversions of each unit's top maximally tense images (Hamblin et al. 2024, section 3):
for an MTI, what excites the unit and what inhibits it, each rendered from noise toward ``relu(S)`` and
``relu(-S)`` at the unit's attribution layer (:func:`~lucent_inhibit.synthesis.inversion.inversions`, one
render of two images per MTI). Optional in the microscope (``inversions=K``): it costs one render per MTI.
"""
from __future__ import annotations

import logging
import warnings
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..core.features import Feature
from ..core.settings import RenderSettings
from ..data.datasets import load_batch
from ..synthesis.inversion import inversions

log = logging.getLogger("lucent_inhibit")


def mti_inversions(model, dataset, features: Sequence[Feature], attrs: Sequence[str], mtis: np.ndarray, k: int,
                   render: RenderSettings, side: int, progress: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """``(images (K, k, 2, 3, side, side) uint8, separated (K, k) bool)``: the excitatory and inhibitory
    inversions of the first ``k`` MTIs of each unit (``mtis`` (K, t), ``attrs`` (K,) each unit's attribution
    layer) and whether each pair separates (the excitatory render drives the unit more, the method's check).
    Renders use ``render``'s steps, learning rate and seed at the image's own size, in float32. An MTI without both signs
    of attribution (no inversion possible) stays black and not separated (said on the log)."""
    from tqdm.auto import tqdm

    settings = RenderSettings(steps=render.steps, lr=render.lr, seed=render.seed)
    out = np.zeros((len(features), k, 2, 3, side, side), np.uint8)
    separated = np.zeros((len(features), k), bool)
    jobs = [(j, i) for j in range(len(features)) for i in range(min(k, mtis.shape[1]))]
    for j, i in tqdm(jobs, desc="inversions of the MTIs", disable=not progress):
        image = load_batch(dataset, [int(mtis[j, i])])
        pair = _one(model, image, features[j], attrs[j], settings)
        if pair is not None:
            small = F.interpolate(pair[0], size=(side, side), mode="bilinear", align_corners=False, antialias=True)
            out[j, i] = (small.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            separated[j, i] = pair[1]
    return out, separated


def _one(model, image, feature: Feature, attr: str, settings: RenderSettings) -> Optional[tuple]:
    from .visuals import float32

    try:
        with warnings.catch_warnings(), float32(model):  # a still render is recorded (not separated), not repeated per MTI
            warnings.simplefilter("ignore")
            r = inversions(model, image, feature, attr, render=settings, completeness_images=0)
    except ValueError as exc:  # one sign of attribution is missing on this image
        log.info("no inversion of %s on one of its MTIs: %s", feature.name, exc)
        return None
    return torch.stack([r.excitatory, r.inhibitory]).float(), r.separated
