"""Validation at the boundary: one integer, number and choice check, each naming the parameter.

Every check raises :class:`InputError`, the base of the errors the library raises for bad user input
(a ``ValueError``, so ``except ValueError`` keeps working); the command line prints those as one line.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional

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
                 low_open: bool = False) -> float:
    """``value`` as a finite float in [low, high] (``(low, high]`` with ``low_open``), else :class:`InputError`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise InputError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise InputError(f"{name} must be <= {high}, got {value}")
    return value


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
