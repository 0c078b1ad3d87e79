"""Scans and censuses under torchrun (two CPU processes, gloo) equal the one-process run; a killed
distributed scan resumes; ranks that disagree, or more ranks than images, are refused on every rank."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import TinyConvNet

from lucent_inhibit.census import Census, layer_census
from lucent_inhibit.core.distributed import DistributedError, agree, all_gather, barrier, init_from_env
from lucent_inhibit.core.settings import PassSettings
from lucent_inhibit.data.datasets import dataset_digest
from lucent_inhibit.scanning.result import ScanResult
from lucent_inhibit.scanning.run import scan

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)

#: One worker program run by every rank; its settings come as JSON in argv[1].
WORKER = textwrap.dedent('''
    import json, os, sys
    import torch
    from conftest import TinyConvNet
    from lucent_inhibit.census import layer_census
    from lucent_inhibit.scanning.store import ChunkStore
    from lucent_inhibit.scanning import scan
    from lucent_inhibit import PassSettings

    cfg = json.loads(sys.argv[1])
    rank = int(os.environ["RANK"])
    if cfg.get("kill_rank") == rank:  # a killed run: this rank dies after writing its first chunk
        put = ChunkStore.put
        def dying_put(self, c, part):
            put(self, c, part)
            os._exit(9)
        ChunkStore.put = dying_put
    seed = cfg.get("seeds", [3, 3])[rank]
    images = torch.rand(cfg["n"], 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    unit = cfg.get("units", [1, 1])[rank]
    for what in cfg["run"]:
        try:
            if what == "scan":
                r = scan(TinyConvNet().eval(), images, ("conv3", unit), "relu2", chunk_size=3,
                         out=os.path.join(cfg["out"], "scan"), settings=PassSettings(batch_size=3, progress=False))
            else:
                r = layer_census(TinyConvNet().eval(), images, "conv3", ["relu2", "relu1"], chunk_size=2,
                                 settings=PassSettings(batch_size=3, progress=False))
            r.save(os.path.join(cfg["out"], f"{what}-{rank}.npz"))
        except ValueError as exc:
            with open(os.path.join(cfg["out"], f"refused-{what}-{rank}.txt"), "w") as f:  # ranks' prints interleave
                f.write(f"{type(exc).__name__}: {exc}")
''')


def _env():
    path = os.pathsep.join([TESTS, ROOT, os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)


def _torchrun(args, timeout=120):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"] + args
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(), cwd=ROOT)


def _workers(tmp_path, **cfg):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cfg.setdefault("out", str(tmp_path))
    return _torchrun([str(script), json.dumps(cfg)])


def _images(n=12, seed=3):
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def _same_scan(a: ScanResult, b: ScanResult):
    for name in ("indices", "activation", "pos", "neg", "items"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.pos_maps.keys() == b.pos_maps.keys()
    for l in a.pos_maps:
        np.testing.assert_array_equal(a.pos_maps[l], b.pos_maps[l])
        np.testing.assert_array_equal(a.neg_maps[l], b.neg_maps[l])
    assert (a.feature, a.layers, a.dataset, a.dataset_size) == (b.feature, b.layers, b.dataset, b.dataset_size)
    assert a.completeness == b.completeness and a.info == b.info


def _one_process_scan(out):
    return scan(TinyConvNet().eval(), _images(), ("conv3", 1), "relu2", chunk_size=3, out=str(out), settings=PassSettings(batch_size=3, progress=False))


def test_torchrun_scan_and_census_equal_the_one_process_run(tmp_path):
    proc = _workers(tmp_path, n=12, run=["scan", "census"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = _one_process_scan(tmp_path / "one")
    for rank in (0, 1):  # every rank returns the whole scan
        _same_scan(one, ScanResult.load(tmp_path / f"scan-{rank}.npz"))
    _same_scan(one, ScanResult.load(tmp_path / "scan"))  # rank 0 wrote the one-process folder ...
    with open(tmp_path / "scan" / "manifest.json") as f, open(tmp_path / "one" / "manifest.json") as g:
        assert json.load(f) == json.load(g)  # ... chunk for chunk (same SHA-256s)
    census = layer_census(TinyConvNet().eval(), _images(), "conv3", ["relu2", "relu1"], chunk_size=2, settings=PassSettings(batch_size=3, progress=False))
    for rank in (0, 1):
        got = Census.load(tmp_path / f"census-{rank}.npz")
        for name in ("indices", "activation", "pos", "neg", "items"):
            np.testing.assert_array_equal(getattr(census, name), getattr(got, name), err_msg=name)
        np.testing.assert_array_equal(census.completeness, got.completeness)
        assert got.features == census.features and got.info == census.info


def test_killed_distributed_scan_resumes(tmp_path):
    killed = _workers(tmp_path, n=12, run=["scan"], kill_rank=1)
    assert killed.returncode != 0
    folder = tmp_path / "scan" / "rank-1-of-2"
    with open(folder / "manifest.json") as f:
        manifest = json.load(f)
    assert not manifest["complete"] and list(manifest["chunks"]) == ["000000"]
    kept = os.stat(folder / "chunk-000000.npz")
    assert not (tmp_path / "scan" / "manifest.json").exists()  # rank 0 wrote nothing yet
    proc = _workers(tmp_path, n=12, run=["scan"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = os.stat(folder / "chunk-000000.npz")
    assert (again.st_ino, again.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)  # reused, not recomputed
    one = _one_process_scan(tmp_path / "one")
    _same_scan(one, ScanResult.load(tmp_path / "scan"))
    _same_scan(one, ScanResult.load(tmp_path / "scan-1.npz"))


def _refusals(out):
    """What each rank's worker wrote when its scan / census was refused."""
    return {(r, w): (out / f"refused-{w}-{r}.txt").read_text() for r in (0, 1) for w in ("scan", "census")}


