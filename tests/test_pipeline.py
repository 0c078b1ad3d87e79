"""Folder images decoded in worker processes (lucent_inhibit.data.workers): the same batches, in the same order,
as the main process; unreadable files found at open in the workers too; every stage reads through it."""
import os

import numpy as np
import pytest
import torch
from conftest import TinyConvNet
from PIL import Image

import lucent_inhibit as li
from lucent_inhibit.app.cli import main
from lucent_inhibit.core.settings import PassSettings
from lucent_inhibit.core.validate import InputError
from lucent_inhibit.data.batching import iter_batches
from lucent_inhibit.data.folders import ImageFolder


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    root.mkdir()
    for i in range(10):  # mixed sizes and modes: every batch is resized and converted in the workers
        h, w = 20 + 3 * i, 30 - i
        mode = ("RGB", "L", "RGBA", "P")[i % 4]
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(arr).convert(mode).save(root / f"{i:02d}.png")
    return root


def test_workers_give_the_main_process_batches_in_order(folder):
    main_proc, workers = ImageFolder(str(folder), size=16), ImageFolder(str(folder), size=16, workers=2)
    a = list(iter_batches(main_proc, 3, indices=[9, 1, 4, 0, 7, 2, 8]))
    b = list(iter_batches(workers, 3, indices=[9, 1, 4, 0, 7, 2, 8]))
    assert [c.tolist() for c, _ in a] == [c.tolist() for c, _ in b] == [[9, 1, 4], [0, 7, 2], [8]]
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a, b))


def test_workers_find_unreadable_files_at_open(folder):
    (folder / "broken.jpg").write_bytes(open(folder / "00.png", "rb").read()[:40])
    with pytest.warns(UserWarning, match="broken.jpg"):
        ds = ImageFolder(str(folder), size=16, workers=2)
    assert len(ds) == 10 and not any(p.endswith("broken.jpg") for p in ds.paths)


@pytest.mark.parametrize("workers", [-1, 1.5, 10 ** 6, True])
def test_bad_worker_counts_are_refused(folder, workers):
    with pytest.raises(InputError, match="workers"):
        ImageFolder(str(folder), size=16, workers=workers)


def test_a_scan_over_a_folder_is_the_same_with_workers(folder):
    model = TinyConvNet(width=4).eval()
    feature = li.Feature("conv3", unit=1)
    runs = [li.scan(model, ImageFolder(str(folder), size=16, workers=w), feature, ["relu2"], settings=PassSettings(batch_size=3, progress=False)) for w in (0, 2)]
    assert np.array_equal(runs[0].activation, runs[1].activation)
    assert np.array_equal(runs[0].P("relu2"), runs[1].P("relu2"))


def test_the_cli_reads_a_folder_with_workers(folder, tmp_path, capsys):
    out = tmp_path / "scan"
    args = ["scan", "--model", "conftest:TinyConvNet", "--layer", "conv3", "--unit", "1", "--attr-layers", "relu2",
            "--images", str(folder), "--size", "16", "--batch-size", "4", "--workers", "2", "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    assert os.path.exists(out / "scan.npz")
    assert main(args[:-4] + ["--workers", "-1", "--out", str(tmp_path / "x")]) == 2
    assert "--workers" in capsys.readouterr().err
