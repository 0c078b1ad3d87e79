"""Output folders: a stage writes only the files it owns, and nothing of the user's is moved or deleted.

Every output folder that lucent-inhibit writes holds a small manifest, :data:`MANIFEST`, naming the
files lucent-inhibit wrote there (and which stage wrote each). The rules:

* ``--out`` that is an existing file, lies under a file, or cannot be written is refused before any
  work starts (:func:`check_target`); so is an output folder equal to, inside, or containing an input
  image folder.
* A stage writes a fixed set of named files: its module's ``OUTPUTS`` (glob patterns; a trailing ``/``
  names a folder). It adds them beside whatever else the folder holds, overwrites only
  files the manifest says lucent-inhibit wrote, and refuses (before any work) a folder where a file of
  one of its names was put by someone else (:func:`stage_output`). A stage with no declared files
  needs an empty folder or one that holds only lucent-inhibit's files.
* A report (:class:`StagingDir`) is built in a temporary folder beside its target and swapped in
  atomically, only where the target is missing, empty, or a previous report whose manifest lists
  every file it holds.
* SIGTERM and Ctrl-C inside these blocks raise :class:`Interrupted` (a ``KeyboardInterrupt``) in the
  main thread, so that the cleanup of temporary files and folders runs as it does for Ctrl-C; an
  interrupt that some library swallowed is raised again when the block ends, before a report is swapped in.
"""
from __future__ import annotations

import contextlib
import ctypes
import fnmatch
import json
import os
import shutil
import signal
import tempfile
import threading
from typing import Dict, Iterable, Iterator, Optional, Sequence

from ..core.io import JSONFileError, read_json, write_json
from ..core.validate import InputError

#: The manifest in every output folder: ``{"format", "version", "kind", "files": {relative path: writer}}``.
MANIFEST = ".lucent-inhibit.json"
_FORMAT, _VERSION = "lucent-inhibit-outputs", 1

#: The files (glob patterns; a trailing ``/`` marks a folder) each registered stage writes into ``--out``.
#: Prefix of a report's temporary build folder (beside the target).
TEMP_PREFIX = ".partial-"


