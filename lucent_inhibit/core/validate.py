"""Validation at the boundary: one integer, number and choice check, each naming the parameter.

Every check raises :class:`InputError`, the base of the errors the library raises for bad user input
(a ``ValueError``, so ``except ValueError`` keeps working); the command line prints those as one line.

Counts and sizes also have documented upper bounds (the module constants below). They are generous (far
beyond what a run on one machine can use) and exist so that a typo or an overflowed value (``--steps
100000000000000000000``, ``n_images=10**18``, a 10**9 px side) is refused at the boundary, naming the
parameter and the accepted range, instead of allocating without end or failing deep inside torch.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional, Tuple

import numpy as np

#: Most optimisation or integration steps of one run (renders, IG steps, toy training): 10**6.
MAX_STEPS = 10 ** 6
#: Largest image side in pixels (renders, crops, resized datasets): 4096 (one 4096 px RGB float image
#: is 200 MB; its activations are many times that).
MAX_SIDE = 4096
#: Most images (or other items) a run may ask for: 10**7 (ImageNet's training set has 1.28 * 10**6).
MAX_IMAGES = 10 ** 7
#: Largest batch of images in one forward / backward pass or one render: 4096.
MAX_BATCH = 4096
#: Largest random seed: numpy's global generator takes seeds in [0, 2**32 - 1].
MAX_SEED = 2 ** 32 - 1
#: Most worker processes decoding images: 256.
MAX_WORKERS = 256
#: Largest cosine exponent ``p`` of a cosdot: at ``|cos| = 0.5``, ``0.5 ** 64`` is about 5e-20, still a normal
#: float32; beyond, ``|cos|^p`` underflows to zero for all but near-perfect alignment and the objective has no
#: gradient (the papers use 2 to 4).
MAX_POWER = 64.0
#: Largest Adam learning rate a stage accepts (renders and toy training): 10. Renders move [0, 1] images
#: through a decorrelated parameterization and use 0.05 to 0.1; a step of 10 per parameter leaves any image.
MAX_LR = 10.0
#: Largest UMAP ``min_dist`` of an atlas layout: UMAP refuses a min_dist above its spread (1).
MAX_MIN_DIST = 1.0
#: Largest verdict bar ``fraction`` of the disinhibition test: 100 (the MTIs' disinhibited f at a hundred times
#: the MEIs' f; the paper's test asks whether it approaches the MEIs', default 0.5).
MAX_FRACTION = 100.0


class InputError(ValueError):
    """Bad input from the user (a value, a file, a folder): the message names it and what was expected."""


def check_int(name: str, value, low: Optional[int] = None, high: Optional[int] = None) -> int:
    """``value`` as an int; :class:`InputError` naming ``name`` unless it is an integer in [low, high].

    Booleans, fractional numbers and numeric strings are refused rather than truncated or iterated.
    """
    ok = not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, np.integer))
    if not ok and isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        ok, value = True, int(value)
    if not ok:
        raise InputError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if low is not None and value < low:
        raise InputError(f"{name} must be >= {low}, got {value}{_accepted(low, high)}")
    if high is not None and value > high:
        raise InputError(f"{name} must be <= {high}, got {value}{_accepted(low, high)}")
    return value


def check_number(name: str, value, low: Optional[float] = None, high: Optional[float] = None,
                 low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float in [low, high] (the ends excluded with ``low_open`` / ``high_open``),
    else :class:`InputError`. Booleans, strings and tensors are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise InputError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise InputError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")
    return value


def check_size(name: str, value, low: int = 1, high: Optional[int] = MAX_SIDE) -> Tuple[int, int]:
    """``(H, W)`` in pixels of an int or an ``(H, W)`` pair of integers in [low, high] (default at most
    :data:`MAX_SIDE`), else :class:`InputError` naming ``name``. Strings and bytes are refused (not
    iterated: ``"88"`` is not ``(8, 8)``, ``b"88"`` not ``(56, 56)``), and so are fractions."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        value = (value, value)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise InputError(f"{name} must be an int or a pair (height, width) of ints, got {value!r}")
    return check_int(f"{name} height", value[0], low, high), check_int(f"{name} width", value[1], low, high)


def check_optional(check, name: str, value, *args, **kwargs):
    """None unchanged, else ``check(name, value, *args, **kwargs)`` (an optional count, size or seed)."""
    return None if value is None else check(name, value, *args, **kwargs)


