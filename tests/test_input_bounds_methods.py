"""Bad input to the method libraries (completeness, toy models, hooks, accentuation, synthesis, inversions,
combinations, plots) and to the stages' float options: every class of bad value (huge counts and seeds, wrong
types, NaN / infinite or out-of-range numbers, non-results) is refused at the boundary with one message naming
the parameter and what it accepts, never an internal exception or a run without end."""
import contextlib
import dataclasses
import io
import math
import typing
import warnings

import numpy as np
import pytest
import torch
from conftest import TinyConvNet

import lucent_inhibit as li
from lucent_inhibit.app import configs
from lucent_inhibit.app.cli import main
from lucent_inhibit.app.options import base_type, options
from lucent_inhibit.app.stages import STAGES
from lucent_inhibit.combinations import axis_scales, check_angles, sweep_combinations
from lucent_inhibit.core import hooks, validate
from lucent_inhibit.core.validate import MAX_FRACTION, MAX_MIN_DIST, InputError
from lucent_inhibit.scanning import figures as plots
from lucent_inhibit.synthesis import objectives
from lucent_inhibit.toy import k_feature_inputs

NET = TinyConvNet(width=4).eval()
X = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
IMG = X[:1]
F = li.Feature("conv3", unit=1)
G = li.Feature("conv3", unit=2)
R = li.RenderSettings(steps=1, size=8)
HUGE = 10 ** 20
RANGE = r"must be <= \d+(\.\d+)?, got .*"


# ------------------------------------------------------------------------------------------------
# huge counts, seeds and exponents: refused naming the parameter and the accepted range
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, name", [
    (lambda: li.random_logits(n_classes=HUGE), "n_classes"),
    (lambda: li.random_logits(seed=HUGE), "seed"),
    (lambda: li.ToyConfig(n=HUGE), "n"),
    (lambda: li.ToyModel(li.ToyConfig(), seed=HUGE), "seed"),
    (lambda: li.inhibition_model(n=HUGE), "n"),
    (lambda: li.train_toy(batch_size=HUGE, progress=False), "batch_size"),
    (lambda: li.train_toy(eval_batch=HUGE, progress=False), "eval_batch"),
    (lambda: li.train_toy(steps=HUGE, progress=False), "steps"),
    (lambda: li.train_toy(seeds=[HUGE], progress=False), r"seeds\[0\]"),
    (lambda: li.analyze_toy(li.inhibition_model(), count=HUGE), "count"),
    (lambda: k_feature_inputs(li.ToyConfig(), 1, 2, generator=HUGE), r"generator \(seed\)"),
    (lambda: li.tense_image(NET, F, "relu2", render=R, batch=HUGE), "batch"),
    (lambda: li.inversions(NET, IMG, F, "relu2", render=R, power=HUGE), "power"),
    (lambda: li.inversions(NET, IMG, F, "relu2", render=R, jitter=HUGE), "jitter"),
    (lambda: objectives.cosdot("conv3", torch.ones(4), power=HUGE), "power"),
    (lambda: objectives.cosdot_value(torch.ones(2, 4), torch.ones(4), power=1e300), "power"),
    (lambda: sweep_combinations(NET, F, G, n_angles=HUGE), "n_angles"),
    (lambda: sweep_combinations(NET, F, G, n_seeds=HUGE), "n_seeds"),
    (lambda: sweep_combinations(NET, F, G, chunk=HUGE), "chunk"),
    (lambda: sweep_combinations(NET, F, G, n_angles=10 ** 6, n_seeds=10 ** 6), r"n_angles \* n_seeds"),
    (lambda: axis_scales(NET, F, G, n_seeds=HUGE), "n_seeds"),
])
def test_huge_values_are_refused_naming_the_parameter(call, name):
    with pytest.raises(InputError, match=rf"^{name} {RANGE}"):
        call()


def test_the_method_bounds_are_generous():
    assert len(li.random_logits(n=5, n_classes=10 ** 7, seed=2 ** 32 - 1)) == 5
    assert li.ToyModel(li.ToyConfig(n=3, m=2), seed=2 ** 32 - 1).config.n == 3
    assert check_angles(10 ** 7) == 10 ** 7 and objectives.check_power(objectives.MAX_POWER) == 64
    value = objectives.cosdot_value(torch.tensor([[1.0, 1.0]]), torch.tensor([1.0, 0.0]), power=objectives.MAX_POWER)
    assert float(value) > 0  # |cos|^64 at 45 degrees is still a normal float32


def test_the_stages_restate_the_libraries_power_bound():
    assert validate.MAX_POWER is objectives.MAX_POWER  # one constant, in validate


