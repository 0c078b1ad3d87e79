"""Vision transformers: token layers (B, T, C) as features and attribution layers, renders at the model's
input size, exact tense mode through attention, on random-initialised timm ViT-Ti/16 and DeiT-Ti/16 (no
weights can be downloaded here) and on small planted token models."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lucent.optvis import transform as lucent_transform
from lucent.optvis.render import hook_model
from torch import nn

import lucent_inhibit as li
from lucent_inhibit import Feature, preprocess_fn
from lucent_inhibit.core.hooks import capture
from lucent_inhibit.core.layers import hook_count, hooks_restored, layer_table
from lucent_inhibit.core.rendering import math_attention, rng_restored, run_render
from lucent_inhibit.core.settings import PassSettings, RenderSettings
from lucent_inhibit.core.tokens import (TokenGrid, check_input_size, infer_grid, patch_maps, required_input_size,
                                        token_grid, token_maps)
from lucent_inhibit.core.validate import InputError
from lucent_inhibit.models.layers import logits_input_size
from lucent_inhibit.synthesis import objectives, param

SPECS = ["timm:vit_tiny_patch16_224", "timm:deit_tiny_patch16_224"]


@pytest.fixture(scope="module", params=SPECS)
def vit(request):
    return li.load_model(request.param, weights="none")


@pytest.fixture(scope="module")
def vit_tiny():
    return li.load_model(SPECS[0], weights="none")


def tiny_vit(**kw):
    """A small timm ViT (32 px, 8 px patches: 4x4 grid, 2 blocks) under a fixed seed."""
    from timm.models.vision_transformer import VisionTransformer

    with torch.random.fork_rng():
        torch.manual_seed(0)
        cfg = dict(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=5)
        return li.prepare(VisionTransformer(**{**cfg, **kw}))


def image(n=1, size=224, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------
# the token layout and positions
# ------------------------------------------------------------------------------------------------
def test_models_know_their_grid_prefix_size_and_preactivations(vit):
    assert token_grid(vit) == TokenGrid(1, 14, 14, class_token=True)
    assert required_input_size(vit) == (224, 224) == (logits_input_size(vit),) * 2
    pre = li.preactivation_layers(vit)
    assert pre[:4] == ["blocks_0_mlp_fc1", "blocks_0", "blocks_1_mlp_fc1", "blocks_1"]
    assert pre[-1] == "head" and "blocks_11" in pre and not any("attn" in n for n in pre)
    acts = capture(vit, preprocess_fn(vit)(image()), ["blocks_3_mlp_fc1", "blocks_3", "patch_embed"])
    assert acts["blocks_3_mlp_fc1"].shape == (1, 197, 768) and acts["blocks_3"].shape == (1, 197, 192)
    assert acts["patch_embed"].shape == (1, 196, 192)  # before the class token is prepended
    assert hook_count(vit) == 0


def test_register_tokens_and_dynamic_sizes_give_the_grid():
    reg = tiny_vit(reg_tokens=3)
    assert token_grid(reg) == TokenGrid(4, 4, 4, class_token=True)
    assert capture(reg, image(size=32), ["blocks_0"])["blocks_0"].shape[1] == 4 + 16
    dyn = tiny_vit(dynamic_img_size=True)
    assert required_input_size(dyn) is None and token_grid(dyn, (24, 40)) == TokenGrid(1, 3, 5)
    assert capture(dyn, torch.rand(1, 3, 24, 40), ["blocks_0"])["blocks_0"].shape[1] == 1 + 15
    assert token_grid(nn.Conv2d(3, 3, 1)) is None and required_input_size(nn.Conv2d(3, 3, 1)) is None


def test_positions_read_the_named_token():
    act = torch.randn(2, 1 + 14 * 14, 6)
    read = lambda pos: Feature("blocks_1", unit=2, position=pos)(act)  # noqa: E731
    assert torch.equal(read("cls"), act[:, 0, 2])
    assert torch.equal(read(("token", 5)), act[:, 5, 2]) and torch.equal(read(5), act[:, 5, 2])
    assert torch.equal(read((3, 4)), act[:, 1 + 3 * 14 + 4, 2])
    assert torch.equal(read("center"), act[:, 1 + 7 * 14 + 7, 2])
    assert torch.allclose(read("mean"), act[:, 1:, 2].mean(1))
    patches = act[:, 1:]  # a layer before the class token: patch (y, x) is token y * 14 + x
    assert torch.equal(Feature("patch_embed", unit=1, position=(3, 4))(patches), patches[:, 3 * 14 + 4, 1])
    d = torch.randn(6)
    assert torch.allclose(Feature("b", direction=d, position="cls")(act), act[:, 0] @ d)
    # a non-square grid behind register tokens, given explicitly
    grid = TokenGrid(5, 2, 3)
    act = torch.randn(1, 11, 4)
    f = Feature("b", unit=0, position=(1, 2), grid=grid)
    assert torch.equal(f(act), act[:, 5 + 1 * 3 + 2, 0])
    assert torch.allclose(Feature("b", unit=0, position="mean", grid=grid)(act), act[:, 5:, 0].mean(1))
    assert Feature.from_dict(f.to_dict()) == f and f.to_dict()["grid"] == [5, 2, 3, True]
    assert Feature("b", unit=0, position=("token", 3)).name == "b unit 0 @ token 3"
    assert Feature.from_dict(Feature("b", unit=0, position=7).to_dict()).position == ("token", 7)


def test_inferred_grids_and_patch_maps():
    assert infer_grid(197) == TokenGrid(1, 14, 14) and infer_grid(201) == TokenGrid(5, 14, 14)
    assert infer_grid(196) == TokenGrid(0, 14, 14, class_token=False)
    v = torch.arange(2 * 17, dtype=torch.float32).view(2, 17)
    assert torch.equal(patch_maps(v), v[:, 1:].view(2, 4, 4))
    with pytest.raises(InputError, match="192 tokens, which is no square patch grid"):
        infer_grid(192)


def test_hierarchical_token_layers_read_the_merged_grid():
    # PVT / Twins merge patches stage by stage: a 56x56 grid becomes 28x28, 14x14, 7x7 (no prefix)
    grid = TokenGrid(0, 56, 56, class_token=False)
    assert grid.for_tokens(784) == TokenGrid(0, 28, 28, class_token=False)
    assert grid.for_tokens(49) == TokenGrid(0, 7, 7, class_token=False)
    # PiT pools a 27x27 grid to 14x14 and 7x7 (ceil), keeping its class token in front
    pit = TokenGrid(1, 27, 27)
    assert pit.for_tokens(197) == TokenGrid(1, 14, 14) and pit.for_tokens(50) == TokenGrid(1, 7, 7)
    act = torch.randn(2, 50, 3)
    assert torch.equal(Feature("s2", unit=2, position=(6, 1), grid=pit)(act), act[:, 1 + 6 * 7 + 1, 2])
    assert torch.equal(token_maps(act, pit)[:, :, 6, 1], act[:, 1 + 6 * 7 + 1])
    with pytest.raises(InputError, match="has 51 tokens, .* or that grid merged by 2, 4, 8"):
        pit.for_tokens(51)


def test_bad_positions_name_the_token_the_grid_and_the_shapes():
    act = torch.randn(1, 197, 8)
    with pytest.raises(InputError, match=r"has no token 197; it has 197 tokens = 1 class token \+ 14x14 patches"):
        Feature("blocks_1", unit=0, position=("token", 197))(act)
    with pytest.raises(InputError, match=r"patch position \(14, 0\) is outside 'blocks_1''s 14x14 patch grid"):
        Feature("blocks_1", unit=0, position=(14, 0))(act)
    with pytest.raises(InputError, match="'patch_embed' has no class token"):
        Feature("patch_embed", unit=0, position="cls")(act[:, 1:])
    with pytest.raises(InputError, match="unit 8 out of range .* with 8 channels"):
        Feature("blocks_1", unit=8, position="cls")(act)
    with pytest.raises(InputError, match="has 20 tokens, but the model's token layers have 17 tokens"):
        Feature("b", unit=0, grid=TokenGrid(1, 4, 4))(torch.randn(1, 20, 8))
    with pytest.raises(InputError, match=r"names a token, but layer 'conv' has shape \(1, 8, 4, 4\)"):
        Feature("conv", unit=0, position="cls")(torch.randn(1, 8, 4, 4))
    with pytest.raises(InputError, match=r"names a token, but layer 'fc'"):
        Feature("fc", unit=0, position=("token", 1))(torch.randn(1, 8))
    with pytest.raises(InputError, match=r"\(B, C, H, W\) \(a map\), \(B, C\) \(a linear layer\) or \(B, T, C\)"):
        Feature("odd", unit=0)(torch.randn(1, 2, 3, 4, 5))
    with pytest.raises(InputError, match="also take 'cls'"):
        Feature("b", unit=0, position="top")
    with pytest.raises(InputError, match="token index must be >= 0"):
        Feature("b", unit=0, position=("token", -1))
    with pytest.raises(InputError, match="TokenGrid"):
        Feature("b", unit=0, grid=(1, 4, 4))


def test_bad_positions_on_a_real_vit(vit_tiny):
    x = image()
    with pytest.raises(ValueError, match="has no token 300"):
        li.attribute(vit_tiny, x, Feature("blocks_2", unit=0, position=300), ["blocks_1"])
    with pytest.raises(ValueError, match=r"outside 'blocks_2''s 14x14 patch grid"):
        li.attribute(vit_tiny, x, Feature("blocks_2", unit=0, position=(0, 14)), ["blocks_1"])
    assert hook_count(vit_tiny) == 0


# ------------------------------------------------------------------------------------------------
# attribution at token layers
# ------------------------------------------------------------------------------------------------
def hand_grad_x_act(model, x, feature_layer, read, layers):
    """grad x act by hand: forward hooks keep the layers' outputs, one backward of ``read(feature act)``."""
    table = layer_table(model)
    kept, handles = {}, []
    for name in set(layers) | {feature_layer}:
        def keep(m, i, o, name=name):
            if name != feature_layer:
                o.retain_grad()
            kept[name] = o
        handles.append(table[name].register_forward_hook(keep))
    try:
        with torch.enable_grad():
            model(preprocess_fn(model)(x).requires_grad_(True))
            read(kept[feature_layer]).sum().backward()
    finally:
        for h in handles:
            h.remove()
    return {l: (kept[l].grad * kept[l]).detach() for l in layers}


