"""How a result shows itself: a short text (``repr``) and a notebook table (``_repr_html_``), pandas-style.

A result describes itself as rows ``(label, items)`` (:meth:`~lucent_inhibit.core.results.Result._repr_rows`):
what feature, which layers, which dataset, its arrays as shapes and its key numbers. This module turns those
rows into at most :data:`MAX_LINES` lines of text no wider than :data:`WIDTH`, or into an HTML table with the
result's figure embedded as a base64 PNG; it never shows array values.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import math
import os
import sys
import tempfile
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

#: the most lines a result's repr has, the widest a line is, and how many key numbers it shows
MAX_LINES = 10
WIDTH = 100
MAX_NUMBERS = 8
#: lines one row may wrap over in the text form
ROW_LINES = 2
#: the notebook figure is drawn only for results whose arrays hold at most this many bytes (cost grows with them)
FIGURE_BYTES = 32 * 2 ** 20
#: the longest string a key number may be (longer text, e.g. an explanation, is left to ``summary()``)
MAX_TEXT = 40

Row = Tuple[str, List[str]]


def shape_of(value) -> Optional[str]:
    """``"(4, 8, 16, 16)"`` for a tensor or array (with its dtype when not float32, ``str`` for text arrays),
    None for anything else."""
    shape = getattr(value, "shape", None)
    if shape is None or not hasattr(value, "dtype"):
        return None
    dtype = "str" if getattr(value.dtype, "kind", "") in ("U", "S") else str(value.dtype).replace("torch.", "")
    text = "(" + ", ".join(str(int(n)) for n in shape) + ("," if len(shape) == 1 else "") + ")"
    return text if dtype == "float32" else f"{text} {dtype}"


def array_bytes(value) -> int:
    """Bytes held by a tensor or array (0 for anything else)."""
    if hasattr(value, "nbytes") and hasattr(value, "shape"):
        return int(value.nbytes)
    if hasattr(value, "element_size") and hasattr(value, "numel"):
        return int(value.element_size() * value.numel())
    return 0


def format_number(value) -> Optional[str]:
    """A key number as text: floats to 4 significant digits, short strings and bools as they are, a short
    list of numbers as a tuple; None for what is not a key number (None, long text, long lists, dicts)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, str):
        return value if 0 < len(value) <= MAX_TEXT else None
    if isinstance(value, (list, tuple)) and 0 < len(value) <= 4:
        parts = [format_number(v) for v in value]
        if all(p is not None and not isinstance(v, (str, list, tuple)) for p, v in zip(parts, value)):
            return "[" + ", ".join(parts) + "]"
    return None


def key_numbers(summary: Dict[str, Any], skip: Iterable[str] = ()) -> Dict[str, Any]:
    """The scalars of a ``summary()`` dict (those :func:`format_number` shows): its top-level ones first, then
    those of its nested dicts one level down (``"relu2.P"``); keys in ``skip`` (shown elsewhere) left out."""
    skip = set(skip) | {"type"}
    top = {str(k): v for k, v in summary.items() if k not in skip and not isinstance(v, dict)}
    nested = {f"{k}.{n}": v for k, d in summary.items() if k not in skip and isinstance(d, dict)
              for n, v in d.items() if not isinstance(v, dict)}
    return {k: v for k, v in {**top, **nested}.items() if format_number(v) is not None}


def number_items(numbers: Dict[str, Any]) -> List[str]:
    """``name=value`` texts of the first :data:`MAX_NUMBERS` key numbers, then ``"… +N more"`` if any."""
    shown = [f"{k}={format_number(v)}" for k, v in numbers.items() if format_number(v) is not None]
    return shown[:MAX_NUMBERS] + ([f"… +{len(shown) - MAX_NUMBERS} more"] if len(shown) > MAX_NUMBERS else [])


def _wrap(items: Sequence[str], width: int, lines: int) -> List[str]:
    """``items`` joined by ``", "`` over at most ``lines`` lines of ``width``; items that do not fit are left
    out whole (never cut mid-number) and counted in a closing ``"… +N more"`` (only an item wider than a
    whole line is cut, with ``…``)."""
    out: List[List[str]] = [[]]
    for i, item in enumerate(items):
        item = item if len(item) <= width else item[: width - 1] + "…"
        if len(", ".join(out[-1] + [item])) <= width:
            out[-1].append(item)
        elif len(out) < lines:
            out.append([item])
        else:
            left = len(items) - i
            while out[-1] and len(", ".join(out[-1] + [f"… +{left} more"])) > width:
                out[-1].pop()
                left += 1
            out[-1].append(f"… +{left} more")
            break
    return [", ".join(line) for line in out if line]


def _fields(result) -> List[Tuple[str, Any]]:
    return [(f.name, getattr(result, f.name, None)) for f in dataclasses.fields(result)]


def _is_result(value) -> bool:
    """A nested result (a dataclass with the result methods); checked without importing the result base."""
    return dataclasses.is_dataclass(value) and not isinstance(value, type) and hasattr(value, "summary")


def _feature_names(value) -> List[str]:
    """Names of the features a field holds: a Feature, a list of them, or a list of ``Feature.to_dict`` dicts."""
    from .features import Feature

    values = value if isinstance(value, (list, tuple)) else [value]
    names = []
    for v in values:
        if isinstance(v, dict) and "layer" in v:
            try:
                v = Feature.from_dict(v)
            except (KeyError, TypeError, ValueError):
                return []
        if not isinstance(v, Feature):
            return []
        names.append(v.name)
    return names


