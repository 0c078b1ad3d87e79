"""The ``lucent-inhibit`` command: one sub-command per registered stage (:mod:`lucent_inhibit.app.stages`).

Sub-commands, options and help are generated from the registry: each field of a stage's config
dataclass is one ``--option`` (its spelling, type, choices, default and help come from the field), so
the command line, the report and the library share one set of defaults. The parser is the standard
library's ``argparse`` (no import cost, exact control of the legacy option spellings such as ``--S``
and of multi-value options such as ``--attr-layers A B``).

Exit status and errors (``--debug`` re-raises every error with its full traceback):

* 0: the stage ran and wrote its files.
* 2: bad user input, printed as one line ``lucent-inhibit: error: ...``: argparse and config errors,
  and while running the library's documented input errors (:func:`user_error`): ``ValueError`` and its
  subclasses (``validate.InputError``, ``ResultFileError``, ``WeightsError``, ``AmbiguousLayerError``,
  ``outputs.OutputError``), ``NonFiniteLoss``, missing files or folders and permission errors.
* 1: anything else is a bug in lucent-inhibit (``IndexError``, ``KeyError``, ``RuntimeError``, a
  ``TypeError`` the library did not raise on purpose, ...): one line ``lucent-inhibit: internal
  error: ...`` that asks for a rerun with ``--debug`` to see the traceback.
  Errors of the system are reported the same way (exit 2, one line naming the cause): a full disk or quota
  (and that the previous output was kept), a file-size limit, a path component too long, a read-only
  file system, memory that could not be allocated (:func:`system_error`).
* 130 / 143: interrupted by Ctrl-C / SIGTERM; the previous output is as it was (a stage's files appear only
  when it finishes: :mod:`lucent_inhibit.app.staging`), checkpoints are kept for a rerun to resume.

Every stage's ``--out`` is checked before any work starts (:mod:`lucent_inhibit.app.outputs`): an existing
file, a folder that cannot be written, or one equal to, inside or containing ``--images`` is refused,
and a stage overwrites only files lucent-inhibit wrote. Importing this module does not import torch:
each stage imports the library inside its run function.
"""
from __future__ import annotations

import argparse
import errno
import logging
import sys
import typing
from typing import Any, Dict, List, Optional

from .options import REQUIRED, Option, base_type, build, choices_of, options
from .stages import STAGES, Stage

#: Exceptions that mean bad user input (a wrong name, value, file, folder or combination of options);
#: ``NonFiniteLoss`` (a ``FloatingPointError``) is added by :func:`user_error` once torch is loaded.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError,
               PermissionError)


#: errno of the OSErrors that are the system's, not ours: what each means for the user.
SYSTEM_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exhausted",
                 errno.EFBIG: "a file grew past the file-size limit", errno.ENAMETOOLONG: "a path is too long",
                 errno.EROFS: "the file system is read-only", errno.ENOMEM: "the machine is out of memory"}
#: How torch says an allocation failed (a RuntimeError).
_ALLOCATION_FAILURES = ("can't allocate memory", "out of memory", "not enough memory")


def system_error(exc: BaseException) -> Optional[str]:
    """One line for an error of the machine rather than of the user or of lucent-inhibit (a full disk, a
    file-size limit, a path too long, a failed allocation), or None."""
    if isinstance(exc, OSError) and exc.errno in SYSTEM_ERRNOS:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{SYSTEM_ERRNOS[exc.errno]}{where}: {exc.strerror}"
    text = str(exc)
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and any(
            m in text.lower() for m in _ALLOCATION_FAILURES)):
        detail = text.strip().splitlines()[-1][:200] if text.strip() else type(exc).__name__
        return f"the machine is out of memory: {detail}; use smaller sizes or batches"
    return None


def user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is bad user input or an error of the system (exit 2, one line) rather than a bug
    (exit 1)."""
    if isinstance(exc, (UsageError,) + USER_ERRORS) or system_error(exc) is not None:
        return True
    rendering = sys.modules.get("lucent_inhibit.core.rendering")
    return rendering is not None and isinstance(exc, rendering.NonFiniteLoss)


class UsageError(Exception):
    """Bad user input: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors raise :class:`UsageError` instead of printing usage and exiting."""

    def error(self, message):
        raise UsageError(message)


def _help(opt: Option) -> str:
    text = opt.help
    shown = not any(opt.default is v for v in (None, False, True, REQUIRED))
    if shown and "default" not in text:
        value = " ".join(map(str, opt.default)) if isinstance(opt.default, tuple) else opt.default
        text += f" (default: {value})"
    return text.replace("%", "%%")


def _add(parser: argparse.ArgumentParser, opt: Option) -> None:
    """One option: type, number of values and choices from the field's annotation."""
    dest = ".".join(opt.path)
    tp, _ = base_type(opt.type)
    kw: Dict[str, Any] = {"dest": dest, "help": _help(opt)}
    if tp is bool:
        if opt.default is True and not opt.flag.startswith("--no-"):
            raise TypeError(f"option {dest}: a boolean defaulting to True needs a --no-... flag")
        parser.add_argument(opt.flag, action="store_false" if opt.default else "store_true", **kw)
        return
    choices = choices_of(opt.type)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if choices is not None:
        kw.update(choices=choices, type=type(choices[0]))
    elif origin in (tuple, list):
        item = args[0]
        kw.update(type=item, nargs="+" if origin is list or args[-1] is Ellipsis else len(args))
    else:
        kw["type"] = tp
    if choices is None:
        kw["metavar"] = opt.metavar or opt.flag.lstrip("-").replace("-", "_").upper()
    if opt.default is REQUIRED:
        kw["required"] = True
    else:
        kw["default"] = opt.default
    parser.add_argument(opt.flag, **kw)


