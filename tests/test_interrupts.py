"""Interrupted never means lost: every stage, stopped by SIGINT, SIGTERM or SIGKILL over a previous output,
leaves that output byte-identical; after a SIGKILL the same command resumes (from its checkpoints where the
stage has them) and ends equal to an uninterrupted run; renders stopped inside Lucent's render_vis raise.
"""
import glob
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import TinyConvNet

from lucent_inhibit.app.outputs import MANIFEST, read_manifest
from lucent_inhibit.core.checkpoints import checkpointed
from lucent_inhibit.core.rendering import run_render
from lucent_inhibit.core.settings import RenderSettings
from lucent.optvis import param as lucent_param

HERE = os.path.dirname(os.path.abspath(__file__))
T = ["--model", "conftest:TinyConvNet", "--layer", "conv3", "--unit", "1"]
IMG = ["--size", "16", "--batch-size", "2"]
#: stage: (a short run: the previous output, a run long enough to be stopped part-way)
STAGE_RUNS = {
    "scan": (T + ["--attr-layers", "relu2", "--n-images", "6", "--score", "min"] + IMG,
             T + ["--attr-layers", "relu2", "--n-images", "300", "--chunk-size", "8", "--score", "min"] + IMG),
    # (over a previous scan of other images, a scan must be told to start its checkpoints over: --no-resume)
    "census": (["--model", "conftest:TinyConvNet", "--layer", "conv3", "--attr-layers", "relu2", "--n-images", "6"]
               + IMG, ["--model", "conftest:TinyConvNet", "--layer", "conv3", "--attr-layers", "relu2",
                       "--n-images", "400"] + IMG),
    "completeness": (["--model", "conftest:TinyConvNet", "--layer", "conv3", "--unit", "0", "--layers", "relu2",
                      "--n-images", "4"] + IMG,
                     ["--model", "conftest:TinyConvNet", "--layer", "conv3", "--unit", "0", "--layers", "relu2",
                      "--n-images", "500"] + IMG),
    "inhibitors": (T + ["--attr-layer", "relu2", "--n-images", "12", "--top-k", "2", "--n-random", "4",
                        "--n-channels", "2", "--n-top-images", "2", "--n-remove", "1", "--random-draws", "2",
                        "--no-render"] + IMG,
                   T + ["--attr-layer", "relu2", "--n-images", "200", "--top-k", "4", "--n-random", "8",
                        "--n-channels", "4", "--n-top-images", "4", "--n-remove", "2", "--random-draws", "4",
                        "--steps", "40"] + IMG),
    "randomize": (T + ["--attr-layer", "relu2", "--n-images", "12", "--top-k", "2"] + IMG,
                  T + ["--attr-layer", "relu2", "--n-images", "600", "--top-k", "4"] + IMG),
    "atlas": (T + ["--attr-layer", "relu2", "--n-images", "6", "--steps", "2", "--top-abs", "6", "--top-activation",
                   "0", "--bottom-activation", "0", "--top-tension", "0", "--min-points", "2"] + IMG,
              T + ["--attr-layer", "relu2", "--n-images", "300", "--steps", "8", "--top-abs", "150",
                   "--top-activation", "0", "--bottom-activation", "0", "--top-tension", "0", "--min-points", "2"]
              + IMG),
    "invert": (T + ["--attr-layer", "relu2", "--n-images", "4", "--steps", "2"] + IMG,
               T + ["--attr-layer", "relu2", "--n-images", "4", "--steps", "60"] + IMG),
    "tense": (T + ["--attr-layer", "relu2", "--size", "16", "--steps", "2"],
              T + ["--attr-layer", "relu2", "--size", "16", "--steps", "30"]),
    "combos": (["--model", "conftest:TinyConvNet", "--layer", "conv3", "--n-images", "4", "--size", "16",
                "--n-angles", "5", "--n-seeds", "1", "--steps", "2", "--scale-steps", "2"],
               ["--model", "conftest:TinyConvNet", "--layer", "conv3", "--n-images", "4", "--size", "16",
                "--n-angles", "10", "--n-seeds", "2", "--steps", "8", "--scale-steps", "2", "--chunk", "4"]),
    "toy": (["--n", "4", "--m", "3", "--steps", "20", "--seeds", "1", "--count", "16"],
            ["--n", "4", "--m", "3", "--steps", "8000", "--seeds", "1", "--count", "16"]),
}
#: Where the checkpoints of each checkpointed stage appear (a SIGKILL after the first one tests the resume).
CHECKPOINTS = {"scan": "scan", "census": "census-checkpoints", "completeness": "completeness-checkpoints",
               "randomize": "randomization-checkpoints", "atlas": "atlas-checkpoints", "combos": "combos-checkpoints"}


