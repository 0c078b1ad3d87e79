"""Attribution atlas and activation atlas (issue 5): stages, results, figure, interactive page, CLI."""
import json
import os
import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from lucent_inhibit.atlas import (Atlas, AtlasConfig, AtlasGrid, AtlasIcons, AtlasLayout, AtlasPoints, Selection,
                                  auto_grid_size, build_atlas, collect_vectors, grid_cells, icon_targets,
                                  normalize_layout, plot_atlas, project_layout, render_icons, select_images,
                                  write_atlas_html)
from lucent_inhibit.attribution.attribute import attribute, measure
from lucent_inhibit.core.features import Feature
from lucent_inhibit.core.hooks import capture
from lucent_inhibit.core.settings import PassSettings, RenderSettings


class _Images(list):
    """A list of images with labels (like ImageFolder's paths) and an identity string."""

    def __init__(self, images, labels=None, identity="tiny-images"):
        super().__init__(images)
        self.labels = labels or [f"img{i}.png" for i in range(len(images))]
        self.identity = identity

    def describe(self, i):
        return self.labels[i]


@pytest.fixture
def tiny_data():
    g = torch.Generator().manual_seed(3)
    return _Images([torch.rand(3, 16, 16, generator=g) for _ in range(24)])


FEAT = Feature("conv3", unit=1)


