"""Interrupts that always stop the work: SIGTERM and Ctrl-C as exceptions, remembered where a library
swallowed them, and held back while files are swapped into place.

* :func:`terminate_raises`: inside the block SIGTERM and SIGINT raise :class:`Interrupted` (a
  ``KeyboardInterrupt``) in the main thread, so ``finally`` clauses (temporary files, staging folders) run.
* :func:`raise_if_interrupted`: raise again an interrupt that arrived inside that block but was caught on the
  way (Lucent's ``render_vis`` catches ``KeyboardInterrupt`` and returns its images; Python only prints one that
  lands in a ``__del__``).
* :func:`signals_deferred`: SIGINT and SIGTERM wait until the block ends (the few renames that put a finished
  output in place run whole); then they are delivered.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Dict, Iterator, Optional

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(KeyboardInterrupt):
    """SIGTERM (or SIGINT) received inside a :func:`terminate_raises` block; ``signum`` says which."""

    def __init__(self, signum: int, where: str = ""):
        super().__init__(f"interrupted by {signal.Signals(signum).name}{where}")
        self.signum = signum


#: The signal received inside the outermost :func:`terminate_raises` block, if any.
_received: Dict[str, Optional[int]] = {"signum": None}


def _raise(signum, frame):
    _received["signum"] = signum
    raise Interrupted(signum)


def received() -> Optional[int]:
    """The signal number received inside the current :func:`terminate_raises` block, or None."""
    return _received["signum"]


def raise_if_interrupted(where: str = "") -> None:
    """Raise :class:`Interrupted` if SIGINT or SIGTERM arrived inside the current :func:`terminate_raises`
    block, even where the ``KeyboardInterrupt`` it raised was swallowed on the way."""
    if _received["signum"] is not None:
        raise Interrupted(_received["signum"], where)


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """Inside the block SIGTERM and Ctrl-C raise :class:`Interrupted` (only in the main thread, and only
    where no handler of the program's own is installed), so ``finally`` clauses run as for Ctrl-C.

    The signal is also remembered: a block that ends normally after one arrived raises
    :class:`Interrupted` at its end (:func:`raise_if_interrupted`), so a run whose interrupt was swallowed
    somewhere still stops instead of finishing as if nothing had happened."""
    main = threading.current_thread() is threading.main_thread()
    handlers = {s: signal.getsignal(s) if main else None for s in _SIGNALS}
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


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM arriving inside the block are delivered when it ends (``pthread_sigmask``; main
    thread only, elsewhere a no-op): a short sequence of renames either runs whole or not at all."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
