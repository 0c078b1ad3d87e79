"""Every result type of the library refuses a file it cannot read with one clear error: a file of another
type, a truncated file, a file holding a pickled object array, a file of a newer format version."""
import importlib
import io
import zipfile
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from lucent_inhibit.core import results

for _m in sorted(set(results.RESULT_MODULES.values())):
    importlib.import_module(f"lucent_inhibit.{_m}")

EXPECTED_TYPES = {
    "Accentuation", "Atlas", "AtlasGrid", "AtlasIcons", "AtlasLayout", "AtlasPoints", "Attribution", "AxisScales",
    "CombinationResult", "CompletenessResult", "InversionResult", "PairStatistics", "ScanResult", "Selection",
    "TenseResult", "ToyAnalysis", "ToySnapshot", "TrainResult", "Disinhibition", "InhibitorDictionary",
    "RandomizationCascade", "Census", "ChunkArrays",
}


@dataclass
class Stranger(results.Result):
    """A result type of its own, whose files no library type should accept."""

    values: torch.Tensor


def _library_types():
    return sorted((n, c) for n, c in results._REGISTRY.items() if c.__module__.startswith("lucent_inhibit."))


def test_every_result_type_is_on_the_result_base():
    assert EXPECTED_TYPES <= {n for n, _ in _library_types()}


def test_the_result_table_names_every_result_type_of_the_package_where_it_is_defined():
    import pkgutil

    import lucent_inhibit

    for m in pkgutil.walk_packages(lucent_inhibit.__path__, "lucent_inhibit."):
        importlib.import_module(m.name)
    found = {n: c.__module__ for n, c in _library_types()}
    assert {n: f"lucent_inhibit.{m}" for n, m in results.RESULT_MODULES.items()} == found


@pytest.fixture
def stranger_file(tmp_path):
    return Stranger(torch.arange(3.0)).save(tmp_path / "stranger")


@pytest.mark.parametrize("name, cls", _library_types(), ids=[n for n, _ in _library_types()])
def test_a_file_of_another_type_is_refused_naming_both(name, cls, stranger_file):
    with pytest.raises(results.ResultFileError, match=rf"stranger.npz' holds a Stranger .*expected a {name}"):
        cls.load(stranger_file)


@pytest.mark.parametrize("name, cls", _library_types(), ids=[n for n, _ in _library_types()])
def test_truncated_pickled_and_newer_files_are_refused(name, cls, stranger_file, tmp_path, monkeypatch):
    data = open(stranger_file, "rb").read()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(results.ResultFileError, match=rf"cut.npz' is truncated .*expected a {name}"):
        cls.load(cut)

    evil = tmp_path / "evil.npz"
    evil.write_bytes(data)
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(evil, "a") as z:
        z.writestr("payload.npy", buf.getvalue())
    with pytest.raises(results.ResultFileError, match=rf"pickled object array.*expected a {name}"):
        cls.load(evil)

    monkeypatch.setattr(results, "FORMAT_VERSION", results.FORMAT_VERSION + 1)
    newer = Stranger(torch.zeros(1)).save(tmp_path / "newer")
    monkeypatch.undo()
    with pytest.raises(results.ResultFileError, match="newer lucent-inhibit"):
        cls.load(newer)
