"""Output folders: which files a stage owns, and the checks that keep the user's files untouched.

Every output folder that lucent-inhibit writes holds a small manifest, :data:`MANIFEST`, naming the
files lucent-inhibit wrote there (and which stage wrote each). The rules:

* ``--out`` that is an existing file, lies under a file, or cannot be written is refused before any
  work starts (:func:`check_target`); so is an output folder equal to, inside, or containing an input
  image folder.
* A stage writes a fixed set of named files: its module's ``OUTPUTS`` (glob patterns; a trailing ``/``
  names a folder). It adds them beside whatever else the folder holds, overwrites only
  files the manifest says lucent-inhibit wrote, and refuses (before any work) a folder where a file of
  one of its names was put by someone else (:func:`check_stage_folder`). A stage with no declared files
  needs an empty folder or one that holds only lucent-inhibit's files.
* A report folder may replace only a missing or empty folder or a previous report whose manifest lists
  every file it holds (:func:`check_report_target`).

How the files get there (staged, then moved in whole; interrupts) is :mod:`lucent_inhibit.app.staging`.
"""
from __future__ import annotations

import fnmatch
import json
import os
import tempfile
from typing import Dict, Iterable, Iterator, Optional, Sequence

from ..core.io import JSONFileError, read_json, write_json
from ..core.validate import InputError

#: The manifest in every output folder: ``{"format", "version", "kind", "files": {relative path: writer}}``.
MANIFEST = ".lucent-inhibit.json"
_FORMAT, _VERSION = "lucent-inhibit-outputs", 1

#: The files (glob patterns; a trailing ``/`` marks a folder) each registered stage writes into ``--out``.
#: Prefix of a report's temporary build folder (beside the target).
TEMP_PREFIX = ".partial-"
#: Prefix of a stage's staging folder inside its output folder (:mod:`lucent_inhibit.app.staging`).
STAGING_PREFIX = ".staging-"


class OutputError(InputError):
    """An output folder that cannot be used as asked (nothing was written or moved)."""


# ------------------------------------------------------------------------------------------------
# checks before any work
# ------------------------------------------------------------------------------------------------
def _within(a: str, b: str) -> bool:
    """Whether path ``a`` is ``b`` or lies inside it (both absolute and resolved)."""
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep)


def check_target(out: str, inputs: Iterable[Optional[str]] = (), option: str = "--out") -> str:
    """``out`` as an absolute path, or :class:`OutputError` when it cannot be an output folder.

    Refused: an existing file; a path under a file; a folder (or the nearest existing parent of a new
    one) that cannot be written; a folder equal to, inside, or containing one of the ``inputs`` folders.
    """
    if not isinstance(out, (str, os.PathLike)) or not str(out):
        raise OutputError(f"{option} must be a folder path, got {out!r}")
    path = os.path.realpath(os.path.abspath(os.fspath(out)))
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputError(f"{option} {out!r} is an existing file, not a folder; choose a folder path")
    for given in inputs:
        if given is None:
            continue
        src = os.path.realpath(os.path.abspath(os.fspath(given)))
        if _within(path, src) or _within(src, path):
            where = "is" if path == src else "is inside" if _within(path, src) else "contains"
            raise OutputError(f"{option} {out!r} {where} the input image folder {given!r}; write the outputs "
                              "somewhere else so that no input can be overwritten")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise OutputError(f"{option} {out!r} lies under {parent!r}, which is a file, not a folder")
    if not _writable(parent):
        raise OutputError(f"{option} {out!r}: folder {parent!r} is not writable")
    return path


def _writable(folder: str) -> bool:
    """Whether a file can be created in ``folder`` (tried: permission bits do not bind root)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        fd, probe = tempfile.mkstemp(prefix=".lucent-inhibit-probe-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.remove(probe)
    return True


# ------------------------------------------------------------------------------------------------
# the manifest
# ------------------------------------------------------------------------------------------------
def read_manifest(folder: str) -> Dict[str, str]:
    """``{relative path: writer}`` of the files lucent-inhibit wrote in ``folder`` ({} when none)."""
    try:
        data = read_json(os.path.join(folder, MANIFEST))
    except (OSError, JSONFileError):  # none, or unreadable: then nothing in the folder counts as ours
        return {}
    if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("files"), dict):
        return {}
    return {str(k): str(v) for k, v in data["files"].items()}


def write_manifest(folder: str, files: Dict[str, str], kind: str = "stages") -> None:
    """Write ``folder``'s manifest atomically (:func:`~lucent_inhibit.core.io.write_json`)."""
    write_json(os.path.join(folder, MANIFEST),
               {"format": _FORMAT, "version": _VERSION, "kind": kind, "files": dict(sorted(files.items()))})


