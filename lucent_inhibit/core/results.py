"""One result base for every stage: typed fields declared once, one file format, one path rule.

A result type is a ``@dataclass`` that subclasses :class:`Result`. Its fields are stored by value type:

- ``torch.Tensor`` / ``numpy.ndarray`` fields become arrays of the archive (dtype kept);
- ``dict`` of str -> tensor/array fields become one array per key;
- a :class:`~lucent_inhibit.core.features.Feature` (or a list of them) and nested :class:`Result` fields are
  encoded by their own rules;
- everything else must be JSON (numbers, strings, lists, dicts, ``None``) and goes to the metadata.

File format: a numpy ``.npz`` archive (``numpy.load(path, allow_pickle=False)`` reads it) whose
``__meta__`` entry is UTF-8 JSON: ``{"format": "lucent-inhibit", "version": V, "type": "ScanResult",
"fields": {...}}``. Path rule: ``save(name)`` writes ``name`` with ``.npz`` appended when missing and
returns that path; ``load(name)`` applies the same rule, so what is saved under a name loads under it.
Loading a file of another type, an older or newer format version, a truncated file or one holding a
pickled object array raises :class:`ResultFileError` naming the file, what it holds and what was expected.
"""
from __future__ import annotations

import dataclasses
import json
import os
import warnings
import zipfile
from typing import Any, ClassVar, Dict, Optional, Tuple

import numpy as np

from . import display
from .io import atomic_write

FORMAT = "lucent-inhibit"
#: Version of the file layout. Files of other versions are refused with a message naming both.
FORMAT_VERSION = 2
META_KEY = "__meta__"


class ResultFileError(ValueError):
    """A result file cannot be read as the requested type; the message names the file and both types."""


def result_path(path) -> str:
    """The path rule of ``save``: ``.npz`` appended when the name lacks it (:func:`load_path` is ``load``'s)."""
    if not isinstance(path, (str, os.PathLike)):
        from .validate import InputError

        raise InputError(f"path must be a file path (a str or os.PathLike), got {type(path).__name__} {path!r:.60}")
    path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise ValueError(f"a result path must be a non-empty file name, got {path!r}")
    return path if path.endswith(".npz") else path + ".npz"


def load_path(path, expected: str) -> str:
    """The file a load reads: ``path`` as given when something exists there (a folder is refused, naming it),
    else ``path`` with ``.npz`` appended when it lacks it (so what ``save(name)`` wrote loads under ``name``)."""
    result_path(path)  # the type check
    given = os.fspath(path)
    if os.path.isdir(given):
        sibling = result_path(given.rstrip(os.sep) or given)
        hint = f" (the file {sibling!r} exists: pass that)" if os.path.isfile(sibling) else ""
        raise ResultFileError(f"{given!r} is a folder, not a {expected} file{hint}")
    return given if os.path.exists(given) else result_path(given)


# ------------------------------------------------------------------------------------------------
# encoding of one field value
# ------------------------------------------------------------------------------------------------
def _torch():
    import torch

    return torch


def _is_tensor(v) -> bool:
    return type(v).__module__.startswith("torch") and _torch().is_tensor(v)


def _encode_value(name: str, value, arrays: Dict[str, np.ndarray]):
    """Store ``value`` (arrays into ``arrays`` under keys starting with ``name``); return its JSON record."""
    from .features import Feature

    if _is_tensor(value):
        arrays[name] = value.detach().cpu().numpy()
        return {"codec": "tensor"}
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError(f"field {name!r} is an object array, which cannot be stored without pickle")
        arrays[name] = value
        return {"codec": "array"}
    if isinstance(value, Feature):
        return {"codec": "feature", "value": value.to_dict()}
    if isinstance(value, Result):
        sub_arrays, sub_meta = value._encode()
        arrays.update({f"{name}/{k}": v for k, v in sub_arrays.items()})
        return {"codec": "result", "type": type(value).kind(), "fields": sub_meta}
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, Feature) for v in value):
        return {"codec": "features", "value": [v.to_dict() for v in value]}
    if isinstance(value, dict) and value and all(_is_tensor(v) or isinstance(v, np.ndarray) for v in value.values()):
        keys = [str(k) for k in value]
        for i, v in enumerate(value.values()):
            arrays[f"{name}/{i}"] = v.detach().cpu().numpy() if _is_tensor(v) else v
        return {"codec": "tensor_dict" if _is_tensor(next(iter(value.values()))) else "array_dict", "keys": keys}
    try:
        text = json.dumps(_jsonable(value))
    except (TypeError, ValueError) as e:
        raise TypeError(f"field {name!r} holds a {type(value).__name__}, which a result file cannot store: {e}")
    return {"codec": "json", "value": json.loads(text)}


