"""Bad parameters, by category: non-finite, out of range, fractional where an integer is meant, strings
where a size is meant; each refused with one clear error naming the parameter (library and command line).
Float images other than float32 are converted with a warning; integer images are refused."""
import contextlib
import dataclasses
import io
import typing
import warnings

import pytest
import torch
from conftest import TinyConvNet

import lucent_inhibit as li
from lucent_inhibit.app.cli import main
from lucent_inhibit.app.options import base_type, choices_of, options
from lucent_inhibit.app.stages import STAGES
from lucent_inhibit.atlas import AtlasConfig
from lucent_inhibit.core.features import check_images
from lucent_inhibit.core.settings import PassSettings
from lucent_inhibit.core.validate import InputError, check_size
from lucent_inhibit.synthesis import objectives

NET = TinyConvNet(width=4).eval()
X = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
F, G = li.Feature("conv3", unit=1), li.Feature("conv3", unit=2)
R = li.RenderSettings(steps=1, size=8)
NAN, INF = float("nan"), float("inf")


def _toy_model():
    return li.ToyModel(li.ToyConfig(n=3, m=2))


#: (parameter name as the message names it, call with the value) for numeric parameters of the public API.
NUMERIC = {
    "lr": lambda v: li.RenderSettings(lr=v),
    "steps": lambda v: li.RenderSettings(steps=v),
    "attribute steps": lambda v: li.attribute(NET, X, F, "relu2", method="integrated_gradients", steps=v),
    "internal_batch_size": lambda v: li.attribute(NET, X, F, "relu2", method="integrated_gradients",
                                                  internal_batch_size=v),
    "completeness_threshold": lambda v: li.scan(NET, X, F, "relu2", settings=PassSettings(completeness_threshold=v, progress=False)),
    "batch_size": lambda v: li.scan(NET, X, F, "relu2", settings=PassSettings(batch_size=v, progress=False)),
    "max_images": lambda v: li.completeness(NET, X, [F], "relu2", max_images=v, settings=PassSettings(progress=False)),
    "S": lambda v: li.ToyConfig(S=v),
    "decay": lambda v: li.ToyConfig(decay=v),
    "toy lr": lambda v: li.train_toy(li.ToyConfig(n=3, m=2), steps=2, seeds=(0,), lr=v, progress=False),
    "count": lambda v: li.analyze_toy(_toy_model(), count=v),
    "power": lambda v: objectives.cosdot("conv3", torch.ones(4), power=v),
    "spatial power": lambda v: objectives.spatial_cosdot("conv3", torch.ones(4, 2, 2), power=v),
    "crop": lambda v: objectives.spatial_cosdot("conv3", torch.ones(4, 2, 2), crop=v),
    "pair power": lambda v: objectives.feature_pair(F, G, 0.3, power=v, scale=(1.0, 1.0)),
    "scale[0]": lambda v: objectives.feature_pair(F, G, 0.3, scale=(v, 1.0)),
    "threshold": lambda v: objectives.attribution_mask(torch.rand(4, 3, 3), threshold=v),
    "smooth": lambda v: objectives.attribution_mask(torch.rand(4, 3, 3), smooth=v),
    "reg_lambda": lambda v: li.inversions(NET, X[:1], F, "relu2", render=R, reg_lambda=v),
    "noise": lambda v: li.accentuate(NET, X[:1], objectives.feature(F), render=R, noise=v),
    "sweep power": lambda v: li.sweep_combinations(NET, F, G, n_angles=5, power=v, scale=(1, 1), render=R),
    "min_dist": lambda v: AtlasConfig(min_dist=v),
}
#: Parameters that must be integers: a fraction is refused, not truncated.
INTEGER = {
    "steps": lambda v: li.RenderSettings(steps=v),
    "attribute steps": NUMERIC["attribute steps"],
    "batch_size": NUMERIC["batch_size"],
    "max_images": NUMERIC["max_images"],
    "unit": lambda v: li.Feature("conv3", unit=v),
    "position y": lambda v: li.Feature("conv3", unit=0, position=(v, 1)),
    "cosdot position": lambda v: objectives.cosdot("conv3", torch.ones(4), position=(1, v)),
    "n_angles": lambda v: li.sweep_combinations(NET, F, G, n_angles=v, scale=(1, 1), render=R),
    "n_seeds": lambda v: li.axis_scales(NET, F, G, n_seeds=v, render=R),
    "record_every": lambda v: li.tense_image(NET, F, "relu2", render=R, record_every=v),
    "jitter": lambda v: li.inversions(NET, X[:1], F, "relu2", render=R, jitter=v),
    "count": NUMERIC["count"],
    "n": lambda v: li.ToyConfig(n=v),
    "toy steps": lambda v: li.train_toy(li.ToyConfig(n=3, m=2), steps=v, seeds=(0,), progress=False),
    "seeds[0]": lambda v: li.train_toy(li.ToyConfig(n=3, m=2), steps=2, seeds=(v,), progress=False),
    "n_neighbors": lambda v: AtlasConfig(n_neighbors=v),
    "random_logits n": lambda v: li.random_logits(n=v),
}


