"""Output folders: nothing of the user's is moved, overwritten or deleted; bad --out is refused before any
work; interrupted runs leave the previous report and no temporary folder (lucent_inhibit.app.outputs)."""
import dataclasses
import os
import signal
import subprocess
import sys
import time

import pytest

from lucent_inhibit.app.cli import main
from lucent_inhibit.app.options import options
from lucent_inhibit.app.outputs import (MANIFEST, OutputError, check_report_target, check_target, read_manifest,
                                        stage_files)
from lucent_inhibit.app.staging import StagingDir, stage_output
from lucent_inhibit.core.interrupts import Interrupted
from lucent_inhibit.app.stages import STAGES

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = ["--model", "conftest:TinyConvNet", "--layer", "conv3", "--unit", "1"]
#: A tiny run of every stage that writes into --out (tests/ is on sys.path, so conftest models load).
RUNS = {
    "scan": TINY + ["--attr-layers", "relu2", "--n-images", "6", "--size", "16", "--batch-size", "3", "--top-k", "2",
             "--score", "min"],
    "completeness": ["--model", "conftest:TinyConvNet", "--layer", "conv3", "--unit", "0", "--layers", "relu2",
                     "--n-images", "4", "--size", "16", "--batch-size", "2"],
    "invert": TINY + ["--attr-layer", "relu2", "--n-images", "4", "--size", "16", "--steps", "2"],
    "tense": TINY + ["--attr-layer", "relu2", "--size", "16", "--steps", "2"],
    "combos": ["--model", "conftest:TinyConvNet", "--layer", "conv3", "--n-images", "4", "--size", "16",
               "--n-angles", "5", "--n-seeds", "1", "--steps", "2", "--scale-steps", "2"],
    "toy": ["--n", "4", "--m", "3", "--steps", "20", "--seeds", "1", "--count", "16"],
    "randomize": TINY + ["--attr-layer", "relu2", "--n-images", "12", "--size", "16", "--batch-size", "6", "--top-k", "3"],
    "atlas": TINY + ["--attr-layer", "relu2", "--n-images", "6", "--size", "16", "--steps", "2", "--top-abs", "6",
                     "--top-activation", "0", "--bottom-activation", "0", "--top-tension", "0", "--min-points", "2"],
}
WITH_IMAGES = [s for s in RUNS if any(o.flag == "--images" for o in options(STAGES[s].config))]


def _user_files(folder):
    """A user's files in ``folder``: a note, a sub-folder with a file, a PNG of a name no stage writes."""
    os.makedirs(os.path.join(folder, "mine"), exist_ok=True)
    files = {"notes.txt": "my notes", os.path.join("mine", "data.csv"): "1,2", "holiday.png": "not a png"}
    for name, text in files.items():
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)
    return files


def _intact(folder, files):
    for name, text in files.items():
        with open(os.path.join(folder, name)) as f:
            assert f.read() == text, name


def _err(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("lucent-inhibit: error:"), err
    return err


# ------------------------------------------------------------------------------------------------
# every stage: files beside the user's, own files overwritten on a rerun, nothing else touched
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", [pytest.param(s, marks=pytest.mark.slow) if s in ("atlas", "combos") else s
                                   for s in RUNS])
def test_every_stage_writes_beside_the_users_files_and_reruns_over_its_own(stage, tmp_path, capsys, one_thread,
                                                                             monkeypatch):
    monkeypatch.chdir(HERE)
    out = str(tmp_path / "out")
    user = _user_files(out)
    assert main([stage, *RUNS[stage], "--out", out]) == 0, capsys.readouterr().err
    _intact(out, user)
    written = read_manifest(out)
    assert written and set(written.values()) == {stage}
    assert not set(written) & {"notes.txt", "mine", "holiday.png"}
    stamp = {n: os.path.getmtime(os.path.join(out, n)) for n in written}
    time.sleep(0.01)
    assert main([stage, *RUNS[stage], "--out", out]) == 0, capsys.readouterr().err  # its own files: overwritten
    _intact(out, user)
    assert set(read_manifest(out)) == set(written)
    assert sorted(os.listdir(out)) == sorted(set(written) | {"notes.txt", "mine", "holiday.png", MANIFEST})
    assert all(os.path.getmtime(os.path.join(out, n)) >= stamp[n] for n in written if not os.path.isdir(
        os.path.join(out, n)))


def test_every_stage_but_the_report_declares_the_files_it_writes():
    assert [s for s in STAGES if not stage_files(STAGES[s])] == ["demo"]


