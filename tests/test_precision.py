"""Reduced precision (torch.autocast) only where it stays within the stated tolerance of float32: the check
measures f, P and N both ways on one batch, refuses a model where large numbers cancel, and scans / censuses
record the precision they ran in (and refuse to resume a folder scanned in another)."""
import pytest
import torch
from torch import nn

import lucent_inhibit as li
from lucent_inhibit.attribution.precision import (AUTOCAST_TOLERANCE, AutocastTooInexact, active_precision, autocast,
                                                  check_autocast, checked_autocast)
from lucent_inhibit.core.settings import PassSettings
from lucent_inhibit.core.validate import InputError


class Cancelling(nn.Module):
    """h = conv(x) + 1000, f = conv2(h) - 1000 * sum(w2): the 1000s cancel exactly in real numbers, but in
    bfloat16 (8 significant bits) h is rounded to steps of 4, far more than f's own size."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 2, 1)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.randn(self.conv1.weight.shape, generator=g) * 0.1)
            self.conv1.bias.fill_(1000.0)
            self.conv2.weight.copy_(torch.randn(self.conv2.weight.shape, generator=g))
            self.conv2.bias.copy_(-1000.0 * self.conv2.weight.sum((1, 2, 3)))

    def forward(self, x):
        return self.conv2(self.conv1(x))


def images(n=4, size=16):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def test_check_measures_the_deviation_of_f_p_and_n_from_float32(tiny_net):
    feature = li.Feature("conv3", unit=1)
    check = check_autocast(tiny_net, images(), feature, ["relu1", "conv2"])
    assert check.dtype == "bfloat16" and check.images == 4
    assert set(check.deviation) == {"f", "P@relu1", "N@relu1", "P@conv2", "N@conv2"}
    assert 0 < max(check.deviation.values()) <= AUTOCAST_TOLERANCE and check.ok  # changed, but within the bar
    ref = li.attribute(tiny_net, images(), feature, ["relu1"])
    with autocast("cpu"):
        low = li.attribute(tiny_net, images(), feature, ["relu1"])
    by_hand = float((low.activation.float() - ref.activation).abs().max() / ref.activation.abs().max())
    assert check.deviation["f"] == pytest.approx(by_hand, rel=1e-6)


def test_a_model_where_large_numbers_cancel_is_refused():
    net = li.prepare(Cancelling())
    feature = li.Feature("conv2", unit=0)
    check = check_autocast(net, images(), feature, ["conv1"])
    assert not check.ok and check.deviation[check.worst] > 10 * AUTOCAST_TOLERANCE
    with pytest.raises(AutocastTooInexact, match=r"autocast bfloat16: largest deviation .* tolerance 2%"):
        checked_autocast(net, images(), feature, ["conv1"])
    assert check_autocast(net, images(), feature, ["conv1"], tolerance=0.5).tolerance == 0.5
    with pytest.raises(InputError, match="tolerance"):
        check_autocast(net, images(), feature, ["conv1"], tolerance=-1)


def test_precision_is_recorded_and_a_resume_across_precisions_is_refused(tiny_net, tiny_images, tmp_path):
    feature = li.Feature("conv3", unit=1)
    assert active_precision("cpu") == "float32"
    with autocast("cpu"):
        assert active_precision("cpu") == "autocast bfloat16"
        low = li.scan(tiny_net, tiny_images, feature, ["relu1"], out=str(tmp_path / "s"), settings=PassSettings(batch_size=4, progress=False))
    ref = li.scan(tiny_net, tiny_images, feature, ["relu1"], settings=PassSettings(batch_size=4, progress=False))
    assert low.info["precision"] == "autocast bfloat16" and ref.info["precision"] == "float32"
    scale = abs(ref.pos).max()
    assert abs(low.pos - ref.pos).max() / scale < AUTOCAST_TOLERANCE
    with pytest.raises(ValueError, match="different precision"):
        li.scan(tiny_net, tiny_images, feature, ["relu1"], out=str(tmp_path / "s"), settings=PassSettings(batch_size=4, progress=False))


def test_census_records_its_precision(tiny_net, tiny_images):
    census = li.layer_census(tiny_net, tiny_images, "conv3", ["relu1"], settings=PassSettings(batch_size=4, progress=False))
    assert census.info["precision"] == "float32"


def test_cli_scan_with_autocast_refuses_the_embedded_model_in_bfloat16_before_scanning(tmp_path, capsys):
    from lucent_inhibit.app.cli import main

    code = main(["scan", "--n-images", "8", "--size", "64", "--batch-size", "8", "--unit", "5", "--autocast", "--out",
                 str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "autocast bfloat16: largest deviation from float32" in err and "drop --autocast" in err
    assert not (tmp_path / "scan.npz").exists() and not (tmp_path / "scan").exists()
