"""Bounds and shapes at the boundary: one validator (``lucent_inhibit.core.validate``) for every integer and size,
documented upper bounds that refuse typos and overflowed values naming the parameter and the accepted range,
and scans whose totals cannot be ranked refused by the atlas selection."""
import contextlib
import dataclasses
import io
import typing
import warnings

import numpy as np
import pytest
import torch
from conftest import TinyConvNet

import lucent_inhibit as li
from lucent_inhibit.app.cli import main
from lucent_inhibit.app.configs import DataConfig, RenderConfig
from lucent_inhibit.app.options import base_type, choices_of, options
from lucent_inhibit.app.stages import STAGES
from lucent_inhibit.core import rendering, validate
from lucent_inhibit.core.features import check_images
from lucent_inhibit.core.settings import PassSettings
from lucent_inhibit.core.validate import InputError
from lucent_inhibit.data.batching import iter_batches
from lucent_inhibit.data.datasets import check_indices
from lucent_inhibit.synthesis import objectives, param, transform

NET = TinyConvNet(width=4).eval()
X = torch.rand(12, 3, 8, 8, generator=torch.Generator().manual_seed(0))
F = li.Feature("conv3", unit=1)
HUGE = 10 ** 20


# ------------------------------------------------------------------------------------------------
# one validator: the same message for the same bad size, wherever it is given
# ------------------------------------------------------------------------------------------------
SIZE_TAKERS = {
    "validate": lambda v: validate.check_size("size", v),
    "RenderSettings": lambda v: li.RenderSettings(size=v),
    "RenderSettings.model_size": lambda v: li.RenderSettings(model_size=v),
    "param.build": lambda v: param.build("fourier", v),
    "param.natural_magnitude": lambda v: param.natural_magnitude(v),
    "box_crop": lambda v: transform.box_crop(size=v),
    "attribution_mask": lambda v: objectives.attribution_mask(torch.rand(4, 3, 3), size=v),
}


@pytest.mark.parametrize("take", list(SIZE_TAKERS.values()), ids=list(SIZE_TAKERS))
def test_every_size_is_checked_by_the_one_validator(take):
    for value in (b"88", "88", (8,), (8, 8, 8), np.array([8, 8])):
        with pytest.raises(InputError, match=r"size must be an int or a pair \(height, width\) of ints, got"):
            take(value)
    with pytest.raises(InputError, match=r"size height must be an integer, got 8.5"):
        take((8.5, 8))
    with pytest.raises(InputError, match=r"size width must be <= 4096, got 1000000000 \(accepted: \d+ to 4096\)"):
        take((16, 10 ** 9))


def test_render_and_param_keep_no_validators_of_their_own():
    for module in (param, rendering, transform):
        assert getattr(module, "check_size", validate.check_size) is validate.check_size
        assert getattr(module, "check_int", validate.check_int) is validate.check_int and not hasattr(module, "_check_int")
    assert li.RenderSettings(size=[16.0, 24]).hw(8) == (16, 24)  # integer-valued floats are integers


# ------------------------------------------------------------------------------------------------
# documented upper bounds
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, message", [
    (lambda: li.RenderSettings(steps=HUGE), r"render setting steps must be <= 1000000, got 10{20} \(accepted: 1 to 1000000\)"),
    (lambda: li.RenderSettings(seed=2 ** 32), r"render setting seed must be <= 4294967295"),
    (lambda: li.sample_crops(n=10 ** 18), r"n must be <= 10000000, got 10{18} \(accepted: 1 to 10000000\)"),
    (lambda: li.sample_crops(n=2, size=10 ** 9), r"size must be <= 4096"),
    (lambda: li.sample_crops(n=2, seed=HUGE), r"seed must be <= 4294967295"),
    (lambda: param.build("phase", 8, batch=10 ** 18), r"batch must be <= 4096"),
    (lambda: transform.shift(HUGE), r"max_shift must be <= 4096"),
    (lambda: DataConfig(n_images=10 ** 18), r"--n-images must be <= 10000000"),
    (lambda: DataConfig(batch_size=HUGE), r"--batch-size must be <= 4096"),
    (lambda: DataConfig(limit=HUGE), r"--limit must be <= 10000000"),
    (lambda: RenderConfig(steps=HUGE), r"--steps must be <= 1000000"),
    (lambda: RenderConfig(size=10 ** 9), r"--render-size must be <= 4096"),
    (lambda: RenderConfig(seed=-1), r"--render-seed must be >= 0, got -1 \(accepted: 0 to 4294967295\)"),
    (lambda: li.load_image("x.png", size=10 ** 9), r"size must be <= 4096"),
    (lambda: li.ImageFolder(".", size=0), r"size must be >= 1"),
    (lambda: li.ImageFolder(None), r"root must be a file or folder path"),
    (lambda: list(iter_batches(X, 10 ** 9)), r"batch_size must be <= 4096"),
])
def test_huge_counts_and_sizes_are_refused_naming_the_range(call, message):
    with pytest.raises(InputError, match=message):
        call()