def _add_stage(sub, stage: Stage) -> None:
    p = sub.add_parser(stage.name, help=stage.help, description=stage.description)
    groups: Dict[str, Any] = {}
    for opt in options(stage.config):
        target = p
        if len(opt.path) > 1:  # a shared config: its options under one heading
            name = opt.path[0]
            target = groups.get(name) or groups.setdefault(name, p.add_argument_group(f"{name} options"))
        _add(target, opt)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the full traceback of an error")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every registered stage."""
    parser = _Parser(prog="lucent-inhibit", description="See and measure inhibition in vision models (Lucent "
                     "plugin). Every stage runs on the embedded pretrained EfficientNet-Lite0 and bundled images by "
                     "default.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="stage", metavar="STAGE")
    sub.required = True
    for stage in STAGES.values():
        _add_stage(sub, stage)
    return parser


def parse(argv: Optional[List[str]] = None):
    """``(stage, config, debug)`` for a command line; :class:`UsageError` for bad input."""
    args = build_parser().parse_args(argv)
    stage = STAGES[args.stage]
    values = {opt.path: getattr(args, ".".join(opt.path)) for opt in options(stage.config)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return stage, build(stage.config, values), bool(getattr(args, "debug", False))
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from exc


def _debug_requested(argv) -> bool:
    return "--debug" in (sys.argv[1:] if argv is None else argv)


def main(argv: Optional[List[str]] = None) -> int:
    """Run one stage; returns the exit status (see the module docstring) and prints errors as one line."""
    try:
        stage, config, debug = parse(argv)
    except UsageError as exc:
        if _debug_requested(argv):
            raise
        return _fail(exc)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    from .runtime import run_stage

    _say_picks()
    previous_hook, sys.unraisablehook = sys.unraisablehook, _unraisable_hook(sys.unraisablehook)
    try:
        result = run_stage(stage, config, progress=True)
        lines = stage.describe(result, config)
    except KeyboardInterrupt as exc:
        if debug:
            raise
        signum = getattr(exc, "signum", 2)
        print(f"lucent-inhibit: interrupted ({'SIGTERM' if signum == 15 else 'Ctrl-C'}); {_kept(config)}",
              file=sys.stderr)
        # an object the interrupt left half-built (e.g. a library interrupted while importing) may fail in
        # its __del__ at exit: keep the one line above the only thing said
        sys.unraisablehook = lambda unraisable: None
        return 128 + signum
    except Exception as exc:
        sys.unraisablehook = previous_hook
        if debug:
            raise
        if system_error(exc) is not None:
            return _fail(RuntimeError(f"{system_error(exc)}; {_kept(config)}"))
        return _fail(exc) if user_error(exc) else _internal(exc)
    sys.unraisablehook = previous_hook
    for line in lines:
        print(line)
    return 0


class _StderrLines(logging.Handler):
    """One ``lucent-inhibit: ...`` line per record on the current ``sys.stderr``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"lucent-inhibit: {self.format(record)}", file=sys.stderr)
        except Exception:  # noqa: BLE001 (logging's own contract: report, never raise)
            self.handleError(record)


def _unraisable_hook(previous):
    """``previous``, except for a Ctrl-C / SIGTERM that landed in a finaliser (a ``__del__``, a weakref
    callback), which Python can only print: the run's output block raises it again when it ends
    (:func:`lucent_inhibit.app.outputs.terminate_raises`), so the one interrupted line stays the only thing said."""
    def hook(unraisable):
        if not issubclass(unraisable.exc_type, KeyboardInterrupt):
            previous(unraisable)
    return hook


def _say_picks() -> None:
    """Print the library's INFO lines (what it picked for the user: a layer, a mode, a scale) on stderr."""
    logger = logging.getLogger("lucent_inhibit")
    if not any(isinstance(h, _StderrLines) for h in logger.handlers):
        logger.addHandler(_StderrLines())
    logger.setLevel(logging.INFO)


def _kept(config) -> str:
    """What an interrupted or failed run left: the previous output, and the checkpoints a rerun resumes from."""
    out = getattr(config, "out", None)
    return (f"{out!r} holds its previous output, no temporary file; checkpoints of long work are kept for "
            "the same command to resume" if out else "no temporary file was left")


def _fail(exc: BaseException) -> int:
    message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    print(f"lucent-inhibit: error: {message}", file=sys.stderr)
    return 2


def _internal(exc: BaseException) -> int:
    message = (str(exc).strip().splitlines() or [""])[0]
    print(f"lucent-inhibit: internal error: {type(exc).__name__}: {message} (a bug in lucent-inhibit; rerun with "
          "--debug for the traceback and please report it)", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
