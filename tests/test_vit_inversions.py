"""+/- attribution inversions and accentuations (Hamblin et al. 2024, paper 003; SPEC 2.3, 2.5) on vision
transformer token layers (B, T, C): the targets relu(sign * S) are the patch tokens on the patch grid, the
class / register tokens left out; random-initialised timm models (no weights can be downloaded here)."""
import pytest
import torch

import lucent_inhibit as li
from lucent_inhibit import Feature, preprocess_fn
from lucent_inhibit.attribution.attribute import attribute
from lucent_inhibit.core.hooks import capture
from lucent_inhibit.core.rendering import rng_restored, run_render
from lucent_inhibit.core.settings import RenderSettings
from lucent_inhibit.core.tokens import TokenGrid, token_grid
from lucent_inhibit.core.validate import InputError
from lucent_inhibit.synthesis import objectives, param
from lucent_inhibit.synthesis.inversion import InversionResult, inversions

GRID = TokenGrid(2, 3, 4)  # class token + 1 register token, then a non-square 3x4 patch grid: T = 14


def token_scores(c=5, grid=GRID, seed=0):
    return torch.randn(grid.tokens, c, generator=torch.Generator().manual_seed(seed))


def hand_cosdot(y, t, p):
    """dot * |cos|^p of flat vectors, written out."""
    dot = float((y * t).sum())
    return dot * abs(dot / float(y.norm() * t.norm())) ** p


def tiny_vit():
    """A small timm ViT (32 px, 8 px patches: 4x4 grid, 2 blocks) under a fixed seed."""
    from timm.models.vision_transformer import VisionTransformer

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return li.prepare(VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2,
                                            num_classes=5))


# ------------------------------------------------------------------------------------------------
# the objective and the mask against hand computations
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sign", [1, -1])
def test_token_target_is_relu_of_signed_patch_tokens_on_the_grid(sign):
    s, p = token_scores(), 2.0
    s[:2] = -sign * 100.0  # huge prefix scores of the other sign ...
    s[1, 0] = sign * 100.0  # ... and one of this sign in the register token: neither may enter the target
    act = torch.randn(2, GRID.tokens, 5, generator=torch.Generator().manual_seed(1))
    loss = float(objectives.signed_attribution("b", s, sign, power=p, crop=None, grid=GRID)(lambda name: act))
    # hand: token 2 + 4 * y + x is patch (y, x); the target there is relu(sign * S) of that token
    target = torch.stack([(sign * s[2 + 4 * y + x]).clamp(min=0) for y in range(3) for x in range(4)])
    expected = -sum(hand_cosdot(act[b, 2:], target, p) for b in range(2)) / 2
    assert loss == pytest.approx(expected, rel=1e-5)
    # (1, T, C) with the grid is the same objective
    one = float(objectives.signed_attribution("b", s[None], sign, power=p, crop=None, grid=GRID)(lambda name: act))
    assert one == pytest.approx(loss, rel=1e-6)
    # the mask: channel sums of relu(sign * S) over the 3x4 patch grid, divided by their maximum
    mask = objectives.attribution_mask(s, sign, threshold=0.0, grid=GRID)
    sums = torch.tensor([[float(target[4 * y + x].sum()) for x in range(4)] for y in range(3)])
    assert mask.shape == (3, 4) and torch.allclose(mask, sums / sums.max())
    # upsampled to the image: nearest, each patch's value over its 8x8 pixels
    up = objectives.attribution_mask(s, sign, size=(24, 32), threshold=0.0, grid=GRID)
    assert up.shape == (24, 32) and torch.equal(up[8 * 2 : 8 * 3, 8 * 1 : 8 * 2], mask[2, 1].expand(8, 8))


