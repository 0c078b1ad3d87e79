"""The scan's chunk store: a folder of result chunks and a JSON manifest that make a scan resumable.

A long dataset scan (Hamblin et al. 2024, section 2; :func:`lucent_inhibit.scanning.run.scan`) writes its rows
as they complete, one result file per chunk of images (``chunk-000000.npz``, ..., each a
:class:`~lucent_inhibit.core.results.Result` file written atomically by the result base), and a manifest
``manifest.json`` recording what the scan is (feature, layers, dataset, shard, batch and chunk size)
and, for every finished chunk, its file, its size in bytes and its SHA-256. The manifest is rewritten
atomically (temporary file, ``fsync``, rename) after every chunk, so a killed scan leaves a folder
whose manifest lists only complete, verifiable chunks:

- :meth:`ChunkStore.open` resumes: it refuses a folder holding a *different* scan, reuses every chunk
  whose file still matches its recorded hash and indices, and warns about (and recomputes) the rest;
- :func:`load_chunks` reads a finished folder back, with an error naming the file when the manifest is
  corrupt, a chunk is missing or truncated, or the folder is not a scan at all;
- :func:`parse_shard` / :func:`shard_indices` split a dataset into ``n`` contiguous shards, so one scan
  can run on many machines (each shard in its own folder) and be merged afterwards.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..core import checkpoints
from ..core.checkpoints import (MANIFEST, CheckpointError, OtherWorkError, chunk_name, first_difference,  # noqa: F401
                                refusal, split_chunks)
from ..core.checkpoints import chunk_images as _chunk_images

FORMAT = "lucent-inhibit-scan/2"
#: Manifest entries that must agree before a folder's chunks may be reused by a new scan call.
IDENTITY_KEYS = ("feature", "layers", "dataset", "dataset_size", "shard", "batch_size", "chunk_size", "keep_maps",
                 "preprocess")
DEFAULT_CHUNK_IMAGES = 256


def chunk_images(batch_size: int, chunk_size: Optional[int]) -> int:
    """Images per scan chunk: ``chunk_size`` (default about :data:`DEFAULT_CHUNK_IMAGES`) rounded up to whole
    batches (:func:`lucent_inhibit.core.checkpoints.chunk_images`)."""
    return _chunk_images(batch_size, chunk_size, DEFAULT_CHUNK_IMAGES)


class ScanFolderError(CheckpointError):
    """A scan folder (or its manifest or one of its chunks) cannot be read; the message names the file."""


def stage_scan_file(path):
    """``path``, or ``path/scan.npz`` when ``path`` is a folder with no scan manifest that holds one (the
    output folder of the ``scan`` stage, which writes its result file there)."""
    folder = os.fspath(path)
    inside = os.path.join(folder, "scan.npz")
    if os.path.isdir(folder) and not os.path.exists(os.path.join(folder, MANIFEST)) and os.path.isfile(inside):
        return inside
    return path


def read_scan_manifest(folder: str) -> dict:
    """The manifest of scan folder ``folder``; :class:`ScanFolderError` naming the file when the folder is
    not a scan, the manifest is not valid JSON or it is of another format."""
    return checkpoints.read_manifest(folder, FORMAT, "scan", ScanFolderError)


def new_manifest(identity: dict, n_chunks: int) -> dict:
    """A manifest for a scan described by ``identity`` (it holds at least :data:`IDENTITY_KEYS`)."""
    missing = [k for k in IDENTITY_KEYS if k not in identity]
    if missing:
        raise ValueError(f"a scan manifest needs the identity entries {missing}")
    return dict(identity, format=FORMAT, n_chunks=int(n_chunks), chunks={}, complete=False)


# ------------------------------------------------------------------------------------------------
# the store
# ------------------------------------------------------------------------------------------------
class ChunkStore(checkpoints.ChunkStore):
    """A scan folder being written (:class:`lucent_inhibit.core.checkpoints.ChunkStore` of scan chunks)."""

    def __init__(self, folder: str, manifest: dict, result_type: type):
        super().__init__(folder, manifest, result_type, "scan", IDENTITY_KEYS, ScanFolderError)

    @classmethod
    def open(cls, folder: str, manifest: dict, result_type: type, chunks: List[np.ndarray],
             resume: bool = True) -> Tuple["ChunkStore", Dict[int, object]]:
        """Prepare ``folder`` for the scan that ``manifest`` describes, whose chunk ``c`` holds the rows of
        dataset indices ``chunks[c]``.

        With ``resume`` and a manifest already there, it must describe the same scan (else ``ValueError``
        naming the entry that differs); its verified chunks are returned as ``{c: result}`` and every
        other listed chunk is recomputed after a warning. Without ``resume`` the folder's chunks and
        manifest are deleted first. Returns ``(store, reused chunks)``.
        """
        store = cls(os.fspath(folder), manifest, result_type)
        if resume:
            check_resumable(store.folder, manifest)
        return store, checkpoints.ChunkStore.open(store, chunks, resume)


def _check_same_scan(path: str, old: dict, new: dict) -> None:
    precision = lambda m: m.get("info", {}).get("precision", "float32")  # noqa: E731 (older folders: float32)
    model = lambda m: m.get("info", {}).get("model")  # noqa: E731 (the weights' digest; older folders: none)
    differs = first_difference(old, new, IDENTITY_KEYS) or first_difference(
        {"precision": precision(old)}, {"precision": precision(new)}, ["precision"]) or (
        first_difference({"model": model(old)}, {"model": model(new)}, ["model"]) if model(old) else None)
    if differs is not None:
        raise OtherWorkError(refusal(os.path.dirname(path), "scan", *differs))


def load_chunks(folder: str, result_type: type) -> Tuple[dict, list]:
    """``(manifest, chunks in order)`` of a *finished* scan folder; ``ValueError`` naming the file when the
    folder is not a scan, is incomplete, or a chunk is missing, truncated or corrupt."""
    manifest = read_scan_manifest(folder)
    entries = manifest.get("chunks", {})
    if not manifest.get("complete"):
        raise ScanFolderError(
            f"scan folder {folder!r} is incomplete ({len(entries)} of {manifest.get('n_chunks')} chunks); "
            "run scan(..., out=...) again with the same arguments to resume it"
        )
    if len(entries) != manifest.get("n_chunks") or not entries:
        raise ScanFolderError(f"{os.path.join(folder, MANIFEST)!r} lists {len(entries)} chunks but the scan has "
                              f"{manifest.get('n_chunks')}; scan again with the same arguments to repair it")
    store, parts = ChunkStore(folder, manifest, result_type), []
    for key in sorted(entries):
        part, reason = store.verified(entries[key])
        if part is None:
            raise ScanFolderError(f"chunk {int(key)} of scan folder {folder!r} is unusable: {reason}; run "
                                  "scan(..., out=...) again with the same arguments to recompute it")
        parts.append(part)
    return manifest, parts


def check_resumable(folder: str, identity: dict) -> None:
    """``ValueError`` (that of :meth:`ChunkStore.open`) when ``folder`` holds the manifest of a scan other
    than the one ``identity`` describes; nothing when it holds none or the same scan."""
    path = os.path.join(folder, MANIFEST)
    if os.path.isfile(path):
        _check_same_scan(path, read_scan_manifest(folder), identity)
