"""Feature-combination plots (paper 004) on the token layers (B, T, C) of vision transformers: pair statistics
read at the class token, a token index, a patch, the centre patch or the patch mean with the model's token
layout; sweeps whose recorded values are the features read on the rendered images; bad positions refused."""
import numpy as np
import pytest
import torch

import lucent_inhibit as li
from lucent_inhibit import Feature, preprocess_fn
from lucent_inhibit.combinations import (CombinationResult, PairStatistics, axis_scales, pair_statistics,
                                         sweep_combinations)
from lucent_inhibit.core.settings import PassSettings, RenderSettings
from lucent_inhibit.core.tokens import TokenGrid, token_grid
from lucent_inhibit.core.validate import InputError
from lucent_inhibit.synthesis import objectives
from lucent_inhibit.synthesis.objectives import cosdot_value, pair_targets

LAYER = "blocks_1_mlp_fc1"
RENDER = RenderSettings(steps=2, size=32, model_size=32, transforms=[], seed=3)


def tiny_vit(**kw):
    """A small timm ViT (32 px, 8 px patches: a 4x4 grid, 2 blocks, fc1 width 64) under a fixed seed."""
    from timm.models.vision_transformer import VisionTransformer

    with torch.random.fork_rng():
        torch.manual_seed(0)
        cfg = dict(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=5)
        return li.prepare(VisionTransformer(**{**cfg, **kw}))


@pytest.fixture(scope="module")
def registers():
    """Class token + 2 register tokens in front of the 4x4 patches: prefix 3, T = 19 at blocks_*."""
    return tiny_vit(reg_tokens=2)


def images(n=6, hw=(32, 32), seed=0):
    return torch.rand(n, 3, *hw, generator=torch.Generator().manual_seed(seed))


def hooked(model, module, x):
    """The output of ``module`` for images ``x`` in [0, 1] through a plain torch forward hook (no library code
    but the model's normalisation)."""
    out = {}
    handle = module.register_forward_hook(lambda m, i, o: out.__setitem__("act", o.detach()))
    try:
        with torch.no_grad():
            model(preprocess_fn(model)(x))
    finally:
        handle.remove()
    return out["act"]


def hand_correlation(a):
    return torch.from_numpy(np.corrcoef(a.double().numpy(), rowvar=False)).float()


# (layer, position, hand rule on the (B, T, C) tensor) for prefix 3 in front of a 4x4 grid
CASES = [
    (LAYER, "cls", lambda a: a[:, 0]),
    (LAYER, ("token", 2), lambda a: a[:, 2]),  # the second register token
    (LAYER, (1, 2), lambda a: a[:, 3 + 1 * 4 + 2]),
    (LAYER, "center", lambda a: a[:, 3 + 2 * 4 + 2]),
    (LAYER, "mean", lambda a: a[:, 3:].mean(1)),  # patch tokens only
    ("patch_embed", "center", lambda a: a[:, 2 * 4 + 2]),  # before the prefix tokens: 16 patch tokens
    ("patch_embed", "mean", lambda a: a.mean(1)),
]


