"""A stage's outputs appear whole or not at all: the one rule every stage's files follow.

A stage run by :func:`~lucent_inhibit.app.runtime.run_stage` writes its files into a staging folder inside
its output folder (``OUT/.staging-<stage>``), never under their final names. When the stage returns, its
files are moved into ``OUT`` with SIGINT and SIGTERM held back (:func:`~lucent_inhibit.core.interrupts.
signals_deferred`), replacing the previous ones; when it fails or is interrupted (any signal, a full disk,
an exception) the staging folder is deleted and ``OUT`` holds exactly what it held before.

Resumable work is the one exception: a stage's *work folders* (its module's ``work(cfg)``: the scan's
checkpoint folder, the census's, ...) are written in ``OUT`` directly, chunk by chunk, each chunk atomically.
They are recorded in ``OUT``'s manifest before the stage starts, so that after a SIGKILL the same command
finds its own checkpoints and resumes. Inside the staging folder each work folder is a symbolic link to the
real one, so a stage reads and writes both through one path (``cfg.out``). Work folders named in the
module's ``TRANSIENT`` are removed once the finished output is in place.

The staging folder holds a ``pid`` file: a second run of a stage into the same folder while the first one
is alive is refused; a staging folder left by a killed run is deleted.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import sys
import tempfile
from typing import Callable, Dict, Iterable, Iterator, Optional, Sequence

from ..core.interrupts import raise_if_interrupted, signals_deferred, terminate_raises
from .outputs import (MANIFEST, STAGING_PREFIX, TEMP_PREFIX, OutputError, all_files, check_report_target,
                      check_stage_folder, check_target, entries, read_manifest, record_files, write_manifest)

_PID = "pid"


def stage_module(stage):
    return sys.modules.get(getattr(stage.run, "__module__", ""), None)


def work_folders(stage, cfg) -> Sequence[str]:
    """The work folders (names inside ``cfg.out``) a registered stage writes directly for ``cfg``."""
    work = getattr(stage_module(stage), "work", None)
    return tuple(work(cfg)) if work is not None else ()


def transient_folders(stage) -> Sequence[str]:
    """Work folders of ``stage`` removed once its finished output is in place (glob-free names)."""
    return tuple(getattr(stage_module(stage), "TRANSIENT", ()))


@contextlib.contextmanager
def stage_output(out: str, stage: str, patterns: Optional[Sequence[str]], inputs=(), record: bool = True,
                 work: Sequence[str] = (), transient: Sequence[str] = ()) -> Iterator[str]:
    """Yield the folder ``stage`` writes its files into; move them into ``out`` when the block ends normally.

    Before the block: ``out`` is checked (:func:`~lucent_inhibit.app.outputs.check_stage_folder`), its
    ``work`` folders are created and recorded as ``stage``'s, and the staging folder is made. After it, also
    when it raises, the manifest lists what ``stage`` wrote. ``record=False`` (the other ranks of a torchrun
    job, which write work folders only): the block gets ``out`` itself and nothing is staged or recorded.
    SIGTERM or Ctrl-C inside the block raises :class:`~lucent_inhibit.core.interrupts.Interrupted`.

    Under torchrun (``WORLD_SIZE`` > 1) the recording rank checks ``out`` and claims the work folders while the
    other ranks wait for it (:func:`_rank0_first`): no rank reads the folder while another one writes it, and
    when the check refuses, every rank stops with that message."""
    if not record:
        _rank0_first(lambda: None)
        with terminate_raises():
            yield check_target(out, inputs)
        return
    found = {}

    def claim():
        found["path"] = path = check_stage_folder(out, stage, patterns, inputs)
        found["existed"], found["before"] = os.path.isdir(path), entries(path)
        found["made"] = _claim_work(path, stage, work)

    _rank0_first(claim)
    path, existed, before, made = found["path"], found["existed"], found["before"], found["made"]
    staging = None
    try:
        with terminate_raises():
            staging = _make_staging(path, stage, work)
            yield staging
            raise_if_interrupted()
            with signals_deferred():
                _move_in(staging, path)
                record_files(path, stage, patterns, before)
                _remove(path, [w for w in transient if w in work])
    finally:
        if staging is not None and os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)
        _tidy(path, stage, patterns, before, existed, made)


def _rank0_first(claim: Callable[[], None]) -> None:
    """``claim()``; under torchrun every rank calls this, and while rank 0 runs its ``claim`` the others wait
    (:func:`~lucent_inhibit.core.distributed.all_gather`: an error of rank 0 is raised on every rank)."""
    from ..core.distributed import all_gather, env_world_size, init_from_env

    if env_world_size() > 1 and init_from_env()[1] > 1:
        all_gather(claim)
    else:
        claim()


def _claim_work(path: str, stage: str, work: Sequence[str]) -> Sequence[str]:
    """Create ``stage``'s work folders in ``path`` and record them in its manifest before any checkpoint is
    written (a SIGKILL'd run then leaves folders a rerun recognises as its own). Returns the ones created."""
    if not work:
        return ()
    os.makedirs(path, exist_ok=True)
    made = [w for w in work if not os.path.isdir(os.path.join(path, w))]
    for w in work:
        os.makedirs(os.path.join(path, w), exist_ok=True)
    ours = read_manifest(path)
    if any(ours.get(w) != stage for w in work):
        write_manifest(path, {**ours, **{w: stage for w in work}})
    return made


def _make_staging(path: str, stage: str, work: Sequence[str]) -> str:
    """``path/.staging-<stage>``, fresh, with a link to each work folder; :class:`OutputError` while another
    live process stages the same stage there."""
    os.makedirs(path, exist_ok=True)
    staging = os.path.join(path, STAGING_PREFIX + stage)
    if os.path.lexists(staging):
        other = _owner(staging)
        if other is not None and other != os.getpid() and _alive(other):
            raise OutputError(f"--out {path!r}: another lucent-inhibit run (pid {other}) is writing stage {stage} "
                              "there; wait for it to end or choose another --out")
        shutil.rmtree(staging, ignore_errors=True)
    os.mkdir(staging)
    with open(os.path.join(staging, _PID), "w") as f:
        f.write(str(os.getpid()))
    for w in work:
        os.symlink(os.path.join(os.pardir, w), os.path.join(staging, w))
    return staging


def _owner(staging: str) -> Optional[int]:
    try:
        with open(os.path.join(staging, _PID)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _move_in(staging: str, path: str) -> None:
    """Move every file and folder the stage wrote in ``staging`` onto its name in ``path`` (links to work
    folders and the pid file stay behind). A folder replaces the previous one by an atomic exchange."""
    for name in sorted(os.listdir(staging)):
        src, dst = os.path.join(staging, name), os.path.join(path, name)
        if name == _PID or os.path.islink(src):
            continue
        if os.path.isdir(src) and os.path.isdir(dst) and not os.path.islink(dst):
            if not exchange(src, dst):
                os.replace(dst, src + ".old")
                os.replace(src, dst)
                src = src + ".old"
            shutil.rmtree(src)
        else:
            os.replace(src, dst)


def _remove(path: str, names: Sequence[str]) -> None:
    for name in names:
        shutil.rmtree(os.path.join(path, name), ignore_errors=True)


def _tidy(path: str, stage: str, patterns, before: Dict[str, bool], existed: bool, made: Sequence[str]) -> None:
    """After the block: drop work folders this run created and left empty, a folder it created and left
    empty, and record what the stage's files are."""
    if not os.path.isdir(path):
        return
    for w in made:
        folder = os.path.join(path, w)
        if os.path.isdir(folder) and not os.listdir(folder):
            os.rmdir(folder)
    if not existed and not [n for n in os.listdir(path) if not n.startswith(STAGING_PREFIX) and n != MANIFEST]:
        shutil.rmtree(path, ignore_errors=True)
        return
    record_files(path, stage, patterns, before)


# ------------------------------------------------------------------------------------------------
# a report folder: built beside its target, swapped in whole
# ------------------------------------------------------------------------------------------------
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
                write_manifest(self.tmp, {f: "report" for f in all_files(self.tmp)}, kind="report")
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
    if not exchange(new, out):
        old = new + ".old"
        os.replace(out, old)
        os.replace(new, out)
        os.replace(old, new)


def exchange(a: str, b: str) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