def _name(key):
    return key.split(" ")[-1]


def _refused(fn, value, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises((ValueError, TypeError)) as info:
            fn(value)
    message = str(info.value)
    assert name.split("[")[0] in message and len(message.splitlines()) == 1, message
    return message


@pytest.mark.parametrize("value", [NAN, INF, -INF], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("key", list(NUMERIC))
def test_non_finite_parameters_are_refused_naming_the_parameter(key, value):
    _refused(NUMERIC[key], value, _name(key))


@pytest.mark.parametrize("key, value", [
    ("lr", 0), ("lr", -0.1), ("steps", 0), ("attribute steps", 0), ("internal_batch_size", 0),
    ("completeness_threshold", 1.5), ("batch_size", 0), ("max_images", 0), ("S", -0.1), ("S", 1.5), ("decay", -1),
    ("count", 0), ("power", -1), ("crop", 1.0), ("crop", -0.5), ("scale[0]", 0), ("threshold", 1.0), ("smooth", -1),
    ("reg_lambda", -1), ("noise", -1), ("min_dist", -1),
])
def test_out_of_range_parameters_are_refused_naming_the_parameter(key, value):
    _refused(NUMERIC[key], value, _name(key))


@pytest.mark.parametrize("key", list(INTEGER))
def test_fractions_are_refused_not_truncated(key):
    assert "2.5" in _refused(INTEGER[key], 2.5, _name(key))


@pytest.mark.parametrize("key", ["steps", "unit", "n", "count"])
def test_numeric_strings_and_bools_are_not_integers(key):
    for value in ("3", True):
        _refused(INTEGER[key], value, _name(key))


@pytest.mark.parametrize("make", [
    lambda v: check_size("size", v),
    lambda v: objectives.attribution_mask(torch.rand(4, 3, 3), size=v),
    lambda v: li.RenderSettings(size=v),
], ids=["check_size", "attribution_mask", "RenderSettings"])
def test_a_numeric_string_is_not_a_size(make):
    for value in ("88", "8", (8,), (8, 8, 8), (8.5, 8)):
        _refused(make, value, "size")


def test_bytes_are_not_a_size():
    _refused(lambda v: check_size("size", v), b"88", "size")


def test_check_size_accepts_ints_and_pairs():
    assert check_size("size", 8) == (8, 8) and check_size("size", (4, 6)) == (4, 6)
    assert check_size("size", [4.0, 6]) == (4, 6)  # integer-valued floats are integers
    with pytest.raises(InputError, match="size height"):
        check_size("size", (0, 6))


# ------------------------------------------------------------------------------------------------
# image dtypes and shapes
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_float_images_are_converted_with_a_warning(dtype):
    with pytest.warns(UserWarning, match="converted to torch.float32"):
        x = check_images(X.to(dtype))
    assert x.dtype == torch.float32
    with pytest.warns(UserWarning, match="converted"):
        got = li.measure(NET, X.to(dtype), F)
    ref = li.measure(NET, X.to(dtype).float(), F)
    assert torch.equal(got, ref)
    with pytest.warns(UserWarning, match="converted"):
        a = li.attribute(NET, X.to(dtype), F, "relu2")
    assert torch.isfinite(a.scores["relu2"]).all()


@pytest.mark.parametrize("images, match", [
    ((X * 255).to(torch.uint8), "floating point"), (X.to(torch.int64), "floating point"), (X > 0.5, "floating point"),
    (X.to(torch.complex64), "floating point"), (torch.rand(2, 3, 0, 8), "1x1"), (torch.rand(0, 3, 8, 8), "empty"),
    (torch.rand(2, 4, 8, 8), "shape"), (torch.rand(3, 8), "shape"), (X * float("nan"), "NaN"), (X * 2, r"\[0, 1\]"),
    (X.numpy(), "torch.Tensor"), ([X], "torch.Tensor"),
])
def test_bad_images_are_refused_naming_what_is_wrong(images, match):
    with pytest.raises((ValueError, TypeError), match=match):
        li.measure(NET, images, F)


def test_tension_and_totals_check_their_inputs():
    with pytest.raises(ValueError, match="same shape"):
        li.tension(torch.ones(2), torch.ones(3))
    with pytest.raises(TypeError, match="scores must be a torch tensor"):
        li.signed_totals(None)
    assert li.tension(2.0, 3.0) == 2.0 and float(li.tension(torch.tensor(4.0), torch.tensor(1.0), "geometric")) == 2.0


# ------------------------------------------------------------------------------------------------
# the command line: every numeric option refuses non-finite and negative values in one line
# ------------------------------------------------------------------------------------------------
def _numeric_options():
    cases = []
    for name, st in STAGES.items():
        for o in options(st.config):
            tp, _ = base_type(o.type)
            if choices_of(o.type) is not None:
                continue
            if typing.get_origin(tp) is tuple:
                args = typing.get_args(tp)
                n = 1 if args[-1] is Ellipsis else len(args)
                tp = args[0]
            else:
                n = 1
            for value in {float: ("nan", "inf", "-5"), int: ("-5",)}.get(tp, ()):
                cases.append((name, o.flag, [value] * n))
    return cases


@pytest.mark.parametrize("stage, flag, value", _numeric_options(),
                         ids=[f"{s}{f}={v[0]}" for s, f, v in _numeric_options()])
def test_cli_refuses_non_finite_and_negative_numbers_naming_the_option(stage, flag, value, tmp_path):
    required = [a for o in options(STAGES[stage].config) if o.default is dataclasses.MISSING
                for a in (o.flag, str(tmp_path / "o"))]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main([stage, *required, flag, *value])
    lines = err.getvalue().strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("lucent-inhibit: error:") and flag in lines[0]
    assert not (tmp_path / "o").exists()


def _stage_raising(monkeypatch, exc):
    """Every stage run raises ``exc`` (after the command line was parsed and the config validated)."""
    def run_stage(stage, cfg, progress=True):
        raise exc

    monkeypatch.setattr("lucent_inhibit.app.runtime.run_stage", run_stage)


def test_cli_internal_error_is_one_line_and_exit_1_and_debug_shows_it(tmp_path, capsys, monkeypatch):
    for exc in (IndexError("list index out of range"), KeyError("relu9"), RuntimeError("shape mismatch"),
                ZeroDivisionError("division by zero"), TypeError("unsupported operand")):
        _stage_raising(monkeypatch, exc)
        assert main(["toy", "--out", str(tmp_path / "t")]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"internal error: {type(exc).__name__}" in err and "--debug" in err
        with pytest.raises(type(exc)):
            main(["toy", "--debug", "--out", str(tmp_path / "t")])
    assert not (tmp_path / "t").exists()


def test_cli_user_errors_of_the_library_are_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    from lucent_inhibit.app.outputs import OutputError
    from lucent_inhibit.core.layers import AmbiguousLayerError
    from lucent_inhibit.core.rendering import NonFiniteLoss
    from lucent_inhibit.core.results import ResultFileError
    from lucent_inhibit.models.weights import WeightsError

    for exc in (NonFiniteLoss("loss is nan at step 3"), ResultFileError("x.npz holds a ScanResult"),
                InputError("steps must be >= 1, got 0"), PermissionError("cannot write x"),
                WeightsError("w.pt holds pickled code"), AmbiguousLayerError("relu runs twice"),
                OutputError("--out x is a file"), FileNotFoundError("no file y")):
        _stage_raising(monkeypatch, exc)
        assert main(["toy", "--out", str(tmp_path / "t")]) == 2
        assert capsys.readouterr().err.strip() == f"lucent-inhibit: error: {exc}"
