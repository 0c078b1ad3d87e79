"""Every result type, as a researcher's notebook meets it: a file of it loads in a fresh interpreter with only
``import lucent_inhibit``, its repr is a few lines (type, feature, layers, dataset, shapes, key numbers; never
array values) and its notebook display is a table with the figure embedded."""
import os
import re
import subprocess
import sys
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from conftest import TinyConvNet

import lucent_inhibit as li
from lucent_inhibit.core import display
from lucent_inhibit.core.results import RESULT_MODULES, Result

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEAT = li.Feature("conv3", unit=1)
PASS = li.PassSettings(batch_size=8, progress=False)
RENDER = li.RenderSettings(steps=2, size=16, transforms=[])
NAMES = sorted(RESULT_MODULES)
#: What the fresh interpreter runs: load the file, print the type and repr, then (for a type with a figure) draw
#: it to the PNG ``argv[2]`` and print the figure's type and its number of axes, then the summary's size.
FRESH = ("import sys; import lucent_inhibit as li; r = li.load_result(sys.argv[1]); print(type(r).__name__); "
         "print(repr(r)); has = type(r).plot is not li.Result.plot; "
         "fig = r.plot(sys.argv[2]) if has else None; "
         "print('FIGURE', type(fig).__name__, len(fig.axes) if has else 0); "
         "s = r.summary(); print('SUMMARY', type(s).__name__, len(s))")


def _attribution_family(net, images):
    scan = li.scan(net, images, FEAT, ["relu2"], settings=PASS)
    return {
        "Attribution": li.attribute(net, images[:4], FEAT, ["relu1", "relu2"]),
        "CompletenessResult": li.completeness(net, images, [FEAT], ["relu1", "relu2"], settings=PASS),
        "ScanResult": scan, "Census": li.layer_census(net, images, "conv3", ["relu2"], settings=PASS),
        "Disinhibition": li.disinhibit(net, images, FEAT, "relu2", scan=scan, k=4, n_random=6, settings=PASS),
        "InhibitorDictionary": li.inhibitor_dictionary(net, images, FEAT, "relu2", scan=scan, k=4, n_channels=3,
                                                       n_top_images=2, render=RENDER, settings=PASS),
        "Selection": li.select_images(scan, FEAT, "relu2", top_abs=4, top_tension=2),
        "RandomizationCascade": li.randomization_cascade(net, images, FEAT, "relu2", blocks=["conv1", "conv3"], k=3,
                                                         settings=PASS),
        "Microscope": li.build_microscope(net, images, ["conv3"], attr_layer="relu2", n_top=3, n_channels=2,
                                          settings=PASS),
    }


def _renders(net, images):
    from lucent_inhibit.atlas import Atlas, AtlasLayout
    from lucent_inhibit.synthesis import objectives

    points = li.collect_vectors(net, images, FEAT, "relu2", selection=list(range(16)), mode="position",
                                settings=PASS)
    xy = np.random.default_rng(0).uniform(size=(len(points), 2)).astype(np.float32)  # a layout without UMAP
    layout = AtlasLayout(xy, xy, 5)
    grid = li.grid_cells(points, layout, size=2, min_points=1)
    icons = li.render_icons(net, points, grid, RENDER, batch_size=8)
    return {
        "Accentuation": li.accentuate(net, images[0], objectives.feature(FEAT), reg_layer="conv2", render=RENDER),
        "InversionResult": li.inversions(net, images[0], FEAT, "relu1", render=RENDER),
        "TenseResult": li.tense_image(net, FEAT, "conv1", render=RENDER, record_every=1),
        "AtlasPoints": points, "AtlasLayout": layout, "AtlasGrid": grid, "AtlasIcons": icons,
        "Atlas": Atlas(points, layout, grid, icons),
    }


def _combinations_and_toys(images):
    from test_combinations import POINTY, ROUNDED, PointyRounded

    from lucent_inhibit.core.checkpoints import ChunkArrays

    net, render = PointyRounded(gated=True).eval(), li.RenderSettings(steps=5, size=16, model_size=16, transforms=[])
    run = li.train_toy(li.ToyConfig("abs", n=3, m=2, S=0.1), steps=20, seeds=[0], eval_batch=200, progress=False)
    return {
        "PairStatistics": li.pair_statistics(net, images, "head", settings=PASS),
        "AxisScales": li.axis_scales(net, POINTY, ROUNDED, render=render),
        "CombinationResult": li.sweep_combinations(net, POINTY, ROUNDED, n_angles=5, n_seeds=1, render=render),
        "TrainResult": run, "ToySnapshot": run.model.snapshot(), "ToyAnalysis": li.analyze_toy(run.model, count=32),
        "ChunkArrays": ChunkArrays(np.arange(3), {"x": np.zeros((3, 2))}),
    }


def build_instances():
    """name -> one small real instance of every library result type, made by the library's own functions on tiny
    models (conftest's conv net, the combinations test's two-unit net, a toy model); 24 images of 16 px."""
    net = TinyConvNet().eval()
    images = torch.rand(24, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {**_attribution_family(net, images), **_renders(net, images), **_combinations_and_toys(images)}
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="module")
def instances():
    return build_instances()


def test_every_result_type_has_an_instance(instances):
    assert sorted(instances) == NAMES
    assert all(type(r).__name__ == name for name, r in instances.items())


