"""Completeness of attribution: exact on bias-free piecewise-linear nets, approximate with biases,
integrated gradients add up to f(x) - f(baseline), and the real model's pattern (slow)."""
import warnings

import numpy as np
import pytest
import torch
from conftest import TinyConvNet
from torch import nn

from lucent_inhibit.attribution.agreement import IncompletenessWarning, pearson, warn_if_incomplete
from lucent_inhibit.attribution.attribute import attribute
from lucent_inhibit.attribution.completeness import CompletenessResult, completeness, completeness_pair, random_logits
from lucent_inhibit.attribution.figures import _merge_orders, plot_completeness
from lucent_inhibit.core.features import Feature
from lucent_inhibit.core.settings import PassSettings

LATENT = ["input", "conv1", "relu1", "conv2", "relu2"]


def _images(n=12, size=12, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


class SmoothNet(nn.Module):
    """conv-softplus-conv-tanh-linear with biases: smooth, so IG converges at the midpoint rule's rate."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.act1 = nn.Softplus()
        self.conv2 = nn.Conv2d(6, 6, 3, stride=2, padding=1)
        self.act2 = nn.Tanh()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(6, 5)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.7)

    def forward(self, x):
        return self.fc(self.flat(self.pool(self.act2(self.conv2(self.act1(self.conv1(x)))))))


class TwoBranch(nn.Module):
    """Branch b runs before branch a; both feed the head. A feature on a is not fed by b."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        yb = self.b(x)
        ya = self.a(x)
        return self.head(torch.cat([ya, yb], 1))


# ------------------------------------------------------------------------------------------------
# the defining properties
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("position", ["center", "mean", (2, 9)])
def test_bias_free_piecewise_linear_net_is_exactly_complete(position):
    net = TinyConvNet(bias=False).eval()
    feats = [Feature("conv3", unit=u, position=position) for u in range(4)]
    res = completeness(net, _images(), feats, LATENT, settings=PassSettings(batch_size=5, progress=False))
    target = np.repeat(res.f[:, :, None], len(res.layers), axis=2)
    assert np.abs(res.f).max() > 0.1  # a non-trivial feature
    np.testing.assert_allclose(res.E, target, rtol=1e-4, atol=1e-5 * np.abs(res.f).max())
    assert np.all(res.r > 0.99999)
    assert res.relative_error().max() < 1e-5


def test_biases_break_exact_completeness_and_the_result_says_so():
    net = TinyConvNet(bias=True).eval()
    res = completeness(net, _images(), [Feature("conv3", unit=u) for u in range(4)], LATENT, settings=PassSettings(progress=False))
    err = res.relative_error()
    assert np.all(err > 1e-4), err  # E differs from f at every layer
    # right before the last conv, the only unattributed term is that conv's bias: f - E = bias, exactly
    j = res.layers.index("relu2")
    for u in range(4):
        np.testing.assert_allclose(res.f[u] - res.E[u, :, j], float(net.conv3.bias[u].detach()), rtol=1e-4, atol=1e-5)
    assert np.abs(net.conv3.bias.detach().numpy()).min() > 1e-3
    assert not np.allclose(res.E, res.f[:, :, None], rtol=1e-3, atol=1e-3)
    # r is computed from the data, not assumed: it matches numpy's correlation of the stored values
    for i in range(4):
        for j in range(len(res.layers)):
            assert res.r[i, j] == pytest.approx(np.corrcoef(res.f[i], res.E[i, :, j])[0, 1], abs=1e-9)
    assert np.nanmin(res.r) < 0.999


def test_shared_forward_matches_attribute_per_feature():
    net = TinyConvNet(bias=True).eval()
    images = _images(7)
    feats = [Feature("conv3", unit=1), Feature("conv3", direction=[1.0, -2.0, 0.5, 0.0], position="mean"),
             Feature("conv2", unit=3, position=(1, 1))]
    layers = ["relu1", "input", "conv1"]
    res = completeness(net, images, feats, layers, settings=PassSettings(batch_size=3, progress=False))
    assert res.layers == ["input", "conv1", "relu1"]  # sorted into forward order
    for i, feat in enumerate(feats):
        att = attribute(net, images, feat, layers)
        np.testing.assert_allclose(res.f[i], att.activation.numpy(), rtol=1e-5, atol=1e-6)
        for j, l in enumerate(res.layers):
            np.testing.assert_allclose(res.E[i, :, j], att.total(l).numpy(), rtol=1e-4, atol=1e-5)


def test_integrated_gradients_totals_equal_f_minus_baseline_and_converge():
    net = TinyConvNet(bias=True).eval()
    feats = [Feature("conv3", unit=0), Feature("conv3", unit=2, position="mean")]
    errs = {}
    for steps in (2, 8, 64):
        res = completeness(net, _images(4, size=8), feats, ["conv1", "relu2"], method="integrated_gradients",
                           steps=steps, settings=PassSettings(progress=False))
        errs[steps] = res.relative_error().max()
        assert res.baseline.shape == res.E.shape
    assert errs[64] < errs[8] < errs[2]
    assert errs[64] < 2e-2
    # gradient x activation on the same net is far from complete; IG with many steps is not
    gxa = completeness(net, _images(4, size=8), feats, ["conv1", "relu2"], settings=PassSettings(progress=False))
    assert gxa.relative_error().max() > 5 * errs[64]


def test_integrated_gradients_on_a_smooth_net():
    net = SmoothNet().eval()
    feats = random_logits(2, seed=1, n_classes=5, layer="fc")
    errs = []
    for steps in (4, 16, 64):
        res = completeness(net, _images(4, size=8), feats, ["input", "act1", "conv2"],
                           method="integrated_gradients", steps=steps, settings=PassSettings(progress=False))
        errs.append(res.relative_error().max())
    # the midpoint rule's error falls roughly with steps^-2 on a smooth path
    assert errs[2] < errs[1] / 4 < errs[0] / 4
    assert errs[2] < 5e-3


def test_bias_free_net_integrated_gradients_is_exact_with_zero_baseline():
    net = TinyConvNet(bias=False).eval()
    res = completeness(net, _images(5), [Feature("conv3", unit=3)], ["conv1", "relu2"],
                       method="integrated_gradients", steps=1, settings=PassSettings(progress=False))
    np.testing.assert_allclose(res.baseline, 0, atol=1e-6)
    np.testing.assert_allclose(res.E[0], res.f[0][:, None].repeat(2, 1), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# helpers, result object, plot
# ------------------------------------------------------------------------------------------------
def test_result_save_load_roundtrip(tmp_path):
    net = TinyConvNet().eval()
    res = completeness(net, list(_images(6)), [Feature("conv3", unit=1)], ["conv1", "conv2"],
                       method="integrated_gradients", steps=3, settings=PassSettings(progress=False))
    res.save(tmp_path / "c.npz")
    back = CompletenessResult.load(tmp_path / "c.npz")
    assert back.layers == res.layers and back.features == res.features and back.method == res.method
    assert back.steps == 3 and back.model == "TinyConvNet"
    for name in ("r", "f", "E", "baseline"):
        np.testing.assert_array_equal(getattr(back, name), getattr(res, name))
    assert back.feature_names == ["conv3 unit 1 @ center"]
    np.testing.assert_array_equal(back.r_at("conv2"), res.r[:, 1])
    with pytest.raises(KeyError, match="relu1"):
        back.r_at("relu1")


def test_subset_recomputes_r_on_the_chosen_images():
    net = TinyConvNet().eval()
    images = _images(10)
    feats = [Feature("conv3", unit=u) for u in range(3)]
    full = completeness(net, images, feats, ["conv1", "relu2"], settings=PassSettings(progress=False))
    first = completeness(net, images[:6], feats[1:], ["conv1", "relu2"], settings=PassSettings(progress=False))
    part = full.subset(6, features=[1, 2])
    np.testing.assert_allclose(part.r, first.r, rtol=1e-6)
    np.testing.assert_allclose(part.E, first.E, rtol=1e-5, atol=1e-6)
    assert part.features == first.features and not np.allclose(part.r, full.r[1:])
    with pytest.raises(ValueError, match="subset of 11 out of range: the result has 10"):
        full.subset(11)


def test_table_lists_every_layer_with_its_mean_r():
    net = TinyConvNet().eval()
    res = completeness(net, _images(), [Feature("conv3", unit=u) for u in range(3)], ["conv1", "relu2"], settings=PassSettings(progress=False))
    text = res.table()
    for j, l in enumerate(res.layers):
        line = next(s for s in text.splitlines() if s.startswith(l + " "))
        assert f"{res.mean_r()[j]:7.3f}" in line


def test_completeness_pair_equals_the_full_study_on_the_same_images():
    net = TinyConvNet().eval()
    images = _images(10)
    feat = Feature("conv3", unit=2)
    full = completeness(net, images, [feat], ["conv1", "relu2"], settings=PassSettings(progress=False))
    assert completeness_pair(net, images, feat, "relu2", n_images=10) == pytest.approx(full.r_at("relu2")[0])
    part = completeness(net, images, [feat], ["conv1"], max_images=6, settings=PassSettings(progress=False))
    assert part.f.shape == (1, 6)
    assert completeness_pair(net, images, feat, "conv1", n_images=6) == pytest.approx(part.r[0, 0])


def test_warn_if_incomplete_names_the_pair_and_r():
    feat = Feature("blocks_4_0", unit=7)
    with pytest.warns(IncompletenessWarning, match=r"blocks_4_0 unit 7.*'blocks_2_0'.*0\.123"):
        assert warn_if_incomplete(0.123, feat, "blocks_2_0")
    with pytest.warns(IncompletenessWarning, match="nan"):
        assert warn_if_incomplete(float("nan"), feat, "blocks_2_0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_incomplete(0.93, feat, "blocks_3_2")
        assert not warn_if_incomplete(0.6, feat, "blocks_3_2", threshold=0.5)


def test_random_logits_are_distinct_and_reproducible():
    a, b, c = random_logits(20, seed=0), random_logits(20, seed=0), random_logits(20, seed=1)
    assert a == b and a != c
    assert len({f.unit for f in a}) == 20 and all(0 <= f.unit < 1000 and f.layer == "classifier" for f in a)
    with pytest.raises(ValueError, match="n must be between 1 and n_classes=5"):
        random_logits(6, n_classes=5)


def test_pearson_is_nan_for_a_constant_and_matches_numpy():
    x = np.array([1.0, 2.0, 4.0, 3.0])
    assert np.isnan(pearson(x, np.ones(4)))
    assert pearson(x, x ** 2) == pytest.approx(np.corrcoef(x, x ** 2)[0, 1])


def test_plot_writes_a_png_with_the_ig_comparison(tmp_path):
    net = TinyConvNet().eval()
    feats = [Feature("conv3", unit=u) for u in range(3)]
    gxa = completeness(net, _images(6), feats, LATENT, settings=PassSettings(progress=False))
    ig = completeness(net, _images(6), feats[:1], ["relu1", "relu2"], method="integrated_gradients", steps=4, settings=PassSettings(progress=False))
    path = str(tmp_path / "c.png")
    fig = plot_completeness(gxa, path, compare=ig)
    import matplotlib.image

    assert len(fig.axes[0].get_legend().get_texts()) >= 2  # both methods in the legend
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[1] > img.shape[0] > 200
    assert _merge_orders([["a", "c", "e"], ["b", "c", "d"]]) == ["b", "a", "c", "d", "e"]


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------
def test_bad_inputs_give_errors_naming_the_value():
    net = TinyConvNet().eval()
    imgs = _images(4)
    f = Feature("conv3", unit=0)
    with pytest.raises(ValueError, match=r"Unknown layer 'relu3'.*Closest valid names: relu2, relu1"):
        completeness(net, imgs, [f], ["relu3"], settings=PassSettings(progress=False))
    with pytest.raises(ValueError, match=r"Unknown layer 'conv4'"):
        completeness(net, imgs, [Feature("conv4", unit=0)], ["conv1"], settings=PassSettings(progress=False))
    with pytest.raises(ValueError, match=r"unit 4 out of range for layer 'conv3' with 4 channels"):
        completeness(net, imgs, [Feature("conv3", unit=4)], ["conv1"], settings=PassSettings(progress=False))
    with pytest.raises(ValueError, match=r"direction has length 3, but layer 'conv3' has 4 channels"):
        completeness(net, imgs, [Feature("conv3", direction=[1, 2, 3])], ["conv1"], settings=PassSettings(progress=False))
    with pytest.raises(ValueError, match=r"position \(12, 0\) is outside layer 'conv3''s 12x12 map"):
        completeness(net, imgs, [Feature("conv3", unit=0, position=(12, 0))], ["conv1"], settings=PassSettings(progress=False))
    with pytest.raises(ValueError, match=r"images must be in \[0, 1\].*range \[0.*, 2"):
        completeness(net, imgs * 2, [f], ["conv1"], settings=PassSettings(progress=False))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\), got \(4, 12, 12\)"):
        completeness(net, imgs[:, 0], [f], ["conv1"], settings=PassSettings(progress=False))
    with pytest.raises(ValueError, match=r"dataset item 0 has shape \(16, 16\); expected an image \(3, H, W\)"):
        completeness(net, [torch.rand(16, 16)] * 2, [f], ["conv1"], settings=PassSettings(progress=False))
    with pytest.raises(ValueError, match="dataset is empty"):
        completeness(net, [], [f], ["conv1"], settings=PassSettings(progress=False))
    with pytest.raises(ValueError, match="features is empty"):
        completeness(net, imgs, [], ["conv1"], settings=PassSettings(progress=False))
    with pytest.raises(ValueError, match="layers is empty"):
        completeness(net, imgs, [f], [], settings=PassSettings(progress=False))
    with pytest.raises(ValueError, match="method must be one of 'gradient_x_activation', 'integrated_gradients'; got 'lrp'"):
        completeness(net, imgs, [f], ["conv1"], method="lrp", settings=PassSettings(progress=False))


def test_a_layer_that_does_not_feed_the_feature_is_an_error():
    net = TinyConvNet().eval()
    with pytest.raises(ValueError, match=r"'conv3' does not feed the feature at 'conv2'.*runs after"):
        completeness(net, _images(4), [Feature("conv2", unit=0)], ["conv1", "conv3"], settings=PassSettings(progress=False))
    branchy = TwoBranch().eval()
    with pytest.raises(ValueError, match=r"'b' does not feed the feature at 'a'.*no gradient path"):
        completeness(branchy, _images(4), [Feature("a", unit=1)], ["b"], settings=PassSettings(progress=False))
    # the same layer list is fine for a feature both branches feed
    res = completeness(branchy, _images(4), [Feature("head", unit=1)], ["a", "b"], settings=PassSettings(progress=False))
    assert res.r.shape == (1, 2)


# ------------------------------------------------------------------------------------------------
# the real embedded model
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_real_model_completeness_pattern(lite0):
    """On EfficientNet-Lite0 (SPEC section 3): r is ~1 at the ReLU6 output inside the feature's block and
    high one block back; for logits r at the last block is far above r at block 0."""
    from lucent_inhibit.data.bundled import sample_crops

    ds = sample_crops(20, size=128, seed=0)
    units = completeness(lite0, ds, [Feature("blocks_4_0", unit=u) for u in (3, 50)],
                         ["blocks_4_0_bn2_act", "blocks_3_2"], settings=PassSettings(batch_size=20, progress=False))
    assert np.all(units.r_at("blocks_4_0_bn2_act") > 0.95), units.table()
    assert np.all(units.r_at("blocks_3_2") > 0.6), units.table()
    logits = completeness(lite0, ds, random_logits(4, seed=0), ["blocks_0_0", "blocks_6_0"], settings=PassSettings(batch_size=20, progress=False))
    assert logits.mean_r()[1] > logits.mean_r()[0] + 0.3, logits.table()


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------
def test_cli_completeness_writes_result_and_figure(tmp_path, capsys):
    from lucent_inhibit.app.cli import main

    out = tmp_path / "out"
    rc = main(["completeness", "--model", "conftest:TinyConvNet", "--n-images", "6", "--size", "16",
               "--layer", "conv3", "--unit", "0,2", "--layers", "relu2,conv1", "--ig-features", "1", "--ig-steps", "4",
               "--batch-size", "4", "--out", str(out)])
    assert rc == 0
    res = CompletenessResult.load(out / "completeness.npz")
    ig = CompletenessResult.load(out / "completeness_ig.npz")
    assert res.layers == ["conv1", "relu2"] and res.feature_names == ["conv3 unit 0 @ center", "conv3 unit 2 @ center"]
    assert res.f.shape == (2, 6) and "sample_crops(n=6, size=16" in res.dataset
    assert ig.method == "integrated_gradients" and ig.r.shape == (1, 2)
    assert (out / "completeness.png").stat().st_size > 10000
    printed = capsys.readouterr().out
    assert f"{res.mean_r()[0]:7.3f}" in printed.splitlines()[2] and "integrated_gradients" in printed


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--layer", "conv3", "--unit", "0", "--layers", "conv9"], "Unknown layer 'conv9'"),
        (["--layer", "conv3", "--unit", "9", "--layers", "conv1"], "unit 9 out of range for layer 'conv3'"),
        (["--layer", "conv3", "--unit", "x"], "--unit must be comma-separated non-negative integers, got 'x'"),
        (["--layer", "conv3", "--unit", "0", "--position", "top"], "--position must be 'center', 'mean', 'y,x' or, on a token layer, 'cls' or 'token:i'"),
        (["--layers", "conv1"], "no linear output layer for random logits"),
        (["--layer", "conv2", "--unit", "0", "--layers", "conv3"], "does not feed the feature"),
        (["--layer", "conv3", "--unit", "0", "--n-images", "1"], "at least 2 images"),
    ],
)
def test_cli_completeness_bad_input(tmp_path, capsys, extra, message):
    from lucent_inhibit.app.cli import main

    args = ["completeness", "--model", "conftest:TinyConvNet", "--n-images", "3", "--size", "16",
            "--out", str(tmp_path / "o")]
    assert main(args + extra) == 2
    assert message in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# r needs two images; flags; summary and plot; the model is left as it was