@pytest.mark.parametrize("stage", [s for s in RUNS if stage_files(STAGES[s])])
def test_a_user_file_with_a_stage_file_name_is_refused_before_any_work(stage, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    name = stage_files(STAGES[stage])[0].rstrip("/")
    (out / name).write_text("the user's own")
    args = RUNS[stage] + (["--model", "no_such_model_would_fail_later"] if stage != "toy" else [])
    assert main([stage, *args, "--out", str(out)]) == 2
    err = _err(capsys)
    assert name in err and "not written by lucent-inhibit" in err
    assert (out / name).read_text() == "the user's own" and sorted(os.listdir(out)) == [name]


@pytest.mark.parametrize("stage", list(STAGES))
def test_out_that_is_a_file_or_unwritable_is_refused_before_any_work(stage, tmp_path, capsys):
    path = tmp_path / "existing_file"
    path.write_text("keep me")
    broken = ["--model", "no_such_model_would_fail_later"] if stage != "toy" else ["--load", str(tmp_path / "x")]
    for out, expected in [(path, "existing file"), (path / "sub", "is a file"), ("/proc/lucent-out", "not writable")]:
        assert main([stage, *broken, "--out", str(out)]) == 2
        assert expected in _err(capsys)
    assert path.read_text() == "keep me" and os.listdir(tmp_path) == ["existing_file"]


@pytest.mark.parametrize("stage", WITH_IMAGES + ["demo"])
def test_out_equal_to_inside_or_containing_the_images_is_refused(stage, tmp_path, capsys):
    images = tmp_path / "photos"
    images.mkdir()
    (images / "a.png").write_bytes(b"x")
    for out, where in [(images, "is the input"), (images / "out", "is inside"), (tmp_path, "contains")]:
        assert main([stage, "--images", str(images), "--out", str(out)]) == 2
        assert where in _err(capsys)
    assert os.listdir(images) == ["a.png"] and sorted(os.listdir(tmp_path)) == ["photos"]


# ------------------------------------------------------------------------------------------------
# the library: check_target, stage_output, StagingDir
# ------------------------------------------------------------------------------------------------
def test_check_target_refusals_name_the_folder(tmp_path):
    assert check_target(str(tmp_path / "new" / "deeper")) == os.path.realpath(tmp_path / "new" / "deeper")
    (tmp_path / "f").write_text("x")
    for out in [tmp_path / "f", tmp_path / "f" / "g", "/proc/x/y", ""]:
        with pytest.raises(OutputError):
            check_target(str(out))
    with pytest.raises(OutputError, match="input image folder"):
        check_target(str(tmp_path), inputs=[str(tmp_path / "in")])
    assert check_target(tmp_path) == os.path.realpath(tmp_path)  # path-like objects too
    assert issubclass(OutputError, ValueError)  # library callers can catch it as one
    assert os.listdir(tmp_path) == ["f"]


def test_stage_output_stages_records_its_files_and_removes_a_folder_it_left_empty(tmp_path):
    out = str(tmp_path / "o")
    with pytest.raises(RuntimeError):
        with stage_output(out, "x", ("a.txt",)) as folder:
            open(os.path.join(folder, "a.txt"), "w").write("partial")
            raise RuntimeError("failed after writing")
    assert not os.path.exists(out)  # nothing of the failed run is left, not even the folder it made
    with stage_output(out, "x", ("a.txt", "b/")) as folder:
        assert folder != out and os.path.dirname(folder) == os.path.realpath(out)
        os.makedirs(os.path.join(folder, "b"))
        open(os.path.join(folder, "a.txt"), "w").write("1")
        open(os.path.join(out, "user.txt"), "w").write("not mine")  # not a stage file: never recorded
        assert not os.path.exists(os.path.join(out, "a.txt"))  # staged: not under its final name yet
    assert read_manifest(out) == {"a.txt": "x", "b": "x"} and open(os.path.join(out, "a.txt")).read() == "1"
    os.remove(os.path.join(out, "user.txt"))
    with stage_output(out, "y", None) as folder:  # a stage with no declared files: only its own new files
        open(os.path.join(folder, "c.txt"), "w").write("1")
    assert read_manifest(out) == {"a.txt": "x", "b": "x", "c.txt": "y"}
    assert sorted(os.listdir(out)) == [MANIFEST, "a.txt", "b", "c.txt"]


def test_a_failed_or_interrupted_stage_leaves_the_previous_output_byte_identical(tmp_path):
    out = str(tmp_path / "o")
    with stage_output(out, "x", ("a.txt", "b/")) as folder:
        open(os.path.join(folder, "a.txt"), "w").write("previous")
        os.makedirs(os.path.join(folder, "b"))
        open(os.path.join(folder, "b", "f"), "w").write("previous")
    for exc in (RuntimeError("failed"), KeyboardInterrupt(), OSError(28, "No space left on device")):
        with pytest.raises(type(exc)):
            with stage_output(out, "x", ("a.txt", "b/")) as folder:
                open(os.path.join(folder, "a.txt"), "w").write("new")
                os.makedirs(os.path.join(folder, "b"))
                raise exc
        assert open(os.path.join(out, "a.txt")).read() == "previous"
        assert open(os.path.join(out, "b", "f")).read() == "previous" and os.listdir(os.path.join(out, "b")) == ["f"]
        assert sorted(os.listdir(out)) == [MANIFEST, "a.txt", "b"]
    with stage_output(out, "x", ("a.txt", "b/")) as folder:  # a finished run replaces folders whole
        os.makedirs(os.path.join(folder, "b"))
        open(os.path.join(folder, "b", "g"), "w").write("new")
    assert os.listdir(os.path.join(out, "b")) == ["g"] and open(os.path.join(out, "a.txt")).read() == "previous"


def test_work_folders_are_claimed_before_the_stage_runs_and_written_in_place(tmp_path):
    out = str(tmp_path / "o")
    with pytest.raises(RuntimeError):
        with stage_output(out, "x", ("r.npz", "ck/"), work=["ck"]) as folder:
            assert read_manifest(out) == {"ck": "x"}  # recorded before the first checkpoint: a SIGKILL keeps it ours
            open(os.path.join(folder, "ck", "chunk-0"), "w").write("0")
            raise RuntimeError("killed")
    assert os.listdir(os.path.join(out, "ck")) == ["chunk-0"] and read_manifest(out) == {"ck": "x"}
    with stage_output(out, "x", ("r.npz", "ck/"), work=["ck"], transient=["ck"]) as folder:
        assert os.listdir(os.path.join(folder, "ck")) == ["chunk-0"]  # the rerun sees its checkpoints
        open(os.path.join(folder, "r.npz"), "w").write("r")
    assert sorted(os.listdir(out)) == [MANIFEST, "r.npz"] and read_manifest(out) == {"r.npz": "x"}


def test_a_second_live_run_of_a_stage_into_the_same_folder_is_refused(tmp_path):
    out = str(tmp_path / "o")
    with stage_output(out, "x", ("a.txt",)):
        with pytest.raises(OutputError, match="another lucent-inhibit run"):
            staging = os.path.join(out, ".staging-x")
            open(os.path.join(staging, "pid"), "w").write(str(os.getppid()))  # a live process that is not us
            with stage_output(out, "x", ("a.txt",)):
                pass
        open(os.path.join(staging, "pid"), "w").write(str(os.getpid()))


def test_stage_without_declared_files_needs_a_folder_of_its_own(tmp_path):
    (tmp_path / "user.txt").write_text("x")
    with pytest.raises(OutputError, match="user.txt"):
        with stage_output(str(tmp_path), "new_stage", None):
            pass
    assert os.listdir(tmp_path) == ["user.txt"]


def test_report_replaces_only_a_previous_report_of_its_own(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "thesis.tex").write_text("mine")
    with pytest.raises(OutputError, match="not a previous lucent-inhibit report"):
        StagingDir(str(out)).__enter__()
    assert os.listdir(out) == ["thesis.tex"] and sorted(os.listdir(tmp_path)) == ["report"]
    (out / "thesis.tex").unlink()
    with StagingDir(str(out)) as tmp:  # an empty folder may be used
        os.makedirs(os.path.join(tmp, "scan"))
        open(os.path.join(tmp, "scan", "a.png"), "w").write("1")
    assert read_manifest(str(out)) == {"scan/a.png": "report"}
    (out / "scan" / "my_note.txt").write_text("added by the user")
    with pytest.raises(OutputError, match="my_note.txt"):
        check_report_target(str(out))
    (out / "scan" / "my_note.txt").unlink()
    with StagingDir(str(out)) as tmp:
        open(os.path.join(tmp, "index.html"), "w").write("new")
    assert sorted(os.listdir(out)) == [MANIFEST, "index.html"]
    assert sorted(os.listdir(tmp_path)) == ["report"]


def test_demo_refuses_a_folder_of_user_files_and_the_working_directory(tmp_path, capsys, monkeypatch):
    user = _user_files(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for out in (".", str(tmp_path)):
        assert main(["demo", "--quick", "--out", out]) == 2
        assert "not a previous lucent-inhibit report" in _err(capsys)
    _intact(str(tmp_path), user)
    assert sorted(os.listdir(tmp_path)) == ["holiday.png", "mine", "notes.txt"]


# ------------------------------------------------------------------------------------------------
# interrupted runs
# ------------------------------------------------------------------------------------------------
def _start(argv, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "lucent_inhibit", *argv], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, proc, timeout=240):
    t0 = time.time()
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_an_interrupted_demo_keeps_the_previous_report_and_leaves_no_temporary_folder(sig, code, tmp_path):
    out = tmp_path / "report"
    with StagingDir(str(out)) as tmp:  # the previous report
        open(os.path.join(tmp, "index.html"), "w").write("previous report")
    proc = _start(["demo", "--quick", "--out", str(out)], str(tmp_path))
    _wait_for(lambda: any(n.startswith(".partial-") for n in os.listdir(tmp_path)), proc)
    time.sleep(1.0)  # inside a stage
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == ["report"]
    assert (out / "index.html").read_text() == "previous report"
    assert read_manifest(str(out)) == {"index.html": "report"}


def test_a_stage_interrupted_by_sigterm_leaves_no_temporary_file(tmp_path):
    out = tmp_path / "scan"
    argv = TINY + ["--attr-layers", "relu2", "--n-images", "400", "--size", "32", "--batch-size", "2",
                   "--chunk-size", "4", "--out", str(out)]
    proc = _start(["scan", *argv], HERE)
    _wait_for(lambda: os.path.isdir(out / "scan") and len(os.listdir(out / "scan")) > 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    names = [n for _, _, files in os.walk(out) for n in files]
    assert not [n for n in names if n.endswith(".tmp") or n.startswith(".tmp-")]
    assert read_manifest(str(out)) == {"scan": "scan"}  # the checkpoints are its own: a rerun resumes


class _InterruptedWhileCollected:
    """An object whose ``__del__`` receives a signal: Python prints the KeyboardInterrupt it raises and
    goes on, as happens when Ctrl-C lands while the garbage collector runs a library's finaliser."""

    def __init__(self, sig):
        self.sig = sig

    def __del__(self):
        signal.raise_signal(self.sig)


def _swallow(sig):
    try:
        signal.raise_signal(sig)
    except KeyboardInterrupt:  # a library that catches it
        pass


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("swallowed_by", ["__del__", "except"])
def test_an_interrupt_swallowed_inside_a_report_still_keeps_the_previous_report(sig, swallowed_by, tmp_path,
                                                                                monkeypatch):
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: None)
    out = tmp_path / "report"
    with StagingDir(str(out)) as tmp:
        open(os.path.join(tmp, "index.html"), "w").write("previous report")
    with pytest.raises(Interrupted) as info:
        with StagingDir(str(out)) as tmp:
            if swallowed_by == "__del__":
                _InterruptedWhileCollected(sig)  # collected at once: its __del__ runs here
            else:
                _swallow(sig)
            open(os.path.join(tmp, "index.html"), "w").write("new report")
    assert info.value.signum == sig
    assert (out / "index.html").read_text() == "previous report"
    assert sorted(os.listdir(tmp_path)) == ["report"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_a_stage_whose_interrupt_was_swallowed_stops_and_a_later_block_is_not_affected(tmp_path):
    with pytest.raises(Interrupted):
        with stage_output(str(tmp_path / "out"), "scan", stage_files(STAGES["scan"])):
            _swallow(signal.SIGINT)
    with stage_output(str(tmp_path / "out"), "scan", stage_files(STAGES["scan"])):  # no interrupt this time
        pass


def test_the_cli_run_whose_ctrl_c_landed_in_a_finaliser_exits_130_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)  # prints (pytest would only warn)
    toy = STAGES["toy"]

    def run(cfg, progress=True):
        _InterruptedWhileCollected(signal.SIGINT)
        return toy.run(cfg, progress)

    monkeypatch.setitem(STAGES, "toy", dataclasses.replace(toy, run=run))
    out = tmp_path / "toy"
    assert main(["toy", *RUNS["toy"], "--out", str(out)]) == 130
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("lucent-inhibit: interrupted (Ctrl-C); ") and f"{str(out)!r} holds its previous output" in last, last
    assert "Traceback" not in err and "Exception ignored" not in err, err