def test_token_scores_without_a_grid_infer_a_square_grid_and_maps_are_unchanged():
    grid = TokenGrid(1, 4, 4)
    s, act = token_scores(grid=grid, seed=3), torch.randn(1, 17, 5, generator=torch.Generator().manual_seed(4))
    inferred = float(objectives.signed_attribution("b", s, 1, crop=None)(lambda name: act))
    given = float(objectives.signed_attribution("b", s, 1, crop=None, grid=grid)(lambda name: act))
    assert inferred == pytest.approx(given, rel=1e-6)
    target = torch.stack([s[1 + i].clamp(min=0) for i in range(16)])
    assert -inferred == pytest.approx(hand_cosdot(act[0, 1:], target, 2.0), rel=1e-5)
    # a (C, H, W) map is still read as a map: the cosdot of the whole (C, H, W) against relu(S)
    m, h = torch.randn(5, 3, 3), torch.randn(1, 5, 3, 3)
    loss = float(objectives.signed_attribution("b", m, 1, crop=None)(lambda name: h))
    assert -loss == pytest.approx(hand_cosdot(h[0].flatten(), m.clamp(min=0).flatten(), 2.0), rel=1e-5)


def test_signed_attribution_all_in_prefix_tokens_is_an_error():
    s = token_scores().abs()  # positive everywhere ...
    s[0, 3] = -2.0  # ... but for one channel of the class token
    with pytest.raises(InputError, match=r"negative attribution at layer 'b' sits in its 2 prefix .* 3x4 patch grid"):
        objectives.signed_attribution("b", s, -1, grid=GRID)
    with pytest.raises(InputError, match="prefix"):
        objectives.attribution_mask(s, -1, grid=GRID)
    objectives.signed_attribution("b", s, +1, grid=GRID)  # the positive part is on the patches: fine
    with pytest.raises(InputError, match="no negative attribution at layer 'b'"):
        objectives.signed_attribution("b", s.abs(), -1, grid=GRID)  # none anywhere: the plain message


def test_bad_token_scores_name_the_shape():
    s = token_scores()
    with pytest.raises(InputError, match=r"\(2, 14, 5\)"):
        objectives.signed_attribution("b", torch.randn(2, 14, 5), 1, grid=GRID)  # two images
    with pytest.raises(InputError, match=r"\(1, 5, 3, 4\)"):
        objectives.signed_attribution("b", torch.randn(1, 5, 3, 4), 1, grid=GRID)  # a map is no token layer
    with pytest.raises(InputError, match=r"shape \(14, 5\) .*T=14.*17 tokens"):
        objectives.signed_attribution("b", s, 1, grid=TokenGrid(1, 4, 4))  # 1 + 4x4 = 17 tokens, not 14
    with pytest.raises(InputError, match=r"shape \(14, 5\)"):
        objectives.attribution_mask(s, 1, grid=TokenGrid(1, 4, 4))
    with pytest.raises(InputError, match=r"shape \(98, 5\).*no square patch grid"):
        objectives.signed_attribution("b", torch.randn(98, 5), 1)  # 98 = 9x9 + 17 prefix tokens: no grid inferred
    with pytest.raises(InputError, match="TokenGrid"):
        objectives.signed_attribution("b", s, 1, grid=(2, 3, 4))


# ------------------------------------------------------------------------------------------------
# inversions and accentuations on a (tiny, then a real-size) ViT
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seeded", [False, True])
def test_inversions_on_a_token_layer_raise_their_objectives(seeded, one_thread):
    model = tiny_vit()
    image = torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(5))  # resized to the ViT's 32 px
    feature = Feature("blocks_1", unit=2, position="cls")
    res = inversions(model, image, feature, "blocks_0", seeded=seeded, completeness_images=0, jitter=0,
                     render=RenderSettings(steps=12, lr=0.05, seed=0))  # no jitter: each step's value is exact
    assert res.images.shape == (3, 3, 32, 32) and res.maps.shape == (3, 2, 4, 4)
    assert res.feature.grid == token_grid(model) == TokenGrid(1, 4, 4)
    # the maps are relu(S) and relu(-S) of the patch tokens (class token left out), summed over channels
    s = attribute(model, res.images, feature, "blocks_0").scores["blocks_0"]
    patches = s[:, 1:].reshape(3, 4, 4, 16)
    assert torch.allclose(res.maps[:, 0], patches.clamp(min=0).sum(-1), rtol=1e-4, atol=1e-6)
    assert torch.allclose(res.maps[:, 1], (-patches).clamp(min=0).sum(-1), rtol=1e-4, atol=1e-6)
    # rendering toward relu(+S) (column 0) and relu(-S) (column 1) raises each cosdot from its start
    traj = res.objective
    assert traj.shape == (12, 2)
    assert (traj[-1] > traj[0]).all() and (traj[-1] > 0).all()


