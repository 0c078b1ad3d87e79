"""Features and attribution: agreement with captum, one pass for all layers, P/N/tension, bad input."""
import captum.attr as captum_attr  # a test-only dependency (setup.cfg [test])
import numpy as np
import pytest
import torch
from torch import nn

from lucent_inhibit.attribution.attribute import Attribution, attribute, measure
from lucent_inhibit.attribution.totals import signed_totals, tension
from lucent_inhibit.core.features import Feature, as_feature


class LinearHead(nn.Module):
    """conv -> relu -> pool -> flatten -> fc: a linear (B, C) feature layer."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(2)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(24, 5)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x):
        return self.fc(self.flat(self.pool(self.relu(self.conv(x)))))


class TwoBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.b = nn.Conv2d(3, 4, 3, padding=1)
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        yb = self.b(x)
        return self.head(torch.cat([self.a(x), yb], 1))


# ------------------------------------------------------------------------------------------------
# agreement with captum
# ------------------------------------------------------------------------------------------------
def test_scores_equal_captum_layer_gradient_x_activation_conv_feature(tiny_net, tiny_images):
    feat = Feature("conv3", unit=2, position=(5, 9))
    names = ["conv1", "relu1", "conv2", "relu2"]
    ours = attribute(tiny_net, tiny_images, feat, names, preprocess=False)
    lga = captum_attr.LayerGradientXActivation(lambda x: tiny_net(x)[:, 2, 5, 9], [getattr(tiny_net, n) for n in names])
    theirs = lga.attribute(tiny_images)
    for n, t in zip(names, theirs):
        assert ours.scores[n].shape == t.shape
        torch.testing.assert_close(ours.scores[n], t.detach(), rtol=1e-5, atol=1e-6)
    pix = captum_attr.InputXGradient(lambda x: tiny_net(x)[:, 2, 5, 9]).attribute(tiny_images.clone().requires_grad_())
    torch.testing.assert_close(attribute(tiny_net, tiny_images, feat, "input", preprocess=False).scores["input"],
                               pix.detach(), rtol=1e-5, atol=1e-6)


def test_scores_equal_captum_for_a_logit_with_preprocessing(tiny_images):
    net = LinearHead().eval()
    from lucent_inhibit.core.preparation import preprocess_fn

    ours = attribute(net, tiny_images, Feature("fc", unit=3), ["conv", "relu", "pool"])
    lga = captum_attr.LayerGradientXActivation(net, [net.conv, net.relu, net.pool])
    theirs = lga.attribute(preprocess_fn(net)(tiny_images), target=3)
    for n, t in zip(["conv", "relu", "pool"], theirs):
        torch.testing.assert_close(ours.scores[n], t.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.activation, net(preprocess_fn(net)(tiny_images))[:, 3].detach())


@pytest.mark.slow
def test_scores_equal_captum_on_the_real_model(lite0):
    from lucent_inhibit.core.layers import get_layer
    from lucent_inhibit.core.preparation import preprocess_fn
    from lucent_inhibit.data.bundled import sample_crops

    images = torch.stack(list(sample_crops(2, size=96, seed=3)))
    names = ["blocks_1_1", "blocks_2_0", "blocks_2_1", "blocks_3_0_bn2_act", "blocks_3_1"]
    feat = Feature("blocks_3_2", unit=17)
    ours = attribute(lite0, images, feat, names)

    def forward(x):
        out = {}
        h = get_layer(lite0, "blocks_3_2").register_forward_hook(lambda m, i, o: out.setdefault("a", o))
        try:
            lite0(x)
        finally:
            h.remove()
        return feat(out["a"])

    lga = captum_attr.LayerGradientXActivation(forward, [get_layer(lite0, n) for n in names])
    theirs = lga.attribute(preprocess_fn(lite0)(images))
    for n, t in zip(names, theirs):
        scale = t.abs().max()
        torch.testing.assert_close(ours.scores[n] / scale, t.detach() / scale, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# the attribution object
# ------------------------------------------------------------------------------------------------
def test_one_pass_for_all_layers_equals_separate_passes(tiny_net, tiny_images):
    feat = Feature("conv3", direction=[0.5, -1.0, 2.0, 0.0], position="mean")
    names = ["input", "conv1", "relu2"]
    together = attribute(tiny_net, tiny_images, feat, names)
    for n in names:
        alone = attribute(tiny_net, tiny_images, feat, n)
        torch.testing.assert_close(together.scores[n], alone.scores[n])
    torch.testing.assert_close(together.activation, measure(tiny_net, tiny_images, feat))
    assert together.layers == names and together.scores["conv1"].shape == (4, 8, 16, 16)


def test_feature_reads_unit_direction_and_position():
    act = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    torch.testing.assert_close(Feature("l", unit=1)(act), act[:, 1, 2, 2])
    torch.testing.assert_close(Feature("l", unit=2, position=(3, 0))(act), act[:, 2, 3, 0])
    torch.testing.assert_close(Feature("l", unit=0, position="mean")(act), act[:, 0].mean((1, 2)))
    torch.testing.assert_close(Feature("l", direction=[1, 0, -1])(act), act[:, 0, 2, 2] - act[:, 2, 2, 2])
    lin = torch.randn(3, 7)
    torch.testing.assert_close(Feature("fc", unit=6)(lin), lin[:, 6])
    f = Feature("l", direction=[1, 2, 3], position=(1, 2))
    assert Feature.from_dict(f.to_dict()) == f and as_feature(("l", 4)) == Feature("l", unit=4)


def test_signed_totals_split_e_and_tension_scores(tiny_net, tiny_images):
    att = attribute(tiny_net, tiny_images, Feature("conv3", unit=0), ["relu1"])
    s = att.scores["relu1"]
    p, n = att.positive("relu1"), att.negative("relu1")
    torch.testing.assert_close(p - n, att.total("relu1"), rtol=1e-5, atol=1e-5)
    assert torch.all(p > 0) and torch.all(n > 0)
    torch.testing.assert_close(p, s.clamp(min=0).flatten(1).sum(1))
    pc, nc = signed_totals(s, granularity="channel")
    torch.testing.assert_close(pc - nc, att.total("relu1"), rtol=1e-5, atol=1e-5)
    assert torch.all(pc <= p + 1e-6) and torch.all(nc <= n + 1e-6)  # summing over space first cancels
    p2, _ = signed_totals(s, norm="l2")
    torch.testing.assert_close(p2, s.clamp(min=0).pow(2).flatten(1).sum(1).sqrt())
    P, N = np.array([1.0, 4.0]), np.array([9.0, 1.0])
    np.testing.assert_allclose(tension(P, N), [1, 1])
    np.testing.assert_allclose(tension(P, N, "geometric"), [3, 2])
    np.testing.assert_allclose(tension(P, N, "harmonic"), [1.8, 1.6])
    np.testing.assert_allclose(tension(P, N, "product"), [9, 4])
    torch.testing.assert_close(att.tension("relu1"), torch.minimum(p, n))


def test_attribution_save_load(tiny_net, tiny_images, tmp_path):
    att = attribute(tiny_net, tiny_images, Feature("conv3", unit=1), ["conv1", "relu2"], method="integrated_gradients",
                    steps=4)
    att.save(tmp_path / "a.npz")
    back = Attribution.load(tmp_path / "a.npz")
    assert back.feature == att.feature and back.method == "integrated_gradients" and back.layers == att.layers
    for n in att.layers:
        torch.testing.assert_close(back.scores[n], att.scores[n])
        torch.testing.assert_close(back.baseline_activation[n], att.baseline_activation[n])


def test_integrated_gradients_totals_approach_f_minus_baseline(tiny_net, tiny_images):
    feat = Feature("conv3", unit=3)
    errs = []
    for steps in (2, 32):
        att = attribute(tiny_net, tiny_images[:2], feat, ["relu1"], method="integrated_gradients", steps=steps)
        gap = att.activation - att.baseline_activation["relu1"]
        errs.append(float((att.total("relu1") - gap).abs().max() / gap.abs().max()))
    assert errs[1] < errs[0] and errs[1] < 0.02


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------
def test_feature_constructor_rejects_bad_arguments():
    with pytest.raises(ValueError, match="exactly one of unit"):
        Feature("conv3")
    with pytest.raises(ValueError, match="exactly one of unit"):
        Feature("conv3", unit=1, direction=[1.0])
    with pytest.raises(ValueError, match="unit must be >= 0, got -1"):
        Feature("conv3", unit=-1)
    with pytest.raises(ValueError, match="position must be 'center', 'mean' or \\(y, x\\), got 'top'"):
        Feature("conv3", unit=1, position="top")
    with pytest.raises(ValueError, match="non-empty Lucent layer name"):
        Feature("", unit=1)


def test_attribute_bad_inputs_name_the_value(tiny_net, tiny_images):
    f = Feature("conv3", unit=0)
    with pytest.raises(ValueError, match=r"Unknown layer 'conv_1'.*Closest valid names: conv1"):
        attribute(tiny_net, tiny_images, f, ["conv_1"])
    with pytest.raises(ValueError, match=r"Unknown layer 'conv9'"):
        attribute(tiny_net, tiny_images, Feature("conv9", unit=0), ["conv1"])
    with pytest.raises(ValueError, match=r"unit 7 out of range for layer 'conv3' with 4 channels \(0..3\)"):
        attribute(tiny_net, tiny_images, Feature("conv3", unit=7), ["conv1"])
    with pytest.raises(ValueError, match=r"direction has length 2, but layer 'conv3' has 4 channels"):
        attribute(tiny_net, tiny_images, Feature("conv3", direction=[1, 1]), ["conv1"])
    with pytest.raises(ValueError, match=r"position \(3, 16\) is outside layer 'conv3''s 16x16 map"):
        attribute(tiny_net, tiny_images, Feature("conv3", unit=0, position=(3, 16)), ["conv1"])
    with pytest.raises(ValueError, match=r"shape \(B, 3, H, W\) or \(3, H, W\), got \(4, 1, 16, 16\)"):
        attribute(tiny_net, tiny_images[:, :1], f, ["conv1"])
    with pytest.raises(ValueError, match=r"must be in \[0, 1\].*got range \[-1"):
        attribute(tiny_net, tiny_images * 2 - 1, f, ["conv1"])
    with pytest.raises(ValueError, match="floating point in \\[0, 1\\], got dtype torch.uint8"):
        attribute(tiny_net, (tiny_images * 255).to(torch.uint8), f, ["conv1"])
    with pytest.raises(ValueError, match="NaN"):
        attribute(tiny_net, tiny_images.masked_fill(tiny_images > 0.9, float("nan")), f, ["conv1"])
    with pytest.raises(ValueError, match="empty batch"):
        attribute(tiny_net, tiny_images[:0], f, ["conv1"])
    with pytest.raises(TypeError, match="torch.Tensor"):
        attribute(tiny_net, tiny_images.numpy(), f, ["conv1"])
    with pytest.raises(ValueError, match="layers is empty"):
        attribute(tiny_net, tiny_images, f, [])
    with pytest.raises(ValueError, match="unknown attribution method 'saliency'"):
        attribute(tiny_net, tiny_images, f, ["conv1"], method="saliency")


def test_linear_feature_with_a_position_is_an_error(tiny_images):
    net = LinearHead().eval()
    with pytest.raises(ValueError, match=r"position \(0, 0\) given, but layer 'fc' is linear"):
        attribute(net, tiny_images, Feature("fc", unit=0, position=(0, 0)), ["conv"])


def test_layer_that_does_not_feed_the_feature_is_an_error(tiny_net, tiny_images):
    with pytest.raises(ValueError, match=r"'relu2' does not feed the feature at 'conv2'.*runs after"):
        attribute(tiny_net, tiny_images, Feature("conv2", unit=0), ["conv1", "relu2"])
    net = TwoBranch().eval()
    with pytest.raises(ValueError, match=r"'b' does not feed the feature at 'a'.*no gradient path"):
        attribute(net, tiny_images, Feature("a", unit=0), ["b"])
    with pytest.raises(ValueError, match=r"'b' does not feed the feature at 'a'"):
        attribute(net, tiny_images, Feature("a", unit=0), ["b"], method="integrated_gradients", steps=2)