def test_more_ranks_than_images_are_refused_on_every_rank(tmp_path):
    small = _workers(tmp_path, n=1, run=["scan", "census"])
    assert small.returncode == 0, small.stderr[-3000:]
    for message in _refusals(tmp_path).values():
        assert message.startswith("DistributedError: world size 2 is larger than the dataset (1 images)")
    assert not list(tmp_path.glob("*.npz")) and not (tmp_path / "scan").exists()


def test_ranks_disagreeing_on_feature_or_images_are_refused_on_every_rank(tmp_path):
    odd = _workers(tmp_path, n=12, run=["scan", "census"], units=[1, 2], seeds=[3, 4])
    assert odd.returncode == 0, odd.stderr[-3000:]
    said = _refusals(tmp_path)
    for rank in (0, 1):
        assert "disagree" in said[rank, "scan"] and "feature=" in said[rank, "scan"]
        assert "disagree" in said[rank, "census"] and "images=" in said[rank, "census"]
    assert not list(tmp_path.glob("*.npz")) and not (tmp_path / "scan").exists()


def test_distributed_scan_refuses_to_resume_another_scan(tmp_path):
    _one_process_scan(tmp_path / "guard" / "scan")  # a finished scan of unit 1 in guard/scan ...
    other = _workers(tmp_path, n=12, run=["scan"], units=[2, 2], out=str(tmp_path / "guard"))  # ... is not resumed
    assert other.returncode == 0, other.stderr[-3000:]
    said = {r: (tmp_path / "guard" / f"refused-scan-{r}.txt").read_text() for r in (0, 1)}
    assert said[0].startswith("OtherWorkError: refusing to resume into") and "different feature" in said[0]
    assert said[1].startswith("DistributedError: rank 0 of 2 failed: OtherWorkError: refusing to resume")


@pytest.mark.slow
def test_torchrun_cli_stages_write_the_one_process_files(tmp_path):
    from lucent_inhibit.app import cli

    common = ["--model", "conftest:TinyConvNet", "--weights", "none", "--n-images", "12", "--size", "16",
              "--batch-size", "3", "--layer", "conv3", "--attr-layers", "relu2"]
    for stage, extra, name in (("scan", ["--unit", "1", "--chunk-size", "3", "--no-figures"], "scan.npz"),
                               ("census", ["--chunk-size", "2", "--no-figures"], "census.npz")):
        args = [stage, "--out", str(tmp_path / f"{stage}2")] + common + extra
        proc = _torchrun(["-m", "lucent_inhibit"] + args)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert cli.main([stage, "--out", str(tmp_path / f"{stage}1")] + common + extra) == 0
        assert (tmp_path / f"{stage}1" / name).read_bytes() == (tmp_path / f"{stage}2" / name).read_bytes()