def subject_rows(result) -> List[Row]:
    """What a result is about: its feature(s), layer(s), dataset and model (string fields of those names);
    taken from its first nested result that has them when it has none of its own (an Atlas's points)."""
    names = [n for name, v in _fields(result) if "feature" in name for n in _feature_names(v)]
    layers = getattr(result, "layers", None)
    layers = [str(l) for l in layers] if isinstance(layers, (list, tuple)) else []
    single = getattr(result, "layer", None)
    rows = [("feature" if len(names) == 1 else f"features ({len(names)})", names),
            ("layer", [single] if isinstance(single, str) else []),
            (f"layers ({len(layers)})" if len(layers) > 1 else "layers", layers)]
    rows += [(k, [v]) for k in ("dataset", "model") for v in [getattr(result, k, None)] if isinstance(v, str) and v]
    rows = [(label, items) for label, items in rows if items]
    if not rows:
        nested = (subject_rows(v) for _, v in _fields(result) if _is_result(v))
        rows = next((r for r in nested if r), [])
    return rows


def content_rows(result) -> List[Row]:
    """``arrays``: each array field as ``name (shape)`` (a dict of arrays as ``name{keys} (shape)`` when the
    shapes agree, else with each key's shape, three at most); ``parts``: nested results and other objects
    (a model) as ``name TypeName``."""
    arrays, parts = [], []
    for name, v in _fields(result):
        if shape_of(v) is not None:
            arrays.append(f"{name} {shape_of(v)}")
        elif isinstance(v, dict) and v and all(shape_of(x) is not None for x in v.values()):
            keys, shapes = [str(k) for k in v][:3], [shape_of(x) for x in v.values()]
            more = ", …" if len(v) > 3 else ""
            arrays.append(f"{name}{{{', '.join(keys)}{more}}} {shapes[0]}" if len(set(shapes)) == 1 else
                          f"{name}{{{', '.join(f'{k} {s}' for k, s in zip(keys, shapes))}{more}}}")
        elif _is_result(v) or not isinstance(v, (str, int, float, bool, list, tuple, dict, type(None))) \
                and not _feature_names(v):
            parts.append(f"{name} {type(v).__name__}")
    return [("arrays", arrays), ("parts", parts)]


def held_bytes(result) -> int:
    """Bytes of every array a result holds, in dicts and nested results too."""
    total = 0
    for _, v in _fields(result):
        values = v.values() if isinstance(v, dict) else [v]
        total += sum(held_bytes(x) if _is_result(x) else array_bytes(x) for x in values)
    return total


def text(kind: str, rows: Sequence[Row]) -> str:
    """The repr: the type name, then one labelled row per fact (a row wraps over at most
    :data:`ROW_LINES` lines), cut to :data:`MAX_LINES` lines."""
    rows = [(label, items) for label, items in rows if items]
    pad = max([len(label) for label, _ in rows] + [0]) + 2
    lines = [kind]
    for label, items in rows:
        for i, line in enumerate(_wrap(items, WIDTH - pad - 2, ROW_LINES)):
            lines.append(f"  {label if i == 0 else '':<{pad}}{line}")
    if len(lines) > MAX_LINES:
        lines = lines[: MAX_LINES - 1] + [f"  … {len(lines) - MAX_LINES + 1} more line(s)"]
    return "\n".join(lines)


def figure_png(plot: Callable[[str], Any]) -> Optional[bytes]:
    """The PNG that ``plot(path)`` writes into a temporary folder, or None when it raises an ``Exception``
    (a figure that cannot be drawn leaves the table alone; Ctrl-C and other non-``Exception`` errors pass).
    Figures the call leaves open are closed, so a notebook's inline backend does not show them twice."""
    before = _open_figures()
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "figure.png")
            plot(path)
            with open(path, "rb") as f:
                return f.read()
    except Exception:  # noqa: BLE001 - any drawing error falls back to the table (the display never raises)
        return None
    finally:
        plt = sys.modules.get("matplotlib.pyplot")
        for number in (_open_figures() - before) if plt is not None else ():
            plt.close(number)


def _open_figures() -> set:
    """Numbers of the open pyplot figures (none when pyplot was never imported: nothing is imported here)."""
    plt = sys.modules.get("matplotlib.pyplot")
    return set(plt.get_fignums()) if plt is not None else set()


def html_table(kind: str, rows: Sequence[Row], png: Optional[bytes] = None) -> str:
    """The notebook display: the type name, a table of the same rows as the repr (every item, not cut to a
    width) and, when given, the figure as an embedded PNG."""
    body = "".join(f"<tr><th style=\"text-align:left\">{html.escape(label)}</th>"
                   f"<td style=\"text-align:left\">{html.escape(', '.join(items))}</td></tr>"
                   for label, items in rows if items)
    image = "" if png is None else (f"<img src=\"data:image/png;base64,{base64.b64encode(png).decode('ascii')}\" "
                                    f"style=\"max-width:720px\" alt=\"{html.escape(kind)} figure\"/>")
    return (f"<div class=\"lucent-inhibit-result\"><strong>{html.escape(kind)}</strong>"
            f"<table>{body}</table>{image}</div>")
