"""A dataset scan on several processes under ``torchrun`` (Hamblin et al. 2024, section 2; SPEC 2.2).

:func:`~lucent_inhibit.scanning.run.scan` hands over to :func:`scan_ranks` when ``WORLD_SIZE > 1``. Rank ``r``
of ``w`` scans shard ``(r, w)`` of the dataset (:func:`~lucent_inhibit.core.distributed.rank_indices`, the rule
of ``shard=``), checkpointing *per rank* into ``out/rank-r-of-w/`` (a shard folder of
:mod:`~lucent_inhibit.scanning.store`, resumed chunk by chunk exactly as a one-process scan resumes; start the
killed run again with the same command and the same number of processes). The ranks then exchange their
rows (:func:`~lucent_inhibit.core.distributed.all_gather`) and combine them with
:func:`~lucent_inhibit.scanning.merge.merge_scans`: every rank returns the same :class:`ScanResult`, equal to
the one-process scan's, and rank 0 alone writes ``out`` in the one-process layout (the same chunks,
manifest and completeness), so ``ScanResult.load(out)`` reads it as it reads a one-process scan. The
per-rank folders stay beside it: they make a rerun reuse every chunk (delete them once ``out`` is
complete to save the space of a second copy).
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Callable

import numpy as np

from ..attribution.totals import warn_small_percentile
from ..core.distributed import agree, all_gather, decode_result, encode_result, init_from_env, rank_indices
from ..core.settings import PassSettings
from ..core.validate import InputError
from ..data.datasets import dataset_digest
from .merge import merge_scans
from .plan import ScanPlan, run_plan
from .result import ScanResult
from .stats import concat_rows
from .store import ChunkStore, check_resumable, new_manifest, split_chunks


def scan_ranks(plan_for: Callable[..., ScanPlan], settings: PassSettings, out, resume, shard) -> ScanResult:
    """This rank's part of a distributed :func:`~lucent_inhibit.scanning.run.scan`: ``plan_for(settings,
    shard)`` makes the checked plan of the scan's arguments (:func:`~lucent_inhibit.scanning.plan.make_plan`;
    the progress bar is rank 0's only); returns the whole scan on every rank. Every rank raises the same error
    when the ranks disagree on the arguments or the dataset, when the world is larger than the dataset,
    or when one rank fails."""
    rank, world = init_from_env()

    def setup():
        if shard is not None:
            raise InputError(f"shard={shard!r} under torchrun ({world} processes): torchrun already splits the "
                             "dataset across the ranks; use one or the other (shard= for job arrays of one-process "
                             "scans)")
        plan = plan_for(settings.replace(progress=settings.progress and rank == 0), None)
        if out is not None and rank == 0 and resume is True:
            check_resumable(os.fspath(out), plan.identity())
        # out as a real path: rank 0 writes through its staging folder's link to the same folder (app.staging)
        fingerprint = dict(plan.identity(), score=plan.info["score"], resume=resume,
                           out=out and os.path.realpath(os.fspath(out)),
                           threshold=settings.completeness_threshold, images=dataset_digest(plan.run.dataset))
        return plan, fingerprint

    whole = agree("scan", setup)
    idx = rank_indices(whole.run.size, rank, world)
    mine = dataclasses.replace(whole, shard=(rank, world), chunks=split_chunks(idx, whole.info["chunk_size"]),
                               info=dict(whole.info, shard=[rank, world]))
    where = None if out is None else os.path.join(os.fspath(out), f"rank-{rank}-of-{world}")
    parts = all_gather(lambda: encode_result(run_plan(mine, where, resume, warn=False)))
    parts = [decode_result(ScanResult, p) for p in parts]
    with warnings.catch_warnings():
        if rank:
            warnings.simplefilter("ignore")  # rank 0 says it once
        result = merge_scans(parts, settings=settings)
        warn_small_percentile(whole.info["score"], len(result))
    whole.info["image_shape"] = parts[0].info["image_shape"]
    result.info = dict(whole.info)
    all_gather(lambda: write_folder(whole, result, os.fspath(out)) if rank == 0 and out is not None else None)
    return result


def write_folder(plan: ScanPlan, result: ScanResult, out: str) -> None:
    """Write ``result`` (the whole scan) to ``out`` as the one-process scan ``plan`` writes it: its chunks,
    its manifest, marked complete with the result's completeness."""
    store, _ = ChunkStore.open(out, new_manifest(plan.identity(), len(plan.chunks)), ScanResult, plan.chunks,
                               resume=False)
    for c, idx in enumerate(plan.chunks):  # rows are dataset indices 0..n-1 in order: chunk c is a slice
        rows = slice(int(idx[0]), int(idx[-1]) + 1)
        part = dataclasses.replace(result, indices=result.indices[rows], activation=result.activation[rows],
                                   pos=result.pos[rows], neg=result.neg[rows],
                                   items=np.asarray(result.items[rows].tolist(), dtype=str),
                                   source=None if result.source is None else
                                   np.asarray(result.source[rows].tolist(), dtype=str),
                                   pos_maps={l: m[rows] for l, m in result.pos_maps.items()},
                                   neg_maps={l: m[rows] for l, m in result.neg_maps.items()})
        store.put(c, concat_rows([part], plan.empty()))
    store.finish(completeness=result.completeness)
