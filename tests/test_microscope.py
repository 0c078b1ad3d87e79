"""The inhibition microscope: per-unit numbers equal one-feature scans, the top inhibitor equals the inhibitor
dictionary's, bad input, the result file, resuming, the static site (also in headless Chromium) and the CLI."""
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import lucent_inhibit as li
from lucent_inhibit import Feature, inhibitor_dictionary, scan
from lucent_inhibit.core.preparation import preprocess_fn
from lucent_inhibit.core.settings import PassSettings, RenderSettings
from lucent_inhibit.core.validate import InputError
from lucent_inhibit.microscope import Microscope, microscope, write_microscope_site
from lucent_inhibit.microscope.build import check_render_inputs
from lucent_inhibit.microscope.site import unit_path

from conftest import TinyConvNet

HERE = os.path.dirname(os.path.abspath(__file__))
LAYERS, ATTRS = ["conv3", "relu2"], ["relu2", "relu1"]
SETTINGS = PassSettings(batch_size=5, progress=False)
RENDER = RenderSettings(steps=24, size=16, model_size=32, lr=0.1)


def _build(net, data, **kw):
    kw = dict(dict(layers=LAYERS, attr_layer=ATTRS, n_top=4, n_channels=3, settings=SETTINGS, visualize=False), **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return microscope(net, data, **kw)


@pytest.fixture(scope="module")
def data():
    return torch.rand(20, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def scope(data):
    return _build(TinyConvNet().eval(), data, visualize=True, render=RENDER, render_batch=5, inversions=1)


def test_units_of_two_layers_each_at_its_attribution_layer(scope):
    assert scope.layers == LAYERS and scope.attr_layers == ATTRS
    assert [(f.layer, f.unit) for f in scope.features] == [("conv3", u) for u in range(4)] + [("relu2", u) for u in range(8)]
    assert scope.activation.shape == scope.pos.shape == (20, 12) and scope.tops.shape == (12, 3, 4)
    assert scope.inhibitors.shape == scope.exciters.shape == (12, 3)
    dead = (scope.pos + scope.neg).sum(0) == 0  # a ReLU unit that is zero on every image: no share
    assert np.array_equal(np.isnan(scope.share), dead) and dead.sum() < len(scope)
    assert np.all((scope.share[~dead] >= 0) & (scope.share[~dead] <= 1)) and np.all((scope.quiet >= 0) & (scope.quiet <= 1))
    assert set(np.unique(scope.tops)) == set(scope.image_ids.tolist())
    assert scope.thumbnails.shape == (scope.image_ids.size, 3, 64, 64) and scope.thumbnails.dtype == np.uint8


@pytest.mark.parametrize("layer,unit", [("conv3", 2), ("relu2", 5), ("relu2", 0)])
def test_per_unit_f_p_n_equal_one_feature_scans(scope, data, layer, unit):
    j = scope.column(layer, unit)
    attr = scope.attr_layer(j)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = scan(TinyConvNet().eval(), data, Feature(layer, unit=unit), [attr], settings=SETTINGS)
    np.testing.assert_allclose(scope.activation[:, j], one.activation, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scope.pos[:, j], one.P(attr), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scope.neg[:, j], one.N(attr), rtol=1e-5, atol=1e-6)
    p, n = one.P(attr).astype(np.float64).sum(), one.N(attr).astype(np.float64).sum()
    assert scope.share[j] == pytest.approx(n / (p + n), rel=1e-5)
    assert scope.tops[j, 2].tolist() == one.mtis(4, layer=attr).tolist()
    assert scope.tops[j, 0].tolist() == one.meis(4).tolist() and scope.tops[j, 1].tolist() == one.miis(4).tolist()
    assert scope.median_tension[j] == pytest.approx(float(np.median(one.tension(attr))))


def test_top_inhibitor_of_the_most_inhibited_unit_is_the_dictionary_s(scope, data):
    j = int(scope.ranking()[0])
    f = scope.features[j]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = inhibitor_dictionary(TinyConvNet().eval(), data, f, scope.attr_layer(j), k=4, n_channels=3,
                                 visualize=False, settings=SETTINGS)
    assert sorted(d.mtis.tolist()) == sorted(scope.tops[j, 2].tolist())
    assert scope.inhibitors[j].tolist() == d.channels.tolist()
    np.testing.assert_allclose(scope.inhibitor_share[j], d.share, rtol=1e-6)
    np.testing.assert_allclose(scope.inhibitor_effect[j], d.delta, rtol=1e-4, atol=1e-5)  # the causal change, too
    # every unit: its exciters and inhibitors are the channels with the largest relu(S) / relu(-S) on its MTIs
    assert np.all(np.diff(scope.inhibitor_share, axis=1) <= 0) and np.all(np.diff(scope.exciter_share, axis=1) <= 0)


class Skip(nn.Module):
    """conv -> relu, plus a skip from the input: ``relu1`` is not a cut before ``head``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.relu1, self.skip, self.head = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 1), nn.Conv2d(4, 3, 1)

    def forward(self, x):
        return self.head(self.relu1(self.conv1(x)) + self.skip(x))


def test_removal_effects_are_each_channel_set_to_zero_on_the_mtis(scope, data):
    """Every listed channel's effect is f on the unit's MTIs with that channel of the attribution layer zeroed,
    minus f on them (one forward per removal here, blocks of one batch in the microscope)."""
    net = TinyConvNet().eval()
    for j in (0, 5, 11):
        f, attr, mtis = scope.features[j], scope.attr_layer(j), data[scope.tops[j, 2]]
        act = {}
        net_layer = dict(net.named_modules())[attr]

        def read(m, i, o, c=None):
            return o if c is None else o.index_fill(1, torch.tensor([c]), 0.0)

        def f_of(c=None):
            h = net_layer.register_forward_hook(lambda m, i, o: read(m, i, o, c))
            g = dict(net.named_modules())[f.layer].register_forward_hook(lambda m, i, o: act.__setitem__("o", o))
            try:
                with torch.no_grad():
                    net(preprocess_fn(net)(mtis))  # as the passes feed it (PassSettings.preprocess)
            finally:
                h.remove(), g.remove()
            o = act["o"]
            return (o[:, f.unit, o.shape[2] // 2, o.shape[3] // 2] if o.dim() == 4 else o[:, f.unit]).double()

        base = f_of()
        for chans, effects in ((scope.inhibitors[j], scope.inhibitor_effect[j]), (scope.exciters[j], scope.exciter_effect[j])):
            want = [float((f_of(int(c)) - base).mean()) for c in chans]
            np.testing.assert_allclose(effects, want, rtol=1e-4, atol=1e-5)
    # removing what inhibits a unit raises it on average; removing what excites it lowers it
    assert np.mean(scope.inhibitor_effect[:, 0]) > 0 > np.mean(scope.exciter_effect[:, 0])


def test_every_unit_and_listed_channel_is_shown_once_with_its_top_images_and_visualization(scope, data):
    keys = list(zip(scope.shown_layers.tolist(), scope.shown_units.tolist()))
    assert len(set(keys)) == len(keys) and keys[:len(scope)] == [(f.layer, f.unit) for f in scope.features]
    for j in range(len(scope)):
        for c in np.concatenate([scope.inhibitors[j], scope.exciters[j]]):
            assert scope.shown(scope.attr_layer(j), int(c)) is not None
    assert scope.visuals.shape == (len(keys), 3, 16, 16) and scope.visuals.dtype == np.uint8
    assert set(scope.shown_tops.ravel()) <= set(scope.image_ids.tolist())
    net = TinyConvNet().eval()
    for v in (0, len(keys) - 1):  # top images: largest mean activation of the channel over positions
        layer, c = keys[v]
        acts = {}
        h = dict(net.named_modules())[layer].register_forward_hook(lambda m, i, o: acts.__setitem__("o", o))
        with torch.no_grad():
            net(preprocess_fn(net)(data))
        h.remove()
        o = acts["o"]
        means = (o.flatten(2).mean(2) if o.dim() == 4 else o)[:, c].numpy()
        assert means[scope.shown_tops[v, 0]] == pytest.approx(means.max(), rel=1e-5)
    # the visualizations are the renders of Lucent's channel objective, in the shown order, several per render
    from lucent_inhibit.synthesis.channels import visualize_channels

    for layer in ("conv3", "relu1"):
        rows = np.flatnonzero(scope.shown_layers == layer)
        for start in range(0, rows.size, 5):  # the fixture's render_batch
            chunk = rows[start:start + 5]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                run = visualize_channels(net, layer, scope.shown_units[chunk].tolist(), RENDER)
            want = (run.images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            np.testing.assert_array_equal(scope.visuals[chunk], want)
            assert scope.visual_moved[chunk].tolist() == run.motion.moved.tolist()
    assert scope.visual_moved.mean() >= 0.5  # most renders moved (a dead ReLU channel cannot)
    assert np.array_equal(scope.visual("conv3", 1), scope.visuals[1].transpose(1, 2, 0)) and scope.visual("conv3", 9) is None


def test_inversions_of_the_top_mti_are_the_library_s(scope, data):
    from lucent_inhibit import inversions

    assert scope.inversions.shape == (len(scope), 1, 2, 3, 64, 64) and scope.inversion_separated.shape == (len(scope), 1)
    for j in (0, 9):
        f, m = scope.features[j], int(scope.tops[j, 2, 0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = inversions(TinyConvNet().eval(), data[m], f, scope.attr_layer(j),
                           render=RenderSettings(steps=RENDER.steps, lr=RENDER.lr, seed=RENDER.seed), completeness_images=0)
        pair = torch.stack([r.excitatory, r.inhibitory]).float()
        small = torch.nn.functional.interpolate(pair, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
        np.testing.assert_array_equal(scope.inversions[j, 0], (small.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
        assert scope.inversion_separated[j, 0] == r.separated
    rendered = scope.inversions.reshape(len(scope), -1).std(1) > 0
    assert rendered.sum() >= len(scope) - 2  # black only where an MTI lacks a sign of attribution (a dead unit)


def test_bad_input_says_what_is_wrong(data):
    net = TinyConvNet().eval()
    with pytest.raises(InputError, match=r"8 units is more than max_units=5"):
        _build(net, data, max_units=5)
    with pytest.raises(InputError, match=r"units \[9\] are outside layer 'conv3', which has 4 units \(0..3\)"):
        _build(net, data, units=[1, 9])
    with pytest.raises(InputError, match="'relu1' is not a cut before 'head'"):
        _build(Skip().eval(), data, layers="head", attr_layer="relu1")
    with pytest.raises(InputError, match="at least 10 images"):
        _build(net, data[:6])
    with pytest.raises(InputError, match="one for all or one per feature layer"):
        _build(net, data, attr_layer=["relu1"] * 3)


def test_default_layers_are_picked_and_said(data, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="lucent_inhibit"):
        m = _build(TinyConvNet().eval(), data, layers=None, attr_layer=None, units=[0, 1])
    assert len(m.layers) == 1 and "feature layer:" in caplog.text and m.layers[0] in caplog.text
    assert m.attr_layers[0] in caplog.text and [f.unit for f in m.features] == [0, 1]


def test_save_load_round_trip(scope, tmp_path):
    path = scope.save(str(tmp_path / "scope"))
    back = li.load_result(path) if hasattr(li, "load_result") else Microscope.load(path)
    assert isinstance(back, Microscope) and back.features == scope.features and back.layers == scope.layers
    for name in ("activation", "pos", "neg", "share", "tops", "top_percentiles", "inhibitors", "thumbnails", "items"):
        np.testing.assert_array_equal(getattr(back, name), getattr(scope, name))
    assert back.summary() == scope.summary()
    fig = back.plot(str(tmp_path / "scope.png"))
    assert os.path.getsize(tmp_path / "scope.png") > 1000 and fig is not None


def test_an_interrupted_build_resumes_from_its_checkpoints(data, tmp_path, monkeypatch):
    import lucent_inhibit.census.run as census_run

    real, calls = census_run._census_pass, []

    def failing(*a, **kw):  # the second layer's census is interrupted
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(census_run, "_census_pass", failing)
    with pytest.raises(KeyboardInterrupt):
        _build(TinyConvNet().eval(), data, checkpoint=str(tmp_path))
    calls.clear()
    monkeypatch.setattr(census_run, "_census_pass", lambda *a, **kw: (calls.append(1), real(*a, **kw))[1])
    resumed = _build(TinyConvNet().eval(), data, checkpoint=str(tmp_path))
    assert len(calls) == 1  # only the interrupted layer's census ran again
    whole = _build(TinyConvNet().eval(), data)
    np.testing.assert_array_equal(resumed.neg, whole.neg)
    np.testing.assert_array_equal(resumed.inhibitors, whole.inhibitors)
    # the first layer's census was resumed, so its channel means and outputs were computed, not read off it
    np.testing.assert_array_equal(resumed.shown_tops, whole.shown_tops)
    np.testing.assert_allclose(resumed.inhibitor_effect, whole.inhibitor_effect, rtol=1e-5, atol=1e-6)


def test_an_interrupted_build_keeps_its_finished_renders(data, tmp_path, monkeypatch):
    """Renders are checkpointed per render: after an interruption in the second render the rerun renders only
    what was not finished, and its visualizations equal an uninterrupted build's."""
    import lucent_inhibit.microscope.visuals as visuals

    real, calls = visuals.visualize_channels, []

    def counted(*a, **kw):
        calls.append(a[1])
        if fail and len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(visuals, "visualize_channels", counted)
    kw = dict(visualize=True, render=RenderSettings(steps=3, size=16, model_size=32, lr=0.1), render_batch=4)
    fail = True
    with pytest.raises(KeyboardInterrupt):
        _build(TinyConvNet().eval(), data, checkpoint=str(tmp_path), **kw)
    fail, n_first = False, len(calls)
    resumed = _build(TinyConvNet().eval(), data, checkpoint=str(tmp_path), **kw)
    rerendered = len(calls) - n_first
    calls.clear()
    whole = _build(TinyConvNet().eval(), data, **kw)
    assert rerendered == len(calls) - 1  # every render but the one finished before the interruption
    np.testing.assert_array_equal(resumed.visuals, whole.visuals)
    np.testing.assert_array_equal(resumed.visual_moved, whole.visual_moved)


@pytest.mark.parametrize("budget", [0, 100_000])
def test_what_is_read_off_the_census_equals_what_is_computed_without_it(data, monkeypatch, budget):
    """The channel means and attribution-layer outputs the microscope reads off its censuses give the same
    microscope as computing them afresh: with no outputs kept (budget 0) or some (100 kB: the first 10 images),
    and with nothing read at all (a reader that drops every batch)."""
    import lucent_inhibit.microscope.readings as readings

    read = _build(TinyConvNet().eval(), data)
    monkeypatch.setattr(readings, "KEEP_BYTES", budget)
    monkeypatch.setattr(readings.CensusReadings.__init__, "__defaults__", (budget,))
    partial = _build(TinyConvNet().eval(), data)
    import lucent_inhibit.microscope.build as build

    class Deaf(readings.CensusReadings):  # the census's reader drops every batch (what it computes itself stays)
        def __call__(self, indices, acts):
            return None

    monkeypatch.setattr(build, "CensusReadings", Deaf)
    fresh = _build(TinyConvNet().eval(), data)
    for got in (partial, fresh):
        for k in ("shown_tops", "inhibitors", "exciters"):
            np.testing.assert_array_equal(getattr(got, k), getattr(read, k))
        for k in ("inhibitor_share", "exciter_share", "inhibitor_effect", "exciter_effect"):
            np.testing.assert_allclose(getattr(got, k), getattr(read, k), rtol=1e-5, atol=1e-6)


def test_census_readings_keep_outputs_in_the_models_layout_up_to_the_budget():
    from lucent_inhibit.core.layouts import NHWC, Layout
    from lucent_inhibit.microscope.readings import CensusReadings

    canonical = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    reader = CensusReadings("a", Layout(NHWC, "test"), budget=canonical.numel() * 4 * 2)
    reader(np.array([7, 9]), {"a": canonical, "f": canonical[:, :2]})
    reader(np.array([10, 11]), {"a": canonical, "f": canonical[:, :2]})
    reader(np.array([12, 13]), {"a": canonical, "f": canonical[:, :2]})  # over the budget: not kept
    assert sorted(reader.outputs) == [7, 9, 10, 11] and reader.used == canonical.numel() * 4 * 2
    torch.testing.assert_close(reader.outputs[9], canonical[1].permute(1, 2, 0))  # (H, W, C): as the model has it
    assert sorted(reader.means["f"]) == [7, 9, 10, 11, 12, 13]  # means of every batch
    np.testing.assert_allclose(reader.means["a"][12], canonical[0].mean((1, 2)).numpy())


def test_site_pages_images_and_links(scope, tmp_path):
    index = write_microscope_site(scope, str(tmp_path))
    text = open(index, encoding="utf-8").read()
    assert text.count("<tr id=") == len(scope) and "http" not in text.replace("http-equiv", "")
    assert sorted(os.listdir(tmp_path / "images")) == sorted(f"{int(i)}.png" for i in scope.image_ids)
    assert text.count('class="visual') == len(scope)  # every unit's visualization in the index
    shown = sum(len(files) for _, _, files in os.walk(tmp_path / "visuals"))
    assert shown == len(scope.shown_units)  # each shown channel's visualization written once
    for j, f in enumerate(scope.features):
        page = tmp_path / unit_path(f.layer, f.unit)
        html = page.read_text(encoding="utf-8")
        assert os.path.getsize(str(page)[:-5] + ".png") > 1000
        for src in re.findall(r'src="([^"]+)"', html):
            assert os.path.exists(os.path.normpath(os.path.join(page.parent, src))), src
        assert 'class="unit-visual' in html and html.count('<td class="tops">') == 2 * scope.inhibitors.shape[1]
        assert html.count('class="inversion"') == 1 and ("not separated" in html) != bool(scope.inversion_separated[j, 0])
        links = re.findall(r'class="inhibitor" href="([^"]+)"', html)
        if f.layer == "conv3":  # its inhibitors are relu2 channels, all in the microscope: each one linked
            assert len(links) == scope.inhibitors.shape[1]
            assert links[0].endswith(f"relu2/{scope.inhibitors[j, 0]}.html")
        else:  # relu1 is not a layer of the microscope: no links
            assert links == []
        for href in links:
            assert os.path.exists(os.path.normpath(os.path.join(page.parent, href)))


def test_units_option_parses_ranges_and_refuses_garbage():
    from lucent_inhibit.app.stages.microscope import parse_units

    assert parse_units("0-3,8") == (0, 1, 2, 3, 8) and parse_units("5") == (5,) and parse_units(None) is None
    for bad in ("3-1", "a", "-2", "1,,2"):
        with pytest.raises(ValueError, match="--units"):
            parse_units(bad)


@pytest.mark.browser
def test_site_in_headless_chromium(scope, tmp_path):
    import playwright.sync_api as sync_api  # a test dependency: a missing install fails, never skips

    index = write_microscope_site(scope, str(tmp_path))
    top = scope.features[int(scope.ranking()[0])]
    assert top.layer == "conv3"  # its inhibitors are relu2 channels, pages of this microscope
    loaded = "Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
    errors, requests = [], []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto("file://" + index)
            page.wait_for_selector("body[data-ready='1']")
            assert page.locator("#units tbody tr").count() == len(scope)
            assert page.evaluate(loaded)
            page.click("#sort-share")  # most inhibited first
            shares = page.evaluate("Array.from(document.querySelectorAll('#units tbody tr')).map(r => +r.dataset.share)")
            assert shares == sorted(shares, reverse=True)
            first = page.locator("#units tbody tr").first
            assert (first.get_attribute("data-layer"), first.get_attribute("data-unit")) == (top.layer, str(top.unit))
            page.click("#sort-share")  # and back: least inhibited first
            assert page.evaluate("+document.querySelector('#units tbody tr').dataset.share") == min(shares)
            page.click("#sort-share")
            page.fill("#filter", "relu2")  # the filter hides the other layer's rows
            assert page.locator("#units tbody tr:visible").count() == 8
            page.fill("#filter", "")
            page.locator("#units tbody tr").first.locator("a.unit-link").click()
            page.wait_for_load_state()
            assert page.url.endswith(unit_path(top.layer, top.unit)) and top.name in page.inner_text("h1")
            assert page.locator("#mtis figure").count() == 4 and page.evaluate(loaded)
            unit_url = page.url
            c = int(scope.inhibitors[scope.column(top.layer, top.unit), 0])
            page.locator("a.inhibitor").first.click()
            page.wait_for_load_state()
            assert page.url.endswith(f"units/relu2/{c}.html") and f"relu2 unit {c}" in page.inner_text("h1")
            assert page.evaluate(loaded)
            page.go_back()
            assert page.url == unit_url
            page.click("#index-link")
            page.wait_for_selector("body[data-ready='1']")
            page.fill("#jump-unit", f"relu2/{c}")  # the jump box opens a unit's page
            page.press("#jump-unit", "Enter")
            page.wait_for_url(f"**/units/relu2/{c}.html")
        finally:
            browser.close()
    assert errors == []
    assert requests and all(u.startswith(("file:", "data:")) for u in requests), requests


@pytest.mark.slow
def test_cli_on_the_embedded_model_two_layers_linked(tmp_path):
    """16 units of blocks_4_0_bn3_drop and of blocks_4_0_bn2_act over 32 crops, from the command line: the site
    is written, per-unit numbers equal a scan, and an inhibitor of the first layer links to the second's page."""
    out = tmp_path / "site"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "lucent_inhibit", "microscope", "--out", str(out), "--layer", "blocks_4_0_bn3_drop",
           "blocks_4_0_bn2_act", "--units", "0-15", "--n-images", "32", "--size", "96", "--n-top", "4", "--steps", "6"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HERE, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "index.html" in done.stdout
    scope = Microscope.load(str(out / "microscope.npz"))
    assert len(scope) == 32 and scope.attr_layers[0] == "blocks_4_0_bn2_act"
    for name in ("index.html", "microscope.png"):
        assert (out / name).is_file()
    assert scope.visuals.shape[0] == scope.shown_units.size and scope.visuals.shape[-1] == 64  # rendered, 64 px
    assert len(os.listdir(out / "visuals" / "blocks_4_0_bn3_drop")) == 16
    assert not (out / "microscope-checkpoints").exists()
    j = int(scope.ranking()[0])
    f = scope.features[j]
    from lucent_inhibit.data.bundled import sample_crops
    from lucent_inhibit.models.embedded import efficientnet_lite0

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = scan(efficientnet_lite0(), sample_crops(32, size=96, seed=0), f, [scope.attr_layer(j)],
                   settings=PassSettings(progress=False))
    np.testing.assert_allclose(scope.activation[:, j], one.activation, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(scope.neg[:, j], one.N(), rtol=1e-4, atol=1e-5)
    linked = [(k, int(c)) for k in range(16) for c in scope.inhibitors[k] if c < 16]
    for k, c in linked:  # an inhibitor of the first layer among the second layer's units: its page is linked
        html = (out / unit_path(scope.features[k].layer, scope.features[k].unit)).read_text(encoding="utf-8")
        assert f'href="../../units/blocks_4_0_bn2_act/{c}.html"' in html
    bad = subprocess.run(cmd[:-8] + ["--units", "0-15", "--max-units", "8", "--n-images", "32", "--size", "96"],
                         capture_output=True, text=True, env=env, cwd=HERE, timeout=300)
    last = bad.stderr.strip().splitlines()[-1]  # the picks said, then the error in one line
    assert bad.returncode == 2 and "max_units=8" in last and "16 units" in last and "Traceback" not in bad.stderr


def test_cli_position_and_autocast(tmp_path):
    """--position reads every unit there; --autocast checks the first unit's pass against float32 first (recorded),
    the renders stay float32 (uint8 images written)."""
    from lucent_inhibit.app import cli

    args = ["microscope", "--out", str(tmp_path), "--model", "conftest:TinyConvNet", "--weights", "none", "--n-images",
            "12", "--size", "16", "--batch-size", "3", "--layer", "conv3", "--attr-layer", "relu2", "--steps", "3",
            "--render-size", "16", "--position", "mean", "--autocast"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(args) == 0
    scope = Microscope.load(str(tmp_path / "microscope.npz"))
    assert [f.position for f in scope.features] == ["mean"] * 4
    assert scope.info["autocast_check"]["dtype"] == "bfloat16" and scope.info["autocast_check"]["tolerance"] == 0.02
    assert len(os.listdir(tmp_path / "visuals" / "conv3")) == 4


def test_recorded_rows_are_stacked_in_the_memory_order_they_were_computed_in():
    from lucent_inhibit.microscope.readings import stack_as_computed

    maps = torch.randn(4, 8, 5, 5).contiguous(memory_format=torch.channels_last)  # as the census computes a map
    nhwc, tokens = torch.randn(4, 5, 5, 8), torch.randn(4, 17, 6)  # a channels-last layer's raw output; tokens
    for batch, channels_last in ((maps, True), (nhwc, False), (tokens, False)):
        got = stack_as_computed([batch[i] for i in (2, 0, 3)])
        assert torch.equal(got, batch[[2, 0, 3]])
        assert got.is_contiguous(memory_format=torch.channels_last) if channels_last else got.is_contiguous()


def test_renders_with_unnormalised_passes_are_refused_or_flagged(data):
    """Renders go through the model's input normalisation; a census with preprocess=False does not: inversions
    (which start from the MTIs as [0, 1] images) are refused before any pass, visualizations are flagged."""
    raw = PassSettings(batch_size=5, progress=False, preprocess=False)
    with pytest.raises(InputError, match=r"inversions=2 needs PassSettings\(preprocess=True\)"):
        microscope(TinyConvNet().eval(), data, layers=["conv3"], attr_layer=["relu2"], settings=raw, inversions=2,
                   visualize=False)
    with pytest.warns(UserWarning, match="feature visualizations render through the model's input normalisation"):
        check_render_inputs(raw, visualize=True, inversions=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_render_inputs(raw, visualize=False, inversions=0)
        check_render_inputs(SETTINGS, visualize=True, inversions=3)