def _as_from_a_terminal():
    """In the child before exec: SIGINT and SIGTERM unblocked and at their defaults, as a shell started from a
    terminal gives them (a test runner started in the background may pass SIGINT on ignored)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _start(stage, argv, out):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "lucent_inhibit", stage, *argv, "--out", out], cwd=HERE, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_as_from_a_terminal)


def _run(stage, argv, out):
    proc = _start(stage, argv, out)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]


def _snapshot(out):
    """relative path -> SHA-256 of every file the stage's previous run left (its manifest aside)."""
    found = {}
    for root, _, files in os.walk(out):
        for name in files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, out)
            if rel != MANIFEST:
                found[rel] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return found


def _finished(out, stage):
    """The snapshot of the outputs, checkpoints and staging aside."""
    skip = (CHECKPOINTS.get(stage, "\0") + os.sep, ".staging-")
    return {k: v for k, v in _snapshot(out).items() if not k.startswith(skip)}


def _wait(proc, predicate, timeout=300):
    t0 = time.time()
    while not predicate():
        if proc.poll() is not None:
            return False  # finished before the point was reached
        assert time.time() - t0 < timeout, "timed out waiting for the stage"
        time.sleep(0.02)
    return True


def _stop(proc, sig):
    """Send ``sig``; returns (return code, seconds until the process ended, stderr)."""
    t0 = time.time()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, time.time() - t0, err


def _arrays(out):
    """Every array of every .npz result file in ``out`` (checkpoints aside), metadata parsed."""
    found = {}
    for path in sorted(glob.glob(os.path.join(out, "*.npz"))):
        with np.load(path, allow_pickle=False) as z:
            for k in z.files:
                found[(os.path.basename(path), k)] = json.loads(bytes(z[k]).decode()) if k == "__meta__" else z[k]
    return found


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if k[1] == "__meta__":
            continue  # metadata hold run times
        assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind in "fc"), k


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGE_RUNS))
def test_every_stage_stopped_by_any_signal_keeps_the_previous_output_and_resumes_after_sigkill(stage, tmp_path):
    short, long = STAGE_RUNS[stage]
    out, staging = str(tmp_path / "out"), str(tmp_path / "out" / f".staging-{stage}")
    _run(stage, short, out)
    if stage == "scan":
        long = long + ["--no-resume"]
    previous, listed = _finished(out, stage), read_manifest(out)
    assert previous and listed
    inside = lambda: os.path.isdir(staging)  # noqa: E731  (the stage has started its work)
    for sig, delay in ((signal.SIGINT, 0.0), (signal.SIGTERM, 1.0)):
        proc = _start(stage, long, out)
        assert _wait(proc, inside), proc.communicate()[1][-2000:]
        time.sleep(delay)
        code, took, err = _stop(proc, sig)
        assert code == 128 + sig, err[-2000:]
        assert "interrupted" in err and "Traceback" not in err, err[-2000:]
        assert took < 60, f"{stage} took {took:.0f} s to stop after {signal.Signals(sig).name}"
        assert _finished(out, stage) == previous and not os.path.exists(staging)
        assert {k: v for k, v in read_manifest(out).items() if k in listed} == listed
    ck = CHECKPOINTS.get(stage)
    point = (lambda: bool(glob.glob(os.path.join(out, ck, "**", "chunk-*.npz"), recursive=True))) if ck else inside
    proc = _start(stage, long, out)
    reached = _wait(proc, point)
    if not ck:
        time.sleep(1.0)
    if reached and proc.poll() is None:
        code, _, _ = _stop(proc, signal.SIGKILL)
        assert code == -signal.SIGKILL
        assert _finished(out, stage) == previous
    else:  # the stage finished before its first checkpoint was seen: it must be complete
        proc.communicate()
    _run(stage, long, out)  # the same command again: resumes and finishes
    assert not os.path.exists(staging) and not (ck and os.path.exists(os.path.join(out, ck)) and stage != "scan")
    assert set(read_manifest(out)) >= set(listed)
    _run(stage, long, str(tmp_path / "uninterrupted"))
    _same(_arrays(out), _arrays(str(tmp_path / "uninterrupted")))


