"""Image sizes a model cannot take are one clear error naming the size and what is needed, through the
public functions and the command line (InceptionV1, random weights: its logits exist at 224 px only)."""
import pytest
import torch

from lucent_inhibit import Feature, attribute
from lucent_inhibit.app.cli import main
from lucent_inhibit.core.layers import hook_count
from lucent_inhibit.models.layers import logits_input_size
from lucent_inhibit.models.loading import load_model

LOGITS = "softmax2_pre_activation_matmul"


@pytest.fixture(scope="module")
def inception():
    torch.manual_seed(0)
    return load_model("inceptionv1", weights="none")


@pytest.fixture
def own_hooks(inception):
    """The hooks InceptionV1 keeps for its pre-ReLU layers: the same number after each test."""
    n = hook_count(inception)
    yield
    assert hook_count(inception) == n


@pytest.mark.parametrize("side", [64, 128])
def test_inception_logits_below_224_name_the_size(inception, own_hooks, side):
    x = torch.rand(2, 3, side, side)
    with pytest.raises(ValueError, match=rf"{side}x{side} input.*224 px"):
        attribute(inception, x, Feature(LOGITS, unit=3), "mixed4a_pre_relu")


def test_inception_logits_above_224_are_refused_not_mixed_up(inception, own_hooks):
    """At 256 px the fixed 7x7 pool leaves 2x2 maps, which Lucent's reshape turns into 4 rows per image."""
    with pytest.raises(ValueError, match=r"returned 8 rows for a batch of 2 images at 256x256.*224"):
        attribute(inception, torch.rand(2, 3, 256, 256), Feature(LOGITS, unit=3), "mixed5b_pre_relu")


def test_inception_mixed_layers_work_at_small_sizes(inception):
    a = attribute(inception, torch.rand(2, 3, 64, 64), Feature("mixed4a_pre_relu", unit=7), "mixed3b_pre_relu")
    assert a.activation.shape == (2,) and torch.isfinite(a.scores["mixed3b_pre_relu"]).all()
    assert logits_input_size(inception) == 224
    assert logits_input_size(torch.nn.Conv2d(3, 3, 1)) is None


def _one_line_exit_2(argv, capsys, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("lucent-inhibit: error:"), err
    for needle in needles:
        assert needle in err, err


def test_cli_completeness_random_logits_at_128_px(tmp_path, capsys):
    _one_line_exit_2(["completeness", "--model", "inceptionv1", "--weights", "none", "--n-images", "4",
                      "--size", "128", "--n-features", "2", "--out", str(tmp_path / "c")], capsys,
                     "--size 128", "224 px")


def test_cli_scan_of_a_logit_at_96_px(tmp_path, capsys):
    _one_line_exit_2(["scan", "--model", "inceptionv1", "--weights", "none", "--n-images", "4", "--size", "96",
                      "--layer", LOGITS, "--unit", "3", "--attr-layers", "mixed5b_pre_relu",
                      "--out", str(tmp_path / "s")], capsys, "96x96", "224 px")


def test_cli_unknown_model_spec(tmp_path, capsys):
    _one_line_exit_2(["completeness", "--model", "torchvision:resnet1800", "--weights", "none",
                      "--out", str(tmp_path / "c")], capsys, "resnet1800", "Close matches")
    _one_line_exit_2(["completeness", "--model", "resnet18", "--out", str(tmp_path / "c")], capsys,
                     "'resnet18'", "torchvision:NAME")