@pytest.mark.parametrize("position", ["cls", (3, 5), "mean", ("token", 9)])
def test_grad_x_act_at_token_layers_equals_a_hand_computation(vit, position, one_thread):
    layers = ["patch_embed", "blocks_2", "blocks_4_mlp_fc1"]
    feature = Feature("blocks_5", unit=7, position=position)
    x = image()
    att = li.attribute(vit, x, feature, layers)
    index = {"cls": 0, (3, 5): 1 + 3 * 14 + 5, ("token", 9): 9}.get(position)
    read = (lambda a: a[:, 1:, 7].mean(1)) if position == "mean" else (lambda a: a[:, index, 7])
    ref = hand_grad_x_act(vit, x, "blocks_5", read, layers)
    for l in layers:
        assert att.scores[l].shape == ref[l].shape
        assert torch.allclose(att.scores[l], ref[l], atol=1e-6 * float(ref[l].abs().max()) + 1e-9)
    assert att.scores["patch_embed"].shape == (1, 196, 192) and att.scores["blocks_4_mlp_fc1"].shape == (1, 197, 768)
    assert hook_count(vit) == 0 and all(p.requires_grad for p in vit.parameters())


class FrozenAttention(nn.Module):
    """Token mixing by a constant attention matrix A (T, T) and a bias-free value map: out = A h W."""

    def __init__(self, t, c, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("a", torch.softmax(torch.randn(t, t, generator=g), 1))
        self.v = nn.Linear(c, c, bias=False)
        nn.init.normal_(self.v.weight, generator=g)

    def forward(self, h):
        return torch.einsum("st,btc->bsc", self.a, self.v(h))


class LinearAttentionToy(nn.Module):
    """patch embedding (B, 5, 8) tokens: a class token and 2x2 patches; attention frozen as constants."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Conv2d(3, 8, 8, stride=8)
        self.tokens = Tokens(8)
        self.mix1 = FrozenAttention(5, 8, 1)
        self.mix2 = FrozenAttention(5, 8, 2)

    def forward(self, x):
        return self.mix2(self.mix1(self.tokens(self.embed(x))))


class Tokens(nn.Module):
    """(B, C, H, W) patch map -> (B, 1 + H * W, C) tokens with a class token in front."""

    def __init__(self, c, cls=None):
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, c) if cls is None else cls)

    def forward(self, m):
        t = m.flatten(2).transpose(1, 2)
        return torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1)


def test_totals_add_up_through_frozen_attention():
    """f is linear in the tokens after the embedding (attention frozen, bias-free values): E = f exactly."""
    model = LinearAttentionToy().eval()
    x = image(3, 16, seed=4)
    for pos in ["cls", (1, 0), "mean"]:
        att = li.attribute(model, x, Feature("mix2", unit=3, position=pos), ["tokens", "mix1"])
        for l in ("tokens", "mix1"):
            assert torch.allclose(att.total(l), att.activation, rtol=1e-5, atol=1e-6)
            assert att.negative(l).min() > 0 and att.positive(l).min() > 0
    res = li.completeness(model, list(image(6, 16, seed=5)), [Feature("mix2", unit=u, position="cls") for u in (0, 1)],
                          ["tokens", "mix1"], settings=PassSettings(batch_size=3, progress=False))
    assert np.allclose(np.asarray(res.r, dtype=float), 1.0, atol=1e-5)
    assert hook_count(model) == 0


# ------------------------------------------------------------------------------------------------
# scans with token attribution layers
# ------------------------------------------------------------------------------------------------
class PlantedTwoToken(nn.Module):
    """16 px images as 2x2 patches of 8 px. ``act`` (B, 5, 2): channel 0 of a patch token is its redness,
    channel 1 its greenness (class token 0). ``attn``: the class token attends (softmax, queries from the
    class token, keys from the colour amount) to all tokens with values ``red - green``; the feature is the
    class token's channel 0 of ``attn`` (residual + attention): red patches excite it, green ones inhibit it
    through attention."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Conv2d(3, 2, 8, stride=8)
        with torch.no_grad():
            w = torch.zeros(2, 3, 8, 8)
            w[0, 0], w[0, 1], w[1, 1], w[1, 0] = 1 / 64, -1 / 64, 1 / 64, -1 / 64
            self.embed.weight.copy_(w)
            self.embed.bias.zero_()
        self.tokens = Tokens(2, cls=torch.zeros(1, 1, 2))
        self.act = nn.ReLU()
        self.attn = PlantedAttention()

    def forward(self, x):
        return self.attn(self.act(self.tokens(self.embed(x))))


class PlantedAttention(nn.Module):
    def forward(self, h):
        q = torch.ones_like(h[..., :1])  # every query the same
        k = h.sum(-1, keepdim=True) * 2.0  # coloured tokens draw attention
        v = torch.stack([h[..., 0] - h[..., 1], torch.zeros_like(h[..., 0])], -1)
        return h + F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]