@pytest.mark.parametrize("layer, position, rule", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_pair_statistics_on_a_token_layer_equal_a_hand_computation(registers, layer, position, rule, tmp_path):
    x = images()
    module = registers.patch_embed if layer == "patch_embed" else registers.blocks[1].mlp.fc1
    expected = rule(hooked(registers, module, x))
    st = pair_statistics(registers, x, layer, position=position, settings=PassSettings(batch_size=4, progress=False))
    assert st.activations.shape == expected.shape == (6, expected.shape[1])
    assert torch.allclose(st.activations, expected, atol=1e-5)
    ok = torch.isfinite(st.correlation)
    assert torch.allclose(st.correlation[ok], hand_correlation(expected)[ok], atol=1e-4)
    layout = (3, 4, 4, True)  # the model's; a patch-only layer (patch_embed) reads it as 16 patch tokens
    assert st.token_layout == layout and st.feature(5).grid == TokenGrid(*layout)
    assert st.feature(5).position == st.position
    back = PairStatistics.load(st.save(str(tmp_path / "st")))
    assert back.position == st.position and back.token_layout == layout and back.feature(5) == st.feature(5)


def test_pair_statistics_read_the_models_non_square_grid():
    # 1 + 4x6 = 25 tokens: a guess from T alone would be a 5x5 grid with no class token
    model = tiny_vit(img_size=(32, 48))
    assert token_grid(model) == TokenGrid(1, 4, 6)
    x = images(hw=(32, 48))
    act = hooked(model, model.blocks[1].mlp.fc1, x)
    st = pair_statistics(model, x, LAYER, position=(2, 4), settings=PassSettings(progress=False))
    assert torch.allclose(st.activations, act[:, 1 + 2 * 6 + 4], atol=1e-5)
    assert not torch.allclose(st.activations, act[:, 2 * 5 + 4], atol=1e-3)  # the guessed grid's token
    cls = pair_statistics(model, x, LAYER, position="cls", settings=PassSettings(progress=False))
    assert torch.allclose(cls.activations, act[:, 0], atol=1e-5)


@pytest.mark.parametrize("kw, layer, position, named", [
    ({}, LAYER, ("token", 17), r"\('token', 17\).*no token 17.*tokens 0\.\.16"),
    ({}, LAYER, (4, 0), r"\(4, 0\) is outside 'blocks_1_mlp_fc1'.s 4x4 patch grid"),
    ({}, LAYER, (0, 4), r"\(0, 4\) is outside"),
    ({}, "patch_embed", "cls", r"position 'cls': 'patch_embed' has no class token"),
    ({"class_token": False, "global_pool": "avg"}, LAYER, "cls", r"position 'cls'.*no class token"),
    ({}, "patch_embed_proj", "cls", r"position cls names a token.*patch_embed_proj.*not a token layer"),
])
def test_positions_the_layer_does_not_have_are_input_errors(kw, layer, position, named):
    model = tiny_vit(**kw)
    with pytest.raises(InputError, match=named):
        pair_statistics(model, images(2), layer, position=position, settings=PassSettings(progress=False))


def test_sweep_refuses_a_missing_token_naming_the_feature(registers):
    fa, fb = Feature(LAYER, 0, position="cls"), Feature(LAYER, 1, position=("token", 19))
    with pytest.raises(InputError, match=r"feature_b \(blocks_1_mlp_fc1 unit 1 @ token 19\).*no token 19.*19 tokens"):
        sweep_combinations(registers, fa, fb, n_angles=5, n_seeds=1, scale=(1.0, 1.0), render=RENDER)


@pytest.mark.parametrize("position", ["cls", ("token", 1), (3, 1), "center", "mean"])
def test_feature_pair_objective_reads_the_token_the_feature_reads(position):
    # the objective of the sweep and the measurement read one token: the loss is the cosdot of Feature values
    act = torch.randn(3, 19, 8, generator=torch.Generator().manual_seed(1))
    grid = TokenGrid(3, 4, 4)
    fa, fb = Feature("l", 2, position=position, grid=grid), Feature("l", 5, position=position, grid=grid)
    theta, scale = np.array([0.3, 2.0, 4.0]), (0.5, 2.0)
    loss = objectives.feature_pair(fa, fb, theta=theta, power=4.0, scale=scale)(lambda name: act)
    index = {"cls": 0, ("token", 1): 1, (3, 1): 3 + 3 * 4 + 1, "center": 3 + 2 * 4 + 2}
    vec = act[:, 3:].mean(1) if position == "mean" else act[:, index[position]]
    y = torch.stack([vec[:, 2] / 0.5, vec[:, 5] / 2.0], 1)
    t = torch.stack([torch.cos(torch.tensor(theta)), torch.sin(torch.tensor(theta))], 1).float()
    hand = (y * t).sum(1) * ((y * t).sum(1) / (y.norm(dim=1) * t.norm(dim=1))).abs() ** 4
    assert float(loss) == pytest.approx(-float(hand.mean()), rel=1e-5)


def test_axis_scales_on_a_token_layer_are_the_features_on_their_own_renders(registers):
    st = pair_statistics(registers, images(8), LAYER, position=("token", 1), settings=PassSettings(progress=False))
    fa, fb = st.feature(3), st.feature(7)
    scales = axis_scales(registers, fa, fb, n_seeds=2, render=RENDER.replace(steps=8, lr=0.1))
    assert scales.feature_a == fa and scales.values.shape == (2, 2) and scales.images.shape == (2, 3, 32, 32)
    act = hooked(registers, registers.blocks[1].mlp.fc1, scales.images)  # each feature's best render
    assert scales.scale == pytest.approx((float(act[0, 1, 3]), float(act[1, 1, 7])), abs=1e-4)
    assert scales.scale == pytest.approx(tuple(scales.values.max(1).values.tolist()), abs=1e-6)


def test_sweep_on_a_token_layer_records_the_values_of_its_rendered_images(registers, one_thread, tmp_path):
    st = pair_statistics(registers, images(8), LAYER, position="cls", settings=PassSettings(progress=False))
    a, b, _ = st.most_correlated(excited=True)[0]
    fa, fb = st.feature(a), st.feature(b)
    res = sweep_combinations(registers, fa, fb, n_angles=5, n_seeds=2, scale=(0.7, 1.3), render=RENDER)
    assert res.feature_a == fa and res.feature_b == fb and res.feature_a.grid == token_grid(registers)
    assert res.values.shape == (5, 2, 2) and res.images.shape == (5, 3, 32, 32)
    # the recorded values of each angle's best image are the cls token's units on that image (hand read)
    act = hooked(registers, registers.blocks[1].mlp.fc1, res.images)
    best = res.values[torch.arange(5), res.best_seed]
    assert torch.allclose(best, torch.stack([act[:, 0, a], act[:, 0, b]], 1), atol=1e-4)
    assert not torch.allclose(best, torch.stack([act[:, 3:, a].mean(1), act[:, 3:, b].mean(1)], 1), atol=1e-3)
    # the scores are the cosdot of the recorded values in axis units toward each angle
    hand = cosdot_value(res.values / torch.tensor([0.7, 1.3]), pair_targets(res.theta.numpy())[:, None, :], 4.0)
    assert torch.allclose(res.score, hand, atol=1e-5)
    back = CombinationResult.load(res.save(str(tmp_path / "c")))
    assert back.feature_a == fa and back.feature_a.position == "cls" and torch.equal(back.values, res.values)


def test_sweep_gives_a_token_feature_without_a_grid_the_models_at_its_input_size():
    # 1 + 4x6 tokens: guessed from T alone, patch (2, 4) would be token 14 of a 5x5 grid; the model's is 17.
    # No model_size: the strict 32x48 patch embedding sets the size the render and the measurement use.
    model = tiny_vit(img_size=(32, 48))
    fa, fb = Feature(LAYER, 0, position=(2, 4)), Feature(LAYER, 1, position="mean")
    render = RenderSettings(steps=2, size=(32, 48), transforms=[], seed=3)
    res = sweep_combinations(model, fa, fb, n_angles=5, n_seeds=1, scale=(1.0, 1.0), render=render)
    assert res.feature_a.grid == res.feature_b.grid == TokenGrid(1, 4, 6) and res.render_size == (32, 48)
    act = hooked(model, model.blocks[1].mlp.fc1, res.images)
    assert torch.allclose(res.values[:, 0, 0], act[:, 1 + 2 * 6 + 4, 0], atol=1e-4)
    assert not torch.allclose(res.values[:, 0, 0], act[:, 2 * 5 + 4, 0], atol=1e-3)
    assert torch.allclose(res.values[:, 0, 1], act[:, 1:, 1].mean(1), atol=1e-4)


@pytest.mark.slow
def test_cli_combos_on_vit_tiny_cls_token(tmp_path, capsys, one_thread):
    from lucent_inhibit.app.cli import main

    args = ["--model", "timm:vit_tiny_patch16_224", "--weights", "none", "--size", "224", "--n-images", "8",
            "--batch-size", "8", "--layer", "blocks_10_mlp_fc1", "--steps", "2", "--n-angles", "5",
            "--n-seeds", "1", "--scale-steps", "2", "--pair", "anticorrelated"]
    out = tmp_path / "x"
    assert main(["combos", *args, "--position", "cls", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} >= {"pair_stats.npz", "combos_anticorrelated.npz", "combos_anticorrelated.png"}
    st = PairStatistics.load(str(out / "pair_stats.npz"))
    res = CombinationResult.load(str(out / "combos_anticorrelated.npz"))
    assert st.activations.shape == (8, 768) and st.position == "cls" and st.token_layout == (1, 14, 14, True)
    assert res.feature_a == st.feature(res.feature_a.unit) and res.feature_b == st.feature(res.feature_b.unit)
    assert res.values.shape == (5, 1, 2) and torch.isfinite(res.score).all()
    capsys.readouterr()
    assert main(["combos", *args, "--position", "token:197", "--out", str(tmp_path / "y")]) == 2
    assert "no token 197" in capsys.readouterr().err