# ------------------------------------------------------------------------------------------------
# wrong types: not a feature list, not a number, not a tensor, not a layer name, not an objective
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, error, match", [
    (lambda: li.completeness(NET, X, None, ["relu2"], settings=PassSettings(progress=False)), InputError,
     "features must be a Feature or a list of Features, got None"),
    (lambda: li.completeness(NET, X, "conv3", ["relu2"], settings=PassSettings(progress=False)), InputError, "features must be"),
    (lambda: li.random_logits(n=HUGE), InputError, r"n must be between 1 and n_classes=1000, got 10{20}"),
    (lambda: li.warn_if_incomplete("3", F, "relu2"), InputError, "r must be a number or None, got '3'"),
    (lambda: li.warn_if_incomplete(0.9, F, "relu2", slope=[1]), InputError, "slope must be a number or None"),
    (lambda: hooks.capture(NET, 2.5, ["relu2"]), InputError, r"x must be a batch tensor \(B, ...\) \(the model input\), got float"),
    (lambda: hooks.capture(NET, torch.tensor(1.0), ["relu2"]), InputError, "x must be a batch tensor .* got a 0-d tensor"),
    (lambda: hooks.capture(NET, X, None), InputError, "names must be a layer name or a list of layer names"),
    (lambda: hooks.capture(NET, X, [["relu2"]]), InputError, r"names\[0\] must be a string"),
    (lambda: hooks.capture(NET, X, ["relu2"], replace=3), InputError, "replace must map layer names"),
    (lambda: hooks.capture(NET, X, ["relu2"], stop_at=2.5), InputError, "stop_at must be a string"),
    (lambda: get_layer(NET, []), InputError, r"layer name must be a string \(a Lucent layer name\), got \[\]"),
    (lambda: check_layer_names(NET, [{}]), InputError, "layer name must be a string"),
    (lambda: li.accentuate(NET, IMG, "conv3:1", render=R, crop_range=2.5), InputError,
     r"crop_range must be a pair \(min, max\) of crop side fractions in \(0, 1\], got 2.5"),
    (lambda: li.accentuate(NET, IMG, "conv3:1", render=R, crop_range=()), InputError, "crop_range must be a pair"),
    (lambda: li.accentuate(NET, IMG, "conv3:1", render=R, crop_range=(0.5, float("nan"))), InputError,
     "crop_range max must be finite"),
    (lambda: li.accentuate(NET, IMG, "conv3:1", render=R, crop_range=(0.8, 0.2)), InputError, "min <= max"),
    (lambda: li.accentuate(NET, IMG, 2.5, render=R), InputError, "objective must be a Lucent Objective"),
    (lambda: li.accentuate(NET, IMG, "conv3:1", render=R, callback=3), InputError, "callback must be a function"),
    (lambda: li.tense_image(NET, F, "relu2", render=R, extra=2.5), InputError, "extra must be a Lucent Objective"),
    (lambda: li.inversions(NET, IMG, F, "relu2", render=R, seeded=torch.ones(2)), TypeError,
     "seeded must be True or False"),
])
def test_wrong_types_are_refused_naming_the_parameter(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_layer_names_accept_one_name_or_any_iterable_of_names():
    assert list(hooks.capture(NET, X, "relu2")) == ["relu2"]
    assert set(hooks.capture(NET, X, ("relu1", "relu2"))) == {"relu1", "relu2"}
    assert set(hooks.capture(NET, X, dict.fromkeys(["relu1"]).keys())) == {"relu1"}


# ------------------------------------------------------------------------------------------------
# plots: a non-result, and counts / positions / opacities that are NaN, infinite or out of range
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scanned():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return li.scan(NET, X, F, "relu2", settings=PassSettings(batch_size=6, progress=False))


NOT_RESULTS = [None, 3, {"layers": ["relu2"]}, X]


@pytest.mark.parametrize("bad", NOT_RESULTS, ids=["None", "int", "dict", "tensor"])
def test_plots_refuse_what_is_not_a_result(bad, tmp_path):
    calls = [lambda: plots.plot_scan_scatter(bad), lambda: plots.plot_image_grid(bad, dataset=X, indices=[0]),
             lambda: plots.plot_scan_overlay(bad, dataset=X, index=0),
             lambda: plots.save_scan_figures(bad, str(tmp_path), dataset=X),
             lambda: plot_completeness(bad, str(tmp_path / "c.png")),
             lambda: plot_attribution_totals(bad, str(tmp_path / "a.png"))]
    for call in calls:
        with pytest.raises(InputError, match=r"(result|attribution) must be a (ScanResult|CompletenessResult|Attrib)"):
            call()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1, 0, 2.5, "3", None, HUGE])