def test_a_sigkilled_scan_resumes_and_equals_an_uninterrupted_one(tmp_path):
    short, long = STAGE_RUNS["scan"]
    out = str(tmp_path / "out")
    proc = _start("scan", long, out)
    assert _wait(proc, lambda: len(glob.glob(os.path.join(out, "scan", "chunk-*.npz"))) >= 4)
    assert _stop(proc, signal.SIGKILL)[0] == -signal.SIGKILL
    done = len(glob.glob(os.path.join(out, "scan", "chunk-*.npz")))
    proc = _start("scan", long, out)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]  # its own checkpoints, recognised: not "not written by lucent-inhibit"
    assert "recomputing" not in err and done >= 4
    _run("scan", long, str(tmp_path / "ref"))
    _same(_arrays(out), _arrays(str(tmp_path / "ref")))


# ------------------------------------------------------------------------------------------------
# the mechanisms, in one process
# ------------------------------------------------------------------------------------------------
def test_a_render_whose_interrupt_lucent_swallowed_raises_it(capsys):
    model, calls = TinyConvNet().eval(), []

    def objective(T):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Lucent's render_vis catches it and returns its images
        return -T("conv3")[:, 1].mean()

    with pytest.raises(KeyboardInterrupt, match="stopped at step 2 of 10"):
        run_render(model, objective, lucent_param.image(16), RenderSettings(steps=10, seed=0, progress=False), "test",
                   transforms=[])
    assert len(calls) == 3


def test_checkpointed_work_resumes_where_it_stopped_and_equals_an_uninterrupted_run(tmp_path):
    chunks = [np.arange(i, i + 3) for i in range(0, 12, 3)]
    done = []

    def compute(c, idx):
        if c == 2 and not done.count("failed"):
            done.append("failed")
            raise KeyboardInterrupt
        done.append(c)
        return {"x": idx.astype(np.float32) ** 2, "y": np.stack([idx, -idx], 1)}

    folder = str(tmp_path / "ck")
    with pytest.raises(KeyboardInterrupt):
        checkpointed(folder, "test", {"a": 1}, chunks, compute)
    parts = checkpointed(folder, "test", {"a": 1}, chunks, compute)
    assert done == [0, 1, "failed", 2, 3]  # chunks 0 and 1 came from the folder
    reference = checkpointed(None, "test", {"a": 1}, chunks, compute)
    for p, r in zip(parts, reference):
        assert p.keys() == r.keys() and all(np.array_equal(p[k], r[k]) for k in p)
    with pytest.warns(UserWarning, match="another test .*starting over"):
        checkpointed(folder, "test", {"a": 2}, chunks, compute)  # other work: started over, never mixed
    assert done[-4:] == [0, 1, 2, 3]


def test_an_interrupted_library_call_never_returns_a_partial_result():
    from lucent_inhibit.synthesis.tense import tense_image

    model, calls = TinyConvNet().eval(), []
    hook = model.conv3.register_forward_hook(
        lambda m, i, o: (calls.append(1), (_ for _ in ()).throw(KeyboardInterrupt) if len(calls) == 5 else None)[1])
    try:
        with pytest.raises(KeyboardInterrupt):
            tense_image(model, ("conv3", 1), "relu2", render=RenderSettings(size=16, steps=20, seed=0, progress=False))
    finally:
        hook.remove()
    assert len(calls) == 5 and torch.is_grad_enabled()


@pytest.mark.parametrize("stage", ["scan", "census", "invert", "toy"])
def test_a_full_disk_is_one_line_exit_2_and_the_previous_output_is_kept(stage, tmp_path):
    import resource

    short = STAGE_RUNS[stage][0]
    out = str(tmp_path / "out")
    _run(stage, short, out)
    previous = _finished(out, stage)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # noqa: E731  (files stop at 4 KiB)
    proc = subprocess.run([sys.executable, "-m", "lucent_inhibit", stage, *short, "--out", out], cwd=HERE, env=env,
                          capture_output=True, text=True, timeout=600, preexec_fn=limit)
    err = [line for line in proc.stderr.splitlines() if line.startswith("lucent-inhibit: error")]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(err) == 1 and "file-size limit" in err[0] and "previous output" in err[0], err
    assert _finished(out, stage) == previous and not os.path.exists(os.path.join(out, f".staging-{stage}"))
