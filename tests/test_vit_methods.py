"""Cosdot objectives and atlas vectors on vision-transformer token layers (B, T, C): channels are the last
dimension, positions the patch tokens on the patch grid, the class token left out of spatial readings."""
import warnings

import pytest
import torch

import lucent_inhibit as li
from lucent_inhibit import Feature
from lucent_inhibit.atlas.vectors import collect_vectors
from lucent_inhibit.attribution.totals import signed_totals
from lucent_inhibit.core.settings import PassSettings
from lucent_inhibit.core.tokens import TokenGrid, token_maps
from lucent_inhibit.core.validate import InputError
from lucent_inhibit.synthesis import objectives


@pytest.fixture(scope="module")
def vit_tiny():
    return li.load_model("timm:vit_tiny_patch16_224", weights="none")


def hand_cosdot(y, t, p):
    """dot * |cos|^p of flat vectors, written out."""
    dot = float((y * t).sum())
    return dot * abs(dot / float(y.norm() * t.norm())) ** p


def tokens(b=2, g=4, c=5, prefix=1, seed=0):
    return torch.randn(b, prefix + g * g, c, generator=torch.Generator().manual_seed(seed))


def test_token_maps_put_patch_tokens_on_the_grid_and_refuse_other_shapes():
    act = tokens(b=2, g=3, c=4, prefix=2)
    maps = token_maps(act, TokenGrid(2, 3, 3))
    assert maps.shape == (2, 4, 3, 3)
    for y in range(3):
        for x in range(3):
            assert torch.equal(maps[:, :, y, x], act[:, 2 + 3 * y + x])
    assert torch.equal(token_maps(act[:, :2 + 9]), token_maps(act, TokenGrid(2, 3, 3)))  # 11 = 2 + 3x3 inferred
    with pytest.raises(InputError, match=r"\(B, T, C\)"):
        token_maps(torch.zeros(2, 4, 3, 3))
    with pytest.raises(InputError, match="tokens"):
        token_maps(act, TokenGrid(1, 4, 4))


@pytest.mark.parametrize("position", ["mean", (1, 2), "cls", ("token", 3), "center"])
def test_cosdot_on_a_token_layer_reads_channels_on_the_last_dim(position):
    act, p = tokens(), 3.0
    v = torch.randn(5, generator=torch.Generator().manual_seed(1))
    loss = float(objectives.cosdot("blocks_1", v, power=p, position=position)(lambda name: act))
    index = {(1, 2): 1 + 4 + 2, "cls": 0, ("token", 3): 3, "center": 1 + 2 * 4 + 2}.get(position)
    rows = [act[b, i] for b in range(2) for i in (range(1, 17) if position == "mean" else [index])]
    expected = -sum(hand_cosdot(r, v, p) for r in rows) / len(rows)
    assert loss == pytest.approx(expected, rel=1e-5)


def test_cosdot_refuses_token_directions_and_unknown_shapes():
    act = tokens()
    with pytest.raises(InputError, match="direction has length 17, but layer 'b' has 5 channels"):
        objectives.cosdot("b", torch.ones(17))(lambda name: act)
    with pytest.raises(InputError, match=r"outside 'b'.s 4x4 patch grid"):
        objectives.cosdot("b", torch.ones(5), position=(4, 0))(lambda name: act)
    with pytest.raises(InputError, match="names a token"):
        objectives.cosdot("b", torch.ones(5), position="cls")(lambda name: torch.ones(1, 5, 3, 3))
    with pytest.raises(InputError, match=r"\(B, T, C\)"):
        objectives.cosdot("b", torch.ones(5))(lambda name: torch.ones(1, 5, 2, 3, 3))


def test_spatial_cosdot_on_a_token_layer_uses_the_patch_grid():
    act, p = tokens(), 2.0
    target = torch.randn(5, 4, 4, generator=torch.Generator().manual_seed(2))
    loss = float(objectives.spatial_cosdot("b", target, power=p, crop=None)(lambda name: act))
    # hand: the patch tokens (not the class token) against the target's (channel, y, x) entries
    flat_t = torch.stack([target[:, y, x] for y in range(4) for x in range(4)])  # (16, C), row-major patches
    expected = -sum(hand_cosdot(act[b, 1:], flat_t, p) for b in range(2)) / 2
    assert loss == pytest.approx(expected, rel=1e-5)
    # crop to one patch: only that token counts
    one = torch.zeros(5, 4, 4)
    one[:, 2, 1] = target[:, 2, 1]
    loss1 = float(objectives.spatial_cosdot("b", one, power=p, crop=0.5)(lambda name: act))
    assert loss1 == pytest.approx(-sum(hand_cosdot(act[b, 1 + 2 * 4 + 1], target[:, 2, 1], p) for b in range(2)) / 2,
                                  rel=1e-5)
    with pytest.raises(ValueError, match=r"target map has shape \(17, 5, 1\) but layer .b. gives \(5, 4, 4\) \(the patch grid"):  # tokens as channels: refused
        objectives.spatial_cosdot("b", torch.rand(17, 5, 1), crop=None)(lambda name: act)
    with pytest.raises(InputError, match=r"\(B, C, H, W\) or a token layer"):
        objectives.spatial_cosdot("b", target, crop=None)(lambda name: torch.ones(2, 5))


def test_atlas_vectors_on_a_token_layer_are_per_patch(vit_tiny, one_thread):
    images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    feature = Feature("blocks_5", unit=3, position="cls")
    scores = li.attribute(vit_tiny, images, feature, ["blocks_3"]).scores["blocks_3"]  # (2, 197, 192)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the residual stream is signed: the icon warning is expected
        pts = collect_vectors(vit_tiny, images, feature, "blocks_3", mode="position", crop=None, settings=PassSettings(batch_size=2))
        summed = collect_vectors(vit_tiny, images, feature, "blocks_3", mode="sum", crop=None)
        acts = collect_vectors(vit_tiny, images, feature, "blocks_3", kind="activation", crop=None)
    assert pts.map_shape == (192, 14, 14) and pts.box == (0, 14, 0, 14)
    assert pts.vectors.shape == (2 * 196, 192)
    expected = scores[:, 1:].reshape(2 * 196, 192).numpy()  # patch tokens, row-major; the class token left out
    assert abs(pts.vectors - expected).max() <= 1e-5 * abs(expected).max()
    assert pts.point_position[14 + 3].tolist() == [1, 3] and pts.point_image[196:].tolist() == [1] * 196
    assert abs(summed.vectors - scores[:, 1:].sum(1).numpy()).max() <= 1e-5 * abs(expected).max() * 196
    h = li.capture(vit_tiny, li.preprocess_fn(vit_tiny)(images), ["blocks_3"])["blocks_3"].detach()
    assert abs(acts.vectors - h[:, 1:].mean(1).numpy()).max() <= 1e-5 * float(h.abs().max())
    P, N = signed_totals(scores, "element", "l1")  # totals over every token, the class token included
    assert abs(pts.P - P.numpy()).max() <= 1e-5 * float(P.max()) and abs(pts.N - N.numpy()).max() <= 1e-5 * float(N.max())
