""":func:`scan`: MEIs, MIIs and maximally tense images of one feature over a dataset (Hamblin et al. 2024;
SPEC 2.2), in one process or, under ``torchrun``, split over the ranks (:mod:`.ranks`).
"""
from __future__ import annotations

import functools
import os
from typing import Optional, Sequence, Union

from torch import nn

from ..core.distributed import env_world_size
from ..core.settings import PassSettings, as_pass_settings
from ..core.validate import InputError
from .plan import make_plan, run_plan
from .result import DEFAULT_SCORE, ScanResult


def scan(model: nn.Module, dataset, feature, layers: Union[str, Sequence[str]], out: Optional[str] = None,
         resume: bool = True, shard=None, keep_maps: bool = True, chunk_size: Optional[int] = None,
         score: str = DEFAULT_SCORE, settings: Optional[PassSettings] = None) -> ScanResult:
    """Stream ``dataset`` through ``model`` and keep per-image attribution statistics (SPEC 2.2).

    Args:
        model: a prepared model (:func:`lucent_inhibit.prepare`), run in eval mode (mode restored after).
        dataset: images (3, H, W) float in [0, 1] of one shape (or ``(image, label)`` pairs), e.g.
            :func:`~lucent_inhibit.sample_crops`, :class:`~lucent_inhibit.ImageFolder`, an (N, 3, H, W) tensor.
        feature: the :class:`~lucent_inhibit.Feature` (or ``(layer, unit)``); usually pre-activation.
        layers: attribution layer(s) before the feature layer; pick them close to the feature, where
            ``E = P - N`` tracks the activation (the scan measures this and warns when r is low).
        out: folder for checkpoints (:mod:`lucent_inhibit.scanning.store`): ``manifest.json`` and one
            ``chunk-*.npz`` result file per ``chunk_size`` images, written atomically as they complete; the
            finished folder loads with :meth:`ScanResult.load`.
        resume: reuse the complete chunks already in ``out`` (it must hold the same feature, layers,
            dataset, shard, batch and chunk size, else ``ValueError``). A chunk whose file is missing or
            does not match its recorded SHA-256 is recomputed with a warning. ``resume=False`` starts over.
        shard: ``(i, n)`` or ``"i/n"``: scan only the ``i``-th of ``n`` contiguous index ranges; combine
            the shards with :func:`merge_scans`. Under ``torchrun`` (``WORLD_SIZE > 1``) rank ``r`` of ``w``
            scans shard ``(r, w)`` itself: see :func:`lucent_inhibit.scanning.ranks.scan_ranks`.
        keep_maps: keep the (h, w) float16 maps of relu(S) and relu(-S) summed over channels.
        chunk_size: images per checkpoint chunk (rounded up to a multiple of ``batch_size``; default ~256).
        score: the tension score recorded in ``info`` (``SCAN_SCORES``; selections may use any later).
            ``"percentile"`` (default) ranks P and N within the scanned images and takes the smaller rank;
            it needs at least 10 images (a smaller unsharded scan warns; ``percentiles`` then raises).
        settings: the pass's :class:`~lucent_inhibit.core.settings.PassSettings`: images per
            forward/backward pass (one pass gives all layers), the model's input normalisation, the progress
            bar and the completeness threshold (warn when Pearson r(activation, E) at a layer is below it);
            None: the defaults.

    Returns:
        :class:`ScanResult`, rows sorted by dataset index.
    """
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise InputError(f"out must be a folder path (str or os.PathLike) or None, got {out!r:.60}")
    settings = as_pass_settings(settings)
    plan = functools.partial(make_plan, model, dataset, feature, layers, keep_maps=keep_maps, chunk_size=chunk_size,
                             score=score)
    if env_world_size() > 1:  # under torchrun: each rank scans its share (lucent_inhibit.scanning.ranks)
        from .ranks import scan_ranks

        return scan_ranks(plan, settings, out, resume, shard)
    return run_plan(plan(settings, shard), out, resume)
