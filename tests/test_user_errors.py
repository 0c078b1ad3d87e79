"""User and system mistakes found by reliability trials: each is one line naming the bad value and what was
expected (command line: ``lucent-inhibit: error: ...``, exit status 2), never an internal error or a traceback."""
import os

import pytest
import torch
from conftest import TinyConvNet
from lucent.optvis import objectives as lucent_objectives
from torch import nn

import lucent_inhibit as li
from lucent_inhibit.app.cli import main
from lucent_inhibit.core.validate import InputError

SMALL = ["--size", "64", "--n-images", "8"]
R = li.RenderSettings(steps=1, size=16)
GIB = 2 ** 30


def _run(capsys, *argv) -> str:
    """The one error line of a command line that must exit 2."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    lines = [line for line in err if line.startswith("lucent-inhibit: error:")]
    assert len(lines) == 1 and "internal error" not in "\n".join(err), err
    return lines[0]


@pytest.fixture
def memory(monkeypatch):
    """The machine's available memory as the checks read it, set to 8 GiB (so the tests do not depend on it)."""
    from lucent_inhibit.census import run

    monkeypatch.setattr(run, "available_memory", lambda device: 8 * GIB)


@pytest.fixture
def net():
    return li.prepare(TinyConvNet())


# 1. a device this torch build or machine lacks, or one no model runs on ---------------------------------------
@pytest.mark.parametrize("device", ["mps", "meta", "cuda:7"])
def test_a_device_this_machine_lacks_is_named_with_those_available(device, capsys, tmp_path):
    if device == "mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        pytest.skip("this machine has an MPS device")
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    line = _run(capsys, "completeness", "--device", device, *SMALL, "--out", tmp_path / "o")
    assert f"--device '{device}'" in line and "available on this machine: cpu" in line


