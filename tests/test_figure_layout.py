"""Figures checked, not eyeballed: every figure type drawn on small real results (the reload test's instances), its
text boxes measured with matplotlib's renderer (no two overlap, none leaves the figure), and the one plotting
convention: ``plot(path=None, ax=None, **style)`` returns the Figure, writes a PNG at ``path``, draws a one-panel
figure into a given Axes and refuses one for a figure of several panels."""
import inspect
import warnings

import numpy as np
import pytest
import torch
from conftest import TinyConvNet
from test_result_reload import PASS, build_instances

import lucent_inhibit as li
from lucent_inhibit.core import figures
from lucent_inhibit.core.results import RESULT_MODULES, Result
from lucent_inhibit.scanning.figures import fit_zero_line

plt = figures.pyplot()
PNG = b"\x89PNG\r\n\x1a\n"
#: result types whose figure is one panel (drawn into a caller's Axes); every other type's figure refuses ``ax``
ONE_PANEL = {"Attribution", "CompletenessResult", "ScanResult", "Disinhibition", "Selection", "AtlasPoints",
             "AtlasLayout", "AtlasGrid", "PairStatistics", "CombinationResult", "RandomizationCascade",
             "Microscope"}


@pytest.fixture(scope="module")
def instances():
    return build_instances()


@pytest.fixture(scope="module")
def images():
    """The 24 images of 16 px the instances were made from (the scan's dataset)."""
    return torch.rand(24, 3, 16, 16, generator=torch.Generator().manual_seed(3))


def _drawable(instances):
    return sorted(n for n, r in instances.items() if type(r).plot is not Result.plot)


def _laid_out(fig) -> None:
    """No two texts of ``fig`` overlap and none leaves it (one line per problem in the failure); then closed."""
    problems = figures.layout_problems(fig)
    plt.close(fig)
    assert problems == [], "\n".join(problems)


# ------------------------------------------------------------------------------------------------
# the checker itself fails where it must
# ------------------------------------------------------------------------------------------------
def test_the_checker_finds_overlapping_texts_and_texts_outside():
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.set_title("a title")
    ax.text(0.5, 0.5, "one label", transform=ax.transAxes)
    ax.text(0.52, 0.5, "two label", transform=ax.transAxes)  # on top of the first
    ax.text(1.6, 0.5, "far right", transform=ax.transAxes)  # beyond the figure
    pairs = figures.text_overlaps(fig)
    assert [(a.get_text(), b.get_text()) for a, b in pairs] == [("one label", "two label")]
    assert [t.get_text() for t in figures.text_outside(fig)] == ["far right"]
    assert len(figures.layout_problems(fig)) == 2
    plt.close(fig)


def test_rotated_texts_are_compared_as_rotated_boxes():
    """Two parallel diagonal labels whose axis-aligned bounds overlap but whose glyph boxes do not."""
    fig = plt.figure(figsize=(4, 4))
    fig.text(0.3, 0.3, "diagonal label one", rotation=45, fontsize=9)
    fig.text(0.36, 0.3, "diagonal label two", rotation=45, fontsize=9)
    renderer, texts = figures.drawn_texts(fig)
    a, b = (t.get_window_extent(renderer) for t in texts)
    assert a.overlaps(b)  # the bounds do overlap ...
    assert figures.text_overlaps(fig) == []  # ... the rotated boxes do not
    fig.text(0.33, 0.33, "diagonal label three", rotation=45, fontsize=9)  # along the first one's line: into it
    pairs = figures.text_overlaps(fig)
    assert [(a.get_text(), b.get_text()) for a, b in pairs] == [("diagonal label one", "diagonal label three")]
    plt.close(fig)


def test_place_labels_leaves_out_labels_that_would_collide():
    fig, ax = plt.subplots(figsize=(3, 3))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    xy = np.array([[0.5, 0.5]] * 12)  # twelve labels for one point: eight places at most
    placed = figures.place_labels(ax, xy, [f"label {i}" for i in range(12)])
    assert 1 <= placed <= len(figures.LABEL_OFFSETS) and len(ax.texts) == placed
    _laid_out(fig)


