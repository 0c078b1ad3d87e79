"""Objectives accept a spatial mask: only masked positions count and receive gradient."""
import pytest
import torch

from lucent_inhibit import Feature
from lucent_inhibit.core.hooks import capture
from lucent_inhibit.synthesis.objectives import (attribution_mask, layer_mask, signed_attribution, spatial_cosdot,
                                                 tense)


def _left_half(h, w):
    m = torch.zeros(h, w)
    m[:, : w // 2] = 1
    return m


def test_spatial_cosdot_mask_blocks_gradient_outside():
    torch.manual_seed(0)
    h = torch.randn(2, 4, 6, 6, requires_grad=True)
    target = torch.rand(4, 6, 6)
    loss = spatial_cosdot("l", target, crop=None, mask=_left_half(6, 6))(lambda name: h)
    (g,) = torch.autograd.grad(loss, h)
    assert g[:, :, :, 3:].abs().max() == 0
    assert g[:, :, :, :3].abs().max() > 0
    # without a mask both halves get gradient
    (g2,) = torch.autograd.grad(spatial_cosdot("l", target, crop=None)(lambda name: h), h)
    assert g2[:, :, :, 3:].abs().max() > 0


def test_layer_mask_resizes_and_validates():
    m = layer_mask(_left_half(12, 12), (6, 6))
    assert m.shape == (6, 6) and m[:, 0].min() > 0.9 and m[:, -1].max() < 0.1
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        layer_mask(torch.full((4, 4), 2.0), (4, 4))
    with pytest.raises(ValueError, match="spatial map"):
        layer_mask(torch.ones(1, 4, 4), (4, 4))


def test_signed_attribution_mask_from_attribution(tiny_net, tiny_images):
    s = torch.randn(8, 16, 16)
    mask = attribution_mask(s, sign=-1)
    assert mask.shape == (16, 16) and 0 <= float(mask.min()) and float(mask.max()) == pytest.approx(1.0)
    h = torch.randn(1, 8, 16, 16, requires_grad=True)
    loss = signed_attribution("l", s, sign=-1, crop=None, mask=mask)(lambda name: h)
    (g,) = torch.autograd.grad(loss, h)
    outside = mask == 0
    assert g[0][:, outside].abs().max() == 0


def test_tense_mask_only_counts_tension_inside(tiny_net, tiny_images):
    feature = Feature("conv3", unit=0)
    x = tiny_images.clone().requires_grad_(True)

    def hook_for(x):
        acts = capture(tiny_net, x, ["relu1", "conv3"])
        return lambda name: acts[name]

    mask = _left_half(16, 16)
    loss = tense(feature, "relu1", mask=mask)(hook_for(x))
    (g,) = torch.autograd.grad(loss, x)
    # the centre feature sees relu1 columns 6..10, i.e. pixel columns 5..11; with the mask (relu1 columns
    # 0..7, fast mode) only pixel columns <= 8 can move the tension
    assert g[:, :, :, 9:].abs().max() == 0
    full = tense(feature, "relu1")(hook_for(x))
    (g_full,) = torch.autograd.grad(full, x)
    assert g_full[:, :, :, 9:12].abs().max() > 0
    assert float(loss.detach()) != pytest.approx(float(full.detach()))
    with pytest.raises(ValueError, match="mask"):
        tense(feature, "relu1", mask=torch.zeros(4, 4))


def test_tense_mask_on_a_token_layer_weights_patch_tokens_and_drops_prefix_tokens():
    from lucent_inhibit.attribution.totals import signed_totals, tension
    from lucent_inhibit.core.tokens import TokenGrid
    from lucent_inhibit.synthesis.objectives.attribution import masked_scores

    grid = TokenGrid(2, 2, 3)  # class + 1 register token, then a 2 x 3 patch grid: T = 8
    s = torch.arange(2 * 8 * 4, dtype=torch.float32).reshape(2, 8, 4) - 20
    mask = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]])
    got = masked_scores(s, mask, "l", grid)
    weights = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.5, 0.0, 1.0, 0.0])  # prefix 0, then the mask row by row
    torch.testing.assert_close(got, s * weights[None, :, None])
    with pytest.raises(ValueError, match="no spatial dimensions"):
        masked_scores(torch.ones(2, 4), mask, "l")

    from test_vit import (
        tiny_vit,  # a real token layer inside tense: the objective equals the hand computation
    )

    vit = tiny_vit()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    feature, layer = Feature("blocks_1_mlp_fc1", unit=2, position="cls"), "blocks_0"
    acts = capture(vit, x, [layer, feature.layer])
    big = torch.zeros(32, 32)
    big[:16] = 1.0  # the top half of the image: the top two rows of the 4 x 4 patch grid
    loss = tense(feature, layer, mask=big, mode="fast")(lambda name: acts[name])
    (g,) = torch.autograd.grad(feature(acts[feature.layer]).sum(), acts[layer], retain_graph=True)
    s = g * acts[layer]
    s = s * torch.cat([torch.zeros(1), torch.tensor([1.0] * 8 + [0.0] * 8)])[None, :, None]
    assert float(loss) == pytest.approx(-float(tension(*signed_totals(s)).mean()), rel=1e-5)