# 2. a model constructor that raises or needs arguments ----------------------------------------------------------
def test_a_model_constructor_that_raises_or_needs_arguments_says_so(capsys, tmp_path, monkeypatch):
    (tmp_path / "li_trial_models.py").write_text(
        "def broken():\n    raise RuntimeError('no config file\\nsecond line')\n\n"
        "def needs(depth, width=3):\n    raise AssertionError('never called')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    line = _run(capsys, "completeness", "--model", "li_trial_models:broken", *SMALL, "--out", tmp_path / "a")
    assert "model constructor 'li_trial_models:broken' raised: RuntimeError: no config file" in line
    line = _run(capsys, "completeness", "--model", "li_trial_models:needs", *SMALL, "--out", tmp_path / "b")
    assert "model constructor 'li_trial_models:needs' needs arguments (depth)" in line


# 3. a path component longer than the file system takes --------------------------------------------------------
@pytest.mark.parametrize("option", ["--out", "--images"])
def test_a_too_long_path_component_is_named(option, capsys, tmp_path):
    long = str(tmp_path / ("a" * 300))
    argv = ["completeness", *SMALL, "--out", tmp_path / "o", option, long]
    line = _run(capsys, *argv)
    assert option in line and "path component too long (300 > 255 characters)" in line
    from lucent_inhibit.core.validate import check_path_length

    with pytest.raises(InputError, match=r"--scan .*path too long \(5001 > 4096 bytes\)"):
        check_path_length("--scan", "a/" * 2500 + "b")


# 4. sizes that would allocate more memory than the machine has ----------------------------------------------------
@pytest.mark.parametrize("argv, said", [
    (["atlas", "--crop-size", "100000"], "--crop-size 100000"),
    (["scan", "--size", "4096", "--batch-size", "512", "--n-images", "1000"], "--batch-size 512, --size 4096"),
    (["toy", "--count", "100000", "--n", "1000", "--m", "1000"], "--count 100000"),
], ids=["atlas-crop-size", "scan-batch", "toy-count"])
def test_sizes_beyond_the_machines_memory_are_refused_before_any_work(argv, said, capsys, tmp_path, memory):
    line = _run(capsys, *argv, "--out", tmp_path / "o")
    assert said in line and "would need" in line and "but this machine has 8 GiB available" in line
    assert not (tmp_path / "o").exists()


def test_tense_batch_is_bounded(capsys, tmp_path):
    assert "--batch must be <= 4096" in _run(capsys, "tense", "--batch", "100000", "--out", tmp_path / "o")


def test_icons_beyond_memory_are_refused_before_rendering(memory):
    from lucent_inhibit.atlas.icons import AtlasIcons

    icons = AtlasIcons(torch.zeros(4, 16, 16, 3, dtype=torch.uint8).numpy(), torch.zeros(4).numpy(),
                       torch.zeros(4).numpy(), crop_size=30000)
    with pytest.raises(InputError, match=r"4 atlas icon\(s\) .*30000x30000 px crops .*would need 50.3 GiB"):
        icons.crops()


# 5. a value that is not a model; a channel a layer does not have -------------------------------------------------
X = torch.rand(2, 3, 16, 16)
F = li.Feature("conv3", unit=1)
TAKES_A_MODEL = {
    "attribute": lambda m: li.attribute(m, X, F, ["relu2"]),
    "scan": lambda m: li.scan(m, list(X), F, ["relu2"]),
    "layer_census": lambda m: li.layer_census(m, list(X), "conv3", ["relu2"]),
    "completeness": lambda m: li.completeness(m, list(X), [F], ["relu2"]),
    "tense_image": lambda m: li.tense_image(m, F, "relu2", render=R),
    "accentuate": lambda m: li.accentuate(m, X[0], lucent_objectives.channel("conv3", 1), render=R),
    "inversions": lambda m: li.inversions(m, X[0], F, "relu2", render=R),
    "capture": lambda m: li.capture(m, X, ["conv3"]),
    "pick_unit": lambda m: li.pick_unit(m, list(X), "conv3"),
    "preprocess_fn": lambda m: li.preprocess_fn(m),
}


@pytest.mark.parametrize("name", list(TAKES_A_MODEL))
def test_a_string_where_a_model_is_expected_is_named(name):
    with pytest.raises(InputError, match=r"^model must be a torch.nn.Module, got str 'efficientnet'") as info:
        TAKES_A_MODEL[name]("efficientnet")
    assert isinstance(info.value, TypeError)


def test_a_lucent_channel_beyond_the_layer_is_named_before_rendering(net):
    with pytest.raises(InputError, match=r"^objective Channel \[conv3, 99, None\] reads channel 99 of layer 'conv3', "
                                         r"which has 4 channels \(0 to 3\)$"):
        li.accentuate(net, X[0], lucent_objectives.channel("conv3", 99), render=R)
    with pytest.raises(InputError, match=r"^extra objective .*Neuron \[relu2, 50.* channel 50 .*'relu2'.*8 channels"):
        li.tense_image(net, F, "relu2", render=R, extra=0.5 * lucent_objectives.neuron("relu2", 50) + 1.0)
    li.accentuate(net, X[0], lucent_objectives.channel("conv3", 3), render=R)  # a channel it has renders


# 6. paths are used as given ------------------------------------------------------------------------------------------
def test_an_existing_path_is_used_as_given(capsys, tmp_path, net):
    (tmp_path / "file.txt").write_text("not a scan\n")
    line = _run(capsys, "atlas", "--scan", tmp_path / "file.txt", *SMALL, "--out", tmp_path / "o")
    assert f"'{tmp_path / 'file.txt'}' is not a ScanResult file (a 11-byte file of another kind" in line
    (tmp_path / "d").mkdir()
    line = _run(capsys, "toy", "--load", tmp_path / "d", "--out", tmp_path / "o2")
    assert f"'{tmp_path / 'd'}' is a folder, not a ToySnapshot file" in line and ".npz" not in line
    saved = li.attribute(net, X, F, ["relu2"]).save(tmp_path / "att")
    os.rename(saved, tmp_path / "att.result")
    assert li.load_result(tmp_path / "att.result").feature == F  # an existing file without .npz loads


# 7. a misspelt layer is an unknown layer with close names ------------------------------------------------------
def test_a_misspelt_layer_in_synthesis_is_unknown_with_close_names(net):
    with pytest.raises(ValueError, match=r"Unknown layer 'conv3x'.*Closest valid names: conv3"):
        li.tense_image(net, li.Feature("conv3x", unit=1), "relu2", render=R)
    with pytest.raises(ValueError, match=r"Unknown layer 'relu2x'.*Closest valid names: relu2"):
        li.tense_image(net, F, "relu2x", render=R)
    with pytest.raises(InputError, match=r"Channel \[conv3x, 1, None\]: Unknown layer 'conv3x'.*conv3"):
        li.accentuate(net, X[0], lucent_objectives.channel("conv3x", 1), render=R)
    with pytest.raises(ValueError, match=r"Unknown layer 'relu2x'.*relu2"):  # checked also when switched off
        li.accentuate(net, X[0], lucent_objectives.channel("conv3", 1), reg_layer="relu2x", reg_lambda=0, render=R)


# 8. a module that never runs ---------------------------------------------------------------------------------------
class WithUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.relu1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1)
        self.unused = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.conv2(self.relu1(self.conv1(x)))


@pytest.mark.parametrize("method", ["gradient_x_activation", "integrated_gradients"])
def test_a_module_that_never_runs_is_said_to_never_run(method):
    model = li.prepare(WithUnused())
    with pytest.raises(ValueError, match=r"'unused' .*never runs in the model's forward pass \(eval mode\)"):
        li.completeness(model, list(X), [li.Feature("conv2", unit=0)], ["unused"], method=method,
                        settings=li.PassSettings(progress=False))


# 9. layer options are checked even when the option using them is off --------------------------------------------
def test_ig_layers_are_checked_without_ig_features(capsys, tmp_path):
    line = _run(capsys, "completeness", "--ig-layers", "blocks_9_9", "--ig-features", "0", *SMALL,
                "--out", tmp_path / "o")
    assert "Unknown layer 'blocks_9_9'" in line and "Closest valid names" in line


# 10. arguments of the result API ---------------------------------------------------------------------------------
def test_result_api_arguments_are_named(net):
    with pytest.raises(InputError, match=r"^path must be a file path \(a str or os.PathLike\), got NoneType None$"):
        li.load_result(None)
    with pytest.raises(InputError, match=r"^path must be a file path .*got int 3$"):
        li.ScanResult.load(3)
    result = li.scan(net, list(X), F, ["relu2"], settings=li.PassSettings(progress=False), score="min")
    with pytest.raises(InputError, match=r"^top_activation must be >= 0, got -3$"):
        result.select(top_activation=-3)
    with pytest.raises(InputError, match=r"^top_tension must be an integer, got 1.5$"):
        result.select(top_tension=1.5)
