"""The combos stage picks its pair among units whose own visualization reaches a positive value (the axis
scale of paper 004 needs one); skipped pairs are named, and no candidate left is one clear error."""
import pytest
import torch
from torch import nn

from lucent_inhibit.app.stages.combos import scaled_pair
from lucent_inhibit.combinations import pair_statistics
from lucent_inhibit.core.layers import hook_count
from lucent_inhibit.core.settings import PassSettings, RenderSettings


class NeverPositive(nn.Module):
    """Channel 0 becomes ``-relu(x) - 0.1``: it varies over images but no image makes it positive."""

    def forward(self, x):
        return torch.cat([-x[:, :1].relu() - 0.1, x[:, 1:]], dim=1)


class NegUnitNet(nn.Module):
    """conv - (channel 0 never positive) - conv; Lucent layers conv1, feat, conv2."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1)
        self.feat = NeverPositive()
        self.conv2 = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return self.conv2(self.feat(self.conv1(x)))


@pytest.fixture
def setup():
    model = NegUnitNet().eval()
    data = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    stats = pair_statistics(model, data, "feat", position="center", settings=PassSettings(batch_size=12, progress=False))
    return model, stats, RenderSettings(steps=12, size=16, model_size=16, transforms=[])


def test_a_pair_with_an_unexcitable_unit_is_skipped_and_named(setup):
    model, stats, settings = setup
    before = (hook_count(model), [p.requires_grad for p in model.parameters()])
    a, b, r, scales, skipped = scaled_pair(model, stats, [(0, 1, -0.9), (1, 2, -0.5)], settings)
    assert (a, b, r) == (1, 2, -0.5) and min(scales.scale) > 0
    assert len(skipped) == 1 and "units 0, 1" in skipped[0] and "unit 0 " in skipped[0]
    assert (hook_count(model), [p.requires_grad for p in model.parameters()]) == before


def test_no_scalable_pair_is_one_error_listing_every_pair(setup, monkeypatch):
    model, stats, settings = setup
    from lucent_inhibit import combinations

    calls = []
    real = combinations.axis_scales
    monkeypatch.setattr(combinations, "axis_scales", lambda *a, **k: calls.append(1) or real(*a, **k))
    with pytest.raises(ValueError, match=r"none of the 2 best-ranked pairs of 'feat'.*units 0, 1.*units 0, 2"):
        scaled_pair(model, stats, [(0, 1, -0.9), (0, 2, -0.5)], settings)
    assert len(calls) == 1  # unit 0 is known unexcitable after the first render


def test_other_render_errors_are_not_taken_for_unexcitable_units(setup, monkeypatch):
    model, stats, settings = setup
    from lucent_inhibit import combinations

    def broken(*a, **k):
        raise ValueError("layer 'feat' was not computed for a 8x8 model input")

    monkeypatch.setattr(combinations, "axis_scales", broken)
    with pytest.raises(ValueError, match="was not computed"):
        scaled_pair(model, stats, [(0, 1, -0.9), (1, 2, -0.5)], settings)
