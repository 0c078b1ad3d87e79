"""Property: the public API's numeric and shape parameters, driven with arbitrary values (ints, floats incl.
nan/inf, negative, huge, strings, tuples of wrong length, tensors of odd shapes and dtypes), give a finite
result or one of the library's documented errors (ValueError / TypeError and their subclasses, FileNotFoundError,
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
from lucent_inhibit.core.features import check_images  # noqa: E402
from lucent_inhibit.core.rendering import NonFiniteLoss  # noqa: E402
from lucent_inhibit.core.settings import PassSettings
from lucent_inhibit.synthesis import objectives  # noqa: E402

DOCUMENTED = (ValueError, TypeError, NonFiniteLoss, FileNotFoundError)  # the CLI's user errors (exit 2)
SETTINGS = settings(max_examples=50, deadline=None, derandomize=True,
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


@st.composite
def arguments(draw, valid, weird=None):
    """Keyword arguments: each drawn from its ``valid`` strategy, then zero, one or two of them (chosen at
    random) replaced by an arbitrary value (``weird[name]``, default :data:`ANY`)."""
    out = {k: draw(v) for k, v in valid.items()}
    n_bad = draw(st.sampled_from([0, 1, 1, 1, 2]))
    for k in draw(st.permutations(sorted(valid)))[:n_bad]:
        out[k] = draw((weird or {}).get(k, ANY))
    return out


def _opt(strategy):
    return st.one_of(st.none(), strategy)


POSITIONS = st.one_of(st.sampled_from(["center", "mean"]), st.tuples(st.integers(0, 7), st.integers(0, 7)))
UNIT_FLOATS = st.floats(0, 1)


def _small(v) -> bool:
    """Not a huge positive integer (a valid but enormous count would only take long)."""
    return not (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 100)


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


def call(fn, *args, finite=True, **kwargs):
    """``fn(...)``: a finite result (unless ``finite=False``), or a documented error with a message;
    anything else fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = fn(*args, **kwargs)
        except DOCUMENTED as exc:
            assert str(exc), f"{type(exc).__name__} without a message"
            return None
    if finite:
        _finite(out)
    return out


# ------------------------------------------------------------------------------------------------
# features and attribution
# ------------------------------------------------------------------------------------------------
@SETTINGS
@given(kw=arguments({"layer": st.sampled_from(["conv3", "relu2"]), "unit": st.integers(0, 3), "position": POSITIONS,
                     "direction": st.none()},
                    {"direction": tensors(max_dim=2), "position": st.one_of(st.tuples(SCALAR, SCALAR), ANY)}))
def test_feature_and_measure(kw):
    if kw["direction"] is not None and kw["unit"] is not None and torch.is_tensor(kw["direction"]):
        kw["unit"] = None
    f = call(li.Feature, **kw)
    if f is not None:
        call(li.measure, NET, IMAGES, f)


@SETTINGS
@given(imgs=images(), preprocess=st.one_of(st.booleans(), st.booleans(), WEIRD))
def test_check_images_and_measure(imgs, preprocess):
    x = call(check_images, imgs, preprocess=preprocess)
    if x is not None:
        assert x.dtype == torch.float32 and x.dim() == 4 and x.shape[1] == 3
    call(li.measure, NET, imgs, FEATURE)


@SETTINGS
@given(kw=arguments({"images": st.just(IMAGES), "steps": st.integers(1, 6),
                     "method": st.sampled_from(["gradient_x_activation", "integrated_gradients"]),
                     "internal_batch_size": _opt(st.integers(1, 8)),
                     "layers": st.sampled_from(["relu2", ["relu1", "relu2"], "input"])},
                    {"images": images(), "steps": st.one_of(st.integers(-2, 0), WEIRD.filter(_small)),
                     "internal_batch_size": st.one_of(st.integers(-2, 0), WEIRD.filter(_small)),
                     "method": st.sampled_from(["ig", 0, None]), "layers": st.sampled_from(["nope", [], 5, None])}))
def test_attribute(kw):
    call(li.attribute, NET, kw.pop("images"), FEATURE, kw.pop("layers"), **kw)