def entries(folder: str) -> Dict[str, bool]:
    """Top-level entries of ``folder`` (name -> is a folder), the manifest and temporary files aside."""
    if not os.path.isdir(folder):
        return {}
    return {n: os.path.isdir(os.path.join(folder, n)) for n in os.listdir(folder)
            if n != MANIFEST and not n.startswith((".tmp-", ".lucent-inhibit-probe-", STAGING_PREFIX))}


def _owned(name: str, is_dir: bool, patterns: Sequence[str]) -> bool:
    for p in patterns:
        if p.endswith("/") == is_dir and fnmatch.fnmatchcase(name, p.rstrip("/")):
            return True
    return False


def stage_files(stage) -> Optional[Sequence[str]]:
    """The file patterns ``stage`` (a registered :class:`~lucent_inhibit.app.stages.Stage`) writes, or None."""
    import sys

    declared = getattr(sys.modules.get(getattr(stage.run, "__module__", ""), None), "OUTPUTS", None)
    return tuple(declared) if declared is not None else None


# ------------------------------------------------------------------------------------------------
# a stage's output folder
# ------------------------------------------------------------------------------------------------
def check_stage_folder(out: str, stage: str, patterns: Optional[Sequence[str]], inputs=()) -> str:
    """:func:`check_target`, then :class:`OutputError` when writing ``stage``'s files into ``out``
    would overwrite something lucent-inhibit did not write there. Returns the absolute path."""
    path = check_target(out, inputs)
    ours, held = read_manifest(path), entries(path)
    if patterns is None:
        foreign = sorted(n for n in held if n not in ours)
        if foreign:
            raise OutputError(f"--out {out!r} already holds files lucent-inhibit did not write ({_few(foreign)}); "
                              f"stage {stage} needs an empty folder or one of its own")
        return path
    clash = sorted(n for n, d in held.items() if _owned(n, d, patterns) and n not in ours)
    if clash:
        raise OutputError(f"--out {out!r} already holds {_few(clash)}, not written by lucent-inhibit; stage {stage} "
                          "would overwrite it: move it or choose another --out")
    return path


def _few(names: Sequence[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def record_files(path: str, stage: str, patterns, before: Dict[str, bool]) -> None:
    """Update ``path``'s manifest after ``stage`` ran: its new files (or, with declared ``patterns``, the
    entries matching them that are new or were already ours) are recorded as its; vanished entries dropped."""
    ours = read_manifest(path)
    now = entries(path)
    if patterns is None:
        mine = {n for n in now if n not in before}
    else:
        mine = {n for n, d in now.items() if _owned(n, d, patterns) and (n not in before or n in ours)}
    files = {n: w for n, w in ours.items() if n in now}
    files.update({n: stage for n in mine})
    if files != ours or (files and not os.path.exists(os.path.join(path, MANIFEST))):
        write_manifest(path, files)


# ------------------------------------------------------------------------------------------------
# a report folder
# ------------------------------------------------------------------------------------------------
def check_report_target(out: str, inputs=()) -> str:
    """:func:`check_target`; then :class:`OutputError` unless ``out`` is missing, empty, or a previous
    report whose manifest lists every file it holds (so replacing it deletes nothing of the user's)."""
    path = check_target(out, inputs)
    if not os.path.isdir(path) or not os.listdir(path):
        return path
    listed = read_manifest(path) if _kind(path) == "report" else None
    if listed is None:
        raise OutputError(f"--out {out!r} is a folder that holds files and is not a previous lucent-inhibit report; "
                          "the report needs a new or empty folder (or one of its own previous reports)")
    extra = sorted(set(all_files(path)) - set(listed))
    if extra:
        raise OutputError(f"--out {out!r} is a previous report but also holds files it did not write "
                          f"({_few(extra)}); move them or choose another --out")
    return path


def _kind(folder: str) -> Optional[str]:
    try:
        with open(os.path.join(folder, MANIFEST)) as f:
            return json.load(f).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def all_files(folder: str) -> Iterator[str]:
    for root, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            rel = os.path.relpath(os.path.join(root, name), folder)
            if rel != MANIFEST:
                yield rel.replace(os.sep, "/")