def test_plot_counts_and_positions_are_checked(scanned, value, tmp_path):
    calls = {"k": lambda: plots.plot_scan_scatter(scanned, k=value),
             "ncols": lambda: plots.plot_image_grid(scanned, dataset=X, indices=[0, 1], ncols=value),
             "k ": lambda: plots.save_scan_figures(scanned, str(tmp_path), dataset=X, k=value)}
    if value != 0:  # index 0 is in the scan
        calls[r"indices\[1\]"] = lambda: plots.plot_image_grid(scanned, dataset=X, indices=[0, value])
        calls["index"] = lambda: plots.plot_scan_overlay(scanned, dataset=X, index=value)
        calls[r"highlight\[0\]"] = lambda: plots.plot_scan_scatter(scanned, highlight=[value])
    for name, call in calls.items():
        with pytest.raises(InputError, match=rf"^{name.strip()} must be"):
            call()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("alpha", [None, float("nan"), float("inf"), -0.1, 1.5, "0.5"])
def test_overlay_opacity_is_checked(alpha):
    m = np.ones((2, 2), dtype=np.float32)
    with pytest.raises(InputError, match="^alpha must be"):
        plots.plot_signed_overlay(torch.rand(3, 8, 8), positive=m, negative=m, alpha=alpha)


def test_plot_indices_must_be_in_the_scan(scanned):
    part = dataclasses.replace(scanned, indices=scanned.indices + 100)
    with pytest.raises(InputError, match=r"indices\[0\] must be a dataset index of the scan \(6 images\), got 3"):
        plots.plot_image_grid(part, dataset=X, indices=[3])
    with pytest.raises(InputError, match="index must be a dataset index of the scan"):
        plots.plot_scan_overlay(part, dataset=X, index=3)


def test_plots_still_draw_valid_input(scanned, tmp_path):
    fig = plots.plot_image_grid(scanned, dataset=X, indices=np.array([0, 1, 2]), ncols=2.0)  # integer-valued floats are integers
    assert len(fig.axes) == 4
    close(fig)
    close(plots.plot_signed_overlay(torch.rand(3, 8, 8), positive=np.ones((2, 2)), negative=np.zeros((2, 2)), alpha=1))


# ------------------------------------------------------------------------------------------------
# the stages' float options: every one has a finite documented range
# ------------------------------------------------------------------------------------------------
def _float_options():
    cases = []
    for name, st in STAGES.items():
        for o in options(st.config):
            tp, _ = base_type(o.type)
            if float in (typing.get_args(tp) if typing.get_origin(tp) is tuple else (tp,)):
                cases.append((name, o.flag))
    return cases


FLOATS = _float_options()


def test_the_float_options_are_the_known_ones():
    flags = {f for _, f in FLOATS}
    assert {"--lr", "--power", "--min-dist", "--fraction"} <= flags and len(FLOATS) >= 12


@pytest.mark.parametrize("stage, flag", FLOATS, ids=[f"{s}{f}" for s, f in FLOATS])
@pytest.mark.parametrize("value, message", [("1e300", "must be <= "), ("nan", "must be finite"),
                                            ("inf", "must be finite"), ("-1e300", "must be >")])
def test_cli_refuses_float_options_out_of_range(stage, flag, value, message, tmp_path):
    required = [a for o in options(STAGES[stage].config) if o.default is dataclasses.MISSING
                for a in (o.flag, str(tmp_path / "o"))]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main([stage, *required, f"{flag}={value}"])
    lines = err.getvalue().strip().splitlines()
    assert code == 2 and len(lines) == 1 and flag in lines[0] and message in lines[0], lines
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("make, bound", [
    (lambda v: configs.RenderConfig(lr=v), validate.MAX_LR),
    (lambda v: STAGES["atlas"].config(out="o", power=v), validate.MAX_POWER),
    (lambda v: STAGES["atlas"].config(out="o", min_dist=v), MAX_MIN_DIST),
    (lambda v: STAGES["inhibitors"].config(out="o", fraction=v), MAX_FRACTION),
    (lambda v: STAGES["toy"].config(out="o", lr=v), validate.MAX_LR),
])
def test_float_bounds_are_inclusive_and_finite(make, bound):
    make(bound)  # the documented largest value is accepted
    with pytest.raises(InputError, match=f"must be <= {bound}"):
        make(math.nextafter(bound, math.inf))


# ------------------------------------------------------------------------------------------------
# property: arbitrary values for the methods' numeric and shape parameters (the strategies and the
# finite-result-or-documented-error rule of test_property)
# ------------------------------------------------------------------------------------------------
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_property import ANY, SETTINGS, WEIRD, arguments, call, tensors  # noqa: E402
from test_property import HUGE as HUGE_VALUES

from lucent_inhibit.attribution.figures import plot_attribution_totals, plot_completeness
from lucent_inhibit.core.figures import close
from lucent_inhibit.core.layers import check_layer_names, get_layer, hook_count
from lucent_inhibit.core.settings import PassSettings

COUNTS = st.one_of(ANY, HUGE_VALUES, st.integers(-3, 12))