# ------------------------------------------------------------------------------------------------
def test_one_image_is_refused_and_a_constant_warns():
    net = TinyConvNet().eval()
    f = Feature("conv3", unit=0)
    with pytest.raises(ValueError, match=r"at least 2 images.*undefined over 1 image\); the dataset .* has 1"):
        completeness(net, _images(1), [f], ["conv1"], settings=PassSettings(progress=False))
    with pytest.raises(ValueError, match=r"at least 2 images.*max_images=1 has 1"):
        completeness(net, _images(4), [f], ["conv1"], max_images=1, settings=PassSettings(progress=False))
    with pytest.raises(ValueError, match="n_images must be >= 2, got 1"):
        completeness_pair(net, _images(4), f, "conv1", n_images=1)
    with pytest.raises(ValueError, match=r"at least 2 images.*the subset has 1"):
        completeness(net, _images(4), [f], ["conv1"], settings=PassSettings(progress=False)).subset(1)
    same = torch.rand(1, 3, 12, 12).repeat(3, 1, 1, 1)  # three identical images: f and E constant
    with pytest.warns(UserWarning, match=r"undefined \(NaN\) for 2 \(feature, layer\) pair.*constant over the 3 images"):
        res = completeness(net, same, [f], ["conv1", "relu2"], settings=PassSettings(progress=False))
    assert np.isnan(res.r).all()