def _jsonable(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _decode_value(name: str, record: dict, arrays: Dict[str, np.ndarray]):
    from .features import Feature

    codec = record["codec"]
    if codec == "tensor":
        return _torch().from_numpy(arrays[name])
    if codec == "array":
        return arrays[name]
    if codec == "feature":
        return Feature.from_dict(record["value"])
    if codec == "features":
        return [Feature.from_dict(d) for d in record["value"]]
    if codec in ("tensor_dict", "array_dict"):
        vals = [arrays[f"{name}/{i}"] for i in range(len(record["keys"]))]
        if codec == "tensor_dict":
            vals = [_torch().from_numpy(v) for v in vals]
        return dict(zip(record["keys"], vals))
    if codec == "result":
        sub = result_type(record["type"])
        if sub is None:
            raise KeyError(f"unknown nested result type {record['type']!r}")
        prefix = name + "/"
        sub_arrays = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        return sub._decode(sub_arrays, record["fields"])
    if codec == "json":
        return record["value"]
    raise KeyError(f"unknown field codec {codec!r}")


# ------------------------------------------------------------------------------------------------
# the base class
# ------------------------------------------------------------------------------------------------
_REGISTRY: Dict[str, type] = {}

#: Where each of the library's result types is defined, so that a file loads in a fresh interpreter before
#: anything imported its type (:func:`load_result`, nested results). Kept complete by a test that walks every
#: :class:`Result` subclass of the package; types of other packages load once their module is imported.
RESULT_MODULES = {
    "Attribution": "attribution.attribute", "CompletenessResult": "attribution.completeness",
    "ScanResult": "scanning.result", "Census": "census.result",
    "Disinhibition": "causal.disinhibition", "InhibitorDictionary": "causal.inhibitors",
    "RandomizationCascade": "causal.randomization",
    "Accentuation": "synthesis.accentuation", "InversionResult": "synthesis.inversion", "TenseResult": "synthesis.tense",
    "Selection": "atlas.selection", "AtlasPoints": "atlas.vectors", "AtlasLayout": "atlas.layout",
    "AtlasGrid": "atlas.layout", "AtlasIcons": "atlas.icons", "Atlas": "atlas.build",
    "PairStatistics": "combinations.statistics", "AxisScales": "combinations.scales",
    "CombinationResult": "combinations.sweeps",
    "ToySnapshot": "toy.model", "TrainResult": "toy.training", "ToyAnalysis": "toy.analysis",
    "ChunkArrays": "core.checkpoints", "Microscope": "microscope.result",
}


def result_type(kind) -> Optional[type]:
    """The result class named ``kind`` (a file header's ``type``): a registered subclass, or one of the
    library's own (:data:`RESULT_MODULES`), imported on first use; None when unknown."""
    if isinstance(kind, str) and kind not in _REGISTRY and kind in RESULT_MODULES:
        import importlib

        importlib.import_module(f"{__name__.rsplit('.', 2)[0]}.{RESULT_MODULES[kind]}")
    return _REGISTRY.get(kind) if isinstance(kind, str) else None


class Result:
    """Base of every result type (subclasses are dataclasses).

    Subclasses get ``save(path) -> str``, ``load(path)``, ``summary() -> dict`` (override to report the
    numbers that matter) and must implement ``plot(path=None, ax=None, **style) -> Figure`` (the matplotlib
    Figure, written as a PNG at ``path`` when given; see :mod:`lucent_inhibit.core.figures`).
    Override ``_encode`` / ``_decode`` only when a field needs a representation of its own.
    Every subclass shows itself through the base (:mod:`.display`), also when ``@dataclass`` would write its
    field-by-field repr: ``repr`` is the type name and at most 10 lines (feature, layers, dataset, array
    shapes, key numbers), ``_repr_html_`` the same as a notebook table with the figure; override
    ``_repr_numbers`` to choose the key numbers, set ``repr_figure = False`` where the figure is slow to draw.
    """

    #: Bumped by a subclass when its fields change incompatibly.
    schema: ClassVar[int] = 1
    #: Whether the notebook display embeds the figure of ``plot()`` (set False where drawing it is slow); it is
    #: drawn only for results holding at most ``display.FIGURE_BYTES`` of arrays.
    repr_figure: ClassVar[bool] = True

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        _REGISTRY[cls.kind()] = cls
        if "__repr__" not in cls.__dict__:  # else @dataclass writes its field-by-field repr (thousands of lines)
            cls.__repr__ = next(b.__dict__["__repr__"] for b in cls.__mro__[1:] if "__repr__" in b.__dict__)

    @classmethod
    def kind(cls) -> str:
        return cls.__name__

    # -- encoding -------------------------------------------------------------------------------
    def _encode(self) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
        arrays: Dict[str, np.ndarray] = {}
        fields = {f.name: _encode_value(f.name, getattr(self, f.name), arrays) for f in dataclasses.fields(self)}
        return arrays, fields

    @classmethod
    def _decode(cls, arrays: Dict[str, np.ndarray], fields: Dict[str, Any]):
        kwargs = {name: _decode_value(name, rec, arrays) for name, rec in fields.items()}
        return cls(**kwargs)

    # -- files ----------------------------------------------------------------------------------
    def save(self, path) -> str:
        """Write this result to ``path`` (``.npz`` appended when missing); returns the path written."""
        path = result_path(path)
        arrays, fields = self._encode()
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "type": type(self).kind(), "schema": self.schema,
                "fields": fields}
        text = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)

        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays, **{META_KEY: text})

        atomic_write(path, write)
        return path

    @classmethod
    def load(cls, path):
        """Read a file written by ``save`` under the same name (``path`` as given when it exists, else with
        ``.npz`` appended: :func:`load_path`); see :class:`ResultFileError`."""
        path = load_path(path, cls.kind())
        arrays, meta = read_result_file(path, cls.kind())
        check_header(path, meta, cls)
        try:
            return cls._decode(arrays, meta["fields"])
        except (KeyError, TypeError, ValueError) as e:
            raise ResultFileError(f"{path!r} claims to hold a {cls.kind()} but its fields do not match: {e}")

    # -- reading --------------------------------------------------------------------------------
    def summary(self) -> Dict[str, Any]:
        """The numbers a reader wants first (override); by default the shape of every array field."""
        out: Dict[str, Any] = {"type": type(self).kind()}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if _is_tensor(v) or isinstance(v, np.ndarray):
                out[f.name] = list(v.shape)
            elif isinstance(v, (int, float, str, bool)):
                out[f.name] = v
        return out

    def plot(self, path=None, ax=None, **style):
        """This result's figure: returns the matplotlib Figure, written as a PNG at ``path`` when given;
        ``ax``: draw into that matplotlib Axes (one-panel figures only); ``style``: the figure function's
        keyword arguments (:mod:`lucent_inhibit.core.figures` for the convention)."""
        raise NotImplementedError(f"{type(self).kind()} has no figure")

    # -- display --------------------------------------------------------------------------------
    def _repr_numbers(self) -> Dict[str, Any]:
        """The key numbers the repr shows (name -> scalar; override where the choice is poor): by default
        the scalars of ``summary()``, top level first, less what the other rows show (feature, layers, dataset,
        model, array shapes)."""
        shown = {"layer", "layers", "dataset", "model"}
        shown |= {f.name for f in dataclasses.fields(self) if display.shape_of(getattr(self, f.name, None))}
        numbers = display.key_numbers(self.summary(), skip=shown)
        return {k: v for k, v in numbers.items() if not k.startswith("feature")}

    def _repr_rows(self):
        """(label, items) rows of the repr and the notebook table: feature(s), layer(s), dataset and model,
        the arrays as shapes and the first key numbers (4 significant digits); never raises."""
        try:
            rows = display.subject_rows(self) + display.content_rows(self)
        except Exception as e:  # noqa: BLE001 - a repr must not raise, even for an odd user subclass
            return [("error", [f"cannot describe this result: {type(e).__name__}: {e}"])]
        try:
            with warnings.catch_warnings():  # a repr prints no NaN warnings of summary()
                warnings.simplefilter("ignore")
                numbers = display.number_items(self._repr_numbers())
        except Exception as e:  # noqa: BLE001 - e.g. summary() of a degenerate result
            numbers = [f"summary() failed: {type(e).__name__}: {e}"]
        return rows + [("numbers", numbers)]

    def __repr__(self) -> str:
        """The type name and at most 10 lines: what the result is about, its arrays' shapes, its key numbers."""
        return display.text(type(self).kind(), self._repr_rows())

    def _repr_html_(self) -> str:
        """Notebook display: the repr's rows as a table and, when the type has a figure, ``repr_figure`` is
        set and the result is small, that figure as an embedded PNG (a figure that fails leaves the table)."""
        png = None
        drawable = type(self).plot is not Result.plot and self.repr_figure
        if drawable and display.held_bytes(self) <= display.FIGURE_BYTES:
            png = display.figure_png(self.plot)
        return display.html_table(type(self).kind(), self._repr_rows(), png)