@SETTINGS
@given(kw=arguments({"n": st.integers(1, 5), "seed": st.integers(0, 9), "n_classes": st.integers(5, 50)},
                    {k: COUNTS for k in ("n", "seed", "n_classes")}))
def test_random_logits(kw):
    out = call(li.random_logits, **kw)
    assert out is None or len({f.unit for f in out}) == len(out) == kw["n"]


@SETTINGS
@given(kw=arguments({"n": st.integers(2, 4), "m": st.integers(1, 4), "seed": st.integers(0, 9),
                     "k": st.integers(1, 2), "count": st.integers(1, 4), "generator": st.integers(0, 9)},
                    {k: COUNTS for k in ("n", "m", "seed", "k", "count", "generator")}))
def test_toy_models_and_inputs(kw):
    cfg = call(li.ToyConfig, n=kw["n"], m=kw["m"])
    model = None if cfg is None else call(li.ToyModel, cfg, seed=kw["seed"])
    if model is not None:
        out = call(k_feature_inputs, cfg, kw["k"], kw["count"], generator=kw["generator"])
        if out is not None:
            assert out[0].shape == (kw["count"], cfg.n_inputs) and (out[1].sum(1) == kw["k"]).all()
        call(li.analyze_toy, model, count=kw["count"], seed=kw["seed"])


@SETTINGS
@given(power=st.one_of(st.floats(0, 64), ANY, HUGE_VALUES), n_angles=COUNTS, n_seeds=COUNTS)
def test_cosdot_powers_and_sweep_counts(power, n_angles, n_seeds):
    call(objectives.cosdot_value, torch.rand(3, 4), torch.rand(4), power=power)
    call(check_angles, n_angles)
    call(axis_scales, NET, F, F, n_seeds=n_seeds)  # the same feature twice: refused before any render


@SETTINGS
@given(x=st.one_of(tensors(), WEIRD), names=st.one_of(st.sampled_from(["relu2", ["relu1", "conv3"], ("input",)]),
                                                      WEIRD, st.lists(WEIRD, max_size=2)),
       stop_at=st.one_of(st.none(), st.sampled_from(["relu1", "nope", False]), WEIRD))
def test_capture(x, names, stop_at):
    before = hook_count(NET)
    call(hooks.capture, NET, x, names, stop_at=stop_at, finite=False)  # random inputs may hold NaN
    assert hook_count(NET) == before


STAGE_FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), ANY, HUGE_VALUES)


@SETTINGS
@given(field=st.sampled_from([("atlas", "power"), ("atlas", "min_dist"), ("atlas", "crop"), ("invert", "power"),
                              ("combos", "power"), ("inhibitors", "fraction"), ("toy", "lr"), ("toy", "decay")]),
       value=STAGE_FLOATS, lr=STAGE_FLOATS)
def test_stage_float_options(field, value, lr):
    cfg = call(STAGES[field[0]].config, out="o", **{field[1]: value}, finite=False)
    if cfg is not None:
        assert math.isfinite(getattr(cfg, field[1]))
    render = call(configs.RenderConfig, lr=lr)
    assert render is None or 0 < render.lr <= validate.MAX_LR


# -- attribution ------------------------------------------------------------------------------------------
_FEATURE = li.Feature("conv3", unit=0)
_IMAGES = torch.rand(2, 3, 16, 16)


@pytest.mark.parametrize("call, match", [
    (lambda: li.attribute(NET, _IMAGES, _FEATURE, None), "layers must be a layer name or a list"),
    (lambda: li.attribute(NET, _IMAGES, _FEATURE, 2.5), "layers must be a layer name or a list"),
    (lambda: li.attribute(NET, _IMAGES, _FEATURE, ["relu2", 3]), r"layers\[1\]"),
    (lambda: li.measure(NET, _IMAGES, _FEATURE, preprocess=torch.tensor([1.0, 2.0])), "preprocess must be True or False"),
    (lambda: li.attribute(NET, _IMAGES, _FEATURE, "relu2", method="integrated_gradients", steps=10 ** 20),
     "steps must be"),
    (lambda: li.tension(torch.rand(3), "2.5"), "n must be a number or a float tensor or numpy array, got str"),
    (lambda: li.tension("3", np.ones(3)), "p must be a number or a float tensor or numpy array, got str"),
    (lambda: li.tension(torch.rand(3), np.ones(3)), "must both be tensors or both numpy arrays"),
    (lambda: li.tension(torch.ones(3, dtype=torch.bool), torch.ones(3, dtype=torch.bool)), "of torch.bool"),
])
def test_attribution_refuses_bad_layers_flags_steps_and_totals(call, match):
    with pytest.raises((InputError, TypeError), match=match):
        call()
    assert hook_count(NET) == 0
