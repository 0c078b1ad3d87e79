"""Layouts as data: which axis of a layer holds channels is read from the model (core.layouts), and every
method reads a channels-last map along its true channel axis. Planted models whose answer is known by
construction; the real channels-last models (timm Swin, ConvNeXt, torchvision Swin) are in
tests/test_layouts_models.py."""
import pytest
import torch
from lucent.optvis.render import hook_model
from torch import nn

import lucent_inhibit as li
from lucent_inhibit.core.hooks import capture
from lucent_inhibit.core.layers import hooks_restored
from lucent_inhibit.core.layouts import NCHW, NHWC, TOKENS, LayoutError
from lucent_inhibit.core.probe import layer_layouts


class Permute(nn.Module):
    """A permute module, as torchvision's ``Permute``."""

    def __init__(self, dims):
        super().__init__()
        self.dims = list(dims)

    def forward(self, x):
        return x.permute(*self.dims)


class ChannelsLastMLP(nn.Module):
    """conv -> permute to (B, H, W, C) -> Linear -> GELU -> Linear -> permute back -> conv: the MLP's
    layers are channels-last maps (ConvNeXt's block with conv_mlp=False)."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.to_last = Permute((0, 2, 3, 1))
        self.fc1, self.act, self.fc2 = nn.Linear(8, 12), nn.GELU(), nn.Linear(12, 6)
        self.to_first = Permute((0, 3, 1, 2))
        self.head = nn.Conv2d(6, 4, 3, padding=1)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x):
        return self.head(self.to_first(self.fc2(self.act(self.fc1(self.to_last(self.conv(x)))))))


class OneSizeOnly(nn.Module):
    """A channels-last map made by a functional permute, then an elementwise module, in a model that takes
    one input size only: nothing tells which axis holds channels."""

    def __init__(self):
        super().__init__()
        self.conv, self.act = nn.Conv2d(3, 5, 3, padding=1), nn.GELU()

    def forward(self, x):
        if x.shape[-1] != 12:
            raise ValueError("this model takes 12 px images only")
        return self.act(self.conv(x).permute(0, 2, 3, 1))


def test_layouts_are_read_from_the_modules_and_the_data_flow():
    model = ChannelsLastMLP().eval()
    layouts = layer_layouts(model, torch.rand(1, 3, 12, 10))
    assert {n: layouts[n].name for n in ("conv", "to_last", "fc1", "act", "fc2", "to_first", "head")} == {
        "conv": NCHW, "to_last": NHWC, "fc1": NHWC, "act": NHWC, "fc2": NHWC, "to_first": NCHW, "head": NCHW}
    assert "grow" in layouts["act"].why  # the second input size decides first, where the model takes one


def test_without_growth_the_modules_decide_and_the_rest_is_refused_with_its_candidates():
    model = OneSizeOnly().eval()
    layouts = layer_layouts(model, torch.rand(1, 3, 12, 12))
    assert layouts["conv"].name == NCHW and "Conv2d" in layouts["conv"].why
    assert layouts["act"].name == "unknown"
    with pytest.raises(LayoutError, match=r"which axis of layer 'act'.*\(1, 12, 12, 5\).*axis 1 \(12 channels\), "
                                          r"axis 3 \(5 channels\)"):
        capture(model, torch.rand(2, 3, 12, 12), ["act"])
    with pytest.raises(LayoutError, match="'act'"):
        li.attribute(model, torch.rand(2, 3, 12, 12), li.Feature("act", unit=1), ["conv"], preprocess=False)


def test_a_channels_last_layer_is_read_along_its_true_channel_axis():
    model = ChannelsLastMLP().eval()
    x = torch.rand(3, 3, 11, 9)
    raw = {}
    with hooks_restored(model):
        model.fc1.register_forward_hook(lambda m, i, o: raw.__setitem__("fc1", o))
        model.act.register_forward_hook(lambda m, i, o: raw.__setitem__("act", o))
        model(x)
    feature = li.Feature("fc1", unit=7, position=(2, 3))
    by_hand = raw["fc1"][:, 2, 3, 7]  # (B, H, W, C): row 2, column 3, channel 7
    assert torch.allclose(feature(capture(model, x, ["fc1"])["fc1"]), by_hand)
    att = li.attribute(model, x, feature, ["conv"], preprocess=False)
    assert torch.allclose(att.activation, by_hand, atol=1e-6)
    # attribution at a channels-last layer: S = grad x activation along the true axes, stored (B, C, H, W)
    h = raw["act"].detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model.fc2(h)[:, 2, 3, 5].sum(), h)
    att = li.attribute(model, x, li.Feature("fc2", unit=5, position=(2, 3)), ["act"], preprocess=False)
    assert att.scores["act"].shape == (3, 12, 11, 9)
    assert torch.allclose(att.scores["act"], (g * h).permute(0, 3, 1, 2), atol=1e-6)
    assert torch.allclose(att.total("act"), (g * h).flatten(1).sum(1), atol=1e-5)
    with pytest.raises(ValueError, match=r"unit 12 out of range for layer 'fc1' with 12 channels"):
        li.attribute(model, x, li.Feature("fc1", unit=12), ["act"], preprocess=False)


def _lucent_objective_value(model, objective, x):
    """The objective's value in one forward pass through Lucent's own hook (as inside render_vis)."""
    with hooks_restored(model):
        T = hook_model(model, lambda: x)
        model(x)
        return float(objective(T))


def test_objectives_inside_lucents_render_vis_read_the_true_channel():
    model = li.prepare(ChannelsLastMLP().eval())  # prepare probes the model: its modules' layouts are known
    x = torch.rand(1, 3, 11, 9)
    raw = {}
    with hooks_restored(model):
        model.fc1.register_forward_hook(lambda m, i, o: raw.__setitem__("fc1", o))
        model(x)
    obj = li.objectives.feature(li.Feature("fc1", unit=7, position=(2, 3)))
    assert _lucent_objective_value(model, obj, x) == pytest.approx(-float(raw["fc1"][0, 2, 3, 7]), abs=1e-6)


def test_objectives_inside_lucents_render_vis_refuse_a_reused_module_as_attribute_does():
    class Reused(nn.Module):  # one ReLU module called twice, as torchvision ResNet's blocks
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2, self.relu = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()

        def forward(self, x):
            return self.conv2(self.relu(self.conv2(self.relu(self.conv1(x)))))

    model = li.prepare(Reused().eval())
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(li.AmbiguousLayerError) as by_attribute:
        li.attribute(model, x, li.Feature("relu", unit=1), ["conv1"], preprocess=False)
    with pytest.raises(li.AmbiguousLayerError) as in_render_vis:
        _lucent_objective_value(model, li.objectives.feature(li.Feature("relu", unit=1)), x)
    assert str(in_render_vis.value) == str(by_attribute.value)


def test_token_layers_keep_their_layout():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.fc = nn.Conv2d(3, 6, 4, stride=4), nn.Linear(6, 5)

        def forward(self, x):
            return self.fc(self.embed(x).flatten(2).transpose(1, 2))

    layouts = layer_layouts(Tokens().eval(), torch.rand(1, 3, 16, 16))
    assert layouts["fc"].name == TOKENS and layouts["embed"].name == NCHW


def test_scan_census_and_renders_run_on_a_channels_last_layer(tmp_path):
    model = li.prepare(ChannelsLastMLP().eval())
    images = torch.rand(12, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    feature = li.Feature("fc2", unit=3)
    settings = li.PassSettings(batch_size=4, progress=False, preprocess=False)
    scan = li.scan(model, images, feature, ["act"], settings=settings)
    census = li.layer_census(model, images, "fc2", ["act"], settings=settings)
    one = li.attribute(model, images, feature, ["act"], preprocess=False)
    assert torch.allclose(torch.as_tensor(scan.activation), one.activation, atol=1e-5)
    assert torch.allclose(torch.as_tensor(census.activation[:, 3]), one.activation, atol=1e-5)
    assert torch.allclose(torch.as_tensor(scan.P("act")), one.positive("act"), rtol=1e-4, atol=1e-5)
    render = li.RenderSettings(steps=2, size=12, model_size=12, transforms=[])
    inv = li.inversions(model, images[0], feature, "act", render=render, completeness_images=0)
    assert inv.images.shape[0] == 3 and torch.isfinite(inv.images).all()
    vectors = li.collect_vectors(model, images, feature, "act", settings=settings)
    assert vectors.vectors.shape[1] == 12  # the channels of 'act', not its width
