"""Checkpoint folders: long work saved chunk by chunk, so that an interrupted run (any signal, SIGKILL
included) resumes where it stopped and ends equal to an uninterrupted run.

A checkpoint folder holds one result file per finished chunk (``chunk-000000.npz``, ..., each a
:class:`~lucent_inhibit.core.results.Result` written atomically) and ``manifest.json``: what the work is
(its *identity*: every setting that changes a chunk's content) and, for each finished chunk, its file, size
in bytes and SHA-256. The manifest is rewritten atomically after every chunk, so a killed run leaves only
complete, verifiable chunks listed. :class:`ChunkStore` writes such a folder; the scan's folders
(:mod:`lucent_inhibit.scanning.store`) are one kind, and :func:`checkpointed` gives any chunked loop (a
census over images, a sweep over pairs) the same resumability.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .io import JSONFileError, read_json, sha256, write_json
from .results import Result
from .validate import check_int

MANIFEST = "manifest.json"
#: The format of the folders :func:`checkpointed` writes (the scan's has its own, older name).
FORMAT = "lucent-inhibit-checkpoints/1"


class CheckpointError(ValueError):
    """A checkpoint folder (or its manifest or one of its chunks) cannot be read; the message names the file."""


class OtherWorkError(ValueError):
    """A checkpoint folder holds the chunks of other work (other arguments) than the run asked to resume."""


@dataclasses.dataclass
class ChunkArrays(Result):
    """One chunk of a :func:`checkpointed` loop: named arrays, and the items (image indices, pairs) it covers."""

    indices: np.ndarray
    arrays: Dict[str, np.ndarray]


def chunk_images(batch_size: int, chunk_size: Optional[int], default: int = 256) -> int:
    """Images per chunk: ``chunk_size`` (None: about ``default``) rounded up to a multiple of ``batch_size``,
    so every chunk but the last is a whole number of batches."""
    if chunk_size is None:
        chunk_size = max(1, default // batch_size) * batch_size
    chunk_size = check_int("chunk_size", chunk_size, low=1)
    return -(-chunk_size // batch_size) * batch_size


def split_chunks(indices: np.ndarray, chunk_size: int) -> List[np.ndarray]:
    """``indices`` cut into consecutive pieces of ``chunk_size`` (the last may be shorter)."""
    return [indices[s: s + chunk_size] for s in range(0, indices.size, chunk_size)]


def chunk_name(c: int) -> str:
    return f"chunk-{c:06d}.npz"


def is_temporary(name: str) -> bool:
    """Temporary files of a killed write: the manifest's (``.tmp-*``) and the result base's (``.*.tmp``)."""
    return name.startswith(".tmp-") or (name.startswith(".chunk-") and name.endswith(".tmp"))


def read_manifest(folder: str, fmt: str, kind: str, error=CheckpointError) -> dict:
    """The manifest of ``kind`` folder ``folder`` (format ``fmt``); ``error`` naming the file when the folder is
    not one, the manifest is not valid JSON or it is of another format."""
    if not os.path.isdir(folder):
        raise error(f"{folder!r} is not a {kind} folder (not a directory)")
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        raise error(f"{folder!r} is not a {kind} folder: it has no {MANIFEST} (expected a folder written "
                    f"by {kind}(..., out=...))")
    try:
        manifest = read_json(path)
    except (OSError, JSONFileError) as exc:
        raise error(f"the {kind} manifest {path!r} is corrupt or unreadable ({exc}); run {kind} again with "
                    "resume=False to start over") from None
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        held = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise error(f"{path!r} holds a manifest of format {held!r}, not a {kind} manifest ({fmt!r}); "
                    f"run {kind} again with resume=False to start over")
    return manifest


class ChunkStore:
    """A checkpoint folder being written: chunk files of ``result_type`` plus the manifest listing them.

    Create it with :meth:`open`; :meth:`put` writes one chunk, :meth:`finish` marks the work complete.
    ``kind`` names the work in messages ("scan", "census", ...); ``keys`` are the manifest entries that must
    agree before a folder's chunks are reused; ``error`` is the exception type of unreadable folders.
    """

    def __init__(self, folder: str, manifest: dict, result_type: type, kind: str = "scan",
                 keys: Sequence[str] = (), error=CheckpointError):
        self.folder, self.manifest, self.result_type = folder, manifest, result_type
        self.kind, self.keys, self.error = kind, tuple(keys), error

    @property
    def manifest_path(self) -> str:
        return os.path.join(self.folder, MANIFEST)

    def open(self, chunks: List[np.ndarray], resume: bool = True, other: str = "refuse") -> Dict[int, object]:
        """Prepare the folder for the work ``self.manifest`` describes, whose chunk ``c`` covers items
        ``chunks[c]``; returns the verified chunks ``{c: result}`` of a previous run of the same work.

        With ``resume`` and a manifest already there that describes other work: ``other="refuse"`` raises
        ``ValueError`` naming the entry that differs, ``"restart"`` warns and starts over. Chunks listed but
        not verifiable are recomputed after a warning. Without ``resume`` the folder's chunks are deleted."""
        if os.path.exists(self.folder) and not os.path.isdir(self.folder):
            raise ValueError(f"out {self.folder!r} exists and is not a folder; {self.kind} checkpoints need a folder")
        os.makedirs(self.folder, exist_ok=True)
        done: Dict[int, object] = {}
        if resume and os.path.exists(self.manifest_path):
            old = read_manifest(self.folder, self.manifest["format"], self.kind, self.error)
            differs = first_difference(old, self.manifest, self.keys)
            if differs is not None and other == "refuse":
                raise OtherWorkError(refusal(self.folder, self.kind, *differs))
            if differs is not None:
                warnings.warn(f"{self.folder!r} holds checkpoints of another {self.kind} (its {differs[0]} was "
                              f"{differs[1]!r}, now {differs[2]!r}); starting over")
                resume = False
            else:
                done = self._reuse(old, chunks)
        self._remove(lambda name: is_temporary(name) or (not resume and (name.startswith("chunk-")
                                                                         or name == MANIFEST)))
        write_json(self.manifest_path, self.manifest)
        return done

    def _remove(self, which: Callable[[str], bool]) -> None:
        for name in os.listdir(self.folder):
            if which(name):
                os.remove(os.path.join(self.folder, name))

    def _reuse(self, old: dict, chunks: List[np.ndarray]) -> Dict[int, object]:
        done = {}
        for key, entry in sorted(old.get("chunks", {}).items()):
            c = int(key)
            part, reason = self.verified(entry)
            if part is not None and (c >= len(chunks) or not np.array_equal(part.indices, chunks[c])):
                part, reason = None, f"its items are not the ones this {self.kind} expects there"
            if part is None:
                warnings.warn(f"{self.kind} chunk {c} in {self.folder!r} is not reusable: {reason}; recomputing it")
                continue
            done[c] = part
            self.manifest["chunks"][key] = entry
        return done

    def verified(self, entry: dict):
        """``(chunk, None)`` when the entry's file exists, matches its hash and loads; else ``(None, why)``."""
        path = os.path.join(self.folder, str(entry.get("file", "")))
        if not os.path.isfile(path):
            return None, f"its file {path!r} is missing"
        if os.path.getsize(path) != entry.get("bytes") or sha256(path) != entry.get("sha256"):
            return None, f"its file {path!r} does not match the SHA-256 recorded in the manifest (corrupt or partial)"
        try:
            return self.result_type.load(path), None
        except (ValueError, OSError, KeyError) as exc:
            return None, f"it cannot be read ({exc})"

    def put(self, c: int, part) -> None:
        """Write chunk ``c`` (atomically, by the result base) and record it in the manifest."""
        name = chunk_name(c)
        path = part.save(os.path.join(self.folder, name))
        self.manifest["chunks"][f"{c:06d}"] = {"file": name, "n": len(part.indices), "bytes": os.path.getsize(path),
                                              "sha256": sha256(path)}
        write_json(self.manifest_path, self.manifest)

    def finish(self, **entries) -> None:
        """Mark the work complete, adding ``entries`` to the manifest."""
        self.manifest.update(entries, complete=True)
        write_json(self.manifest_path, self.manifest)