@pytest.fixture(scope="module")
def tiny_atlas():
    """A whole atlas on the tiny conv net (built once: UMAP and rendering are the slow parts)."""
    from conftest import TinyConvNet

    net = TinyConvNet().eval()
    g = torch.Generator().manual_seed(3)
    labels = [f"img{i}.png" for i in range(30)]
    labels[0] = '</script><script>window.__pwned = 1;</script><img src=x onerror="window.__pwned=2">'
    labels[1] = "a&b <b>bold</b> \u2028 'quote\""
    data = _Images([torch.rand(3, 16, 16, generator=g) for _ in range(30)], labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # no augmentation: Lucent's standard transforms (12 px padding, 8 px jitter) swamp 16 px images
        atlas = build_atlas(net, data, FEAT, "relu2",
                            config=AtlasConfig(mode="position", grid_size=4, min_points=2,
                                               icon_batch_size=8),
                            render=RenderSettings(steps=24, transforms=()))
    return net, data, atlas


# ------------------------------------------------------------------------------------------------
# stage 2: vectors
# ------------------------------------------------------------------------------------------------
def test_collect_sum_mode_sums_attribution_over_box(tiny_net, tiny_data):
    pts = collect_vectors(tiny_net, tiny_data, FEAT, "relu2", selection=[2, 5, 7, 11], mode="sum")
    x = torch.stack([tiny_data[i] for i in (2, 5, 7, 11)])
    att = attribute(tiny_net, x, FEAT, "relu2")
    S = att.scores["relu2"]
    y0, y1, x0, x1 = pts.box
    # the box is where the mean |S| summed over channels is above 1% of its maximum
    mag = S.abs().sum(1).mean(0)
    inside = mag[y0:y1, x0:x1]
    assert float(mag.max()) == pytest.approx(float(inside.max()))
    outside = mag.clone()
    outside[y0:y1, x0:x1] = 0
    assert float(outside.max()) <= 0.01 * float(mag.max()) + 1e-6
    np.testing.assert_allclose(pts.vectors, S[:, :, y0:y1, x0:x1].sum((2, 3)).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pts.net, pts.vectors.sum(1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pts.activation, att.activation.numpy(), rtol=1e-5)
    np.testing.assert_allclose(pts.P - pts.N, S.flatten(1).sum(1).numpy(), rtol=1e-4, atol=1e-4)
    assert pts.image_index.tolist() == [2, 5, 7, 11]
    assert pts.labels == ["img2.png", "img5.png", "img7.png", "img11.png"]
    assert pts.thumbnails.shape == (4, 48, 48, 3) and pts.thumbnails.dtype == np.uint8
    assert pts.image_size == (16, 16) and pts.map_shape == (8, 16, 16)


def test_collect_position_mode_one_point_per_box_position(tiny_net, tiny_data):
    with pytest.warns(UserWarning, match="dropped .* atlas points whose attribution vector is all zero"):
        pts = collect_vectors(tiny_net, tiny_data, FEAT, "relu2", selection=[0, 1, 2], mode="position", crop=None)
    assert pts.box == (0, 16, 0, 16)
    S = attribute(tiny_net, torch.stack([tiny_data[i] for i in range(3)]), FEAT, "relu2").scores["relu2"]
    nonzero = S.permute(0, 2, 3, 1).reshape(-1, 8).norm(dim=1) > 0
    assert len(pts) == int(nonzero.sum())  # all-zero vectors (dead ReLU positions) are dropped
    k = 17
    i, (y, x) = pts.point_image[k], pts.point_position[k]
    np.testing.assert_allclose(pts.vectors[k], S[i, :, y, x].numpy(), rtol=1e-5, atol=1e-6)
    assert pts.magnitude[k] == pytest.approx(float(S[i, :, y, x].norm()), rel=1e-5)


def test_collect_activation_kind_uses_activations(tiny_net, tiny_data):
    pts = collect_vectors(tiny_net, tiny_data, FEAT, "relu2", selection=[3, 4], kind="activation", mode="sum")
    with torch.no_grad():
        h = capture(tiny_net, (torch.stack([tiny_data[3], tiny_data[4]]) - torch.tensor([0.485, 0.456, 0.406])[:, None, None])
                    / torch.tensor([0.229, 0.224, 0.225])[:, None, None], ["relu2"])["relu2"]
    y0, y1, x0, x1 = pts.box
    np.testing.assert_allclose(pts.vectors, h[:, :, y0:y1, x0:x1].mean((2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    # net is still the attribution's, so cells can be coloured excitatory / inhibitory
    S = attribute(tiny_net, torch.stack([tiny_data[3], tiny_data[4]]), FEAT, "relu2").scores["relu2"]
    np.testing.assert_allclose(pts.net, S[:, :, y0:y1, x0:x1].sum((1, 2, 3)).numpy(), rtol=1e-4, atol=1e-4)


class _LinearNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc1 = nn.Linear(4, 6)
        self.relu2 = nn.ReLU()
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc2(self.relu2(self.fc1(self.flat(self.pool(self.relu1(self.conv1(x)))))))


def test_position_mode_needs_spatial_layer(tiny_data):
    net = _LinearNet().eval()
    with pytest.raises(ValueError, match=r"mode='position' needs a layer with spatial dimensions.*'relu2'"):
        collect_vectors(net, tiny_data, Feature("fc2", unit=0), "relu2", mode="position")
    pts = collect_vectors(net, tiny_data, Feature("fc2", unit=0), "relu2", mode="sum")  # sum mode works
    assert pts.box is None and pts.map_shape == (6,)
    assert icon_targets(pts, pts.vectors[:3]).shape == (3, 6)


def test_collect_bad_inputs(tiny_net, tiny_data):
    with pytest.raises(ValueError, match="kind must be one of"):
        collect_vectors(tiny_net, tiny_data, FEAT, "relu2", kind="gradients")
    with pytest.raises(ValueError, match="out of range"):
        collect_vectors(tiny_net, tiny_data, FEAT, "relu2", selection=[0, 99])
    with pytest.raises(ValueError, match="relu9"):
        collect_vectors(tiny_net, tiny_data, FEAT, "relu9")


# ------------------------------------------------------------------------------------------------
# stage 1: selection from a scan
# ------------------------------------------------------------------------------------------------
def test_select_images_from_scan(tiny_net, tiny_data, tmp_path):
    from lucent_inhibit.scanning.run import scan

    result = scan(tiny_net, tiny_data, FEAT, ["relu2", "relu1"], settings=PassSettings(batch_size=8, progress=False))
    sel = select_images(result, FEAT, "relu2", top_abs=4, top_activation=3, bottom_activation=3, top_tension=2)
    expect = set(result.top_abs(4, "relu2")) | set(result.meis(3)) | set(result.miis(3)) | set(result.mtis(2, layer="relu2"))
    assert set(sel.indices.tolist()) == expect
    assert sel.indices.tolist() == sorted(expect)
    top = int(np.argmax(result.activation))
    assert "top_activation" in sel.reasons[sel.indices.tolist().index(int(result.indices[top]))]
    bottom = int(result.indices[int(np.argmin(result.activation))])
    assert "bottom_activation" in sel.reasons[sel.indices.tolist().index(bottom)]
    path = str(tmp_path / "sel.npz")
    sel.save(path)
    back = Selection.load(path)
    assert back.indices.tolist() == sel.indices.tolist() and back.reasons == sel.reasons and back.feature == FEAT
    # the selection feeds stage 2 and is checked there
    pts = collect_vectors(tiny_net, tiny_data, FEAT, "relu2", selection=sel)
    assert pts.image_index.tolist() == sel.indices.tolist()
    scan_path = str(tmp_path / "scan.npz")
    result.save(scan_path)
    assert select_images(scan_path, FEAT, "relu2", top_abs=5).indices.size == 5


def test_select_rejects_scan_of_another_feature_or_layer(tiny_net, tiny_data):
    from lucent_inhibit.scanning.run import scan

    result = scan(tiny_net, tiny_data, FEAT, ["relu2"], settings=PassSettings(batch_size=8, progress=False))
    with pytest.raises(ValueError, match=r"scan is of feature conv3 unit 1.*explains conv3 unit 2"):
        select_images(result, Feature("conv3", unit=2), "relu2", top_abs=3)
    with pytest.raises(ValueError, match=r"layers \['relu2'\], not at the atlas layer 'relu1'"):
        select_images(result, FEAT, "relu1", top_abs=3)
    sel = select_images(result, FEAT, "relu2", top_abs=3)
    with pytest.raises(ValueError, match="ranked by attribution at layer 'relu2'.*'relu1'"):
        collect_vectors(tiny_net, tiny_data, FEAT, "relu1", selection=sel)
    with pytest.raises(ValueError, match="selection is of feature"):
        collect_vectors(tiny_net, tiny_data, Feature("conv3", unit=0), "relu2", selection=sel)
    other = _Images(list(tiny_data), identity="other-images")
    with pytest.raises(ValueError, match="comes from dataset tiny-images, not other-images"):
        collect_vectors(tiny_net, other, FEAT, "relu2", selection=sel)


# ------------------------------------------------------------------------------------------------
# stage 3: layout
# ------------------------------------------------------------------------------------------------
def test_normalize_layout_clips_percentiles():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(500, 2))
    raw[0] = [100, -100]  # an outlier lands on the border instead of squashing the rest
    xy = normalize_layout(raw, (1, 99))
    assert xy.min() == 0 and xy.max() == 1
    assert tuple(xy[0]) == (1.0, 0.0)
    inner = xy[1:]
    assert inner[:, 0].std() > 0.15  # not squashed by the outlier
    with pytest.raises(ValueError, match="percentiles"):
        normalize_layout(raw, (99, 1))


def test_project_layout_adapts_neighbours_and_rejects_too_few_points():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2, 16)) * 5
    X = np.concatenate([centres[0] + rng.normal(size=(30, 16)), centres[1] + rng.normal(size=(30, 16))]).astype(np.float32)
    lay = project_layout(X, n_neighbors=10)
    assert lay.xy.shape == (60, 2) and lay.xy.min() >= 0 and lay.xy.max() <= 1 and lay.n_neighbors == 10
    # the two clusters separate in the layout
    gap = np.linalg.norm(lay.xy[:30].mean(0) - lay.xy[30:].mean(0))
    spread = max(lay.xy[:30].std(0).max(), lay.xy[30:].std(0).max())
    assert gap > 2 * spread
    with pytest.warns(UserWarning, match="only 8 atlas points.*using n_neighbors=7"):
        small = project_layout(X[:8], n_neighbors=10)
    assert small.n_neighbors == 7 and small.xy.shape == (8, 2)
    with pytest.raises(ValueError, match="only 4 atlas points; UMAP needs at least 5"):
        project_layout(X[:4])
    with pytest.raises(ValueError, match="n_neighbors must be"):
        project_layout(X, n_neighbors=1)


# ------------------------------------------------------------------------------------------------
# stage 4: grid
# ------------------------------------------------------------------------------------------------
def _fake_points(vectors, net, activation):
    m = len(vectors)
    return AtlasPoints(
        vectors=np.asarray(vectors, np.float32), point_image=np.arange(m), point_position=-np.ones((m, 2), np.int64),
        net=np.asarray(net, np.float32), magnitude=np.ones(m, np.float32), image_index=np.arange(m),
        labels=[str(i) for i in range(m)], activation=np.asarray(activation, np.float32), P=np.ones(m, np.float32),
        N=np.ones(m, np.float32), thumbnails=np.zeros((m, 4, 4, 3), np.uint8), feature=FEAT, layer="relu2",
        vector_kind="attribution", mode="sum", box=(0, 1, 0, 1), map_shape=(3, 1, 1), image_size=(16, 16),
    )


def test_grid_averages_cells_with_enough_points(tmp_path):
    xy = np.array([[0.1, 0.1], [0.2, 0.2], [0.15, 0.05], [0.9, 0.9], [0.8, 0.95], [0.9, 0.1]], np.float32)
    vec = np.arange(18, dtype=np.float32).reshape(6, 3)
    pts = _fake_points(vec, [1, 2, 3, -4, -6, 5], [0.5, 1.5, 2.5, -1, -3, 9])
    lay = AtlasLayout(xy, xy, 5)
    g = grid_cells(pts, lay, size=2, min_points=2)
    assert len(g) == 2  # the lone point in the bottom-right cell gets no icon
    k0 = [tuple(c) for c in g.cells].index((0, 0))
    k1 = [tuple(c) for c in g.cells].index((1, 1))
    assert sorted(g.points_of(k0).tolist()) == [0, 1, 2] and sorted(g.points_of(k1).tolist()) == [3, 4]
    np.testing.assert_allclose(g.vectors[k0], vec[:3].mean(0))
    np.testing.assert_allclose(g.vectors[k1], vec[3:5].mean(0))
    assert g.net[k0] == pytest.approx(2.0) and g.net[k1] == pytest.approx(-5.0)
    assert g.activation[k1] == pytest.approx(-2.0)
    path = str(tmp_path / "grid.npz")
    g.save(path)
    back = AtlasGrid.load(path)
    assert back.size == 2 and back.points_of(k1).tolist() == g.points_of(k1).tolist()
    with pytest.raises(ValueError, match=r"no cell of the 2x2 grid holds at least min_points=4 .*densest holds 3"):
        grid_cells(pts, lay, size=2, min_points=4)
    with pytest.raises(ValueError, match="layout has 5 points"):
        grid_cells(pts, AtlasLayout(xy[:5], xy[:5], 5), size=2)
    assert auto_grid_size(100000) == 30 and auto_grid_size(30, 3) == 2 and 2 < auto_grid_size(600, 3) < 30


# ------------------------------------------------------------------------------------------------
# stage 5: icons
# ------------------------------------------------------------------------------------------------
def test_icons_measured_and_match_their_targets(tiny_atlas):
    net, data, atlas = tiny_atlas
    g, ic, p = atlas.grid, atlas.icons, atlas.points
    assert len(g) >= 3 and ic.images.shape == (len(g), 16, 16, 3) and ic.images.dtype == np.uint8
    # the stored activation is the feature on exactly the stored icons
    x = torch.from_numpy(ic.images).permute(0, 3, 1, 2).float() / 255
    np.testing.assert_allclose(ic.activation, measure(net, x, FEAT).numpy(), rtol=1e-4, atol=1e-4)
    # each icon is closer to its own target than to the other cells' targets
    t = icon_targets(p, g.vectors)
    y0, y1, x0, x1 = p.box
    from lucent_inhibit.core.preparation import preprocess_fn

    with torch.no_grad():
        h = capture(net, preprocess_fn(net)(x), ["relu2"])["relu2"][:, :, y0:y1, x0:x1].flatten(1)
    tt = t[:, :, y0:y1, x0:x1].flatten(1)
    cos = torch.nn.functional.normalize(h, dim=1) @ torch.nn.functional.normalize(tt, dim=1).T
    np.testing.assert_allclose(np.diag(cos.numpy()), ic.cosine, rtol=1e-4, atol=1e-4)
    # ... and the render moved towards the targets: random images are much further from them
    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hn = capture(net, preprocess_fn(net)(noise), ["relu2"])["relu2"][:, :, y0:y1, x0:x1].flatten(1)
    base = torch.nn.functional.cosine_similarity(hn, tt, dim=1)
    assert float(cos.diag().mean()) > float(base.mean()) + 0.1
    # rendering left no hooks behind and restored the weights' requires_grad
    assert all(len(m._forward_hooks) == 0 for m in net.modules())
    assert all(q.requires_grad for q in net.parameters())


def test_batched_render_matches_separate_renders_in_quality(tiny_atlas):
    """One render call for all icons reaches its targets as well as one call per icon (same steps/size)."""
    net, data, atlas = tiny_atlas
    one = render_icons(net, atlas.points, atlas.grid, RenderSettings(steps=24, transforms=()), batch_size=1)
    assert one.images.shape == atlas.icons.images.shape
    assert abs(float(one.cosine.mean()) - float(atlas.icons.cosine.mean())) < 0.1


def test_zoom_crops_render_centre_targets_from_many_crops_per_step(tiny_atlas):
    """MaCo's many crops per step, kept aligned with a centre target: the icons still reach their targets (as
    far as the plain render), the setting is recorded, and targets a zoom would move are refused before any render."""
    net, data, atlas = tiny_atlas
    settings = RenderSettings(steps=24, transforms=(), seed=0)
    plain = render_icons(net, atlas.points, atlas.grid, settings, icon_target="center")
    zoomed = render_icons(net, atlas.points, atlas.grid, settings, icon_target="center", zoom_crops=3)
    assert zoomed.params["zoom_crops"] == 3 and plain.params["zoom_crops"] == 0
    assert not np.array_equal(zoomed.images, plain.images)
    assert float(np.median(zoomed.cosine)) > float(np.median(plain.cosine)) - 0.15
    for target in ("box", "positions"):
        with pytest.raises(ValueError, match="zoom_crops=2 needs icon_target='center'"):
            render_icons(net, atlas.points, atlas.grid, settings, icon_target=target, zoom_crops=2)
    with pytest.raises(ValueError, match="AtlasConfig.zoom_crops=2 needs icon_target='center'"):
        AtlasConfig(zoom_crops=2)
    assert AtlasConfig(zoom_crops=2, icon_target="center").zoom_crops == 2


def test_icon_targets_abs_for_attribution_and_centre_mode(tiny_atlas):
    net, data, atlas = tiny_atlas
    p = atlas.points
    v = np.array([[1.0, -2.0, 3.0, -4.0, 0, 0, 0, 0]], np.float32)
    t = icon_targets(p, v, "box")
    y0, y1, x0, x1 = p.box
    assert torch.equal(t[0, :, y0, x0], torch.tensor([1.0, 2, 3, 4, 0, 0, 0, 0]))
    assert float(t.abs().sum()) == pytest.approx(10.0 * (y1 - y0) * (x1 - x0))
    c = icon_targets(p, v, "center")
    assert int((c[0].abs().sum(0) > 0).sum()) == 1
    with pytest.raises(ValueError, match="icon_target"):
        icon_targets(p, v, "corner")


def test_icon_targets_positions_keep_each_point_at_its_place(tiny_atlas):
    net, data, atlas = tiny_atlas
    p, g = atlas.points, atlas.grid
    t = icon_targets(p, g.vectors, "positions", grid=g)
    assert t.shape == (len(g),) + tuple(p.map_shape)
    for k in range(len(g)):
        ids = g.points_of(k)
        expected = torch.zeros(p.map_shape)
        for i in ids:
            y, x = p.point_position[i]
            expected[:, y, x] += torch.from_numpy(np.abs(p.vectors[i]))
        assert torch.allclose(t[k], expected / len(ids), atol=1e-6)
        # summed over space it is the cell's mean |vector|, as the box target's per-position vector
        assert torch.allclose(t[k].sum((1, 2)), torch.from_numpy(np.abs(p.vectors[ids]).mean(0)), atol=1e-5)
    with pytest.raises(ValueError, match="positions"):
        icon_targets(p, g.vectors, "positions")


# ------------------------------------------------------------------------------------------------
# results, figure, page
# ------------------------------------------------------------------------------------------------
def test_atlas_save_load_roundtrip(tiny_atlas, tmp_path):
    _, _, atlas = tiny_atlas
    path = str(tmp_path / "atlas")  # no extension: the result path rule appends .npz, load applies it too
    written = atlas.save(path)
    assert written == path + ".npz" and os.path.isfile(written)
    back = Atlas.load(path)
    np.testing.assert_array_equal(back.icons.images, atlas.icons.images)
    np.testing.assert_array_equal(back.layout.xy, atlas.layout.xy)
    np.testing.assert_array_equal(back.grid.members, atlas.grid.members)
    assert back.points.labels == atlas.points.labels and back.points.box == atlas.points.box
    assert back.points.feature == FEAT and back.activation_by_sign() == atlas.activation_by_sign()
    np.testing.assert_array_equal(back.member_cosine, atlas.member_cosine)
    for part, cls in ((atlas.points, AtlasPoints), (atlas.layout, AtlasLayout), (atlas.icons, AtlasIcons)):
        p = str(tmp_path / f"{cls.__name__}.npz")
        part.save(p)
        assert type(cls.load(p)) is cls
    with pytest.raises(ValueError, match="holds a Atlas .*, expected a AtlasGrid"):
        AtlasGrid.load(path)


def test_member_cosine_is_each_cells_own_images_measured_as_the_icons(tiny_atlas):
    """The icons' control: per cell, the median over its member images of their activation's cosine to the cell's
    target, inside the target's crop box; checked by hand on the raw layer for every cell."""
    from lucent_inhibit.atlas.targets import icon_targets
    from lucent_inhibit.core.preparation import preprocess_fn

    net, data, atlas = tiny_atlas
    p, g = atlas.points, atlas.grid
    targets = icon_targets(p, g.vectors, "box", g)
    assert atlas.member_cosine.shape == (len(g),) and np.isfinite(atlas.member_cosine).all()
    layer = dict(net.named_modules())["relu2"]
    for k in range(len(g)):
        rows = np.unique(p.point_image[g.points_of(k)])
        x = preprocess_fn(net)(torch.stack([data[int(i)] for i in p.image_index[rows]]))
        held = {}
        handle = layer.register_forward_hook(lambda m, i, o: held.__setitem__("h", o))
        with torch.no_grad():
            net(x)
        handle.remove()
        t = targets[k]
        ys, xs = torch.nonzero(t.abs().sum(0) > 1e-6 * t.abs().max(), as_tuple=True)
        box = (slice(None), slice(int(ys.min()), int(ys.max()) + 1), slice(int(xs.min()), int(xs.max()) + 1))
        cos = [torch.nn.functional.cosine_similarity(h[box].flatten(), t[box].flatten(), dim=0) for h in held["h"]]
        assert atlas.member_cosine[k] == pytest.approx(float(np.median(torch.stack(cos).numpy())), rel=1e-4, abs=1e-6)
    assert atlas.quality()["median_member_cosine"] == pytest.approx(float(np.median(atlas.member_cosine)))


def test_member_cosine_of_a_centre_target_reads_each_point_at_its_own_position(tiny_atlas):
    """A position-mode cell's vector rendered at the box centre: each member point is measured where its vector
    was read (its own (y, x)), not at the centre; checked by hand on the raw layer for every cell."""
    from lucent_inhibit.atlas.control import member_cosines
    from lucent_inhibit.core.preparation import preprocess_fn

    net, data, atlas = tiny_atlas
    p, g = atlas.points, atlas.grid
    got = member_cosines(net, data, p, g, "center", batch_size=7)
    layer = dict(net.named_modules())["relu2"]
    held = {}
    handle = layer.register_forward_hook(lambda m, i, o: held.__setitem__("h", o))
    with torch.no_grad():
        net(preprocess_fn(net)(torch.stack([data[int(i)] for i in p.image_index])))
    handle.remove()
    for k in range(len(g)):
        v = torch.from_numpy(np.abs(g.vectors[k]))
        cos = [torch.nn.functional.cosine_similarity(held["h"][p.point_image[i], :, p.point_position[i][0],
                                                                p.point_position[i][1]], v, dim=0)
               for i in g.points_of(k)]
        assert got[k] == pytest.approx(float(np.median(torch.stack(cos).numpy())), rel=1e-4, abs=1e-6)
    # the points come from several positions, so reading the centre instead would fail the check above
    assert len({tuple(int(c) for c in yx) for yx in p.point_position}) > 1


def test_plot_atlas_writes_png(tiny_atlas, tmp_path):
    from PIL import Image

    _, _, atlas = tiny_atlas
    path = str(tmp_path / "atlas.png")
    fig = plot_atlas(atlas, path)
    assert len(fig.axes) == 4  # icon panel, point map and their colour bars
    im = np.asarray(Image.open(path).convert("RGB"))
    assert im.shape[0] > 400 and im.std() > 10


def _embedded_data(text):
    m = re.search(r'<script type="application/json" id="atlas-data">(.*?)</script>', text, re.S)
    return json.loads(m.group(1))


def test_html_is_self_contained_and_escapes_labels(tiny_atlas, tmp_path):
    _, data, atlas = tiny_atlas
    path = write_atlas_html(atlas, str(tmp_path / "atlas.html"), title="<i>title</i> & co")
    text = open(path, encoding="utf-8").read()
    assert "<i>title</i>" not in text and "&lt;i&gt;title&lt;/i&gt; &amp; co" in text
    assert "window.__pwned" not in text.split('id="atlas-data">')[0]
    assert text.count("</script>") == 2  # the data block and the code block: no label closes a script
    assert "onerror" not in text.replace("\\u003e", ">").split("<script>")[1]  # only inside the escaped JSON
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", text)  # nothing loads from the network
    d = _embedded_data(text)
    assert len(d["cells"]) == len(atlas.grid)
    labels = {im["label"] for im in d["images"]}
    assert labels <= set(data.labels)
    # every cell lists the images of its points, with their activation, P and N
    k = 0
    rows, counts = atlas.cell_images(k)
    listed = {d["images"][j]["label"]: n for j, n in d["cells"][k]["images"]}
    assert listed == {atlas.points.labels[r]: int(c) for r, c in zip(rows, counts)}
    im = d["images"][d["cells"][k]["images"][0][0]]
    r = atlas.points.labels.index(im["label"])
    assert im["activation"] == pytest.approx(float(atlas.points.activation[r]), rel=1e-5)
    assert im["P"] == pytest.approx(float(atlas.points.P[r]), rel=1e-5)
    assert im["thumb"].startswith("data:image/png;base64,")


@pytest.mark.browser
def test_html_in_headless_chromium(tiny_atlas, tmp_path):
    import io

    import playwright.sync_api as sync_api  # a test dependency: a missing install fails, never skips
    from PIL import Image

    _, _, atlas = tiny_atlas
    path = write_atlas_html(atlas, str(tmp_path / "atlas.html"))
    errors, requests = [], []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"],
        )
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto("file://" + path)
            page.wait_for_selector("body[data-ready='1']")
            assert page.locator(".cell").count() == len(atlas.grid)
            shot = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("L"))
            assert shot.std() > 10  # not blank
            before = np.asarray(Image.open(io.BytesIO(page.locator("#viewport").screenshot())).convert("L"))
            # a click on a cell reveals its dataset images
            k = int(np.argmax(atlas.grid.count))
            page.click(f"#cell-{k}")
            figs = page.locator("#cell-images figure")
            assert figs.count() == len(atlas.cell_images(k)[0])
            text = page.inner_text("#details")
            assert "P=" in text and "N=" in text and "f=" in text
            # the icon is shown large (its receptive-field crop) beside the whole icon
            assert page.locator("#details img.large-icon").get_attribute("width") == "256"
            assert page.locator("#details img.full-icon").count() == 1
            # the frames switch between the icon's activation and the cell's net attribution
            first = page.evaluate("document.getElementById('cell-%d').style.borderColor" % k)
            page.check("#frame-net")
            colours = page.evaluate("Array.from(document.querySelectorAll('.cell')).map(e => e.style.borderColor)")
            d = _embedded_data(open(path, encoding="utf-8").read())
            want = [c["colors"]["net"].replace(",", ", ") for c in d["cells"]]
            assert colours == want and first == d["cells"][k]["colors"]["activation"].replace(",", ", ")
            # labels are shown as text, never run
            assert page.evaluate("window.__pwned") is None
            # zoom changes the view
            page.click("#zoom-in")
            page.click("#zoom-in")
            after = np.asarray(Image.open(io.BytesIO(page.locator("#viewport").screenshot())).convert("L"))
            assert np.abs(after.astype(float) - before.astype(float)).mean() > 1
        finally:
            browser.close()
    assert errors == []
    assert all(u.startswith(("file:", "data:")) for u in requests), requests


