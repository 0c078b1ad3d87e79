"""The atlas as a mosaic: icons cut to the feature's receptive field, the dense grid rule, frames by icon
activation or net attribution, and (slow) icons that reach their targets with visible contrast."""
import json
import re
import warnings

import numpy as np
import pytest
import torch

from lucent_inhibit import Feature, RenderSettings
from lucent_inhibit.atlas import (AtlasConfig, AtlasIcons, auto_grid_size, build_atlas, check_grid_size, grid_cells,
                                  plot_atlas, receptive_field_box, rms_contrast, target_cosine, write_atlas_html)
from lucent_inhibit.atlas.layout import AtlasLayout
from lucent_inhibit.core.hooks import capture
from lucent_inhibit.core.preparation import preprocess_fn

FEAT = Feature("conv3", unit=1)


@pytest.fixture(scope="module")
def atlas16():
    from conftest import TinyConvNet

    net = TinyConvNet().eval()
    g = torch.Generator().manual_seed(5)
    data = torch.rand(30, 3, 16, 16, generator=g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atlas = build_atlas(net, data, FEAT, "relu2",
                            config=AtlasConfig(mode="position", icon_target="positions", grid_size=4, min_points=2, icon_batch_size=8, crop_size=24),
                            render=RenderSettings(steps=12))
    return net, data, atlas


def test_receptive_field_box_maps_the_layer_box_to_pixel_tiles(atlas16):
    _, _, atlas = atlas16
    p, ic = atlas.points, atlas.icons
    (_, h, w), (H, W) = p.map_shape, p.image_size
    y0, y1, x0, x1 = p.box
    assert ic.crop_box == receptive_field_box(p, ic.images.shape[1:3])
    assert receptive_field_box(p, (H, W)) == (y0 * H // h, -(-y1 * H // h), x0 * W // w, -(-x1 * W // w))
    # on a 2x larger icon the box doubles; a linear layer has none
    b = receptive_field_box(p, (2 * H, 2 * W))
    assert b == tuple(2 * v for v in receptive_field_box(p, (H, W)))
    import dataclasses

    assert receptive_field_box(dataclasses.replace(p, box=None, map_shape=(8,)), (H, W)) is None


def test_crops_are_the_box_enlarged_and_contrast_is_their_luminance_std(atlas16):
    _, _, atlas = atlas16
    ic = atlas.icons
    crops = ic.crops()
    assert crops.shape == (len(ic), 24, 24, 3) and crops.dtype == np.uint8
    assert ic.crops(40).shape == (len(ic), 40, 40, 3)
    y0, y1, x0, x1 = ic.crop_box
    native = ic.crops(y1 - y0) if (y1 - y0) == (x1 - x0) else None
    if native is not None:  # a square box at its own size is the plain cut
        np.testing.assert_array_equal(native, ic.images[:, y0:y1, x0:x1])
    lum = crops.astype(np.float64) / 255 @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(ic.contrast, lum.reshape(len(ic), -1).std(1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rms_contrast(np.full((2, 5, 5, 3), 77, np.uint8)), 0, atol=1e-7)
    # no box (an old file, or a linear layer): the whole icon
    whole = AtlasIcons(ic.images, ic.activation, ic.cosine, ic.params)
    assert whole.crops().shape == ic.images.shape
    q = atlas.quality()
    assert q["median_contrast"] == pytest.approx(float(np.median(ic.contrast)))
    assert q["occupancy"] == pytest.approx(len(atlas.grid) / 16) and q["median_cosine"] == pytest.approx(
        float(np.median(ic.cosine)))
    assert {"median_cosine", "median_contrast", "occupancy", "median_points"} <= set(atlas.summary())


def test_cosine_is_the_spatial_cosdots_inside_each_targets_crop(atlas16):
    net, _, atlas = atlas16
    from lucent_inhibit.atlas import icon_targets

    t = icon_targets(atlas.points, atlas.grid.vectors, "positions", grid=atlas.grid)
    x = torch.from_numpy(atlas.icons.images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        h = capture(net, preprocess_fn(net)(x), ["relu2"])["relu2"]
    expect = []
    for k in range(len(t)):
        mag = t[k].abs().sum(0)
        ys, xs = torch.nonzero(mag > 1e-6 * mag.max(), as_tuple=True)
        sl = (slice(None), slice(int(ys.min()), int(ys.max()) + 1), slice(int(xs.min()), int(xs.max()) + 1))
        expect.append(float(torch.nn.functional.cosine_similarity(h[k][sl].flatten(), t[k][sl].flatten(), dim=0)))
    np.testing.assert_allclose(atlas.icons.cosine, expect, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(target_cosine(h, t).numpy(), expect, rtol=1e-5, atol=1e-5)


def _layout(xy):
    xy = np.asarray(xy, np.float32)
    return AtlasLayout(xy, xy, 5)


def test_auto_grid_is_a_dense_mosaic_of_the_layout():
    rng = np.random.default_rng(0)
    even = rng.uniform(0, 1, (3000, 2))
    s = auto_grid_size(3000, 3, xy=even)
    assert s == auto_grid_size(3000, 3)  # evenly spread points: the even-spread side is already dense
    islands = np.concatenate([rng.normal(c, 0.03, (500, 2)) for c in ((0.2, 0.2), (0.8, 0.7), (0.3, 0.8))]).clip(0, 1)
    s = auto_grid_size(len(islands), 3, xy=islands)
    assert 2 <= s < auto_grid_size(len(islands), 3)  # clumped points: a coarser grid
    ij = np.clip(np.floor(islands * s).astype(int), 0, s - 1)
    counts = np.bincount(ij[:, 1] * s + ij[:, 0], minlength=s * s)
    full = counts[counts >= 3]
    assert full.size >= 0.5 * s * s and np.median(full) >= 6  # the documented rule holds
    if s < 30:  # and the next finer grid breaks it
        t = s + 1
        ij = np.clip(np.floor(islands * t).astype(int), 0, t - 1)
        c2 = np.bincount(ij[:, 1] * t + ij[:, 0], minlength=t * t)
        f2 = c2[c2 >= 3]
        assert t > auto_grid_size(len(islands), 3) or f2.size < 0.5 * t * t or np.median(f2) < 6


def test_an_explicit_grid_too_fine_for_the_points_is_refused(atlas16):
    _, _, atlas = atlas16
    p = atlas.points
    with pytest.raises(ValueError, match=r"atlas with too few points for the requested grid: .* 30x30 .*at most"):
        grid_cells(p, atlas.layout, size=30, min_points=2)
    with pytest.raises(ValueError, match="atlas with too few points for the requested grid"):
        check_grid_size(10, 20, 1)
    assert check_grid_size(8, 16, 1) == 8


def test_frames_by_icon_activation_or_net_attribution(atlas16, tmp_path):
    _, _, atlas = atlas16
    from lucent_inhibit.atlas.figures import frame_values

    np.testing.assert_array_equal(frame_values(atlas, "activation")[0], atlas.icons.activation)
    np.testing.assert_array_equal(frame_values(atlas, "net")[0], atlas.grid.net)
    for frame in ("activation", "net"):
        fig = plot_atlas(atlas, str(tmp_path / f"{frame}.png"), frame=frame)
        assert "on the icon" in fig.axes[2].get_ylabel() if frame == "activation" else "net" in fig.axes[2].get_ylabel()
    with pytest.raises(ValueError, match="frame"):
        plot_atlas(atlas, None, frame="colour")
    text = open(write_atlas_html(atlas, str(tmp_path / "a.html"), frame="net"), encoding="utf-8").read()
    d = json.loads(re.search(r'id="atlas-data">(.*?)</script>', text, re.S).group(1))
    assert d["frame"] == "net" and len(d["cells"]) == len(atlas.grid)
    c = d["cells"][0]
    assert set(c["colors"]) == {"activation", "net"} and c["cosine"] == pytest.approx(float(atlas.icons.cosine[0]))
    assert c["icon"].startswith("data:image/png;base64,") and c["full"].startswith("data:image/png;base64,")
    assert 'id="frame-activation"' in text and 'id="frame-net"' in text
    with pytest.raises(ValueError, match="frame"):
        write_atlas_html(atlas, str(tmp_path / "b.html"), frame="colour")


@pytest.mark.slow
def test_icons_reach_their_targets_with_visible_contrast(lite0):
    """Atlas defaults on the embedded model (a CI-sized demo: 48 crops at 224 px, position mode, the
    demo's layers): the median icon reaches a cosine >= 0.5 to its target, and the displayed
    receptive-field crops have a median RMS contrast >= 0.15."""
    from lucent_inhibit.app.stages.atlas import AtlasRender
    from lucent_inhibit.data.bundled import sample_crops

    data = sample_crops(48, size=224, seed=0)
    feature = Feature("blocks_4_0_bn3_drop", unit=70)
    render = AtlasRender(size=128).settings()
    atlas = build_atlas(lite0, data, feature, "blocks_4_0_bn1_act",
                        config=AtlasConfig(mode="position", icon_target="positions", icon_batch_size=64),
                        render=render)
    q = atlas.quality()
    assert len(atlas.icons) >= 10
    assert q["median_cosine"] >= 0.5, q
    assert q["median_contrast"] >= 0.15, q
    assert q["occupancy"] >= 0.5 and q["median_points"] >= 2 * atlas.grid.min_points