def test_rendering_toward_a_planted_token_target_raises_the_objective(one_thread):
    model = tiny_vit()  # 1 class token + 4x4 patches of 16 channels at blocks_0
    v = torch.randn(16, generator=torch.Generator().manual_seed(6))
    s = torch.zeros(17, 16)
    for y, x in [(0, 0), (0, 1), (1, 0), (1, 1)]:  # planted: S = v on the top-left 2x2 patches ...
        s[1 + 4 * y + x] = v
    s[0] = -10 * v  # ... and a large class-token score of the other sign (not part of a spatial target)
    obj = objectives.signed_attribution("blocks_0", s, +1, crop=None, grid=token_grid(model))
    target = torch.zeros(16, 16)  # hand: relu(S) of the 16 patch tokens, row-major
    target[[0, 1, 4, 5]] = v.clamp(min=0)

    def cosdot_of(images):
        with torch.no_grad():
            h = capture(model, preprocess_fn(model)(images), ["blocks_0"])["blocks_0"]
        assert -float(obj(lambda name: h)) == pytest.approx(hand_cosdot(h[0, 1:], target, 2.0), rel=1e-4, abs=1e-9)
        return hand_cosdot(h[0, 1:], target, 2.0)

    with rng_restored(0):
        param_f = param.build("fourier", (32, 32))
    with torch.no_grad():
        start = cosdot_of(param_f[1]())  # the noise start
    run = run_render(model, obj, param_f, RenderSettings(steps=16, lr=0.05, size=32, seed=0), "planted", transforms=[])
    end = cosdot_of(run.images)
    assert end > start and end > 0


def test_inversions_of_a_strict_vit_refuse_another_render_size(one_thread):
    model = tiny_vit()
    with pytest.raises(InputError, match=r"input size of VisionTransformer, 32x32 px.*render size 16x16"):
        inversions(model, torch.rand(3, 32, 32), Feature("blocks_1", unit=2, position="cls"), "blocks_0",
                   completeness_images=0, render=RenderSettings(steps=1, size=16))


@pytest.mark.slow
def test_cli_inverts_at_a_vit_token_layer(tmp_path, capsys, one_thread):
    from lucent_inhibit.app.cli import main

    out = tmp_path / "inv"
    assert main(["invert", "--model", "timm:vit_tiny_patch16_224", "--weights", "none", "--size", "224",
                 "--layer", "blocks_10_mlp_fc1", "--unit", "3", "--position", "cls", "--attr-layer", "blocks_6",
                 "--steps", "2", "--out", str(out)]) == 0
    assert "targets: the 14x14 patch tokens" in capsys.readouterr().out
    res = InversionResult.load(str(out / "inversion.npz"))
    assert res.images.shape == (3, 3, 224, 224) and res.maps.shape == (3, 2, 14, 14) and res.objective.shape == (2, 2)
    assert (out / "inversion.png").stat().st_size > 5000
    assert main(["invert", "--model", "timm:vit_tiny_patch16_224", "--weights", "none", "--size", "128",
                 "--layer", "blocks_10_mlp_fc1", "--attr-layer", "blocks_6", "--out", str(tmp_path / "x")]) == 2
    assert "takes 224x224 px inputs only" in capsys.readouterr().err
