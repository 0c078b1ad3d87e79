"""One scan, step by step (Hamblin et al. 2024; SPEC 2.2): the checked plan of a scan (its chunks of dataset
indices and what identifies it in a checkpoint folder) and the loop that attributes each chunk, reusing the
complete chunks of an interrupted run.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..attribution.attribute import Attribution
from ..attribution.passes import DatasetPass, dataset_pass
from ..attribution.totals import warn_small_percentile
from ..core.distributed import digest, shard_indices
from ..core.features import Feature, as_feature
from ..core.settings import PassSettings
from ..core.validate import check_choice, check_flag, parse_shard
from ..data.datasets import item_sources
from .result import DEFAULT_SCORE, SCAN_SCORES, ScanResult
from .stats import chunk_rows, completeness_r, concat_rows, measure_completeness, reducible
from .store import ChunkStore, chunk_images, new_manifest, split_chunks


# ---------------------------------- the scan, step by step -------------------------------------
@dataclass
class ScanPlan:
    """What one :func:`scan` call decided before reading any image."""

    run: DatasetPass
    feature: Feature
    keep_maps: bool
    shard: Tuple[int, int]
    chunks: List[np.ndarray]
    info: dict

    def empty(self) -> ScanResult:
        """A result with this scan's metadata and no rows."""
        z = np.zeros((0, len(self.run.layers), 2, 2), np.float32)
        return ScanResult(self.feature, list(self.run.layers), np.zeros(0, np.int64), z[:, 0, 0, 0], z, z,
                          np.zeros(0, str), dataset=self.run.name, dataset_size=self.run.size, info=self.info)

    def identity(self) -> dict:
        """The manifest entries that say which scan a checkpoint folder holds."""
        return {"feature": self.feature.to_dict(), "layers": list(self.run.layers), "dataset": self.run.name,
                "dataset_size": self.run.size, "shard": list(self.shard), "batch_size": self.run.batch_size,
                "chunk_size": self.info["chunk_size"], "keep_maps": self.keep_maps, "preprocess": self.run.preprocess,
                "image_shape": self.info.get("image_shape"), "info": self.info}


def make_plan(model, dataset, feature, layers, settings: Optional[PassSettings] = None, shard=None,
              keep_maps: bool = True, chunk_size: Optional[int] = None, score: str = DEFAULT_SCORE) -> ScanPlan:
    """The checked arguments of a :func:`~lucent_inhibit.scanning.run.scan` of shard ``shard`` (its chunks of
    dataset indices)."""
    feature = as_feature(feature)
    run = dataset_pass(model, dataset, layers, [feature], settings)
    keep_maps = check_flag("keep_maps", keep_maps)
    score = check_choice("score", score, SCAN_SCORES)
    shard = parse_shard(shard)
    size = chunk_images(run.batch_size, chunk_size)
    idx = shard_indices(run.size, shard)
    if idx.size == 0:
        raise ValueError(f"shard {shard[0]}/{shard[1]} of a {run.size}-image dataset is empty; use fewer shards")
    info = {"batch_size": run.batch_size, "chunk_size": size, "shard": list(shard), "score": score,
            "keep_maps": keep_maps, "method": "gradient_x_activation", "preprocess": run.preprocess,
            "precision": run.precision(), "model": digest(run.model)}  # a checkpoint of other weights is not resumed
    return ScanPlan(run, feature, keep_maps, shard, split_chunks(idx, size), info)


def _first_batch(plan: ScanPlan) -> Tuple[np.ndarray, Attribution]:
    """Attribute the shard's first batch, validating feature, layers and images before anything is written
    (attribution layers after the feature, a unit or position out of range raise here). Chunk 0 reuses it."""
    idx, images = next(plan.run.batches(plan.chunks[0][: plan.run.batch_size]))
    plan.info["image_shape"], att = list(images.shape[1:]), plan.run.attribute(images, plan.feature)
    return idx, reducible(att, plan.run.layers, plan.keep_maps, plan.feature.grid)  # fails before the manifest


def _scan_chunks(plan: ScanPlan, store: Optional[ChunkStore], done: Dict[int, ScanResult], first) -> List[ScanResult]:
    """Every chunk of the scan, reused from ``done`` or computed (and written to ``store``)."""
    total, initial = sum(c.size for c in plan.chunks), sum(len(p) for p in done.values())
    parts = []
    with plan.run.bar(total, f"scan {plan.feature.name}", initial) as bar:
        for c, idx in enumerate(plan.chunks):
            if c not in done:
                rows = chunk_rows(plan.run, plan.feature, idx, plan.keep_maps, tuple(plan.info["image_shape"]),
                                  first if c == 0 else None, bar)
                done[c] = dataclasses.replace(plan.empty(), **rows)
                if store is not None:
                    store.put(c, done[c])
            parts.append(done[c])
    return parts


def run_plan(plan: ScanPlan, out, resume, warn: bool = True) -> ScanResult:
    """Scan what ``plan`` says into ``out`` (see :func:`~lucent_inhibit.scanning.run.scan`); ``warn=False``
    (one rank's share of a distributed scan) records completeness without warning about it."""
    threshold = plan.run.threshold
    resume, store, done = check_flag("resume", resume), None, {}
    with plan.run.evaluating():
        first = _first_batch(plan)
        if out is not None:
            manifest = new_manifest(plan.identity(), len(plan.chunks))
            store, done = ChunkStore.open(os.fspath(out), manifest, ScanResult, plan.chunks, resume)
        result = concat_rows(_scan_chunks(plan, store, done, first), plan.empty())
        if result.source is None:  # chunks resumed from a folder written before sources were stored
            result.source = item_sources(plan.run.dataset, result.indices)
    result = measure_completeness(result, threshold) if warn else dataclasses.replace(
        result, completeness=completeness_r(result))
    if store is not None:
        store.finish(completeness=result.completeness)
    if warn and plan.shard[1] == 1:
        warn_small_percentile(plan.info["score"], len(result))
    return result
