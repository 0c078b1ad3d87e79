"""Exact tense mode through attention: fused scaled_dot_product_attention kernels have no double backward,
the render engine runs attention with the math kernel (rendering.math_attention), and exact mode's image
gradient is the true one (finite differences)."""
import time
import warnings

import pytest
import torch
import torch.nn.functional as F
from lucent.optvis.render import hook_model
from torch import nn

from lucent_inhibit import Feature, preprocess_fn
from lucent_inhibit.core.layers import hook_count, hooks_restored
from lucent_inhibit.core.rendering import math_attention
from lucent_inhibit.core.settings import RenderSettings
from lucent_inhibit.models.loading import load_model
from lucent_inhibit.synthesis import objectives
from lucent_inhibit.synthesis.tense import tense_image


class SpatialAttention(nn.Module):
    """Self-attention over the H*W positions of a (B, C, H, W) map (one head), then back to a map."""

    def __init__(self, c):
        super().__init__()
        self.qkv = nn.Linear(c, 3 * c)

    def forward(self, x):
        b, c, h, w = x.shape
        # (3, B, 1 head, HW, C), channels last in memory as timm lays them out (the fused CPU kernel's case)
        q, k, v = self.qkv(x.flatten(2).transpose(1, 2)).reshape(b, h * w, 3, 1, c).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)[:, 0]
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class AttnConvNet(nn.Module):
    """conv - GELU - spatial attention - conv: Lucent layers conv1, act1, attn, conv2 (all (B, C, H, W))."""

    def __init__(self, width=8, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.act1 = nn.GELU()
        self.attn = SpatialAttention(width)
        self.conv2 = nn.Conv2d(width, 4, 3, padding=1)

    def forward(self, x):
        return self.conv2(self.attn(self.act1(self.conv1(x))))


def _loss(model, objective, x):
    """The objective's loss for one forward pass through Lucent's hook (as inside render_vis)."""
    with hooks_restored(model):
        T = hook_model(model, lambda: x)
        model(preprocess_fn(model)(x))
        return objective(T)


def _image_gradient(model, objective, x):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(_loss(model, objective, x), x)
    return g


def test_fused_attention_has_no_double_backward_and_auto_says_what_to_do():
    model = AttnConvNet().eval()
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    obj = objectives.tense(Feature("conv2", unit=1), "act1", mode="auto")
    with pytest.raises(ValueError, match="a fused attention kernel does not have.*math attention kernel"):
        _image_gradient(model, obj, x)
    with math_attention(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # auto picks exact across GELU and attention, with a warning
        g = _image_gradient(model, objectives.tense(Feature("conv2", unit=1), "act1", mode="auto"), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert hook_count(model) == 0


def test_exact_gradient_matches_finite_differences_through_attention():
    model = AttnConvNet().double().eval()
    x = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    obj = objectives.tense(Feature("conv2", unit=2), "act1", score="product", mode="exact")
    with math_attention():
        g = _image_gradient(model, obj, x)
        gen = torch.Generator().manual_seed(2)
        for _ in range(3):
            v = torch.randn(x.shape, generator=gen, dtype=torch.float64)
            eps = 1e-5
            with torch.enable_grad():  # the objective differentiates f inside; x itself needs no grad
                up = _loss(model, obj, (x + eps * v).requires_grad_(True)).item()
                down = _loss(model, obj, (x - eps * v).requires_grad_(True)).item()
            fd = (up - down) / (2 * eps)
            assert abs(float((g * v).sum()) - fd) <= 1e-6 * max(1.0, abs(fd))
    # the fast gradient is not the true one here (GELU and attention between act1 and conv2)
    with math_attention():
        fast = _image_gradient(model, objectives.tense(Feature("conv2", unit=2), "act1", score="product",
                                                       mode="fast"), x)
    assert not torch.allclose(fast, g, rtol=1e-3)


def test_tense_image_exact_mode_renders_through_attention():
    model = AttnConvNet().eval()
    before = (hook_count(model), [p.requires_grad for p in model.parameters()])
    res = tense_image(model, Feature("conv2", unit=1), "act1", mode="exact",
                      render=RenderSettings(steps=3, size=16), record_every=1)
    assert res.mode == "exact" and torch.isfinite(res.images).all()
    assert torch.isfinite(res.tension).all()
    assert (hook_count(model), [p.requires_grad for p in model.parameters()]) == before


@pytest.mark.slow
def test_tense_exact_and_auto_on_timm_vit(one_thread):
    """timm ViT-Ti/16 (fused attention, random weights, 224 px): exact mode renders, auto chooses exact."""
    model = load_model("timm:vit_tiny_patch16_224", weights="none")
    feature, layer = Feature("head", unit=3), "patch_embed_proj"  # logits; the patch embedding (B, 192, 14, 14)
    before = (hook_count(model), [p.requires_grad for p in model.parameters()])
    t0 = time.time()
    res = tense_image(model, feature, layer, mode="exact", render=RenderSettings(steps=2, size=224), record_every=2)
    t_exact = time.time() - t0
    assert res.mode == "exact" and torch.isfinite(res.images).all()
    with pytest.warns(UserWarning, match="not piecewise linear"):
        res = tense_image(model, feature, layer, mode="auto", render=RenderSettings(steps=1, size=224))
    assert res.mode == "exact"
    assert (hook_count(model), [p.requires_grad for p in model.parameters()]) == before
    print(f"ViT-Ti/16 exact tense: {t_exact:.1f} s for 2 steps")


class GatedConvNet(nn.Module):
    """conv - hardswish - squeeze-excite gate (hardsigmoid, as MobileNetV3) - conv: no double backward."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.conv1, self.act1 = nn.Conv2d(3, 6, 3, padding=1), nn.Hardswish()
        self.fc, self.gate = nn.Conv2d(6, 6, 1), nn.Hardsigmoid()
        self.conv2 = nn.Conv2d(6, 4, 3, padding=1)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.7)

    def forward(self, x):
        h = self.act1(self.conv1(x))
        return self.conv2(h * self.gate(self.fc(h.mean((2, 3), keepdim=True))))


def test_hardsigmoid_has_no_double_backward_the_error_names_it_and_the_equivalent_is_exact():
    from lucent_inhibit.core.rendering import twice_differentiable

    model = GatedConvNet().double().eval()
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    obj = objectives.tense(Feature("conv2", unit=1), "act1", mode="exact")
    with pytest.raises(ValueError, match=r"hardsigmoid does not have in PyTorch.*twice_differentiable"):
        _image_gradient(model, obj, x)
    with twice_differentiable(model) as replaced:
        assert replaced == ["hardsigmoid as relu6(x + 3) / 6"]
        g = _image_gradient(model, obj, x)
    assert "forward" not in model.gate.__dict__  # the module is restored
    d = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    eps = 1e-5
    with twice_differentiable(model):
        fd = (_loss(model, obj, x + eps * d) - _loss(model, obj, x - eps * d)) / (2 * eps)
    assert float((g * d).sum()) == pytest.approx(float(fd), rel=1e-4, abs=1e-8)