# ------------------------------------------------------------------------------------------------
# real model
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_attribution_atlas_on_real_model_inhibitory_icons_activate_less(lite0):
    """>= 50 icons over the bundled crops; icons of net-negative cells drive the feature lower.

    The feature is the spatial mean of a block-4 pre-activation channel, attributed at the ReLU6 output
    feeding it (completeness 1, SPEC section 3), one point per position: thousands of points.
    """
    from lucent_inhibit.data.bundled import sample_crops

    data = sample_crops(48, size=96, seed=0)
    feature = Feature("blocks_4_0_bn3_drop", unit=5, position="mean")
    atlas = build_atlas(lite0, data, feature, "blocks_4_0_bn2_act",
                        # a fine grid given explicitly: the automatic side is a dense mosaic (few, full cells)
                        config=AtlasConfig(mode="position", pca=32, min_points=2, grid_size=20,
                                           icon_batch_size=64),
                        render=RenderSettings(steps=16))
    assert len(atlas.points) > 1000
    assert len(atlas.grid) >= 50
    s = atlas.activation_by_sign()
    assert s["n_positive"] >= 5 and s["n_negative"] >= 5
    assert s["negative_mean"] < s["positive_mean"]
    # the icons did render their targets
    assert float(atlas.icons.cosine.mean()) > 0.3