#: A CLI run by every rank in which rank 0 is slow between creating its work folders and recording them, and
#: rank 1 starts 1 s late: it reaches ``--out`` while rank 0 is claiming it.
SLOW_CLAIM = textwrap.dedent('''
    import os, sys, time
    from lucent_inhibit.app import cli, staging

    if os.environ["RANK"] == "0":
        write = staging.write_manifest
        def slow_write(*args, **kwargs):
            time.sleep(3)
            write(*args, **kwargs)
        staging.write_manifest = slow_write
    else:
        time.sleep(1)
    sys.exit(cli.main(sys.argv[1:]))
''')


@pytest.mark.slow
def test_torchrun_ranks_wait_for_rank_0_to_claim_the_output_folder(tmp_path):
    """The other ranks do not read ``--out`` while rank 0 claims it: with rank 0 held for 3 s between creating
    the scan's checkpoint folder and recording it as the scan's, both ranks finish and equal a one-process run;
    a folder that rank 0 refuses stops every rank with its message, and nothing is written there."""
    from lucent_inhibit.app import cli

    script = tmp_path / "slow_claim.py"
    script.write_text(SLOW_CLAIM)
    args = ["scan", "--model", "conftest:TinyConvNet", "--weights", "none", "--n-images", "12", "--size", "16",
            "--batch-size", "3", "--layer", "conv3", "--attr-layers", "relu2", "--unit", "1", "--chunk-size", "3",
            "--no-figures"]
    proc = _torchrun([str(script)] + args + ["--out", str(tmp_path / "two")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert cli.main(args + ["--out", str(tmp_path / "one")]) == 0
    assert (tmp_path / "one" / "scan.npz").read_bytes() == (tmp_path / "two" / "scan.npz").read_bytes()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "scan.npz").write_text("the user's own file")
    proc = _torchrun([str(script)] + args + ["--out", str(tmp_path / "mine")])
    assert proc.returncode != 0
    assert "already holds scan.npz, not written by lucent-inhibit" in proc.stderr
    assert "rank 0 of 2 failed: OutputError" in proc.stderr
    assert sorted(os.listdir(tmp_path / "mine")) == ["scan.npz"]
    assert (tmp_path / "mine" / "scan.npz").read_text() == "the user's own file"


def test_one_process_helpers(tmp_path):
    """Without torchrun the helpers are the identity: rank 0 of 1, gathers of one, agreement with oneself."""
    assert init_from_env() == (0, 1) and barrier() is None
    assert all_gather(lambda: None) == [None]
    got = all_gather(lambda: {"a": np.arange(3)})
    np.testing.assert_array_equal(got[0]["a"], np.arange(3))
    assert agree("test", lambda: (5, {"x": 1})) == 5
    with pytest.raises(IndexError):  # a one-process failure is the error itself
        all_gather(lambda: {"a": np.zeros(1)[[5]]})
    a, b = _images(4, 1), _images(4, 2)
    assert dataset_digest(a) == dataset_digest(a.clone()) != dataset_digest(b)
    assert issubclass(DistributedError, ValueError)


@pytest.mark.slow
def test_torchrun_microscope_writes_the_one_process_site(tmp_path):
    """Two ranks share the census passes; every page, image, visualization and inversion equals the one-process
    run's, byte for byte, and the microscope file's arrays equal them, the floats to rounding (rank 0 reads the
    activations of its own shard off its census and computes the other shard's: 1e-7 relative)."""
    from lucent_inhibit.app import cli

    args = ["--model", "conftest:TinyConvNet", "--weights", "none", "--n-images", "12", "--size", "16", "--batch-size",
            "3", "--layer", "conv3", "relu2", "--attr-layer", "relu2", "relu1", "--steps", "4", "--render-size", "16",
            "--inversions", "1"]
    proc = _torchrun(["-m", "lucent_inhibit", "microscope", "--out", str(tmp_path / "two")] + args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert cli.main(["microscope", "--out", str(tmp_path / "one")] + args) == 0
    files = lambda root: sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)  # noqa: E731
    assert files(tmp_path / "one") == files(tmp_path / "two") and "inversions/conv3/0-0-exc.png" in files(tmp_path / "one")
    for name in files(tmp_path / "one"):
        if name == "microscope.npz":
            one, two = np.load(tmp_path / "one" / name), np.load(tmp_path / "two" / name)
            assert one.files == two.files
            for k in one.files:
                if one[k].dtype.kind == "f":
                    np.testing.assert_allclose(two[k], one[k], rtol=1e-6, atol=1e-6 * np.nanmax(np.abs(one[k]), initial=1))
                else:
                    np.testing.assert_array_equal(two[k], one[k])
            continue
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