def planted_images():
    """28 images of 2x2 gray patches: 8 with a red patch, 8 with a green one, 8 plain, 4 with both."""
    gen = torch.Generator().manual_seed(0)
    images, kinds = [], []
    for kind in ["red"] * 8 + ["green"] * 8 + ["plain"] * 8 + ["both"] * 4:
        x = torch.full((3, 16, 16), 0.5)
        cells = torch.randperm(4, generator=gen)
        strength = 0.6 + 0.4 * torch.rand(2, generator=gen)
        for colour, cell, s in zip({"red": [0], "green": [1], "plain": [], "both": [0, 1]}[kind], cells, strength):
            y, xx = divmod(int(cell), 2)
            x[:, 8 * y:8 * y + 8, 8 * xx:8 * xx + 8] = 0.5 * (1 - s)
            x[colour, 8 * y:8 * y + 8, 8 * xx:8 * xx + 8] = 0.5 + 0.5 * s
        images.append(x)
        kinds.append(kind)
    return torch.stack(images), kinds


def test_planted_two_token_scan_ranks_images_with_both_tokens_as_top_mtis(tmp_path):
    model = PlantedTwoToken().eval()
    data, kinds = planted_images()
    feature = Feature("attn", unit=0, position="cls")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = li.scan(model, data, feature, "act", out=str(tmp_path / "scan"), settings=PassSettings(batch_size=7, progress=False, preprocess=False))
    both = {i for i, k in enumerate(kinds) if k == "both"}
    assert set(res.mtis(4).tolist()) == both
    assert {kinds[i] for i in res.meis(8)} <= {"red", "both"} and {kinds[i] for i in res.miis(8)} == {"green"}
    assert res.pos_maps["act"].shape == (28, 2, 2)  # maps over the patch grid (the class token left out)
    assert li.ScanResult.load(str(tmp_path / "scan")).mtis(4).tolist() == res.mtis(4).tolist()
    assert hook_count(model) == 0