def first_difference(old: dict, new: dict, keys: Sequence[str]) -> Optional[Tuple[str, object, object]]:
    """``(key, old value, new value)`` of the first of ``keys`` on which two manifests differ, or None."""
    for key in keys:
        if old.get(key) != new.get(key):
            return key, old.get(key), new.get(key)
    return None


def refusal(folder: str, kind: str, key: str, was, now) -> str:
    return (f"refusing to resume into {folder!r}: it holds a {kind} with a different {key} ({was!r}, this {kind}: "
            f"{now!r}); mixing them would give a result of two different runs. Use another out folder, or "
            "resume=False to overwrite it.")


def checkpointed(folder: Optional[str], kind: str, identity: dict, chunks: Sequence[np.ndarray],
                 compute: Callable[[int, np.ndarray], Dict[str, np.ndarray]], resume: bool = True,
                 skipped: Optional[Callable[[np.ndarray], None]] = None,
                 consume: Optional[Callable[[int, Dict[str, np.ndarray]], None]] = None
                 ) -> List[Dict[str, np.ndarray]]:
    """``[compute(c, chunks[c]) for each chunk c]``, each chunk saved in checkpoint folder ``folder`` as it
    finishes and reused from there by a rerun of the same work (same JSON ``identity``); a folder holding
    other work is started over, with a warning. ``folder=None``: nothing is saved.

    ``chunks[c]`` is an int64 array of the items chunk ``c`` covers (image indices, pair numbers);
    ``compute`` returns named arrays whose first axis runs over them; ``skipped(items)`` is called for each
    chunk reused from the folder (e.g. to advance a progress bar). With ``consume``, each chunk's arrays are
    handed to ``consume(c, arrays)`` in order and not kept (memory of one chunk); the list returned is empty."""
    chunks = [np.asarray(c, dtype=np.int64) for c in chunks]
    keep: list = []
    take = consume if consume is not None else lambda c, arrays: keep.append(arrays)  # noqa: E731
    if folder is None:
        for c, idx in enumerate(chunks):
            take(c, compute(c, idx))
        return keep
    manifest = dict(identity=identity, format=FORMAT, kind=kind, n_chunks=len(chunks), chunks={}, complete=False)
    store = ChunkStore(os.fspath(folder), manifest, ChunkArrays, kind, keys=("kind", "identity", "n_chunks"))
    done = store.open(chunks, resume, other="restart")
    for c, idx in enumerate(chunks):
        if c not in done:
            done[c] = ChunkArrays(idx, {k: np.asarray(v) for k, v in compute(c, idx).items()})
            store.put(c, done[c])
        elif skipped is not None:
            skipped(idx)
        take(c, done.pop(c).arrays)
    store.finish()
    return keep
