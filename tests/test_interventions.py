"""Forward passes with a layer replaced (lucent_inhibit.attribution.interventions): channels set per image or per
block of images, and the replayed prefix (the network before a layer skipped) giving the numbers of ordinary
passes on several architectures, leaving the model as it was."""
import logging
import warnings

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from lucent_inhibit.attribution.interventions import forward_replaced, replayed_prefix, set_channels
from lucent_inhibit.attribution.passes import dataset_pass
from lucent_inhibit.core.features import Feature
from lucent_inhibit.core.settings import PassSettings

from conftest import TinyConvNet

SETTINGS = PassSettings(batch_size=8, progress=False, preprocess=False)


def test_set_channels_on_every_image_and_per_block():
    o, base = torch.randn(4, 5, 3, 3), torch.randn(5, 3, 3)
    want = o.clone()
    want[:, [1, 3]] = base[[1, 3]]
    assert torch.equal(set_channels(o, [1, 3], base), want)
    tokens, tbase = torch.randn(4, 7, 5), torch.randn(7, 5)  # a token layer: channels are the last axis
    want = tokens.clone()
    want[2:, :, 4] = tbase[:, 4]
    assert torch.equal(set_channels(tokens, [-1, 4], tbase, block=2), want)  # -1: that block unchanged
    want = o.clone()
    want[:2, 2] = 0
    assert torch.equal(set_channels(o, [2, -1], torch.zeros(()), block=2), want)
    with pytest.raises(ValueError, match="2 removals x block 3 != batch 4"):
        set_channels(o, [1, 2], torch.zeros(()), block=3)
    before = o.clone()
    assert torch.equal(o, before)  # every call above left its input as it was
    same = set_channels(o, [2, -1], torch.zeros(()), block=2, copy=False)  # in place: the caller's own tensor
    assert same is o and torch.equal(o, want)


class Twice(nn.Module):
    """One conv used twice before ``relu``: no single output per pass, so it computes; ``relu`` is replayed."""

    def __init__(self):
        super().__init__()
        self.conv, self.relu, self.head = nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return self.head(self.relu(self.conv(self.conv(x))))


def _models():
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None).eval()
    return [("tiny", TinyConvNet().eval(), "relu2", Feature("conv3", unit=1), 16),
            ("resnet18", resnet, "layer2", Feature("layer3_0_conv1", unit=5), 64),
            ("twice", Twice().eval(), "relu", Feature("head", unit=1), 16)]


@pytest.mark.parametrize("name,net,layer,feature,size", _models(), ids=lambda v: v if isinstance(v, str) else "")
def test_replayed_prefix_gives_the_numbers_of_ordinary_passes(name, net, layer, feature, size):
    images = torch.rand(6, 3, size, size, generator=torch.Generator().manual_seed(2))
    run = dataset_pass(net, images, [layer], [feature], SETTINGS)
    rows = torch.tensor([4, 1, 1, 3])
    remove = lambda o: set_channels(o, [0, 2], torch.zeros(()), block=2)  # noqa: E731
    want = forward_replaced(run, images[rows], feature, layer, remove)
    plain_scores = run.attribute(images[rows], feature).scores[layer]
    before = {n: dict(m.__dict__) for n, m in net.named_modules()}
    with replayed_prefix(net, images, layer) as replay:
        replay.rows = rows
        got = forward_replaced(run, images[rows], feature, layer, remove)
        scores = run.attribute(images[rows], feature).scores[layer]
    assert replay.modules[0] == layer and (len(replay.modules) > 1 or name == "twice")  # the layer, what runs before
    assert name != "twice" or replay.modules == ["relu"]  # a conv called twice computes
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scores, plain_scores, rtol=1e-5, atol=1e-6)
    assert all("forward" not in m.__dict__ for m in net.modules())  # every replayed module restored
    assert {n: set(m.__dict__) for n, m in net.named_modules()} == {n: set(d) for n, d in before.items()}


