"""Atlas icons on vision-transformer token layers (B, T, C): targets on the patch grid (tokens.token_maps),
the icon crop measured as the targeted patches plus what attention mixes in (atlas.footprint), and the
``atlas`` command on a random-initialised timm ViT-Ti/16."""
import dataclasses
import warnings

import numpy as np
import pytest
import torch

import lucent_inhibit as li
from lucent_inhibit import Feature, RenderSettings
from lucent_inhibit.atlas import (AtlasLayout, collect_vectors, gradient_footprint, grid_cells, icon_crop,
                                  icon_targets, receptive_field_box, render_icons, token_crop)
from lucent_inhibit.core.hooks import capture
from lucent_inhibit.core.settings import PassSettings
from lucent_inhibit.core.tokens import token_grid, token_maps
from lucent_inhibit.synthesis.objectives import crop_box

FEATURE = Feature("blocks_1", unit=0, position="cls")


def tiny_vit(attention=None, depth=2):
    """A small timm ViT (32 px, 8 px patches: 4x4 grid) under a fixed seed. ``attention="off"``: block 0's
    attention passes nothing between tokens (its projection is zero); ``"uniform"``: it averages the
    normalised tokens of the whole image (q = k = 0, v and the projection the identity)."""
    from timm.models.vision_transformer import VisionTransformer

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=depth, num_heads=1, num_classes=5)
    attn = model.blocks[0].attn
    with torch.no_grad():
        if attention is not None:
            attn.qkv.weight.zero_()
            attn.qkv.bias.zero_()
            attn.proj.weight.zero_()
            attn.proj.bias.zero_()
        if attention == "uniform":
            attn.qkv.weight[32:].copy_(torch.eye(16))
            attn.proj.weight.copy_(torch.eye(16))
    return li.prepare(model)


@pytest.fixture(scope="module")
def vit():
    return tiny_vit()


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def maps_by_hand(model, images, kind):
    """(3, 16, 4, 4) attribution S or activation h at blocks_0, patch tokens on the grid by token_maps."""
    if kind == "attribution":
        t = li.attribute(model, images, FEATURE, ["blocks_0"]).scores["blocks_0"]
    else:
        t = capture(model, li.preprocess_fn(model)(images), ["blocks_0"])["blocks_0"].detach()
    return token_maps(t.float(), token_grid(model))