class OutputError(InputError):
    """An output folder that cannot be used as asked (nothing was written or moved)."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM (or SIGINT) received inside an output block; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


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


def _entries(folder: str) -> Dict[str, bool]:
    """Top-level entries of ``folder`` (name -> is a folder), the manifest and temporary files aside."""
    if not os.path.isdir(folder):
        return {}
    return {n: os.path.isdir(os.path.join(folder, n)) for n in os.listdir(folder)
            if n != MANIFEST and not n.startswith((".tmp-", ".lucent-inhibit-probe-"))}


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
    ours, entries = read_manifest(path), _entries(path)
    if patterns is None:
        foreign = sorted(n for n in entries if n not in ours)
        if foreign:
            raise OutputError(f"--out {out!r} already holds files lucent-inhibit did not write ({_few(foreign)}); "
                              f"stage {stage} needs an empty folder or one of its own")
        return path
    clash = sorted(n for n, d in entries.items() if _owned(n, d, patterns) and n not in ours)
    if clash:
        raise OutputError(f"--out {out!r} already holds {_few(clash)}, not written by lucent-inhibit; stage {stage} "
                          "would overwrite it: move it or choose another --out")
    return path


def _few(names: Sequence[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


@contextlib.contextmanager
def stage_output(out: str, stage: str, patterns: Optional[Sequence[str]], inputs=(), record: bool = True
                 ) -> Iterator[str]:
    """Check ``out`` for ``stage`` (:func:`check_stage_folder`) before the block; after it, also when it
    raises, record the stage's files in the manifest (unless ``record`` is False: the other ranks of a
    torchrun job, whose files rank 0 records). A folder the block created and left empty is removed.
    SIGTERM or Ctrl-C inside the block raises :class:`Interrupted` (:func:`terminate_raises`)."""
    path = check_stage_folder(out, stage, patterns, inputs)
    existed, before = os.path.isdir(path), _entries(path)
    try:
        with terminate_raises():
            yield path
    finally:
        if record and os.path.isdir(path):
            if not existed and not os.listdir(path):
                os.rmdir(path)
            else:
                _record(path, stage, patterns, before)


def _record(path: str, stage: str, patterns, before: Dict[str, bool]) -> None:
    ours = read_manifest(path)
    now = _entries(path)
    if patterns is None:
        mine = {n for n in now if n not in before}
    else:
        mine = {n for n, d in now.items() if _owned(n, d, patterns) and (n not in before or n in ours)}
    files = {n: w for n, w in ours.items() if n in now}
    files.update({n: stage for n in mine})
    if files != ours or (files and not os.path.exists(os.path.join(path, MANIFEST))):
        write_manifest(path, files)


# ------------------------------------------------------------------------------------------------
# signals
# ------------------------------------------------------------------------------------------------
#: The signal received inside the outermost :func:`terminate_raises` block, if any (see there).
_received: Dict[str, Optional[int]] = {"signum": None}


def _raise(signum, frame):
    _received["signum"] = signum
    raise Interrupted(signum)


def raise_if_interrupted() -> None:
    """Raise :class:`Interrupted` if SIGINT or SIGTERM arrived inside the current :func:`terminate_raises`
    block, even where the ``KeyboardInterrupt`` it raised was swallowed on the way (an interrupt that lands
    in a ``__del__`` or a weakref callback is only printed by Python; some libraries catch it)."""
    if _received["signum"] is not None:
        raise Interrupted(_received["signum"])


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """Inside the block SIGTERM and Ctrl-C raise :class:`Interrupted` (only in the main thread, and only
    where no handler of the program's own is installed), so ``finally`` clauses run as for Ctrl-C.

    The signal is also remembered: a block that ends normally after one arrived raises
    :class:`Interrupted` at its end (:func:`raise_if_interrupted`), so a run whose interrupt was swallowed
    somewhere still stops instead of finishing as if nothing had happened."""
    main = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) if main else None for s in (signal.SIGTERM, signal.SIGINT)}
    ours = {s for s, h in handlers.items() if main and h in (signal.SIG_DFL, signal.default_int_handler, None)}
    if ours:
        _received["signum"] = None
    for s in ours:
        signal.signal(s, _raise)
    try:
        yield
        raise_if_interrupted()
    finally:
        for s in ours:
            signal.signal(s, handlers[s])
        if ours:
            _received["signum"] = None


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
    extra = sorted(set(_all_files(path)) - set(listed))
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


def _all_files(folder: str) -> Iterator[str]:
    for root, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            rel = os.path.relpath(os.path.join(root, name), folder)
            if rel != MANIFEST:
                yield rel.replace(os.sep, "/")


class StagingDir:
    """Build a report in a temporary folder beside ``out``; swap it onto ``out`` only on success.

    ``out`` is checked on entry (:func:`check_report_target`, with ``inputs`` the input folders) and
    again just before the swap. On failure or interruption (Ctrl-C, SIGTERM) the temporary folder is
    removed and ``out`` is left as it was. The finished report carries a manifest of every file in it,
    which is what lets a later run replace it.
    """

    def __init__(self, out: str, inputs: Iterable[Optional[str]] = ()):
        self.given, self.inputs = out, tuple(inputs)
        self.out = os.path.realpath(os.path.abspath(out))
        self.tmp: Optional[str] = None
        self._signals = terminate_raises()

    def __enter__(self) -> str:
        check_report_target(self.given, self.inputs)
        parent = os.path.dirname(self.out)
        os.makedirs(parent, exist_ok=True)
        self._signals.__enter__()
        try:
            self.tmp = tempfile.mkdtemp(prefix=TEMP_PREFIX + os.path.basename(self.out) + "-", dir=parent)
        except BaseException:
            self._signals.__exit__(None, None, None)
            raise
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                write_manifest(self.tmp, {f: "report" for f in _all_files(self.tmp)}, kind="report")
                check_report_target(self.given, self.inputs)
                raise_if_interrupted()
                _swap_in(self.tmp, self.out)
        finally:
            if self.tmp is not None and os.path.exists(self.tmp):
                shutil.rmtree(self.tmp, ignore_errors=True)
            self._signals.__exit__(None, None, None)
        return False


def _swap_in(new: str, out: str) -> None:
    """Put folder ``new`` at ``out``: a rename when ``out`` is missing or empty, else an atomic exchange
    (Linux ``renameat2(RENAME_EXCHANGE)``; elsewhere two renames) after which ``new`` holds the old report."""
    if os.path.isdir(out) and not os.listdir(out):
        os.rmdir(out)
    if not os.path.exists(out):
        os.replace(new, out)
        return
    if not _exchange(new, out):
        old = new + ".old"
        os.replace(out, old)
        os.replace(new, out)
        os.replace(old, new)


def _exchange(a: str, b: str) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
