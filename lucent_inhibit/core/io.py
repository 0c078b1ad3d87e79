"""Files written whole or not at all: atomic writes (a temporary file in the same folder, then a rename),
JSON files, and SHA-256 digests of files.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Callable


class JSONFileError(ValueError):
    """A JSON file that exists but cannot be read (unreadable, not UTF-8, not JSON); the message names it."""


def sha256(path: str) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """``write(tmp)`` to a temporary file next to ``path``, then rename it onto ``path`` (also on error,
    no partial ``path`` is ever visible; the temporary file is removed)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, obj: dict) -> None:
    """Write ``obj`` as JSON at ``path`` atomically (:func:`atomic_write`), flushed to disk (manifests)."""
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def read_json(path: str):
    """The JSON value in file ``path``; ``FileNotFoundError`` when there is none, :class:`JSONFileError`
    naming the file and the cause when it cannot be read or parsed."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JSONFileError(f"{path!r} is unreadable or not JSON ({type(exc).__name__}: {exc})") from None