def points_and_grid(model, images, kind, mode, crop):
    """Atlas points at blocks_0 and a 2x2 grid with images 0 and 1 in one cell, image 2 in another."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the residual stream is signed: the icon warning is expected
        pts = collect_vectors(model, images, FEATURE, "blocks_0", kind=kind, mode=mode, crop=crop, settings=PassSettings(batch_size=3))
    col = np.where(pts.point_image < 2, 0.25, 0.75).astype(np.float32)
    xy = np.stack([col, np.full_like(col, 0.25)], 1)
    return pts, grid_cells(pts, AtlasLayout(xy, xy, 2), size=2, min_points=1)


@pytest.mark.parametrize("kind", ["attribution", "activation"])
def test_position_targets_on_a_token_layer_equal_token_maps_by_hand(vit, images, kind, one_thread):
    m = maps_by_hand(vit, images, kind)
    pts, grid = points_and_grid(vit, images, kind, "position", None)
    sign = (lambda t: t.abs()) if kind == "attribution" else (lambda t: t)  # SPEC 2.6: |S| for attributions
    assert pts.map_shape == (16, 4, 4) and pts.box == (0, 4, 0, 4) and len(grid) == 2
    expected = torch.stack([(sign(m[0]) + sign(m[1])) / 32, sign(m[2]) / 16])  # every patch once per image
    got = icon_targets(pts, grid.vectors, "positions", grid=grid)
    assert got.shape == (2, 16, 4, 4)
    assert torch.allclose(got, expected, atol=1e-6 * float(expected.abs().max()))
    mean = torch.stack([m[:2].mean((0, 2, 3)), m[2].mean((1, 2))])  # cell vector: mean of its patch points
    box = icon_targets(pts, grid.vectors, "box")
    assert torch.allclose(box, sign(mean)[:, :, None, None].expand(2, 16, 4, 4), atol=1e-6 * float(mean.abs().max()))
    center = icon_targets(pts, grid.vectors, "center")
    assert torch.allclose(center[:, :, 1, 1], sign(mean), atol=1e-6 * float(mean.abs().max()))
    center[:, :, 1, 1] = 0
    assert float(center.abs().max()) == 0  # only the box's centre patch (1, 1) of the 4x4 grid


def test_sum_targets_fill_the_crop_box_of_the_patch_grid(vit, images, one_thread):
    m = maps_by_hand(vit, images, "attribution")
    pts, grid = points_and_grid(vit, images, "attribution", "sum", 0.3)
    y0, y1, x0, x1 = crop_box(m.abs().sum(1).mean(0, keepdim=True), 0.3)
    assert pts.box == (y0, y1, x0, x1)
    sums = m[:, :, y0:y1, x0:x1].sum((2, 3))  # one vector per image: the patches of the box summed
    assert np.allclose(pts.vectors, sums.numpy(), atol=1e-5 * float(sums.abs().max()))
    t = icon_targets(pts, grid.vectors, "box")
    cell = torch.stack([sums[:2].mean(0), sums[2]]).abs()
    assert torch.allclose(t[:, :, y0:y1, x0:x1], cell[:, :, None, None].expand_as(t[:, :, y0:y1, x0:x1]), rtol=1e-5)
    t[:, :, y0:y1, x0:x1] = 0
    assert float(t.abs().max()) == 0


def centre_target(k=2, patch=(2, 1), seed=0):
    t = torch.zeros(k, 16, 4, 4)
    t[:, :, patch[0], patch[1]] = torch.rand(k, 16, generator=torch.Generator().manual_seed(seed)) + 0.1
    return t


def random_icons(k=2, seed=0):
    return (np.random.RandomState(seed).rand(k, 32, 32, 3) * 255).astype(np.uint8)


def test_footprint_of_the_patch_embedding_is_the_patch_by_hand(vit):
    icons, t = random_icons(), centre_target()
    fp = gradient_footprint(vit, "patch_embed", icons, t, (32, 32), token_grid(vit))
    W = vit.patch_embed.proj.weight.detach()  # (16, 3, 8, 8): token (2, 1) reads pixels [16:24, 8:16] only
    scale = (li.preprocess_fn(vit)(torch.ones(1, 3, 1, 1)) - li.preprocess_fn(vit)(torch.zeros(1, 3, 1, 1))).view(3)
    per_pixel = [torch.einsum("o,ocyx->cyx", t[k, :, 2, 1], W).mul(scale[:, None, None]).abs().sum(0) for k in range(2)]
    expected = torch.zeros(4, 4)
    expected[2, 1] = torch.stack(per_pixel).mean(0).mean()
    assert torch.allclose(fp, expected, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("model, layer, patches, box", [
    ("plain", "patch_embed", (2, 3, 1, 2), (16, 24, 8, 16)),  # before any attention: the patch alone
    ("off", "blocks_0", (2, 3, 1, 2), (16, 24, 8, 16)),  # attention passes nothing: the patch alone
    ("uniform", "blocks_0", (0, 4, 0, 4), (0, 32, 0, 32)),  # attention averages every token: the whole image
])
def test_token_crop_gives_the_planted_receptive_field(model, layer, patches, box):
    vit = tiny_vit(None if model == "plain" else model)
    got, info = token_crop(vit, layer, random_icons(), centre_target(), (32, 32), token_grid(vit), (2, 3, 1, 2))
    assert got == box and info["crop_patches"] == list(patches) and info["patch_box"] == [2, 3, 1, 2]
    assert info["crop_rule"] == "token_footprint" and "attention footprint" in info["crop_rule_text"]
    up = np.repeat(np.repeat(random_icons(), 2, 1), 2, 2)  # 64 px icons, the model sees 32 px: twice the pixels
    assert token_crop(vit, layer, up, centre_target(), (32, 32), token_grid(vit), (2, 3, 1, 2))[0] == tuple(
        2 * v for v in box)


def test_render_icons_on_a_token_layer_measure_their_targets_and_state_the_crop(vit, images, one_thread):
    pts, grid = points_and_grid(vit, images, "attribution", "position", None)
    icons = render_icons(vit, pts, grid, RenderSettings(steps=2, seed=0), batch_size=2, icon_target="center",
                         crop_size=16)
    t = icon_targets(pts, grid.vectors, "center")
    h = token_maps(capture(vit, li.preprocess_fn(vit)(torch.from_numpy(icons.images).permute(0, 3, 1, 2).float() / 255),
                           ["blocks_0"])["blocks_0"].detach(), token_grid(vit))
    cos = torch.nn.functional.cosine_similarity(h[:, :, 1, 1], t[:, :, 1, 1], dim=1)  # the target's one patch
    assert np.allclose(icons.cosine, cos.numpy(), atol=1e-4)
    box, info = icon_crop(vit, pts, icons.images, t, (32, 32))
    assert icons.crop_box == box and icons.params["crop_rule"] == "token_footprint"
    assert icons.params["crop_box_size"] == [box[1] - box[0], box[3] - box[2]]
    assert box[0] <= 8 and box[1] >= 16 and box[2] <= 8 and box[3] >= 16  # the centre patch (1, 1) at least
    assert icons.crops().shape == (2, 16, 16, 3)


def test_icon_crop_on_a_conv_layer_keeps_the_tile_rule(tiny_net, tiny_images, one_thread):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pts = collect_vectors(tiny_net, tiny_images, Feature("conv3", unit=1), "relu2", crop=0.3)
    t = icon_targets(pts, pts.vectors, "box")
    box, info = icon_crop(tiny_net, pts, np.zeros((4, 32, 32, 3), np.uint8), t, (16, 16))
    assert box == receptive_field_box(pts, (32, 32)) and info["crop_rule"] == "tiles"
    assert info["crop_box_size"] == [box[1] - box[0], box[3] - box[2]]
    linear = dataclasses.replace(pts, box=None, map_shape=(4,))  # no spatial positions: the whole icon
    assert icon_crop(tiny_net, linear, np.zeros((4, 32, 32, 3), np.uint8), t[:, :, 0, 0], (16, 16)) == (
        None, {"crop_rule": "whole", "crop_rule_text": "the whole icon (a layer without spatial positions)",
               "crop_box_size": [32, 32]})


# ------------------------------------------------------------------------------------------------
# the atlas command on timm's ViT-Ti/16 (random weights, 224 px)
# ------------------------------------------------------------------------------------------------
COMMON = ["--model", "timm:vit_tiny_patch16_224", "--weights", "none", "--size", "224", "--n-images", "8",
          "--batch-size", "8", "--layer", "blocks_10_mlp_fc1", "--unit", "3", "--position", "cls",
          "--attr-layer", "blocks_6"]


@pytest.fixture(scope="module")
def vit_scan(tmp_path_factory):
    from lucent_inhibit.app.cli import main

    out = tmp_path_factory.mktemp("vit_scan")
    with torch.random.fork_rng():
        assert main(["scan", *COMMON, "--out", str(out)]) == 0
    return out / "scan.npz"


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--mode", "position"], ["--mode", "position", "--icon-target", "center"],
                                   ["--mode", "position", "--icon-target", "positions"], ["--kind", "activation"]],
                         ids=["sum-box", "position-box", "position-center", "position-positions", "activation"])
def test_atlas_command_on_a_vit_token_layer(vit_scan, extra, tmp_path, capsys, one_thread):
    from lucent_inhibit.app.cli import main
    from lucent_inhibit.atlas import Atlas

    out = tmp_path / "atlas"
    code = main(["atlas", *COMMON, "--scan", str(vit_scan), "--out", str(out), "--steps", "2", "--top-abs", "8",
                 "--top-activation", "0", "--bottom-activation", "0", "--top-tension", "0", *extra])
    printed = capsys.readouterr().out
    assert code == 0
    assert all((out / n).stat().st_size > 0 for n in ("atlas.npz", "atlas.png", "atlas.html"))
    atlas = Atlas.load(out / "atlas.npz")
    assert atlas.points.map_shape == (192, 14, 14) and atlas.icons.params["crop_rule"] == "token_footprint"
    h, w = atlas.icons.params["crop_box_size"]
    assert f"icon crop: {h}x{w} px of 224x224 px icons" in printed and "attention footprint" in printed
    assert np.isfinite(atlas.icons.cosine).all() and h % 16 == 0 and w % 16 == 0  # whole patches
