"""Property: the public API's numeric and shape parameters, driven with arbitrary values (ints, floats incl.
nan/inf, negative, huge, strings, tuples of wrong length, tensors of odd shapes and dtypes), give a finite
result or one of the library's documented errors (ValueError / TypeError and their subclasses,
NonFiniteLoss); never an internal exception (IndexError, RuntimeError, KeyError, ZeroDivisionError, ...)."""
import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch
from conftest import TinyConvNet

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import lucent_inhibit as li  # noqa: E402
from lucent_inhibit import objectives  # noqa: E402
from lucent_inhibit.features import check_images  # noqa: E402
from lucent_inhibit.rendering import NonFiniteLoss  # noqa: E402

DOCUMENTED = (ValueError, TypeError, NonFiniteLoss)
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

NET = TinyConvNet(width=4).eval()
IMAGES = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
IMAGES4 = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))  # r needs >= 3 images
FEATURE = li.Feature("conv3", unit=1)

# ------------------------------------------------------------------------------------------------
# strategies
# ------------------------------------------------------------------------------------------------
HUGE = st.sampled_from([10 ** 12, -(10 ** 12), 2 ** 63, 10 ** 40, 1e300, -1e300])
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=64)
STRINGS = st.sampled_from(["", "3", "0.5", "nan", "inf", "-1", "abc", "8,8"])
WEIRD = st.one_of(st.none(), st.booleans(), HUGE, FLOATS, STRINGS, st.just([]), st.just({}),
                  st.tuples(st.integers(-2, 9)), st.tuples(*[st.integers(-2, 9)] * 3),
                  st.just(np.float32("nan")), st.just(np.int64(3)), st.just(torch.tensor(2)))
SMALL = st.integers(-3, 9)
SCALAR = st.one_of(SMALL, st.floats(-3, 9), WEIRD)
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.uint8, torch.bool,
          torch.complex64]


@st.composite
def tensors(draw, max_dim=5, max_side=5):
    shape = draw(st.lists(st.integers(0, max_side), min_size=0, max_size=max_dim))
    dtype = draw(st.sampled_from(DTYPES))
    fill = draw(st.sampled_from(["rand", "rand", "nan", "inf", "negative", "large"]))
    t = torch.rand(shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 3))))
    t = {"rand": t, "nan": t.masked_fill(t > 0.5, float("nan")), "inf": t.masked_fill(t > 0.5, float("inf")),
         "negative": -t, "large": t * 1e6}[fill]
    return t.to(dtype)


@st.composite
def images(draw):
    """Mostly image-like (B, 3, H, W) batches of every dtype and fill, some of arbitrary shape."""
    if draw(st.booleans()):
        return draw(tensors())
    b, h, w = draw(st.integers(0, 2)), draw(st.integers(0, 9)), draw(st.integers(0, 9))
    t = torch.rand(b, 3, h, w)
    fill = draw(st.sampled_from(["ok", "ok", "nan", "big", "neg"]))
    t = {"ok": t, "nan": t.masked_fill(t > 0.7, float("nan")), "big": t * 3, "neg": t - 2}[fill]
    return t.to(draw(st.sampled_from(DTYPES)))


ANY = st.one_of(SCALAR, tensors())