@pytest.mark.parametrize("name", NAMES)
def test_a_file_loads_in_a_fresh_interpreter(name, instances, tmp_path):
    path, png = instances[name].save(tmp_path / name), tmp_path / f"{name}.png"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    run = subprocess.run([sys.executable, "-c", FRESH, path, str(png)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert lines[0] == name and lines[-1].startswith("SUMMARY dict ")
    has_figure = type(instances[name]).plot is not Result.plot
    kind, axes = lines[-2].split()[1:]
    if has_figure:  # plot() there returned a Figure with axes and wrote a real PNG
        assert kind == "Figure" and int(axes) >= 1, lines[-2]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert kind == "NoneType" and not png.exists()
    shown = lines[1:-2]
    assert 1 <= len(shown) <= display.MAX_LINES and shown[0] == name
    # what the repr shows survives the file: the fresh interpreter shows what this one shows
    assert "\n".join(shown) == repr(instances[name])


def _first_array(result):
    for name, value in vars(result).items():
        if display.shape_of(value) is not None:
            return name, value
    return None, None


@pytest.mark.parametrize("name", NAMES)
def test_repr_is_a_few_lines_of_what_matters(name, instances):
    r = instances[name]
    text = repr(r)
    lines = text.splitlines()
    assert lines[0] == name and len(lines) <= display.MAX_LINES
    assert max(len(line) for line in lines) <= display.WIDTH
    assert "tensor([" not in text and "array([" not in text  # shapes, never values
    feature = getattr(r, "feature", None)
    if isinstance(feature, li.Feature):
        assert re.search(rf"^  feature +{re.escape(feature.name)}$", text, re.M), text
    if isinstance(getattr(r, "dataset", None), str) and r.dataset:
        assert r.dataset in text
    field, value = _first_array(r)
    if field is not None:
        assert f"{field} {display.shape_of(value)}" in text


def test_repr_shows_the_key_numbers_to_four_significant_digits(instances):
    text = repr(instances["Attribution"])
    assert f"mean_activation={float(instances['Attribution'].activation.mean()):.4g}" in text
    assert "layers (2)  relu1, relu2" in text and "scores{relu1, relu2} (4, 8, 16, 16)" in text
    comp = instances["CompletenessResult"]
    assert f"mean_r[relu2]={comp.mean_r()[1]:.4g}" in repr(comp)
    inh = instances["InhibitorDictionary"]
    assert f"share[{int(inh.channels[0])}]={inh.share[0]:.4g}" in repr(inh)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_display_is_a_table_with_the_figure(name, instances):
    r = instances[name]
    page = r._repr_html_()
    assert isinstance(page, str) and "<table" in page and f"<strong>{name}</strong>" in page
    has_figure = type(r).plot is not Result.plot
    assert ("<img src=\"data:image/png;base64," in page) == has_figure, name


def test_a_large_result_still_shows_in_ten_short_lines():
    scores = {f"block_{i}_output": torch.zeros(2, 64, 7, 7) for i in range(40)}
    r = li.Attribution(torch.arange(2.0), scores, li.Feature("block_39_output", unit=3))
    lines = repr(r).splitlines()
    assert len(lines) <= display.MAX_LINES and max(map(len, lines)) <= display.WIDTH
    assert "layers (40)" in repr(r) and "more" in repr(r)  # the rest counted, not listed
    assert "<table" in r._repr_html_()


def test_a_failing_figure_leaves_the_table_and_an_interrupt_still_interrupts(instances, monkeypatch):
    r = instances["Attribution"]

    def broken(self, path=None, **kw):
        raise ValueError("cannot draw")

    monkeypatch.setattr(type(r), "plot", broken)
    page = r._repr_html_()
    assert "<table" in page and "<img" not in page

    def interrupted(self, path=None, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(r), "plot", interrupted)
    with pytest.raises(KeyboardInterrupt):
        r._repr_html_()


@dataclass
class UserResult(Result):
    """A result type of a user's own, declared with the plain ``@dataclass`` (whose repr is field by field)."""

    values: torch.Tensor
    label: str = "mine"


@dataclass
class OwnRepr(Result):
    size: int = 1

    def __repr__(self):
        return "OwnRepr!"


@dataclass
class SubOfOwnRepr(OwnRepr):
    more: int = 2


def test_a_user_dataclass_result_gets_the_short_repr_and_keeps_its_own():
    text = repr(UserResult(torch.zeros(1000, 3)))
    assert text.splitlines() == ["UserResult", "  arrays   values (1000, 3)", "  numbers  label=mine"]
    assert "<table" in UserResult(torch.zeros(2))._repr_html_()
    assert repr(OwnRepr()) == "OwnRepr!" and repr(SubOfOwnRepr()) == "OwnRepr!"


def test_the_public_names_and_the_default_helpers():
    code = ("import lucent_inhibit as li; print(' '.join(dir(li))); "
            "from lucent_inhibit import default_attribution_layer, pick_unit, default_feature_layers, "
            "resolve_feature_layers; print(all(callable(f) for f in (default_attribution_layer, pick_unit, "
            "default_feature_layers, resolve_feature_layers)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    names, ok = out.stdout.splitlines()
    assert ok == "True" and sorted(names.split()) == sorted(li.__all__ + ["__version__"])
    assert "annotations" not in names.split() and "importlib" not in names.split()