def test_the_bounds_are_generous():
    assert li.RenderSettings(steps=validate.MAX_STEPS, size=validate.MAX_SIDE).hw(8) == (4096, 4096)
    assert len(li.sample_crops(n=validate.MAX_IMAGES, size=8)) == 10 ** 7  # lazy: nothing is read
    assert DataConfig(n_images=validate.MAX_IMAGES, batch_size=validate.MAX_BATCH).n_images == 10 ** 7


def test_dataset_indices_are_checked():
    assert check_indices("indices", range(2, 5), 12).tolist() == [2, 3, 4]
    assert check_indices("indices", [], 12).shape == (0,)
    for bad, match in (([0.5], "integer dataset indices"), ([[1, 2]], "1-D"), ([12], r"\[0, 12\)"), ([-1], "-1"),
                       ([True], "integer dataset indices"), (["1"], "integer dataset indices")):
        with pytest.raises(InputError, match=match):
            check_indices("indices", bad, 12)
    with pytest.raises(InputError, match="indices must lie in"):
        list(iter_batches(X, 4, indices=[3, 40]))


def _integer_options():
    cases = []
    for name, st in STAGES.items():
        for o in options(st.config):
            tp, _ = base_type(o.type)
            args = typing.get_args(tp) if typing.get_origin(tp) is tuple else (tp,)
            if int in args and choices_of(o.type) is None:
                cases.append((name, o.flag, 1 if args[-1] is Ellipsis or len(args) == 1 else len(args)))
    return cases


@pytest.mark.parametrize("stage, flag, n", _integer_options(), ids=[f"{s}{f}" for s, f, _ in _integer_options()])
def test_cli_refuses_huge_integers_naming_the_option_and_range(stage, flag, n, tmp_path):
    required = [a for o in options(STAGES[stage].config) if o.default is dataclasses.MISSING
                for a in (o.flag, str(tmp_path / "o"))]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main([stage, *required, flag, *[str(HUGE)] * n])
    lines = err.getvalue().strip().splitlines()
    assert code == 2 and len(lines) == 1 and flag in lines[0] and "must be <= " in lines[0], lines
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------------
# features and images: directions, flags
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("direction, match", [
    ("abc", "vector of numbers"), ([[1.0, 2.0], [3.0, 4.0]], r"vector \(C,\)"), ([], "non-empty"),
    ([1.0, float("nan")], "NaN"), (torch.ones(4, dtype=torch.bool), "real-valued"), ([1 + 2j, 1], "real numbers"),
    ({"a": 1}, "real numbers, got ndarray of dtype object"),
])
def test_bad_directions_are_refused(direction, match):
    with pytest.raises(InputError, match=match):
        li.Feature("conv3", direction=direction)


def test_directions_of_any_real_dtype_and_singleton_axes_are_vectors():
    for d in (torch.ones(4, dtype=torch.float64), torch.ones(1, 4, dtype=torch.bfloat16), np.ones((4, 1)), [1, 1, 1, 1]):
        f = li.Feature("conv3", direction=d)
        assert f.direction.dtype == torch.float32 and f.direction.shape == (4,)
    assert torch.isfinite(li.measure(NET, X, f)).all()


def test_unit_and_preprocess_are_checked_by_type():
    with pytest.raises(InputError, match="unit must be an integer, got 2.5"):
        li.Feature("conv3", unit=2.5)
    with pytest.raises(InputError, match="unit must be >= 0, got -1"):
        li.Feature("conv3", unit=-1)
    with pytest.raises(TypeError, match="preprocess must be True or False, got 'yes'"):
        check_images(X, preprocess="yes")


