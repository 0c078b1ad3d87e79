"""Validation at the boundary: one integer, number and choice check, each naming the parameter.

Every check raises :class:`InputError`, the base of the errors the library raises for bad user input
(a ``ValueError``, so ``except ValueError`` keeps working); the command line prints those as one line.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional, Tuple

import numpy as np


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
    if (low is not None and value < low) or (high is not None and value > high):
        raise InputError(f"{name} must be {_range(low, high)}, got {value}")
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


def check_size(name: str, value, low: int = 1) -> Tuple[int, int]:
    """``(H, W)`` of an int or an ``(H, W)`` pair of integers >= ``low``, else :class:`InputError` naming
    ``name``. Strings are refused (not iterated: ``"88"`` is not ``(8, 8)``), and so are fractions."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        value = (value, value)
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)) or len(value) != 2:
        raise InputError(f"{name} must be an int or a pair (height, width) of ints, got {value!r}")
    return check_int(f"{name} height", value[0], low), check_int(f"{name} width", value[1], low)


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


def check_choice(name: str, value, choices: Iterable):
    """``value`` if it is one of ``choices``, else :class:`InputError` listing them."""
    choices = tuple(choices)
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def _range(low, high) -> str:
    if low is not None and high is not None:
        return f"between {low} and {high}"
    return f">= {low}" if low is not None else f"<= {high}"
