"""The scan's chunk store: shard arithmetic, and a clear error naming the file for every broken folder
(corrupt manifest, truncated or missing chunk, a folder that is not a scan)."""
import json
import os
import warnings

import numpy as np
import pytest
from test_scan import FEATURE, LAYERS, CountingDataset, SmallNet, _same

from lucent_inhibit.core.distributed import shard_indices
from lucent_inhibit.core.results import load_result
from lucent_inhibit.core.settings import PassSettings
from lucent_inhibit.core.validate import parse_shard
from lucent_inhibit.scanning.result import ScanResult
from lucent_inhibit.scanning.run import scan
from lucent_inhibit.scanning.store import (FORMAT, MANIFEST, ScanFolderError, chunk_images, load_chunks,
                                           read_scan_manifest, split_chunks)


@pytest.fixture
def finished(tmp_path):
    out = str(tmp_path / "scan")
    ref = scan(SmallNet(), CountingDataset(24), FEATURE, LAYERS, chunk_size=8, out=out, settings=PassSettings(batch_size=4, progress=False))
    return out, ref


# ------------------------------------------------------------------------------------------------
# shards and chunks
# ------------------------------------------------------------------------------------------------
def test_shards_are_contiguous_and_cover_the_dataset():
    assert parse_shard(None) == (0, 1) and parse_shard("2/3") == (2, 3) and parse_shard((1, 4)) == (1, 4)
    parts = [shard_indices(23, (i, 5)) for i in range(5)]
    np.testing.assert_array_equal(np.concatenate(parts), np.arange(23))
    assert max(p.size for p in parts) - min(p.size for p in parts) <= 1
    assert shard_indices(23, "1/5").dtype == np.int64


@pytest.mark.parametrize("bad", [(3, 3), (-1, 2), "1/0", "a/b", "1-2", 5, (1, 2, 3), (True, 2), (0.5, 2)])
def test_bad_shards_are_refused_naming_the_value(bad):
    with pytest.raises(ValueError, match=r"shard must be 'i/n' or \(i, n\) with integers 0 <= i < n, got"):
        parse_shard(bad)


def test_chunk_sizes_are_whole_batches():
    assert chunk_images(4, None) == 256 and chunk_images(48, None) == 240 and chunk_images(300, None) == 300
    assert chunk_images(4, 9) == 12 and chunk_images(4, 8) == 8
    for bad in (0, True, 2.5, "8"):
        with pytest.raises(ValueError, match="chunk_size must be"):
            chunk_images(4, bad)
    assert [c.tolist() for c in split_chunks(np.arange(5), 2)] == [[0, 1], [2, 3], [4]]


# ------------------------------------------------------------------------------------------------
# reading a finished folder
# ------------------------------------------------------------------------------------------------
def test_chunks_are_scan_result_files_of_the_one_format(finished):
    out, ref = finished
    manifest, parts = load_chunks(out, ScanResult)
    assert manifest["format"] == FORMAT and manifest["complete"] and len(parts) == 3
    first = load_result(os.path.join(out, "chunk-000000.npz"))
    assert isinstance(first, ScanResult) and first.indices.tolist() == list(range(8))
    _same(ref, ScanResult.load(out))


def test_corrupt_manifest_names_the_file(finished):
    out, _ = finished
    path = os.path.join(out, MANIFEST)
    with open(path, "w") as f:
        f.write('{"format": "lucent-inhibit-scan/2", "chunks": {')  # cut short
    for call in (lambda: ScanResult.load(out),
                 lambda: scan(SmallNet(), CountingDataset(24), FEATURE, LAYERS, chunk_size=8, out=out, settings=PassSettings(batch_size=4, progress=False))):
        with pytest.raises(ScanFolderError, match=f"manifest '{path}' is corrupt.*JSONDecodeError.*resume=False"):
            call()
    again = scan(SmallNet(), CountingDataset(24), FEATURE, LAYERS, chunk_size=8, out=out, resume=False, settings=PassSettings(batch_size=4, progress=False))
    _same(again, ScanResult.load(out))