@SETTINGS
@given(kw=arguments({"scores": st.builds(lambda s: torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(s)),
                                         st.integers(0, 9)),
                     "granularity": st.sampled_from(["element", "channel"]), "norm": st.sampled_from(["l1", "l2"])},
                    {"scores": st.one_of(tensors(), WEIRD), "granularity": st.sampled_from(["pixel", 1, None]),
                     "norm": st.sampled_from(["l3", None])}))
def test_signed_totals(kw):
    call(li.signed_totals, **kw)


@SETTINGS
@given(kw=arguments({"p": st.just(torch.rand(3)), "n": st.just(torch.rand(3)),
                     "score": st.sampled_from(["min", "geometric", "harmonic", "product"])},
                    {"p": st.one_of(tensors(max_dim=2), FLOATS, WEIRD), "n": st.one_of(tensors(max_dim=2), FLOATS, WEIRD),
                     "score": st.sampled_from(["max", 2, None])}))
def test_tension(kw):
    call(li.tension, kw["p"], kw["n"], score=kw["score"], finite=False)  # NaN in, NaN out


# ------------------------------------------------------------------------------------------------
# settings and configs
# ------------------------------------------------------------------------------------------------
SIZES = st.one_of(st.integers(8, 64), st.tuples(st.integers(8, 64), st.integers(8, 64)))


@SETTINGS
@given(kw=arguments({"steps": st.integers(1, 300), "lr": st.floats(1e-4, 1), "size": _opt(SIZES),
                     "model_size": _opt(SIZES), "seed": _opt(st.integers(0, 100)), "progress": st.booleans()},
                    {"size": st.one_of(ANY, st.tuples(SCALAR, SCALAR)), "model_size": st.one_of(ANY, st.tuples(SCALAR, SCALAR))}))
def test_render_settings(kw):
    s = call(li.RenderSettings, **kw)
    if s is not None:
        assert isinstance(s.steps, (int, np.integer)) and s.steps >= 1 and math.isfinite(s.lr) and s.lr > 0
        call(s.hw, 16)
        call(s.model_hw, 16)


@SETTINGS
@given(kw=arguments({"n": st.integers(1, 3), "size": st.integers(8, 24), "seed": st.integers(0, 5),
                     "min_scale": st.floats(0.1, 1)},
                    {"n": st.one_of(st.integers(-2, 0), WEIRD.filter(_small)),
                     "size": st.one_of(st.integers(-2, 0), WEIRD.filter(_small))}))
def test_sample_crops(kw):
    ds = call(li.sample_crops, **kw)
    if ds is not None and call(len, ds):
        call(lambda: ds[0])


@SETTINGS
@given(kw=arguments({"kind": st.sampled_from(["abs", "xor"]), "n": st.integers(2, 8), "m": st.integers(1, 8),
                     "S": UNIT_FLOATS, "decay": UNIT_FLOATS, "p": UNIT_FLOATS},
                    {"kind": st.sampled_from(["or", 1, None])}))
def test_toy_config(kw):
    call(li.ToyConfig, **kw)


ATLAS_FIELDS = ["kind", "mode", "crop", "method", "batch_size", "thumbnail_size", "top_abs", "top_activation",
                "bottom_activation", "top_tension", "score", "granularity", "n_neighbors", "min_dist", "pca", "clip",
                "umap_seed", "grid_size", "min_points", "icon_target", "power", "icon_batch_size"]


@SETTINGS
@given(field=st.sampled_from(ATLAS_FIELDS), value=ANY)
def test_atlas_config(field, value):
    from lucent_inhibit.atlas import AtlasConfig

    call(AtlasConfig, **{field: value})


# ------------------------------------------------------------------------------------------------
# objectives
# ------------------------------------------------------------------------------------------------
@SETTINGS
@given(kw=arguments({"direction": st.just(torch.randn(4)), "power": st.floats(0, 8), "position": POSITIONS},
                    {"direction": st.one_of(tensors(max_dim=2), WEIRD),
                     "position": st.one_of(st.sampled_from(["top"]), st.tuples(SCALAR, SCALAR), WEIRD)}))
def test_cosdot(kw):
    call(objectives.cosdot, "conv3", **kw)


