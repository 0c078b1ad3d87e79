"""Result files: a numpy ``.npz`` archive of arrays plus one JSON metadata entry (never pickle).

Every result type of the library (``Attribution``, ``ScanResult``, ``CompletenessResult``, atlas stages,
``CombinationResult``, toy models, ...) saves through :func:`save_npz` and loads through :func:`load_npz`,
so all result files share one format: readable with plain ``numpy.load(path, allow_pickle=False)``, the
metadata being ``json.loads(bytes(z["meta"]))``.
"""
from __future__ import annotations

import json
from typing import Dict, Tuple

import numpy as np


def meta_array(meta: dict) -> np.ndarray:
    """JSON-encode ``meta`` as a uint8 array (how metadata travels inside an npz)."""
    return np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


def save_npz(path, arrays: Dict[str, np.ndarray], meta: dict) -> None:
    """Write ``arrays`` and ``meta`` compressed to ``path`` (a file name, ``.npz`` appended by numpy when
    missing, or an open binary file)."""
    if "meta" in arrays:
        raise ValueError("'meta' is reserved for the metadata entry; rename that array")
    np.savez_compressed(path, **dict(arrays), meta=meta_array(meta))


def load_npz(path: str, what: str = "lucent-inhibit result") -> Tuple[Dict[str, np.ndarray], dict]:
    """Read a file written by :func:`save_npz`: ``(arrays, meta)``, arrays fully loaded.

    Raises ``ValueError`` naming the file when it has no metadata entry (not one of this library's files).
    """
    with np.load(path, allow_pickle=False) as z:
        if "meta" not in z.files:
            raise ValueError(f"{path!r} is not a {what} file (no meta entry)")
        meta = json.loads(bytes(z["meta"]).decode())
        arrays = {k: z[k] for k in z.files if k != "meta"}
    return arrays, meta