def test_truncated_chunk_names_the_file(finished):
    out, _ = finished
    chunk = os.path.join(out, "chunk-000001.npz")
    data = open(chunk, "rb").read()
    open(chunk, "wb").write(data[: len(data) // 3])
    with pytest.raises(ScanFolderError, match=r"chunk 1 of scan folder .*chunk-000001\.npz.*SHA-256"):
        ScanResult.load(out)
    # a manifest that agrees with the truncated bytes still gets a clear error, not a BadZipFile traceback
    man = json.load(open(os.path.join(out, MANIFEST)))
    from lucent_inhibit.core.io import sha256

    man["chunks"]["000001"].update(bytes=os.path.getsize(chunk), sha256=sha256(chunk))
    json.dump(man, open(os.path.join(out, MANIFEST), "w"))
    with pytest.raises(ScanFolderError, match=r"chunk 1 .*cannot be read.*chunk-000001\.npz.*truncated"):
        ScanResult.load(out)


def test_missing_chunk_names_the_file(finished):
    out, _ = finished
    os.remove(os.path.join(out, "chunk-000002.npz"))
    with pytest.raises(ScanFolderError, match=r"chunk 2 .*chunk-000002\.npz' is missing"):
        ScanResult.load(out)


def test_a_folder_that_is_not_a_scan(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    with pytest.raises(ScanFolderError, match=r"'.*empty' is not a scan folder: it has no manifest\.json"):
        ScanResult.load(str(empty))
    with open(empty / MANIFEST, "w") as f:
        json.dump({"format": "something-else/1"}, f)
    with pytest.raises(ScanFolderError, match=r"manifest of format 'something-else/1', not a scan manifest"):
        read_scan_manifest(str(empty))
    with pytest.raises(ScanFolderError, match="not a directory"):
        read_scan_manifest(str(empty / "notes.txt"))
    with pytest.raises(FileNotFoundError, match="no ScanResult file"):
        ScanResult.load(str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match="exists and is not a folder"):
        scan(SmallNet(), CountingDataset(4), FEATURE, LAYERS, out=str(empty / "notes.txt"), settings=PassSettings(progress=False))


def test_old_or_unfinished_folders_are_not_mixed(finished):
    out, _ = finished
    man = json.load(open(os.path.join(out, MANIFEST)))
    man["chunks"].pop("000002")
    json.dump(man, open(os.path.join(out, MANIFEST), "w"))
    with pytest.raises(ScanFolderError, match="lists 2 chunks but the scan has 3"):
        ScanResult.load(out)
    man["format"] = "lucent-inhibit-scan/1"
    json.dump(man, open(os.path.join(out, MANIFEST), "w"))
    with pytest.raises(ScanFolderError, match="format 'lucent-inhibit-scan/1'"):
        scan(SmallNet(), CountingDataset(24), FEATURE, LAYERS, chunk_size=8, out=out, settings=PassSettings(batch_size=4, progress=False))


def test_a_checkpoint_of_other_weights_is_never_resumed(tmp_path):
    """The same command with other weights (same layer names, same images): the scan refuses the folder, the
    census starts over (with a warning); neither returns numbers of the first model."""
    import torch

    from conftest import TinyConvNet
    from lucent_inhibit import layer_census, scan
    from lucent_inhibit.core.checkpoints import OtherWorkError
    from lucent_inhibit.core.settings import PassSettings

    settings = PassSettings(batch_size=3, progress=False, preprocess=False)
    data = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    a, b = TinyConvNet(seed=0).eval(), TinyConvNet(seed=1).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scan(a, data, ("conv3", 1), "relu2", out=str(tmp_path / "s"), chunk_size=3, settings=settings)
        with pytest.raises(OtherWorkError, match="different model"):
            scan(b, data, ("conv3", 1), "relu2", out=str(tmp_path / "s"), chunk_size=3, settings=settings)
        layer_census(a, data, "conv3", ["relu2"], settings=settings, checkpoint=str(tmp_path / "c"))
    with pytest.warns(UserWarning, match="holds checkpoints of another census"):
        got = layer_census(b, data, "conv3", ["relu2"], settings=settings, checkpoint=str(tmp_path / "c"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = layer_census(b, data, "conv3", ["relu2"], settings=settings)
    np.testing.assert_array_equal(got.activation, want.activation)