# ------------------------------------------------------------------------------------------------
# every result's figure: laid out, and the convention
# ------------------------------------------------------------------------------------------------
#: The result types without a figure (checkpoint chunks); every other type is drawn by the tests below.
NO_FIGURE = {"ChunkArrays"}
WITH_FIGURE = sorted(set(RESULT_MODULES) - NO_FIGURE)


def test_every_type_with_a_figure_is_covered(instances):
    assert set(_drawable(instances)) >= ONE_PANEL
    assert set(instances) - set(_drawable(instances)) == NO_FIGURE


@pytest.mark.parametrize("name", WITH_FIGURE)
def test_every_figure_is_laid_out(name, instances):
    r = instances[name]
    before = set(plt.get_fignums())
    fig = r.plot()
    assert isinstance(fig, plt.Figure) and fig.axes
    assert fig.number in set(plt.get_fignums()) - before  # without a path it stays open for the caller
    _laid_out(fig)


@pytest.mark.parametrize("name", sorted(RESULT_MODULES))
def test_plot_writes_the_png_and_closes_its_own_figure(name, instances, tmp_path):
    r = instances[name]
    if type(r).plot is Result.plot:
        with pytest.raises(NotImplementedError, match=name):
            r.plot(tmp_path / "x.png")
        return
    before = set(plt.get_fignums())
    path = tmp_path / "sub" / f"{name}.png"
    fig = r.plot(path)
    assert isinstance(fig, plt.Figure)
    assert path.read_bytes()[:8] == PNG
    assert set(plt.get_fignums()) == before  # a loop that saves many figures holds none open
    fig2 = r.plot(str(tmp_path / f"{name}_str.png"))  # a str path as well as a Path
    assert isinstance(fig2, plt.Figure) and (tmp_path / f"{name}_str.png").exists()


@pytest.mark.parametrize("name", WITH_FIGURE)
def test_plot_into_a_given_axes_or_refuse_it(name, instances, tmp_path):
    r = instances[name]
    fig, ax = plt.subplots(figsize=(7, 6))
    try:
        if name in ONE_PANEL:
            assert r.plot(ax=ax) is fig
            assert ax.has_data() or ax.images or ax.patches
            assert r.plot(tmp_path / "into.png", ax=ax) is fig  # the caller's figure is written ...
            assert fig.number in plt.get_fignums()  # ... and never closed
            assert (tmp_path / "into.png").read_bytes()[:8] == PNG
        else:
            with pytest.raises(ValueError, match="takes no ax"):
                r.plot(ax=ax)
    finally:
        plt.close(fig)


#: the modules whose ``plot_*`` functions are the library's figures
FIGURE_MODULES = ("lucent_inhibit", "lucent_inhibit.atlas", "lucent_inhibit.combinations", "lucent_inhibit.toy",
                  "lucent_inhibit.attribution.figures", "lucent_inhibit.atlas.figures", "lucent_inhibit.causal.figures",
                  "lucent_inhibit.census.figures", "lucent_inhibit.combinations.figures", "lucent_inhibit.scanning.figures",
                  "lucent_inhibit.synthesis.figures", "lucent_inhibit.toy.figures")


def _plot_functions():
    import importlib

    modules = [importlib.import_module(m) for m in FIGURE_MODULES]
    found = {}
    for m in modules:
        for n in dir(m):
            f = getattr(m, n)
            if n.startswith("plot_") and callable(f) and getattr(f, "__module__", "").startswith("lucent_inhibit"):
                found[f"{f.__module__}.{n}"] = f
    return found