def test_flags_and_integers_are_checked():
    net = TinyConvNet().eval()
    imgs, f = _images(4), Feature("conv3", unit=0)
    for name, value in (("preprocess", "no"), ("progress", 0)):
        with pytest.raises(TypeError, match=f"{name} must be True or False, got {value!r}"):
            completeness(net, imgs, [f], ["conv1"], settings=dict({"progress": False}, **{name: value}))
    with pytest.raises(ValueError, match="batch_size must be"):
        completeness(net, imgs, [f], ["conv1"], settings={"batch_size": True, "progress": False})
    for name, value in (("max_images", 2.5), ("steps", 0)):
        with pytest.raises(ValueError, match=f"{name} must be"):
            completeness(net, imgs, [f], ["conv1"], **{name: value}, settings=PassSettings(progress=False))
    with pytest.raises(TypeError, match="settings must be a PassSettings"):
        completeness(net, imgs, [f], ["conv1"], settings=16)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        completeness(lambda x: x, imgs, [f], ["conv1"], settings=PassSettings(progress=False))


def test_summary_and_plot(tmp_path):
    net = TinyConvNet().eval()
    res = completeness(net, _images(6), [Feature("conv3", unit=u) for u in range(3)], ["conv1", "relu2"], settings=PassSettings(progress=False))
    s = res.summary()
    assert s["type"] == "CompletenessResult" and s["images"] == 6 and s["features"] == 3
    for j, l in enumerate(res.layers):
        assert s["layers"][l]["mean_r"] == pytest.approx(float(res.mean_r()[j]))
        assert s["layers"][l]["relative_error"] == pytest.approx(float(res.relative_error().mean(0)[j]))
    path = tmp_path / "r.png"
    assert res.plot(path).axes
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


