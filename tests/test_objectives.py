"""Render-loop objectives: tense (fast vs exact), signed attribution, masks, seed regularizer, composition."""
import math

import numpy as np
import pytest
import torch
from conftest import TinyConvNet
from lucent.optvis import objectives as lobj
from lucent.optvis import render
from torch import nn

from lucent_inhibit import Feature, attribute
from lucent_inhibit.core.layers import hooks_restored
from lucent_inhibit.synthesis import objectives as O

FEAT = Feature("conv3", unit=1)


pytestmark = pytest.mark.usefixtures("one_thread")



def _hooked(model, x):
    """(T, loss-fn) as inside render_vis: a Lucent hook over one forward pass of x."""
    hook = render.hook_model(model, lambda: x)
    model(x)
    return hook


def _image_grad(model, x, objective):
    x = x.clone().requires_grad_(True)
    with hooks_restored(model):
        T = _hooked(model, x)
        loss = objective(T)
        (g,) = torch.autograd.grad(loss, x)
    return loss.detach(), g


def _smooth(net):
    net.relu1, net.relu2 = nn.Softplus(), nn.Tanh()
    return net


def test_tense_value_is_tension_of_attribution(tiny_net, tiny_images):
    loss, _ = _image_grad(tiny_net, tiny_images, O.tense(FEAT, "conv1"))
    a = attribute(tiny_net, tiny_images, FEAT, "conv1", preprocess=False)
    assert torch.allclose(-loss, a.tension("conv1").mean(), rtol=1e-5)
    for score in ("geometric", "harmonic"):
        loss, _ = _image_grad(tiny_net, tiny_images, O.tense(FEAT, "conv1", score=score, mode="exact"))
        assert torch.allclose(-loss, a.tension("conv1", score=score).mean(), rtol=1e-4)


def test_tense_fast_equals_exact_on_relu_net_and_differs_on_smooth_net(tiny_images):
    relu = TinyConvNet(seed=3).eval()
    _, g_fast = _image_grad(relu, tiny_images, O.tense(FEAT, "conv1", mode="fast"))
    _, g_exact = _image_grad(relu, tiny_images, O.tense(FEAT, "conv1", mode="exact"))
    assert g_fast.abs().max() > 0
    assert torch.allclose(g_fast, g_exact, atol=1e-6 * float(g_fast.abs().max()) + 1e-9, rtol=1e-4)

    smooth = _smooth(TinyConvNet(seed=3)).eval()
    _, s_fast = _image_grad(smooth, tiny_images, O.tense(FEAT, "conv1", mode="fast"))
    _, s_exact = _image_grad(smooth, tiny_images, O.tense(FEAT, "conv1", mode="exact"))
    rel = float((s_fast - s_exact).norm() / s_exact.norm())
    assert rel > 1e-2, rel


def test_tense_batch_index_and_batch_view(tiny_net, tiny_images):
    a = attribute(tiny_net, tiny_images, FEAT, "relu1", preprocess=False)
    t = a.tension("relu1")
    loss, g = _image_grad(tiny_net, tiny_images, O.tense(FEAT, "relu1", batch=2))
    assert torch.allclose(-loss, t[2], rtol=1e-5)
    assert g[[0, 1, 3]].abs().max() == 0 and g[2].abs().max() > 0
    view = lambda T: O.tense(FEAT, "relu1")(O.BatchView(T, 1, 3))  # noqa: E731
    loss, g = _image_grad(tiny_net, tiny_images, lobj.Objective(view))
    assert torch.allclose(-loss, t[1:3].mean(), rtol=1e-5)
    assert g[[0, 3]].abs().max() == 0
    nested = lambda T: O.tense(FEAT, "relu1", batch=1)(O.BatchView(O.BatchView(T, 1, 4), 1, 3))  # noqa: E731
    loss, _ = _image_grad(tiny_net, tiny_images, lobj.Objective(nested))
    assert torch.allclose(-loss, t[3], rtol=1e-5)


def test_tense_bad_input(tiny_net, tiny_images):
    with pytest.raises(ValueError, match="does not feed"):
        _image_grad(tiny_net, tiny_images, O.tense(Feature("conv1", unit=0), "conv2"))
    with pytest.raises(ValueError, match="mode"):
        O.tense(FEAT, "conv1", mode="approx")
    with pytest.raises(ValueError, match="tension score"):
        O.tense(FEAT, "conv1", score="max")


def test_tense_composes_with_lucent_channel_in_render_vis(tiny_net):
    obj = O.tense(FEAT, "conv1") + 0.1 * lobj.channel("conv3", 1)
    with hooks_restored(tiny_net):
        imgs = render.render_vis(
            tiny_net, obj, param_f=lambda: __import__("lucent").optvis.param.image(16), thresholds=(3,),
            show_image=False, progress=False, fixed_image_size=16,
        )
    assert imgs[0].shape == (1, 16, 16, 3) and np.isfinite(imgs[0]).all()


def test_signed_attribution_matches_spatial_cosdot_on_relu_target(tiny_net, tiny_images):
    s = attribute(tiny_net, tiny_images[:1], FEAT, "relu1", preprocess=False).scores["relu1"][0]
    for sign in (1, -1):
        a, _ = _image_grad(tiny_net, tiny_images[1:2], O.signed_attribution("relu1", s, sign, power=2, crop=None))
        b, _ = _image_grad(tiny_net, tiny_images[1:2], O.spatial_cosdot("relu1", (sign * s).clamp(min=0), power=2, crop=None))
        assert torch.allclose(a, b)
    h = tiny_net.relu1(tiny_net.conv1(tiny_images[1:2]))[0].flatten().detach()
    tgt = s.clamp(min=0).flatten()
    cos = float(h @ tgt / (h.norm() * tgt.norm()))
    expected = float(h @ tgt) * cos ** 2
    a, _ = _image_grad(tiny_net, tiny_images[1:2], O.signed_attribution("relu1", s, 1, power=2, crop=None))
    assert math.isclose(-float(a), expected, rel_tol=1e-4)