def check_values(name: str, value, low: Optional[float] = None):
    """``value`` (a torch tensor, numpy array or real number) unchanged, else :class:`InputError` naming
    ``name``: it must be real-valued (not bool, complex or object), finite, and ``>= low`` when given.
    Torch is imported only when ``value`` is a tensor; tensors are checked where they are (no copy)."""
    if type(value).__module__.startswith("torch"):
        import torch

        if not torch.is_tensor(value) or value.is_complex() or value.dtype == torch.bool:
            raise InputError(f"{name} must be a real-valued tensor, got {_what(value)}")
        arr, lib = value.detach(), torch
    elif isinstance(value, (np.ndarray, np.generic, int, float)) and not isinstance(value, (bool, np.bool_)):
        arr, lib = np.asarray(value), np
        if arr.dtype.kind not in "iuf":
            raise InputError(f"{name} must hold real numbers, got {_what(value)}")
    else:
        raise InputError(f"{name} must be a tensor, an array or a number, got {_what(value)}")
    if not bool(lib.isfinite(arr).all()):
        raise InputError(f"{name} contains NaN or infinite values")
    empty = (arr.numel() if lib is not np else arr.size) == 0
    if low is not None and not empty and float(arr.min()) < low:
        raise InputError(f"{name} must be >= {low}, got a minimum of {float(arr.min()):.4g}")
    return value


def _what(value) -> str:
    dtype = getattr(value, "dtype", None)
    return f"{type(value).__name__}" + (f" of dtype {dtype}" if dtype is not None else "")


def check_flag(name: str, value) -> bool:
    """``value`` as a bool if it is one (numpy's included), else ``TypeError`` naming ``name``: ``"no"``, ``0``
    or ``None`` are refused rather than read as truthy or falsy."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r:.60}")
    return bool(value)


def check_choice(name: str, value, choices: Iterable):
    """``value`` if it is one of ``choices``, else :class:`InputError` listing them."""
    choices = tuple(choices)
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def _accepted(low, high) -> str:
    return f" (accepted: {low} to {high})" if low is not None and high is not None else ""


#: Longest file or folder name (one path component) in bytes on Linux and macOS file systems (``NAME_MAX``).
MAX_NAME = 255
#: Longest whole path in bytes the system calls take (Linux ``PATH_MAX``).
MAX_PATH = 4096


def check_path_length(name: str, path) -> None:
    """:class:`InputError` naming ``name`` (e.g. ``"--out"``) and ``path`` when one of its components is longer
    than :data:`MAX_NAME` bytes or the whole path longer than :data:`MAX_PATH` (the system would fail with
    ``ENAMETOOLONG``). ``None`` and non-path values are left to the caller's type check."""
    import os

    if not isinstance(path, (str, bytes, os.PathLike)):
        return
    raw = os.fsencode(path)
    shown = os.fsdecode(raw)
    shown = repr(shown if len(shown) <= 80 else shown[:60] + "..." + shown[-16:])
    if len(raw) > MAX_PATH:
        raise InputError(f"{name} {shown}: path too long ({len(raw)} > {MAX_PATH} bytes)")
    for part in raw.split(os.fsencode(os.sep)):
        if len(part) > MAX_NAME:
            unit = "characters" if len(os.fsdecode(part)) == len(part) else "bytes"
            raise InputError(f"{name} {shown}: path component too long ({len(part)} > {MAX_NAME} {unit})")


def format_bytes(n: float) -> str:
    """``n`` bytes in the largest binary unit that keeps it >= 1 (``"447 GiB"``, ``"12.5 MiB"``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024.0
    return f"{n:.3g} TiB"  # pragma: no cover (the loop returns)


def check_memory(what: str, needed: int, available: Optional[int]) -> int:
    """``needed`` (bytes) unless it exceeds ``available`` (bytes; None: unknown, not checked), else
    :class:`InputError` saying what would need how much memory and how much the machine has."""
    if available is not None and needed > available:
        raise InputError(f"{what} would need {format_bytes(needed)} of memory, but this machine has "
                         f"{format_bytes(available)} available")
    return needed


def parse_shard(shard) -> Tuple[int, int]:
    """``None`` -> ``(0, 1)``; ``(i, n)`` or ``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``, else ``ValueError``."""
    if shard is None:
        return 0, 1
    expected = f"shard must be 'i/n' or (i, n) with integers 0 <= i < n, got {shard!r}"
    parts = shard.split("/") if isinstance(shard, str) else shard
    try:
        i, n = parts
        if isinstance(shard, str):
            i, n = int(i), int(n)
        i, n = check_int("shard index i", i), check_int("shard count n", n)
    except (TypeError, ValueError):
        raise ValueError(expected) from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(expected)
    return i, n