def _finite(value, path="result"):
    """Every float number / tensor / array reachable from ``value`` is finite."""
    if torch.is_tensor(value):
        if value.is_floating_point() or value.is_complex():
            assert torch.isfinite(value).all(), path
    elif isinstance(value, np.ndarray):
        if value.dtype.kind in "fc":
            assert np.isfinite(value).all(), path
    elif isinstance(value, float):
        assert math.isfinite(value), path
    elif isinstance(value, dict):
        for k, v in value.items():
            _finite(v, f"{path}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _finite(v, f"{path}[{i}]")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _finite(getattr(value, f.name), f"{path}.{f.name}")


def call(fn, *args, **kwargs):
    """``fn(...)``: a finite result, or a documented error with a message; anything else fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = fn(*args, **kwargs)
        except DOCUMENTED as exc:
            assert str(exc), f"{type(exc).__name__} without a message"
            return None
    _finite(out)
    return out


# ------------------------------------------------------------------------------------------------
# features and attribution
# ------------------------------------------------------------------------------------------------
@SETTINGS
@given(unit=st.one_of(SMALL, WEIRD), position=st.one_of(st.sampled_from(["center", "mean", "middle"]),
                                                         st.tuples(SCALAR, SCALAR), WEIRD),
       direction=st.one_of(st.none(), tensors(max_dim=2)), layer=st.sampled_from(["conv3", "relu2", "nope", 3]))
def test_feature_and_measure(unit, position, direction, layer):
    f = call(li.Feature, layer, unit=unit, direction=direction, position=position)
    if f is not None:
        call(li.measure, NET, IMAGES, f)


@SETTINGS
@given(imgs=images(), preprocess=st.one_of(st.booleans(), WEIRD))
def test_check_images_and_measure(imgs, preprocess):
    x = call(check_images, imgs, preprocess=preprocess)
    if x is not None:
        assert x.dtype == torch.float32 and x.dim() == 4 and x.shape[1] == 3
    call(li.measure, NET, imgs, FEATURE)


@SETTINGS
@given(imgs=st.one_of(st.just(IMAGES), images()), steps=st.one_of(st.integers(-2, 6), WEIRD.filter(
    lambda v: not (isinstance(v, int) and v > 100))), method=st.sampled_from(
    ["gradient_x_activation", "integrated_gradients", "ig", 0]),
    internal_batch_size=st.one_of(st.none(), SMALL, WEIRD.filter(lambda v: not (isinstance(v, int) and v > 100))),
    layers=st.sampled_from(["relu2", ["relu1", "relu2"], "input", "nope", [], 5]))
def test_attribute(imgs, steps, method, internal_batch_size, layers):
    call(li.attribute, NET, imgs, FEATURE, layers, method=method, steps=steps,
         internal_batch_size=internal_batch_size)


@SETTINGS
@given(scores=st.one_of(tensors(), WEIRD), granularity=st.sampled_from(["element", "channel", "pixel", 1]),
       norm=st.sampled_from(["l1", "l2", "l3", None]))
def test_signed_totals(scores, granularity, norm):
    call(li.signed_totals, scores, granularity=granularity, norm=norm)


@SETTINGS
@given(p=st.one_of(tensors(max_dim=2), FLOATS, WEIRD), n=st.one_of(tensors(max_dim=2), FLOATS, WEIRD),
       score=st.sampled_from(["min", "geometric", "harmonic", "product", "max", 2]))
def test_tension(p, n, score):
    call(li.tension, p, n, score=score)


# ------------------------------------------------------------------------------------------------
# settings and configs
# ------------------------------------------------------------------------------------------------
@SETTINGS
@given(steps=SCALAR, lr=SCALAR, size=st.one_of(SCALAR, st.tuples(SCALAR, SCALAR)),
       model_size=st.one_of(SCALAR, st.tuples(SCALAR, SCALAR)), seed=SCALAR, progress=st.one_of(st.booleans(), WEIRD))
def test_render_settings(steps, lr, size, model_size, seed, progress):
    s = call(li.RenderSettings, steps=steps, lr=lr, size=size, model_size=model_size, seed=seed, progress=progress)
    if s is not None:
        assert isinstance(s.steps, int) and s.steps >= 1 and math.isfinite(s.lr) and s.lr > 0
        call(s.hw, 16)
        call(s.model_hw, 16)


@SETTINGS
@given(n=st.one_of(st.integers(-2, 6), WEIRD.filter(lambda v: not (isinstance(v, int) and v > 100))),
       size=st.one_of(st.integers(-2, 24), WEIRD.filter(lambda v: not (isinstance(v, int) and v > 100))),
       seed=SCALAR, min_scale=SCALAR)
def test_sample_crops(n, size, seed, min_scale):
    ds = call(li.sample_crops, n, size=size, seed=seed, min_scale=min_scale)
    if ds is not None and len(ds):
        call(lambda: ds[0])


@SETTINGS
@given(kind=st.sampled_from(["abs", "xor", "or", 1]), n=SCALAR, m=SCALAR, S=SCALAR, decay=SCALAR, p=SCALAR)
def test_toy_config(kind, n, m, S, decay, p):
    call(li.ToyConfig, kind=kind, n=n, m=m, S=S, decay=decay, p=p)


@SETTINGS
@given(field=st.sampled_from(["kind", "mode", "crop", "method", "batch_size", "thumbnail_size", "top_abs",
                              "top_activation", "bottom_activation", "top_tension", "score", "granularity",
                              "n_neighbors", "min_dist", "pca", "clip", "umap_seed", "grid_size", "min_points",
                              "icon_target", "power", "icon_batch_size"]),
       value=ANY)
def test_atlas_config(field, value):
    from lucent_inhibit.atlas import AtlasConfig

    call(AtlasConfig, **{field: value})


# ------------------------------------------------------------------------------------------------
# objectives
# ------------------------------------------------------------------------------------------------
@SETTINGS
@given(direction=st.one_of(tensors(max_dim=2), WEIRD), power=SCALAR,
       position=st.one_of(st.sampled_from(["mean", "center", "top"]), st.tuples(SCALAR, SCALAR), WEIRD))
def test_cosdot(direction, power, position):
    call(objectives.cosdot, "conv3", direction, power=power, position=position)


@SETTINGS
@given(target=st.one_of(tensors(max_dim=4), WEIRD), power=SCALAR, crop=st.one_of(st.none(), SCALAR),
       mask=st.one_of(st.none(), tensors(max_dim=4)))
def test_spatial_cosdot(target, power, crop, mask):
    call(objectives.spatial_cosdot, "conv3", target, power=power, crop=crop, mask=mask)


@SETTINGS
@given(score=st.sampled_from(["min", "geometric", "harmonic", "product", "avg", 3]),
       mode=st.sampled_from(["auto", "fast", "exact", "slow", None]),
       granularity=st.sampled_from(["element", "channel", 0]), norm=st.sampled_from(["l1", "l2", "inf"]),
       feature=st.sampled_from([FEATURE, ("conv3", 1), "conv3", None, 3]))
def test_tense_objective(score, mode, granularity, norm, feature):
    call(objectives.tense, feature, "relu2", score=score, mode=mode, granularity=granularity, norm=norm)


# ------------------------------------------------------------------------------------------------
# scan and completeness: argument validation on a tiny model and tiny images
# ------------------------------------------------------------------------------------------------
def _no_huge(strategy):
    return strategy.filter(lambda v: not (isinstance(v, int) and not isinstance(v, bool) and v > 100))


@SETTINGS
@given(batch_size=_no_huge(SCALAR), chunk_size=st.one_of(st.none(), _no_huge(SCALAR)),
       score=st.sampled_from(["min", "percentile", "geometric", "best"]),
       completeness_threshold=SCALAR, keep_maps=st.one_of(st.booleans(), WEIRD),
       shard=st.one_of(st.none(), st.sampled_from(["0/2", "1/2", "2/2", "a/b", "1"]), WEIRD),
       layers=st.sampled_from(["relu2", ["relu1", "relu2"], "nope", [], 1]))
def test_scan_arguments(batch_size, chunk_size, score, completeness_threshold, keep_maps, shard, layers):
    call(li.scan, NET, IMAGES4, FEATURE, layers, batch_size=batch_size, chunk_size=chunk_size, score=score,
         completeness_threshold=completeness_threshold, keep_maps=keep_maps, shard=shard, progress=False)


@SETTINGS
@given(batch_size=_no_huge(SCALAR), steps=_no_huge(SCALAR), max_images=st.one_of(st.none(), _no_huge(SCALAR)),
       method=st.sampled_from(["gradient_x_activation", "integrated_gradients", "bad"]),
       features=st.sampled_from([[FEATURE], FEATURE, [], [("conv3", 0), ("conv3", 2)], "conv3", None]))
def test_completeness_arguments(batch_size, steps, max_images, method, features):
    call(li.completeness, NET, IMAGES, features, ["relu2"], batch_size=batch_size, method=method, steps=steps,
         max_images=max_images, progress=False)