@SETTINGS
@given(kw=arguments({"target": st.just(torch.randn(4, 3, 3)), "power": st.floats(0, 8),
                     "crop": _opt(st.floats(0, 0.99)), "mask": _opt(st.just(torch.rand(3, 3)))},
                    {"target": st.one_of(tensors(max_dim=4), WEIRD), "mask": tensors(max_dim=4)}))
def test_spatial_cosdot(kw):
    call(objectives.spatial_cosdot, "conv3", kw.pop("target"), **kw)


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
@SETTINGS
@given(kw=arguments({"dataset": st.just(IMAGES4), "batch_size": st.integers(1, 5), "chunk_size": _opt(st.integers(1, 5)),
                     "score": st.sampled_from(["min", "percentile", "geometric"]),
                     "completeness_threshold": st.floats(-1, 1), "keep_maps": st.booleans(),
                     "layers": st.sampled_from(["relu2", ["relu1", "relu2"]])},
                    {"dataset": st.one_of(images(), WEIRD), "batch_size": WEIRD.filter(_small),
                     "chunk_size": WEIRD.filter(_small), "score": st.sampled_from(["best", 1, None]),
                     "layers": st.sampled_from(["nope", [], 1, None])}))
def test_scan_arguments(kw):
    data = kw.pop("dataset")
    if torch.is_tensor(data) and data.dim() == 4 and 0 < data.shape[0] < 3:
        data = torch.cat([data] * 3)  # r needs >= 3 images
    call(li.scan, NET, data, FEATURE, kw.pop("layers"), progress=False, **kw)


@SETTINGS
@given(kw=arguments({"dataset": st.just(IMAGES), "batch_size": st.integers(1, 4), "steps": st.integers(1, 4),
                     "max_images": _opt(st.integers(2, 4)),
                     "method": st.sampled_from(["gradient_x_activation", "integrated_gradients"]),
                     "features": st.sampled_from([[FEATURE], [("conv3", 0), ("conv3", 2)]])},
                    {"dataset": st.one_of(images(), WEIRD), "batch_size": WEIRD.filter(_small),
                     "steps": WEIRD.filter(_small), "max_images": WEIRD.filter(_small),
                     "method": st.sampled_from(["bad", None]),
                     "features": st.sampled_from([FEATURE, [], "conv3", None, [("conv3", 9)]])}))
def test_completeness_arguments(kw):
    call(li.completeness, NET, kw.pop("dataset"), kw.pop("features"), ["relu2"], progress=False, **kw)


# ------------------------------------------------------------------------------------------------
# the validators, parameterizations, transforms, configs, batching and the atlas selection
# ------------------------------------------------------------------------------------------------
@SETTINGS
@given(value=st.one_of(ANY, st.tuples(SCALAR, SCALAR), st.just(b"88")), low=st.integers(0, 8))
def test_validators(value, low):
    from lucent_inhibit.core import validate

    for check in (validate.check_int, validate.check_number, validate.check_size):
        out = call(check, "x", value, low)
        if out is not None and check is validate.check_size:
            assert all(isinstance(v, int) and low <= v <= validate.MAX_SIDE for v in out)
        elif out is not None and check is validate.check_int:
            assert isinstance(out, int) and out >= low and not isinstance(value, (bool, str, bytes))


@SETTINGS
@given(kw=arguments({"kind": st.sampled_from(["fourier", "phase", "lucent"]), "size": SIZES.filter(lambda s: s != 64),
                     "batch": _opt(st.integers(1, 2))},
                    {"kind": st.sampled_from(["pixels", None, 1]), "size": st.one_of(ANY, st.tuples(SCALAR, SCALAR)),
                     "batch": st.one_of(SCALAR, HUGE)}))
def test_param_build(kw):
    from lucent_inhibit.synthesis import param

    out = call(param.build, **kw)
    if out is not None:
        image = out[1]()
        assert image.dim() == 4 and image.shape[1] == 3 and torch.isfinite(image).all()


@SETTINGS
@given(kw=arguments({"sd": st.floats(0, 1), "decay_power": st.floats(0, 2), "size": st.integers(2, 12)},
                    {"sd": SCALAR, "decay_power": SCALAR, "size": st.one_of(ANY, HUGE)}),
       magnitude=st.one_of(st.none(), tensors(max_dim=3)))