def test_a_replay_that_fails_falls_back_to_ordinary_passes(monkeypatch, caplog):
    import lucent_inhibit.microscope.channels as channels

    net, data = TinyConvNet().eval(), torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    features, mtis = [Feature("conv3", unit=u) for u in range(2)], np.array([[0, 3, 5], [1, 2, 5]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = channels.unit_channels(net, data, features, "relu2", mtis, 2, SETTINGS)

        def broken(*a, **k):
            raise RuntimeError("shape mismatch")

        monkeypatch.setattr(channels, "replayed_prefix", broken)
        with caplog.at_level(logging.INFO, logger="lucent_inhibit"):
            slow = channels.unit_channels(net, data, features, "relu2", mtis, 2, SETTINGS)
    assert "is not replayed (shape mismatch)" in caplog.text
    for k in channels.FIELDS:
        np.testing.assert_allclose(slow[k], fast[k], rtol=1e-5, atol=1e-6)


def test_a_replay_that_disagrees_is_not_used(monkeypatch, caplog):
    import lucent_inhibit.attribution.interventions as interventions
    import lucent_inhibit.microscope.channels as channels

    net, data = TinyConvNet().eval(), torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    features, mtis = [Feature("conv3", unit=u) for u in range(2)], np.array([[0, 3, 5], [1, 2, 5]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = channels.unit_channels(net, data, features, "relu2", mtis, 2, SETTINGS)
        real = interventions.PrefixReplay.output
        monkeypatch.setattr(interventions.PrefixReplay, "output", lambda self, rec: real(self, rec) * 1.5)  # wrong
        with caplog.at_level(logging.INFO, logger="lucent_inhibit"):
            got = channels.unit_channels(net, data, features, "relu2", mtis, 2, SETTINGS)
    assert "replayed gives other numbers than ordinary passes" in caplog.text
    for k in channels.FIELDS:  # every unit then ran ordinary passes: the numbers are the plain ones
        np.testing.assert_allclose(got[k], plain[k], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["convnext_tiny", "vit", "efficientnet_lite0"])
def test_replay_agrees_with_ordinary_passes_on_channels_last_token_and_the_embedded_model(name):
    """The microscope's check (one unit's channels and removal effects both ways) passes, so these models get
    the replayed prefix: a channels-last ConvNeXt, a timm ViT's token layers, the embedded EfficientNet-Lite0."""
    import lucent_inhibit as li
    from lucent_inhibit.microscope.channels import _replay_agrees
    from test_vit import tiny_vit

    model, size, layer, attr = {
        "convnext_tiny": (lambda: li.load_model("torchvision:convnext_tiny", weights="none"), 64, "features_1_0_block_5",
                          "features_1_0_block_3"),
        "vit": (tiny_vit, 32, "blocks_1_mlp_fc1", "blocks_0"),
        "efficientnet_lite0": (li.efficientnet_lite0, 96, "blocks_4_0_bn3_drop", "blocks_4_0_bn2_act")}[name]
    from lucent_inhibit.core.probe import layer_layouts
    from lucent_inhibit.microscope.readings import CensusReadings

    model, data, f = model(), torch.stack(list(li.sample_crops(14, size=size))), Feature(layer, unit=3)
    run_settings = PassSettings(progress=False, batch_size=7)
    run = dataset_pass(model, data, [attr], [f], run_settings)
    with warnings.catch_warnings(), run.evaluating():
        warnings.simplefilter("ignore")
        assert _replay_agrees(run, data, f, attr, np.array([0, 3, 5, 7]), {})
        # started from the attribution layer's outputs read off a census (in the model's layout: NHWC, tokens)
        reader = CensusReadings(attr, layer_layouts(model, data[0][None]).get(attr))
        li.layer_census(model, data, [f], [attr], settings=run_settings, on_batch=reader)
        assert sorted(reader.outputs) == list(range(14))
        assert _replay_agrees(run, data, f, attr, np.array([0, 3, 5, 7]), reader.outputs)


def test_replay_gathers_rows_as_new_tensors_keeping_channels_last_memory():
    from lucent_inhibit.attribution.interventions import PrefixReplay

    replay, rows = PrefixReplay(["a"]), torch.tensor([2, 0, 2])
    for recorded in (torch.randn(3, 4, 5, 6), torch.randn(3, 4, 5, 6).contiguous(memory_format=torch.channels_last),
                     torch.randn(3, 7, 4)):
        assert replay.output(recorded) is recorded  # rows None: the recorded batch itself
        replay.rows = rows
        got = replay.output(recorded)
        assert torch.equal(got, recorded[rows]) and got.data_ptr() != recorded.data_ptr()
        channels_last = recorded.dim() == 4 and recorded.is_contiguous(memory_format=torch.channels_last)
        assert got.is_contiguous(memory_format=torch.channels_last) == channels_last
        replay.rows = None