class FailingImages:
    """Six images; item 4 (the third batch of two) raises."""

    def __init__(self):
        self.images = _images(6)

    def __len__(self):
        return 6

    def __getitem__(self, i):
        if int(i) == 4:
            raise RuntimeError("cannot read item 4")
        return self.images[i]


class FailingConv(nn.Conv2d):
    """A conv that raises on its third call, while capture's hooks are attached."""

    calls = 0

    def forward(self, x):
        FailingConv.calls += 1
        if FailingConv.calls == 3:
            raise RuntimeError("forward failed")
        return super().forward(x)


@pytest.mark.parametrize("method", ["gradient_x_activation", "integrated_gradients"])
def test_hooks_flags_and_mode_are_restored_also_when_it_raises(method):
    from lucent_inhibit.core.layers import hook_count

    net = TinyConvNet()
    net.conv1.weight.requires_grad_(False)
    net.train()

    def state():
        return hook_count(net), {n: p.requires_grad for n, p in net.named_parameters()}, net.training

    before = state()
    kw = dict(method=method, steps=2, settings=PassSettings(batch_size=2, progress=False))
    res = completeness(net, _images(6), [Feature("conv3", unit=0)], ["conv1", "relu2"], **kw)
    assert res.f.shape == (1, 6) and state() == before
    with pytest.raises(RuntimeError, match="cannot read item 4"):
        completeness(net, FailingImages(), [Feature("conv3", unit=0)], ["conv1", "relu2"], **kw)
    assert state() == before
    failing = FailingConv(8, 8, 3, padding=1)
    failing.load_state_dict(net.conv2.state_dict())
    net.conv2, FailingConv.calls = failing, 0
    before = state()
    with pytest.raises((RuntimeError, ValueError), match="forward failed"):
        completeness(net, _images(6), [Feature("conv3", unit=0)], ["conv1", "relu2"], **kw)
    assert FailingConv.calls == 3 and state() == before


