"""The inhibition microscope on the layouts beyond (B, C, H, W) maps, on random-weight models (nothing
downloaded): a ViT token layer (B, T, C) of a small timm ViT (32 px, 8 px patches: 1 class token + a 4x4
grid, so T = 17 is neither channel count) and a channels-last map (B, H, W, C) inside a torchvision
ConvNeXt-T block (``nn.Linear`` layers on the permuted 16x16 map at 64 px).

Every unit of each layer (units=None) is in the microscope, counted on the layer's true channel axis, and a
few sampled units' f, P, N, share, top images, top inhibitory / excitatory channels (and, where the
microscope measures it, the change of f when a listed channel is removed) equal a one-feature scan and a
by-hand gradient x activation on the raw tensors as the model computes them, whose channel axis is the last
one in both layouts. A microscope of a few units has the full one's columns, and its static site has an
index and one page per unit. No feature visualizations are rendered (minutes on a CPU)."""
import inspect
import os
import re
import warnings

import numpy as np
import pytest
import torch

import lucent_inhibit as li
from lucent_inhibit import Feature, scan
from lucent_inhibit.core.layers import get_layer, hooks_restored
from lucent_inhibit.core.preparation import preprocess_fn
from lucent_inhibit.core.validate import InputError
from lucent_inhibit.data.datasets import load_batch
from lucent_inhibit.microscope import Microscope, build_microscope, write_microscope_site
from lucent_inhibit.microscope.site import unit_path

from test_vit import tiny_vit

pytestmark = pytest.mark.slow

N_IMAGES, N_TOP, N_CHANNELS = 14, 4, 3
SETTINGS = li.PassSettings(batch_size=7, progress=False)
#: no feature visualizations, where the microscope makes them (renders of every unit: minutes on a CPU)
NO_RENDERS = {"visualize": False} if "visualize" in inspect.signature(build_microscope).parameters else {}


class _Stop(Exception):
    """Ends a forward pass once the feature layer has run (the rest of the model is not needed)."""


def _forward_to(model, x, layer, attr, attr_hook=None):
    """The raw output of ``layer`` (as the model computes it) on ``x`` (already preprocessed), with
    ``attr_hook`` (a forward hook returning a replacement) on ``attr`` when given."""
    held = {}

    def stop(module, inputs, out):
        held["out"] = out
        raise _Stop

    with hooks_restored(model):
        if attr_hook is not None:
            get_layer(model, attr).register_forward_hook(attr_hook)
        get_layer(model, layer).register_forward_hook(stop)
        try:
            model(x)
        except _Stop:
            pass
    return held["out"]


def _raw_split(model, x, layer, attr, pick):
    """By hand on the raw tensors (channels on the last axis for both a token layer and a channels-last map):
    ``(f (n,), P (n,), N (n,), P_c (C,), N_c (C,), C)`` of the unit ``pick(raw feature-layer output)``, with
    ``S = d f / d a * a`` at ``attr`` on images ``x`` (n, 3, H, W)."""
    held = {}

    def leaf(module, inputs, out):  # the forward continues from a leaf that the gradient is taken to
        held["a"] = out.detach().requires_grad_(True)
        return held["a"]

    with torch.enable_grad():
        f = pick(_forward_to(model, preprocess_fn(model)(x), layer, attr, leaf))
        (g,) = torch.autograd.grad(f.sum(), held["a"])
    s = (g * held["a"]).detach().double()
    pos, neg = s.clamp(min=0), (-s).clamp(min=0)
    per_image, all_but_channels = tuple(range(1, s.dim())), tuple(range(s.dim() - 1))
    return (f.detach().double().numpy(), pos.sum(per_image).numpy(), neg.sum(per_image).numpy(),
            pos.sum(all_but_channels).numpy(), neg.sum(all_but_channels).numpy(), int(s.shape[-1]))


def _raw_f(model, x, layer, attr, pick, zero=None):
    """(n,) float64 the unit ``pick(raw feature-layer output)`` on images ``x``, with channel ``zero`` of ``attr``
    set to zero on its raw last axis (at every position / token) when given."""

    def zeroed(module, inputs, out):
        out = out.clone()
        out[..., zero] = 0
        return out

    with torch.no_grad():
        out = _forward_to(model, preprocess_fn(model)(x), layer, attr, None if zero is None else zeroed)
    return pick(out).double().numpy()