def test_scan_with_a_token_attribution_layer_on_vit(vit_tiny, tmp_path, one_thread):
    data = image(2, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 2 images: percentile ranks and correlations mean little
        res = li.scan(vit_tiny, data, Feature("blocks_3", unit=3, position="cls"), ["blocks_1", "blocks_2_mlp_fc1"], out=str(tmp_path / "s"), settings=PassSettings(batch_size=2, progress=False))
    assert res.pos.shape == (2, 2, 2, 2) and np.isfinite(res.pos).all() and (res.neg > 0).all()
    assert res.pos_maps["blocks_1"].shape == (2, 14, 14)
    att = li.attribute(vit_tiny, data, Feature("blocks_3", unit=3, position="cls"), ["blocks_1"])
    assert np.allclose(res.pos[:, 0, 0, 0], att.positive("blocks_1").numpy(), rtol=1e-4)
    assert hook_count(vit_tiny) == 0



def test_census_of_a_token_layer_equals_one_feature_attributions(vit_tiny, one_thread):
    data = image(2, seed=4)
    census = li.layer_census(vit_tiny, data, "blocks_3", ["blocks_1"], units=[3, 7], position="cls", settings=PassSettings(batch_size=2, progress=False))
    for k, unit in enumerate((3, 7)):
        att = li.attribute(vit_tiny, data, Feature("blocks_3", unit=unit, position="cls"), ["blocks_1"])
        assert np.allclose(census.activation[:, k], att.activation.numpy(), rtol=1e-4, atol=1e-5)
        assert np.allclose(census.P("blocks_1")[:, k], att.positive("blocks_1").numpy(), rtol=1e-4, atol=1e-5)
    assert hook_count(vit_tiny) == 0

# ------------------------------------------------------------------------------------------------
# rendering at the model's input size; exact tense through attention
# ------------------------------------------------------------------------------------------------
def test_renders_keep_a_strict_vits_input_size(vit_tiny, one_thread):
    with rng_restored(seed=0):  # Lucent's transforms change the size; the ViT takes 224 px only
        sizes = {tuple(lucent_transform.compose(lucent_transform.standard_transforms)(image()).shape[2:])
                 for _ in range(5)}
    assert sizes - {(224, 224)}
    before = [p.requires_grad for p in vit_tiny.parameters()]
    for size in (224, 96):
        run = run_render(vit_tiny, objectives.feature(Feature("blocks_1", unit=4, position="cls")),
                         param.build("fourier", (size, size)), RenderSettings(steps=2, size=size), "test",
                         transforms=lucent_transform.standard_transforms)
        assert run.images.shape == (1, 3, size, size) and torch.isfinite(run.images).all()
        assert len(run.notes) == 1 and "input size 224x224" in run.notes[0]
    assert RenderSettings(size=96).model_hw(96, vit_tiny) == (224, 224)
    run = run_render(vit_tiny, objectives.feature(Feature("blocks_1", unit=4)), param.build("fourier", (64, 64)),
                     RenderSettings(steps=1, model_size=128), "test")  # a stage's default model_size
    assert "input size 224x224" in run.notes[0] and "model_size (128, 128) replaced" in run.notes[0]
    with pytest.raises(InputError, match=r"images of 128x128 px: VisionTransformer takes 224x224 px inputs only"):
        check_input_size(vit_tiny, (128, 128))
    check_input_size(vit_tiny, (224, 224))
    assert run_render(nn.Sequential(nn.Conv2d(3, 2, 3)), "0:1", param.build("fourier", (16, 16)),
                      RenderSettings(steps=1, size=16), "conv").notes == []
    assert hook_count(vit_tiny) == 0 and [p.requires_grad for p in vit_tiny.parameters()] == before


def _loss(model, objective, x):
    """The objective's loss for one forward pass through Lucent's hook (as inside render_vis)."""
    with hooks_restored(model):
        T = hook_model(model, lambda: x)
        model(preprocess_fn(model)(x))
        return objective(T)


def test_exact_tense_gradient_through_vit_attention_matches_finite_differences():
    model = tiny_vit().double()
    x = image(1, 32, seed=2).double()
    obj = objectives.tense(Feature("blocks_1", unit=3, position="cls"), "blocks_0_mlp_fc1", score="product",
                           mode="exact")
    with math_attention():
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(_loss(model, obj, xg), xg)
        gen = torch.Generator().manual_seed(3)
        for _ in range(3):
            v = torch.randn(x.shape, generator=gen, dtype=torch.float64)
            eps = 1e-5
            up = _loss(model, obj, (x + eps * v).requires_grad_(True)).item()
            down = _loss(model, obj, (x - eps * v).requires_grad_(True)).item()
            fd = (up - down) / (2 * eps)
            assert abs(float((g * v).sum()) - fd) <= 1e-6 * max(1.0, abs(fd))
        xf = x.clone().requires_grad_(True)
        fast = objectives.tense(Feature("blocks_1", unit=3, position="cls"), "blocks_0_mlp_fc1", score="product",
                                mode="fast")
        (gf,) = torch.autograd.grad(_loss(model, fast, xf), xf)
    assert not torch.allclose(gf, g, rtol=1e-3)  # GELU, LayerNorm and attention: fast is not the gradient
    assert hook_count(model) == 0


def test_tense_image_exact_on_a_tiny_vit_renders_at_its_size():
    from lucent_inhibit.synthesis.tense import tense_image

    model = tiny_vit()
    res = tense_image(model, Feature("blocks_1", unit=2, position="mean"), "blocks_0", mode="exact",
                      render=RenderSettings(steps=2, size=32), record_every=1)
    assert res.mode == "exact" and res.images.shape[-2:] == (32, 32) and torch.isfinite(res.tension).all()
    assert hook_count(model) == 0