def test_fourier_and_phase_images(kw, magnitude):
    from lucent_inhibit.synthesis import param

    out = call(param.fourier_image, **kw)
    if out is not None:
        _finite(out[1]())
    mag = call(param.natural_magnitude, kw["size"], decay_power=kw["decay_power"])
    out = call(param.phase_image, kw["size"], magnitude=magnitude if magnitude is not None else mag)
    if out is not None:
        _finite(out[1]())


@SETTINGS
@given(kw=arguments({"min_size": st.floats(0.05, 0.5), "max_size": st.floats(0.5, 1), "size": _opt(st.integers(1, 12)),
                     "noise": st.floats(0, 0.1), "n_crops": st.integers(1, 3)},
                    {"size": st.one_of(ANY, st.tuples(SCALAR, SCALAR)), "n_crops": st.one_of(SCALAR, HUGE)}),
       shift=st.one_of(st.integers(0, 4), SCALAR), amount=st.one_of(st.floats(0, 1), SCALAR))
def test_transforms(kw, shift, amount):
    from lucent_inhibit.synthesis import transform

    for make in (lambda: transform.box_crop(**kw), lambda: transform.shift(shift), lambda: transform.uniform_noise(amount)):
        t = call(make)
        if t is not None:
            out = call(t, IMAGES)
            assert out is None or (out.dim() == 4 and out.shape[1] == 3)


CONFIG_VALUES = st.one_of(ANY, HUGE, st.integers(-3, 300))


@SETTINGS
@given(which=st.sampled_from(["DataConfig", "RenderConfig", "FeatureConfig", "ModelConfig"]), data=st.data())
def test_stage_configs(which, data):
    import lucent_inhibit.app.configs as configs

    cls = getattr(configs, which)
    name = data.draw(st.sampled_from([f.name for f in dataclasses.fields(cls)]))
    cfg = call(cls, **{name: data.draw(CONFIG_VALUES)})
    if cfg is not None and which == "RenderConfig":
        call(cfg.settings)


@SETTINGS
@given(batch_size=st.one_of(st.integers(1, 5), SCALAR, HUGE),
       indices=st.one_of(st.none(), st.lists(st.integers(-2, 5), max_size=4), st.lists(st.floats(0, 3), max_size=2),
                         st.just(range(1, 3)), WEIRD),
       dataset=st.one_of(st.just(IMAGES4), st.just([IMAGES4[0], IMAGES4[1]]), st.just(li.sample_crops(2, size=8)),
                         st.just(["not", "images"]), WEIRD))
def test_iter_batches(batch_size, indices, dataset):
    from lucent_inhibit.data.batching import iter_batches

    call(lambda: [b for _, b in iter_batches(dataset, batch_size, indices)])


def _scan12():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return li.scan(NET, torch.rand(12, 3, 8, 8, generator=torch.Generator().manual_seed(2)), FEATURE, "relu2", settings=PassSettings(progress=False))


SCAN12 = _scan12()
K = st.one_of(st.integers(0, 14), SCALAR)


@SETTINGS
@given(kw=arguments({"top_abs": st.integers(0, 14), "top_activation": st.integers(0, 14),
                     "bottom_activation": st.integers(0, 14), "top_tension": st.integers(1, 14),
                     "score": st.sampled_from(["min", "percentile", "geometric", "harmonic", "product"]),
                     "granularity": st.sampled_from(["element", "channel"]), "layer": st.sampled_from([None, "relu2"])},
                    {k: K for k in ("top_abs", "top_activation", "bottom_activation", "top_tension")}),
       broken=st.sampled_from([None, ("pos", float("nan")), ("neg", -1.0), ("activation", float("inf"))]),
       scan=st.sampled_from(["scan", None, 3, "missing.npz"]))
def test_select_images(kw, broken, scan):
    target = SCAN12 if scan == "scan" else scan
    if broken is not None and scan == "scan":
        arr = getattr(SCAN12, broken[0]).copy()
        arr[3] = broken[1]
        target = dataclasses.replace(SCAN12, **{broken[0]: arr})
    sel = call(li.select_images, target, **kw, finite=False)
    if sel is not None:
        assert broken is None and sel.indices.size >= 1 and set(sel.indices.tolist()) <= set(SCAN12.indices.tolist())