def _build(model, data, layer, attr, units, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_microscope(model, data, layers=layer, attr_layer=attr, units=units, n_top=N_TOP,
                                n_channels=N_CHANNELS, settings=SETTINGS, **{**NO_RENDERS, **kw})


class Case:
    """A model, its images, a feature layer and its attribution layer with their true channel counts, how
    a unit is read off the raw output (its centre), and the microscope of every unit of the layer."""

    def __init__(self, model, data, layer, attr, channels, attr_channels, raw_shapes, pick, sampled):
        self.model, self.data, self.layer, self.attr = model, data, layer, attr
        self.channels, self.attr_channels, self.pick, self.sampled = channels, attr_channels, pick, sampled
        x = preprocess_fn(model)(load_batch(data, [0]).float())
        with torch.no_grad():  # the raw layouts: channels on the last axis, not where a (B, C, H, W) map has them
            shapes = (tuple(_forward_to(model, x, layer, attr).shape),
                      tuple(_forward_to(model, x, attr, attr).shape))
        assert shapes == raw_shapes
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self.scope = _build(model, data, layer, attr, None)
        finally:
            torch.set_num_threads(n)

    def pick_of(self, unit):
        return lambda out: self.pick(out, unit)


#: the class token, then the 4x4 patch grid: the centre patch (2, 2) is token 1 + 2 * 4 + 2
VIT_CENTRE = 11


@pytest.fixture(scope="module")
def vit_case():
    # blocks_1_mlp_fc1: 64 channels, read at the centre patch; blocks_0 (16 channels) is a cut before it
    return Case(tiny_vit(), li.sample_crops(N_IMAGES, size=32), "blocks_1_mlp_fc1", "blocks_0", 64, 16,
                ((1, 17, 64), (1, 17, 16)), lambda out, u: out[:, VIT_CENTRE, u], sampled=(0, 37, 63))


@pytest.fixture(scope="module")
def channels_last_case():
    # ConvNeXt-T stage 1, first block: its second Linear (96 channels) and its first (384 channels), both on the
    # permuted (B, H, W, C) 16x16 map at 64 px
    model = li.load_model("torchvision:convnext_tiny", weights="none")
    return Case(model, li.sample_crops(N_IMAGES, size=64), "features_1_0_block_5", "features_1_0_block_3", 96, 384,
                ((1, 16, 16, 96), (1, 16, 16, 384)), lambda out, u: out[:, 8, 8, u], sampled=(0, 50, 95))


CASES = ["vit_case", "channels_last_case"]


def _check_every_unit(case):
    scope, layer, attr, c, ca = case.scope, case.layer, case.attr, case.channels, case.attr_channels
    assert isinstance(scope, Microscope)
    # every channel of the layer, counted on its true channel axis (the raw tensor's last one)
    assert len(scope) == c and [(f.layer, f.unit) for f in scope.features] == [(layer, u) for u in range(c)]
    assert scope.layers == [layer] and scope.attr_layers == [attr]
    assert scope.activation.shape == scope.pos.shape == scope.neg.shape == (N_IMAGES, c)
    assert scope.tops.shape == (c, 3, N_TOP) and scope.top_percentiles.shape == (c, 3, N_TOP, 3)
    assert scope.inhibitors.shape == scope.exciters.shape == (c, N_CHANNELS)
    # the top channels are channels of the attribution layer (its last axis), not rows, columns or tokens
    for top in (scope.inhibitors, scope.exciters):
        assert top.min() >= 0 and top.max() < ca
        assert all(len(set(row.tolist())) == N_CHANNELS for row in top)
    assert np.all(np.diff(scope.inhibitor_share, axis=1) <= 0) and np.all(np.diff(scope.exciter_share, axis=1) <= 0)
    assert np.all(scope.neg >= 0) and np.all(scope.pos >= 0) and np.isfinite(scope.activation).all()
    assert scope.tops.min() >= 0 and scope.tops.max() < N_IMAGES and set(np.unique(scope.tops)) <= set(scope.image_ids.tolist())
    live = (scope.pos + scope.neg).sum(0) > 0
    assert live.any() and np.all((scope.share[live] >= 0) & (scope.share[live] <= 1))
    x = load_batch(case.data, np.arange(len(case.data))).float()
    for unit in case.sampled:
        j = scope.column(layer, unit)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            one = scan(case.model, case.data, Feature(layer, unit=unit), [attr], settings=SETTINGS)
        np.testing.assert_allclose(scope.activation[:, j], one.activation, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(scope.pos[:, j], one.P(attr), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(scope.neg[:, j], one.N(attr), rtol=1e-5, atol=1e-6)
        p, n = one.P(attr).astype(np.float64).sum(), one.N(attr).astype(np.float64).sum()
        assert scope.share[j] == pytest.approx(n / (p + n), rel=1e-5)
        assert scope.tops[j, 0].tolist() == one.meis(N_TOP).tolist()
        assert scope.tops[j, 1].tolist() == one.miis(N_TOP).tolist()
        assert scope.tops[j, 2].tolist() == one.mtis(N_TOP, layer=attr).tolist()
        assert scope.median_tension[j] == pytest.approx(float(np.median(one.tension(attr))))
        # by hand on the raw tensors: f at the centre, P and N per image
        f, pos, neg, _, _, n_attr = _raw_split(case.model, x, layer, attr, case.pick_of(unit))
        assert n_attr == ca
        np.testing.assert_allclose(scope.activation[:, j], f, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(scope.pos[:, j], pos, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(scope.neg[:, j], neg, rtol=1e-4, atol=1e-5)
        # the channel split on the unit's MTIs, summed over images and positions / tokens per last-axis channel
        xm = x[torch.as_tensor(scope.tops[j, 2])]
        _, _, _, pc, nc, _ = _raw_split(case.model, xm, layer, attr, case.pick_of(unit))
        for got, share, totals in ((scope.inhibitors[j], scope.inhibitor_share[j], nc),
                                   (scope.exciters[j], scope.exciter_share[j], pc)):
            np.testing.assert_allclose(share, totals[got] / totals.sum(), rtol=1e-4, atol=1e-6)
            # the kept channels are the largest: none left out is larger than the last one kept (ties aside)
            assert np.delete(totals, got).max() <= totals[got[-1]] * (1 + 1e-4) + 1e-9
            assert totals[got[0]] == pytest.approx(totals.max(), rel=1e-4)
        if hasattr(scope, "inhibitor_effect"):  # removing a listed channel on the MTIs: delta f by hand
            f0 = _raw_f(case.model, xm, layer, attr, case.pick_of(unit))
            tol = 1e-4 * (1 + np.abs(f0).max())
            for effect, chans in ((scope.inhibitor_effect[j], scope.inhibitors[j]),
                                  (scope.exciter_effect[j], scope.exciters[j])):
                assert effect.shape == (N_CHANNELS,)
                for k in (0, N_CHANNELS - 1):
                    by_hand = (_raw_f(case.model, xm, layer, attr, case.pick_of(unit), int(chans[k])) - f0).mean()
                    assert effect[k] == pytest.approx(by_hand, rel=1e-3, abs=tol)


def test_every_unit_of_a_vit_token_layer(vit_case, one_thread):
    _check_every_unit(vit_case)


def test_every_unit_of_a_channels_last_layer(channels_last_case, one_thread):
    _check_every_unit(channels_last_case)


@pytest.mark.parametrize("name", CASES)
def test_a_few_units_have_the_full_layer_s_columns_and_a_site(name, request, tmp_path, one_thread):
    case = request.getfixturevalue(name)
    units = [5, 0, 3, 1, 4, 2]  # in any order: the microscope keeps it
    few = _build(case.model, case.data, case.layer, case.attr, units)
    assert [f.unit for f in few.features] == units
    cols = [case.scope.column(case.layer, u) for u in units]
    for key in ("activation", "pos", "neg"):
        np.testing.assert_allclose(getattr(few, key), getattr(case.scope, key)[:, cols], rtol=1e-5, atol=1e-6)
    for key in ("tops", "inhibitors", "exciters"):
        np.testing.assert_array_equal(getattr(few, key), getattr(case.scope, key)[cols])
    np.testing.assert_allclose(few.inhibitor_share, case.scope.inhibitor_share[cols], rtol=1e-5)
    root = tmp_path / "site"
    index = write_microscope_site(few, str(root))
    assert os.path.abspath(index) == os.path.abspath(root / "index.html")
    with open(index, encoding="utf-8") as handle:
        text = handle.read()
    assert text.count("<tr id=") == len(few)
    pages = sorted(os.path.relpath(os.path.join(d, n), root) for d, _, names in os.walk(root / "units")
                   for n in names if n.endswith(".html"))
    assert pages == sorted(unit_path(case.layer, u) for u in units)
    assert sorted(os.listdir(root / "images")) == sorted(f"{int(i)}.png" for i in few.image_ids)
    for u in units:
        page = root / unit_path(case.layer, u)
        html = page.read_text(encoding="utf-8")
        assert f"{case.layer}" in html and os.path.relpath(page, root) in text.replace("&#x27;", "'")
        for src in re.findall(r'src="([^"]+)"', html):
            assert os.path.exists(os.path.normpath(os.path.join(page.parent, src))), src


def test_channels_last_limits_count_the_last_axis(channels_last_case, one_thread):
    """A unit past the channel count (96, on the last axis) is refused, and so is the whole layer (96 units, not
    the map's height of 16 on axis 1) under max_units=50."""
    case = channels_last_case
    with pytest.raises(InputError, match=rf"units \[96\] are outside layer '{case.layer}', which has 96 units"):
        _build(case.model, case.data, case.layer, case.attr, [3, 96])
    with pytest.raises(InputError, match=r"96 units is more than max_units=50"):
        _build(case.model, case.data, case.layer, case.attr, None, max_units=50)