def test_signed_attribution_bad_input(tiny_net, tiny_images):
    s = attribute(tiny_net, tiny_images[:1], FEAT, "relu1", preprocess=False).scores["relu1"][0]
    with pytest.raises(ValueError, match="sign"):
        O.signed_attribution("relu1", s, sign=0)
    with pytest.raises(ValueError, match="one image"):
        O.signed_attribution("relu1", torch.randn(2, *s.shape))
    with pytest.raises(ValueError, match="no negative attribution"):
        O.signed_attribution("relu1", s.abs(), sign=-1)
    # a target of the wrong shape for the layer is named at render time
    with pytest.raises(ValueError, match="target map has shape"):
        _image_grad(tiny_net, tiny_images[:1], O.signed_attribution("relu1", s[:, :8, :8]))
    with pytest.raises(ValueError, match="target must be"):
        O.spatial_cosdot("relu1", torch.randn(8, 16))


def test_feature_pair_needs_scales():
    with pytest.raises(ValueError, match="scale"):
        O.feature_pair(Feature("conv3", unit=0), Feature("conv3", unit=1), theta=[0.0, 1.0])


def test_attribution_mask(tiny_net, tiny_images):
    s = attribute(tiny_net, tiny_images[:1], FEAT, "relu1", preprocess=False).scores["relu1"][0]
    for sign in (1, -1):
        m = O.attribution_mask(s, sign, threshold=0.0)
        ref = (sign * s).clamp(min=0).sum(0)
        assert m.shape == s.shape[1:]
        assert float(m.max()) == pytest.approx(1.0)
        assert torch.equal(m > 0, ref > 0)
    up = O.attribution_mask(s, 1, size=(32, 40))
    assert up.shape == (32, 40) and float(up.min()) >= 0 and float(up.max()) <= 1
    binary = O.attribution_mask(s, 1, threshold=0.5, smooth=0)
    assert set(torch.unique(binary).tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="no negative"):
        O.attribution_mask(s.abs(), -1)


def test_seed_l2(tiny_net, tiny_images):
    x = torch.cat([tiny_images[:2], tiny_images[:2]])
    loss, g = _image_grad(tiny_net, x, O.seed_l2("conv2"))
    assert float(loss) == 0
    y = torch.cat([tiny_images[:2], tiny_images[2:4]])
    loss, g = _image_grad(tiny_net, y, O.seed_l2("conv2"))
    h = tiny_net.conv2(tiny_net.relu1(tiny_net.conv1(y)))
    expected = (h[:2] - h[2:]).flatten(1).norm(dim=1).mean()
    assert torch.allclose(loss, expected, rtol=1e-5)
    assert g[2:].abs().max() == 0 and g[:2].abs().max() > 0  # seeds are detached
    loss1, _ = _image_grad(tiny_net, y, O.seed_l2("conv2", batch=1))
    assert torch.allclose(loss1, (h[1] - h[3]).norm(), rtol=1e-5)
    with pytest.raises(ValueError, match="seed_l2 needs"):
        _image_grad(tiny_net, tiny_images[:3], O.seed_l2("conv2", n=2))


@pytest.mark.slow
def test_real_tense_fast_equals_exact_through_relu6_blocks(lite0):
    """EfficientNet-Lite0 is piecewise linear (ReLU6, eval BatchNorm, no squeeze-excite): between
    blocks_4_2 and blocks_5_0 the fast mode gives the exact image gradient."""
    from lucent_inhibit import preprocess_fn, sample_crops

    img = sample_crops(1, size=96, seed=3)[0][None]
    x = preprocess_fn(lite0)(img)
    obj_args = (Feature("blocks_5_0", unit=0), "blocks_4_2")
    _, g_fast = _image_grad(lite0, x, O.tense(*obj_args, mode="fast"))
    _, g_exact = _image_grad(lite0, x, O.tense(*obj_args, mode="exact"))
    rel = float((g_fast - g_exact).norm() / g_exact.norm())
    print(f"lite0 blocks_5_0/blocks_4_2: relative difference fast vs exact image gradient {rel:.2e}")
    assert g_exact.norm() > 0 and rel < 1e-4


def test_spatial_cosdot_on_crop_major_batches_averages_each_targets_crops():
    """A transform that crops n times per step (box_crop, zoom_crops) hands the objective n * B rows, crop-major:
    row i is judged against target i % B, and the loss is the mean over every row."""
    g = torch.Generator().manual_seed(0)
    t, h = torch.rand(3, 4, 5, 5, generator=g), torch.rand(6, 4, 5, 5, generator=g)
    obj = O.spatial_cosdot("l", t, power=2, crop=None)
    per = [float(O.spatial_cosdot("l", t[i % 3], power=2, crop=None)(lambda name, r=h[i:i + 1]: r)) for i in range(6)]
    assert float(obj(lambda name: h)) == pytest.approx(np.mean(per), rel=1e-6)
    with pytest.raises(ValueError, match="3 target maps for a batch of 4 images"):
        obj(lambda name: h[:4])