def test_every_plot_function_takes_path_then_ax():
    found = _plot_functions()
    names = {n.rsplit(".", 1)[1] for n in found}
    assert names >= {"plot_atlas", "plot_census", "plot_combinations", "plot_completeness", "plot_disinhibition",
                     "plot_image_grid", "plot_inhibitors", "plot_inversions", "plot_randomization", "plot_scan_overlay",
                     "plot_scan_scatter", "plot_signed_overlay", "plot_superposition", "plot_tense", "plot_accentuation",
                     "plot_icons", "plot_training", "plot_weights", "plot_analysis", "plot_axis_scales"}, sorted(names)
    for name, f in found.items():
        params = list(inspect.signature(f).parameters.values())
        assert [p.name for p in params[1:3]] == ["path", "ax"], name
        assert params[1].default is None and params[2].default is None, name
        # everything after ax is a keyword (a cloud, a dataset, a style), never a required positional
        assert all(p.default is not inspect.Parameter.empty or p.kind is p.KEYWORD_ONLY for p in params[3:]), name


def test_every_result_plot_method_takes_path_ax_and_style(instances):
    for name in _drawable(instances):
        params = list(inspect.signature(type(instances[name]).plot).parameters.values())
        assert [p.name for p in params[:3]] == ["self", "path", "ax"], name
        assert params[-1].kind is inspect.Parameter.VAR_KEYWORD, f"{name}.plot takes no **style"


# ------------------------------------------------------------------------------------------------
# the report's other figures, at sizes that crowd their labels
# ------------------------------------------------------------------------------------------------
def test_scan_figures_of_the_report_are_laid_out(instances, images, tmp_path):
    scan = instances["ScanResult"]
    mtis = scan.mtis(6, "min")
    for fig in (li.plot_scan_scatter(scan, highlight=mtis, contours=True),
                li.plot_scan_scatter(scan, scale="percentile", highlight=mtis),
                li.plot_image_grid(scan, dataset=images, indices=scan.meis(10), title="MEIs of conv3 unit 1"),
                li.plot_image_grid(scan, dataset=images, indices=mtis, title="MTIs (min of P and N percentile ranks)"),
                li.plot_scan_overlay(scan, dataset=images, index=int(mtis[0]))):
        _laid_out(fig)
    files = li.save_scan_figures(scan, tmp_path / "scan", dataset=images, k=5, score="min")
    assert {"scatter", "scatter_percentile", "meis", "miis", "mtis", "overlay_mti0"} <= set(files)
    assert all(open(p, "rb").read(8) == PNG for p in files.values())


def test_the_raw_scatter_draws_where_f_is_zero(instances):
    """The fitted f = 0 line: N = P + a / b of the least-squares fit f ~ a + b (P - N), not the diagonal."""
    rng = np.random.default_rng(0)
    p, n = rng.uniform(0, 10, 50), rng.uniform(0, 10, 50)
    a, b = fit_zero_line(6.0 + 1.5 * (p - n), p, n)
    assert a == pytest.approx(6.0) and b == pytest.approx(1.5)  # f = 0 at N = P + 4
    scan = instances["ScanResult"]
    a, b = fit_zero_line(scan.activation, scan.P(), scan.N())
    fig = li.plot_scan_scatter(scan, highlight=None)
    (line,) = [l for l in fig.axes[0].lines if l.get_label().startswith("fitted f = 0")]
    x, y = line.get_data()
    assert np.allclose(np.asarray(y) - np.asarray(x), a / b, rtol=1e-5)
    assert f"{a / b:+.3g}" in line.get_label()
    plt.close(fig)


