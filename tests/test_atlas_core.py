"""Atlas on the core: hooks and requires_grad restored by every stage (also when it raises half-way),
one tensor per layer name (reused modules refused, icons measured on the tensor the vectors read),
AtlasConfig validation, results' summary/plot, the page template as package data."""
import dataclasses
import json
import os
import warnings
from importlib import resources

import lucent.optvis.objectives as lucent_objectives
import lucent.optvis.render as lucent_render
import numpy as np
import pytest
import torch

from lucent_inhibit.atlas import (Atlas, AtlasConfig, AtlasGrid, AtlasIcons, AtlasLayout, AtlasPoints, Selection,
                                  build_atlas, collect_vectors, grid_cells, icon_targets, render_icons, select_images)
from lucent_inhibit.core.features import Feature
from lucent_inhibit.core.hooks import capture
from lucent_inhibit.core.layers import hook_count
from lucent_inhibit.core.preparation import preprocess_fn
from lucent_inhibit.core.results import load_result
from lucent_inhibit.core.settings import PassSettings, RenderSettings

FEAT = Feature("conv3", unit=1)
FAST = RenderSettings(steps=2, transforms=())
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _images(n, size=16, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


class _Named(list):
    """A list of images with an identity string (as sample_crops and ImageFolder have)."""

    identity = "named-images"


def _state(model):
    """What every stage must leave as it found it: forward hooks and each parameter's requires_grad."""
    return hook_count(model), [p.requires_grad for p in model.parameters()]


@pytest.fixture
def net():
    """The tiny conv net with one frozen weight and one hook of the user's own (both must survive)."""
    from conftest import TinyConvNet

    model = TinyConvNet().eval()
    model.conv1.weight.requires_grad_(False)
    model.conv2.register_forward_hook(lambda m, i, o: None)
    return model


def _raise_on_call(n, real):
    """A stand-in for ``real`` that raises RuntimeError on its ``n``-th call."""
    calls = []

    def fake(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise RuntimeError(f"boom on call {n}")
        return real(*args, **kwargs)

    fake.calls = calls
    return fake


def _grid(points, size=2, seed=0):
    """A grid over a random layout (no UMAP): every occupied cell gets an icon."""
    xy = np.random.default_rng(seed).uniform(size=(len(points), 2)).astype(np.float32)
    return grid_cells(points, AtlasLayout(xy, xy, 5), size=size, min_points=1)


# ------------------------------------------------------------------------------------------------
# hooks and requires_grad
# ------------------------------------------------------------------------------------------------
def test_collect_vectors_restores_hooks_and_grads(net):
    before = _state(net)
    pts = collect_vectors(net, _images(12), FEAT, "relu2", kind="activation", settings=PassSettings(batch_size=4))
    assert len(pts) == 12 and _state(net) == before


def test_collect_vectors_restores_hooks_when_a_batch_raises(net, monkeypatch):
    import lucent_inhibit.atlas.vectors as vectors

    before = _state(net)
    fake = _raise_on_call(2, vectors.attribute)
    monkeypatch.setattr(vectors, "attribute", fake)
    with pytest.raises(RuntimeError, match="boom on call 2"):
        collect_vectors(net, _images(12), FEAT, "relu2", settings=PassSettings(batch_size=4))
    assert len(fake.calls) == 2 and _state(net) == before


def test_collect_vectors_restores_hooks_when_the_forward_raises(net, monkeypatch):
    """The first batch's forward pass raises inside capture, while its hooks are on the model (the model's probe
    passes before it read one image each and are left to run)."""
    real = net.relu2.forward

    def fake(x):
        if x.shape[0] > 1:
            raise RuntimeError("boom on the first batch")
        return real(x)

    monkeypatch.setattr(net.relu2, "forward", fake)
    before = _state(net)
    with pytest.raises((RuntimeError, ValueError), match="boom on the first batch"):  # capture may rephrase it
        collect_vectors(net, _images(12), FEAT, "relu2", kind="activation", settings=PassSettings(batch_size=4))
    assert _state(net) == before


@pytest.fixture
def points(net):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return collect_vectors(net, _images(16), FEAT, "relu2", mode="position", settings=PassSettings(batch_size=8))


def test_render_icons_restores_hooks_and_grads(net, points):
    grid = _grid(points)
    before = _state(net)
    icons = render_icons(net, points, grid, FAST, batch_size=2)
    assert len(icons) == len(grid) >= 3 and icons.images.shape[1:] == (16, 16, 3)
    assert _state(net) == before


def test_render_icons_restores_hooks_when_the_second_render_raises(net, points, monkeypatch):
    grid = _grid(points)
    fake = _raise_on_call(2, lucent_render.render_vis)
    monkeypatch.setattr(lucent_render, "render_vis", fake)
    before = _state(net)
    with pytest.raises(RuntimeError, match="boom on call 2"):
        render_icons(net, points, grid, FAST, batch_size=1)
    assert len(fake.calls) == 2 and _state(net) == before


def test_render_icons_restores_hooks_when_the_objective_raises_inside_render_vis(net, points, monkeypatch):
    """The second chunk's objective raises after Lucent has hooked every module."""
    import lucent_inhibit.atlas.icons as icons_module

    def exploding(T):
        T("relu2")
        raise RuntimeError("objective exploded")

    real = icons_module.spatial_cosdot
    calls = []

    def fake(*args, **kwargs):
        calls.append(1)
        return lucent_objectives.Objective(exploding) if len(calls) == 2 else real(*args, **kwargs)

    monkeypatch.setattr(icons_module, "spatial_cosdot", fake)
    before = _state(net)
    with pytest.raises(RuntimeError, match="objective exploded"):
        render_icons(net, points, _grid(points), FAST, batch_size=1)
    assert len(calls) == 2 and _state(net) == before


def test_build_atlas_restores_hooks_and_grads_also_when_a_render_raises(net, monkeypatch):
    data = _images(24)
    config = AtlasConfig(grid_size=2, min_points=1, icon_batch_size=1)
    before = _state(net)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atlas = build_atlas(net, data, FEAT, "relu2", config=config, render=FAST)
        assert len(atlas.icons) == len(atlas.grid) >= 2 and _state(net) == before
        fake = _raise_on_call(2, lucent_render.render_vis)
        monkeypatch.setattr(lucent_render, "render_vis", fake)
        with pytest.raises(RuntimeError, match="boom on call 2"):
            build_atlas(net, data, FEAT, "relu2", config=config, render=FAST)
    assert len(fake.calls) == 2 and _state(net) == before


# ------------------------------------------------------------------------------------------------
# one tensor per layer name (torchvision ResNet reuses its ReLU module)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def resnet():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


RES_FEAT = Feature("layer1_0_conv2", unit=0)


def test_reused_module_is_refused_by_collect_vectors_and_render_icons(resnet, monkeypatch):
    data = _images(4, size=32)
    before = _state(resnet)
    with pytest.raises(ValueError, match=r"'layer1_0_relu' runs 2 times per forward pass.*e\.g\. .*layer1_0_bn1"):
        collect_vectors(resnet, data, RES_FEAT, "layer1_0_relu")
    pts = collect_vectors(resnet, data, RES_FEAT, "layer1_0_bn1", kind="activation")
    reused = dataclasses.replace(pts, layer="layer1_0_relu")
    fake = _raise_on_call(0, lucent_render.render_vis)  # counts calls, never raises
    monkeypatch.setattr(lucent_render, "render_vis", fake)
    with pytest.raises(ValueError, match=r"'layer1_0_relu' runs 2 times per forward pass.*e\.g\. .*layer1_0_conv2"):
        render_icons(resnet, reused, _grid(reused, size=1), FAST)
    assert fake.calls == []  # refused before any render
    assert _state(resnet) == before


def test_icons_are_measured_on_the_tensor_collect_vectors_reads(resnet):
    data = _images(6, size=32)
    pts = collect_vectors(resnet, data, RES_FEAT, "layer1_0_bn1", kind="activation", mode="position", crop=None)
    grid = _grid(pts)
    icons = render_icons(resnet, pts, grid, FAST, batch_size=3)
    # the icons as a dataset: collect_vectors reads the same layer tensor the icons were measured on
    x = torch.from_numpy(icons.images).permute(0, 3, 1, 2).float() / 255
    again = collect_vectors(resnet, x, RES_FEAT, "layer1_0_bn1", kind="activation", mode="position", crop=None)
    k, (c, h, w) = len(icons), pts.map_shape
    assert len(again) == k * h * w
    maps = torch.from_numpy(again.vectors).view(k, h, w, c).permute(0, 3, 1, 2)
    with torch.no_grad():
        direct = capture(resnet, preprocess_fn(resnet)(x), ["layer1_0_bn1"])["layer1_0_bn1"]
    torch.testing.assert_close(maps, direct, rtol=1e-5, atol=1e-5)
    targets = icon_targets(pts, grid.vectors, "box")
    cos = torch.nn.functional.cosine_similarity(maps.flatten(1), targets.flatten(1), dim=1)
    np.testing.assert_allclose(icons.cosine, cos.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(icons.activation, again.activation, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# AtlasConfig and build_atlas's arguments
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [
    ("power", float("nan")), ("power", float("inf")), ("power", -1.0), ("kind", "gradients"), ("mode", "pixel"),
    ("crop", 1.5), ("method", "saliency"), ("icon_batch_size", 2.5), ("n_neighbors", 1),
    ("min_dist", float("nan")), ("pca", 1), ("grid_size", 0), ("min_points", True), ("top_abs", -1),
    ("score", "max"), ("granularity", "pixel"), ("icon_target", "corner"), ("clip", (99.0, 1.0)),
    ("umap_seed", -1), ("thumbnail_size", "48"),
])
def test_atlas_config_refuses_bad_fields_naming_them(field, value):
    with pytest.raises(ValueError, match=f"AtlasConfig.{field}"):
        AtlasConfig(**{field: value})


def test_atlas_config_positions_target_needs_position_mode():
    with pytest.raises(ValueError, match="icon_target='positions' needs mode='position'"):
        AtlasConfig(icon_target="positions")
    assert AtlasConfig(icon_target="positions", mode="position").replace(power=4).power == 4
    with pytest.raises(ValueError, match="AtlasConfig.power"):
        AtlasConfig().replace(power=float("inf"))


def test_build_atlas_refuses_bad_config_and_render_before_any_work(net):
    with pytest.raises(TypeError, match="config must be an AtlasConfig"):
        build_atlas(net, _images(8), FEAT, "relu2", config=3)
    with pytest.raises(TypeError, match="render must be a RenderSettings"):
        build_atlas(net, _images(8), FEAT, "relu2", render="fast")
    with pytest.raises(ValueError, match="AtlasConfig.power"):
        build_atlas(net, _images(8), FEAT, "relu2", config={"power": float("nan")})
    with pytest.raises(ValueError, match="power must be finite"):
        render_icons(net, *_points_and_grid(net), power=float("inf"))


def _points_and_grid(net):
    pts = collect_vectors(net, _images(8), FEAT, "relu2")
    return pts, _grid(pts)


@pytest.fixture(scope="module")
def scanned_atlas():
    """An atlas built straight from a scan, the selection made by the config's criteria."""
    from conftest import TinyConvNet

    from lucent_inhibit.scanning.run import scan

    model = TinyConvNet().eval()
    data = _Named(_images(24))
    result = scan(model, data, FEAT, ["relu2"], settings=PassSettings(batch_size=8, progress=False))
    config = AtlasConfig(top_abs=10, top_activation=4, bottom_activation=4, top_tension=0, grid_size=2,
                         min_points=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atlas = build_atlas(model, data, FEAT, "relu2", result, config=config, render=FAST)
    return result, atlas


def test_build_atlas_selects_from_a_scan_by_the_config_criteria(scanned_atlas):
    result, atlas = scanned_atlas
    sel = select_images(result, FEAT, "relu2", top_abs=10, top_activation=4, bottom_activation=4)
    assert atlas.points.image_index.tolist() == sel.indices.tolist()
    assert atlas.icons.params["steps"] == 2 and atlas.icons.params["param"] == "lucent"
    assert atlas.icons.params["size"] == [16, 16] and atlas.icons.params["model_size"] == [16, 16]


def test_render_defaults_follow_the_render_contract():
    from lucent_inhibit.atlas import icon_settings

    s = icon_settings(None, (16, 16))
    assert (s.steps, s.lr, s.seed, s.param, s.hw(None), s.model_size) == (48, 0.1, 0, "lucent", (16, 16), (16, 16))
    s = icon_settings(RenderSettings(size=32, param="fourier"), (16, 16))
    assert (s.hw(None), s.param, s.model_size) == ((32, 32), "fourier", (16, 16))


# ------------------------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------------------------
def test_every_stage_result_saves_summarises_and_plots(scanned_atlas, tmp_path):
    from PIL import Image

    result, atlas = scanned_atlas
    sel = select_images(result, FEAT, "relu2", top_abs=5, top_tension=3)
    parts = {Selection: sel, AtlasPoints: atlas.points, AtlasLayout: atlas.layout, AtlasGrid: atlas.grid,
             AtlasIcons: atlas.icons, Atlas: atlas}
    for cls, part in parts.items():
        s = part.summary()
        assert s["type"] == cls.__name__
        png = str(tmp_path / f"{cls.__name__}.png")
        assert part.plot(png).axes  # the Figure, written at the path
        assert np.asarray(Image.open(png).convert("L")).std() > 1
        back = load_result(part.save(str(tmp_path / cls.__name__)))
        assert type(back) is cls
        assert json.dumps(back.summary(), sort_keys=True) == json.dumps(s, sort_keys=True)  # NaN-safe
    assert sel.summary()["picked_by"]["top_abs"] == 5
    s = atlas.summary()
    assert s["icons"] == len(atlas.grid) and s["n_positive"] + s["n_negative"] <= len(atlas.grid)
    back = Atlas.load(str(tmp_path / "Atlas"))
    assert back.points.vector_kind == "attribution" and back.points.box == atlas.points.box


# ------------------------------------------------------------------------------------------------
# packaging
# ------------------------------------------------------------------------------------------------
def test_page_template_is_package_data():
    text = resources.files("lucent_inhibit.atlas").joinpath("template.html").read_text(encoding="utf-8")
    assert "%(data)s" in text and "Content-Security-Policy" in text
    from setuptools.config.setupcfg import read_configuration

    options = read_configuration(os.path.join(ROOT, "setup.cfg"))["options"]
    assert options["include_package_data"] is True
    assert "atlas/*.html" in options["package_data"]["lucent_inhibit"]
    with open(os.path.join(ROOT, "MANIFEST.in")) as f:
        assert "recursive-include lucent_inhibit *.html" in f.read().splitlines()