def test_layernorm_scale_is_caught_by_the_sum_check_whatever_r_says():
    """ConvNeXt (random weights): across a LayerNorm, E correlates with f (r ~ 0.98) while being ~0.1% of it."""
    import warnings

    import torch

    from lucent_inhibit.attribution.agreement import IncompletenessWarning
    from lucent_inhibit.attribution.completeness import completeness, completeness_pair
    from lucent_inhibit.models.loading import load_model
    from lucent_inhibit.scanning.run import scan

    torch.manual_seed(0)
    model = load_model("timm:convnext_atto", weights="none")
    images = torch.rand(12, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    feat = Feature("stages_2_blocks_0_mlp_fc2", unit=3)
    res = completeness(model, images, [feat], ["stages_2_blocks_0_conv_dw", "stages_2_blocks_0_mlp_act"], settings=PassSettings(batch_size=6, progress=False))
    across, inside = res.layers.index("stages_2_blocks_0_conv_dw"), res.layers.index("stages_2_blocks_0_mlp_act")
    assert res.r[0, across] > 0.9  # r alone would call it complete
    assert not res.adds_up()[0, across] and res.adds_up()[0, inside]
    assert res.sums()[1][0, across] < 0.01
    assert "0/1" in res.table().splitlines()[2 + across]
    pair = completeness_pair(model, images, feat, "stages_2_blocks_0_conv_dw", n_images=12)
    assert pair > 0.9 and not pair.adds_up
    with pytest.warns(IncompletenessWarning, match="does not add up.*share"):
        scan(model, images, feat, ["stages_2_blocks_0_conv_dw"], settings=PassSettings(batch_size=6, progress=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error", IncompletenessWarning)
        scan(model, images, feat, ["stages_2_blocks_0_mlp_act"], settings=PassSettings(batch_size=6, progress=False))


@pytest.mark.slow
def test_embedded_default_pair_still_adds_up(lite0):
    from lucent_inhibit.attribution.completeness import completeness_pair
    from lucent_inhibit.data.bundled import sample_crops

    pair = completeness_pair(lite0, sample_crops(24, size=128), Feature("blocks_4_0_bn3_drop", unit=70),
                             "blocks_4_0_bn2_act", n_images=24, settings=PassSettings(batch_size=12))
    assert pair > 0.95 and pair.adds_up, pair