# ------------------------------------------------------------------------------------------------
# atlas selection: a scan whose totals cannot be ranked
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scanned():
    return li.scan(NET, X, F, "relu2", settings=PassSettings(batch_size=6, progress=False))


def test_select_images_needs_a_scan():
    for bad in (None, 3, X, {"layers": ["relu2"]}):
        with pytest.raises(InputError, match="scan must be a ScanResult .* got"):
            li.select_images(bad, top_abs=2)


def test_scan_totals_are_finite_and_non_negative(scanned):
    assert np.isfinite(scanned.pos).all() and np.isfinite(scanned.neg).all() and (scanned.neg >= 0).all()
    assert len(li.select_images(scanned, top_abs=3, top_tension=2, score="min")) >= 3


def test_a_model_that_overflows_gives_a_scan_that_selection_refuses():
    net = TinyConvNet(width=4).eval()
    with torch.no_grad():
        net.conv2.weight[0, 0, 0, 0] = float("inf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # r is NaN: the scan warns that completeness is undefined
        bad = li.scan(net, X, F, "relu2", settings=PassSettings(batch_size=6, progress=False))
    with pytest.raises(InputError, match=r"NaN or infinite for 12 of 12 images .*dataset indices \[0, 1, 2, 3, 4\]"):
        li.select_images(bad, top_tension=3, score="min")


@pytest.mark.parametrize("field, value, match", [
    ("neg", float("nan"), r"N at 'relu2' is NaN or infinite for 1 of 12 images \(dataset indices \[4\]\)"),
    ("pos", float("inf"), r"P at 'relu2' is NaN or infinite"),
    ("activation", float("nan"), r"activation is NaN or infinite"),
    ("neg", -1.0, r"N at 'relu2' is negative for 1 images \(dataset indices \[4\]\)"),
])
def test_selection_refuses_totals_that_cannot_be_ranked(scanned, field, value, match):
    arr = getattr(scanned, field).copy()
    arr[4] = value
    broken = dataclasses.replace(scanned, **{field: arr})
    for criteria in ({"top_tension": 2, "score": "min"}, {"top_abs": 2}, {"top_activation": 2}):
        with pytest.raises(InputError, match=match):
            li.select_images(broken, **criteria)


# ------------------------------------------------------------------------------------------------
# parameterizations, transforms and dataset items: flags, devices, generators, indices
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, error, match", [
    (lambda: param.fourier_image(8, with_seed="yes"), TypeError, "with_seed must be True or False"),
    (lambda: param.fourier_image(8, device=2.5), InputError, "device must be a torch.device or a string"),
    (lambda: param.phase_image(8, device="gpu7"), InputError, "device 'gpu7' is not a torch device"),
    (lambda: param.build("fourier", 8, generator=3), InputError, "generator must be a torch.Generator or None"),
    (lambda: transform.box_crop(generator=0.5), InputError, "generator must be a torch.Generator"),
    (lambda: transform.shift(2, generator="g"), InputError, "generator must be a torch.Generator"),
    (lambda: li.RenderSettings(progress="no"), TypeError, "progress must be True or False"),
    (lambda: li.RenderSettings(transforms=2.5), InputError, "transforms must be a list of callables"),
    (lambda: param.masked(param.fourier_image(8), "3"), InputError, "mask must be a tensor, an array or a number"),
    (lambda: param.masked(param.fourier_image(8), torch.ones(8, 8), n=5), InputError, "n must be <= 1"),
])
def test_parameterization_and_transform_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_boolean_masks_are_weights():
    params, image_f = param.masked(param.fourier_image(8), torch.ones(8, 8, dtype=torch.bool))
    assert image_f().shape == (1, 3, 8, 8)


def test_dataset_items_are_checked():
    from lucent_inhibit.data.datasets import dataset_item

    for dataset, index, match in ((X, 12, r"dataset index must be <= 11, got 12"), (X, 1.5, "must be an integer"),
                                  ([], 0, "the dataset is empty"), (3.0, 0, "dataset must be an image tensor"),
                                  (["ab"], 0, "dataset item 0 is a str")):
        with pytest.raises(InputError, match=match):
            dataset_item(dataset, index)
    assert dataset_item([X[0]], 0).shape == (3, 8, 8)