@pytest.mark.slow
def test_cli_atlas_on_real_model(tmp_path):
    from lucent_inhibit.app.cli import main

    out = str(tmp_path / "out")
    common = ["--n-images", "24", "--size", "64", "--unit", "5", "--top-abs", "24", "--top-activation", "0",
              "--bottom-activation", "0", "--top-tension", "0", "--mode", "position", "--min-points", "2",
              "--steps", "4", "--batch-size", "32"]
    assert main(["atlas", "--out", out] + common) == 0
    for name in ("atlas.npz", "atlas.png", "atlas.html", "scan.npz"):
        assert os.path.getsize(os.path.join(out, name)) > 1000
    atlas = Atlas.load(os.path.join(out, "atlas.npz"))
    assert atlas.points.layer == "blocks_4_0_bn2_act" and len(atlas.points.image_index) == 24
    # a scan file of another feature, or without the atlas layer, is refused with a clear message
    from lucent_inhibit.scanning.result import ScanResult

    scan = ScanResult.load(os.path.join(out, "scan.npz"))
    scan.feature = Feature("blocks_4_0_bn3_drop", unit=6)
    other = str(tmp_path / "other.npz")
    scan.save(other)
    assert main(["atlas", "--out", out, "--scan", other] + common) == 2
    assert main(["atlas", "--out", out, "--scan", os.path.join(out, "scan.npz"), "--attr-layer",
                 "blocks_4_0_bn1_act"] + common) == 2