def test_a_census_of_many_units_keeps_its_labels_apart():
    net = TinyConvNet(width=48).eval()
    images = torch.rand(16, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        census = li.layer_census(net, images, "conv2", ["relu1"], settings=PASS)
    assert len(census.features) == 48
    fig = census.plot()
    labels = [t for t in fig.axes[0].texts if t.get_text().isdigit()]
    assert 1 <= len(labels) <= 10  # the most inhibited, thinned where they would run together
    _laid_out(fig)


def test_completeness_with_a_comparison_and_combinations_with_a_cloud(instances):
    comp = instances["CompletenessResult"]
    _laid_out(li.plot_completeness(comp, compare=comp, title="two methods"))
    combos = instances["CombinationResult"]
    cloud = np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32) * np.asarray(combos.scale)
    fig = li.plot_combinations(combos, cloud=cloud)
    assert any(c.get_label().startswith("dataset (200)") for c in fig.axes[0].collections)
    _laid_out(fig)


def test_the_superposition_figure_is_laid_out(instances):
    fig = li.plot_superposition(instances["TrainResult"].model, count=32)
    assert len(fig.axes) >= 6  # two rows of three panels (and their colour bars)
    _laid_out(fig)


# ------------------------------------------------------------------------------------------------
# renders that did not move are marked
# ------------------------------------------------------------------------------------------------
def _still(result, rows):
    """A copy of ``result`` whose renders ``rows`` are recorded as not moved (change 0, gain 0)."""
    import copy

    r = copy.copy(result)
    r.moved, r.motion = result.moved.clone(), result.motion.clone()
    r.moved[rows] = False
    r.motion[rows] = 0.0
    return r


def _marks(fig) -> int:
    return sum(t.get_text().startswith("did not move") for a in fig.axes for t in a.texts)


@pytest.mark.parametrize("name, rows, marks", [("InversionResult", [1, 2], 2), ("TenseResult", [0], 1),
                                               ("Accentuation", [0], 1), ("InhibitorDictionary", [0, 2], 2),
                                               ("AxisScales", [1], 1)])
def test_a_still_render_is_marked_in_its_panel(name, rows, marks, instances):
    r = instances[name]
    assert r.moved is not None and r.motion is not None and len(r.moved) == len(r.motion)
    moved_fig = _still(r, [])
    moved_fig.moved[:] = True
    fig = moved_fig.plot()
    assert _marks(fig) == 0
    plt.close(fig)
    fig = _still(r, rows).plot()
    assert _marks(fig) == marks
    if name == "InhibitorDictionary":  # the reason, with its number
        assert any("no gradient" in t.get_text() for a in fig.axes for t in a.texts)
    _laid_out(fig)


def test_a_still_combination_image_is_hatched_and_counted(instances):
    r = _still(instances["CombinationResult"], [0])
    fig = r.plot()
    legend = fig.axes[0].get_legend()
    assert any("did not move (1)" in t.get_text() for t in legend.get_texts())
    plt.close(fig)
    r.moved[:] = True
    fig = r.plot()
    assert not any("did not move" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
    plt.close(fig)


def test_a_still_icon_is_hatched(instances):
    icons = _still(instances["AtlasIcons"], [0])
    fig = icons.plot()
    assert _marks(fig) == 1
    _laid_out(fig)



# ------------------------------------------------------------------------------------------------
# every figure of the report, at the quick demo's sizes on the embedded model
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_every_figure_of_the_quick_report_is_laid_out(tmp_path, monkeypatch, one_thread):
    """The quick demo run with every figure measured as it is written (``Figure.savefig``): no overlapping text,
    no text outside, in any PNG of the report."""
    from matplotlib.figure import Figure

    from lucent_inhibit.app.stages.demo import DemoConfig, run_demo

    save, checked = Figure.savefig, {}

    def measured(self, fname, *args, **kwargs):
        checked[str(fname)] = figures.layout_problems(self)
        return save(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", measured)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_demo(out=str(tmp_path / "report"), config=DemoConfig.quick(), progress=False)
    pngs = [p for p in checked if p.endswith(".png")]
    assert len(pngs) >= 15, sorted(checked)  # scan, grids, overlays, completeness, census, causal, renders, atlas...
    problems = {p: lines for p, lines in checked.items() if lines}
    assert problems == {}, "\n".join(f"{p}: {line}" for p, lines in problems.items() for line in lines)