def expect_result(value, kind: str, source: str, what: str = "result"):
    """``value`` when it is a result of type ``kind`` (its class name, e.g. ``"ScanResult"``), else
    :class:`~lucent_inhibit.core.validate.InputError` naming ``what``, the expected type and where it comes
    from (``source``). Figure functions check their input with it without importing the result's module."""
    if not (isinstance(value, Result) and type(value).kind() == kind):
        from .validate import InputError

        raise InputError(f"{what} must be a {kind} (from {source}), got {type(value).__name__}")
    return value


def read_result_file(path: str, expected: str) -> Tuple[Dict[str, np.ndarray], dict]:
    """``(arrays, meta)`` of a result file; :class:`ResultFileError` when it is not one."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {expected} file at {path!r}")
    kind = _not_an_archive(path)
    if kind is not None:
        raise ResultFileError(f"{path!r} is not a {expected} file ({kind}, not a .npz archive written by this "
                              "library)")
    try:
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            if META_KEY not in names:
                raise ResultFileError(
                    f"{path!r} holds numpy arrays {names[:6]} but no lucent-inhibit metadata; expected a {expected} "
                    "file written by this library (files of the first release, with a 'meta' entry, are an older "
                    "format: write them again)"
                )
            meta = json.loads(bytes(z[META_KEY]).decode("utf-8"))
            arrays = {k: z[k] for k in names if k != META_KEY}
    except ResultFileError:
        raise
    except ValueError as e:
        if "allow_pickle" in str(e) or "pickle" in str(e).lower():
            raise ResultFileError(
                f"{path!r} holds a pickled object array, which this library never writes and refuses to load "
                f"(pickles can run code); expected a {expected} file"
            ) from None
        raise ResultFileError(f"{path!r} is not a readable {expected} file: {e}") from None
    except (zipfile.BadZipFile, EOFError, OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultFileError(
            f"{path!r} is truncated or not a result file ({type(e).__name__}: {e}); expected a {expected} file"
        ) from None
    return arrays, meta


def _not_an_archive(path: str) -> Optional[str]:
    """What the file at ``path`` is when it does not start like a zip archive (an ``.npz``), else None (a
    truncated archive starts like one and is reported by the reader)."""
    with open(path, "rb") as f:
        head = f.read(6)
    if head[:4] == b"PK\x03\x04":
        return None
    if not head:
        return "an empty file"
    if head == b"\x93NUMPY":
        return "a single numpy array (.npy)"
    return f"a {os.path.getsize(path)}-byte file of another kind"


def check_header(path: str, meta: dict, cls) -> None:
    """Refuse files of another format, version or type, naming what the file holds and what was expected."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ResultFileError(f"{path!r} is not a lucent-inhibit result file; expected a {cls.kind()}")
    held = f"a {meta.get('type')} (format version {meta.get('version')})"
    version = meta.get("version")
    if version != FORMAT_VERSION:
        which = "newer" if isinstance(version, int) and version > FORMAT_VERSION else "older"
        raise ResultFileError(
            f"{path!r} holds {held} written by a {which} lucent-inhibit; this version reads format version "
            f"{FORMAT_VERSION} {cls.kind()} files"
        )
    if meta.get("type") != cls.kind():
        raise ResultFileError(f"{path!r} holds {held}, expected a {cls.kind()}: load it with {meta.get('type')}.load")
    if meta.get("schema", 1) != cls.schema:
        raise ResultFileError(
            f"{path!r} holds {cls.kind()} schema {meta.get('schema')}, this version reads schema {cls.schema}"
        )


def load_result(path):
    """Load any result file, whatever its type (the type is read from the file); ``path`` as in ``load``."""
    path = load_path(path, "lucent-inhibit result")
    arrays, meta = read_result_file(path, "lucent-inhibit result")
    cls = result_type(meta.get("type")) if isinstance(meta, dict) else None
    if cls is None:
        held = meta.get("type") if isinstance(meta, dict) else None
        raise ResultFileError(f"{path!r} holds an unknown result type {held!r}; known: "
                              f"{sorted(set(_REGISTRY) | set(RESULT_MODULES))}")
    check_header(path, meta, cls)
    return cls._decode(arrays, meta["fields"])
