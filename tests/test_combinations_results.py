"""Combination results on the one Result base (files, summary, figure) and the render contract."""
import pytest
import torch
from test_combinations import POINTY, ROUNDED, PointyRounded

from lucent_inhibit.combinations import (AxisScales, CombinationResult, PairStatistics, axis_scales, measure_pair,
                                         pair_statistics, sweep_combinations)
from lucent_inhibit.core.results import ResultFileError, load_result
from lucent_inhibit.core.settings import PassSettings, RenderSettings

TINY = RenderSettings(steps=5, size=16, model_size=16, transforms=[])


@pytest.fixture(scope="module")
def model():
    return PointyRounded(gated=True).eval()


@pytest.fixture(scope="module")
def result(model):
    return sweep_combinations(model, POINTY, ROUNDED, n_angles=6, n_seeds=2, render=TINY)


def test_combination_result_file_summary_and_figure(result, tmp_path):
    path = result.save(tmp_path / "combo")
    assert path.endswith("combo.npz")
    back = load_result(tmp_path / "combo")
    assert isinstance(back, CombinationResult) and back.scale == result.scale and back.power == 4.0
    assert back.feature_a == POINTY and back.feature_b == ROUNDED
    assert torch.equal(back.images, result.images) and torch.equal(back.scale_images, result.scale_images)
    assert back.info == result.info and back.render_size == (16, 16)
    s = back.summary()
    assert s["n_angles"] == 6 and s["n_seeds"] == 2 and s["quadrant_scores"] == result.quadrant_scores()
    assert s["info"]["steps"] == 5 and s["info"]["seed"] == 0 and s["info"]["chunk"] == 60
    fig = back.plot(tmp_path / "combo.png")
    assert (tmp_path / "combo.png").stat().st_size > 10_000 and len(fig.axes) == 1
    with pytest.raises(ResultFileError, match="CombinationResult"):
        PairStatistics.load(path)


def test_quadrant_scores_defined_at_the_minimum_angles(model):
    r = sweep_combinations(model, POINTY, ROUNDED, n_angles=5, n_seeds=1, scale=(1.0, 1.0), render=TINY)
    q = r.quadrant_scores()
    assert all(v == v for v in q.values()), q  # no NaN: every quadrant holds an angle


def test_axis_scales_file_summary_and_figure(model, tmp_path):
    sc = axis_scales(model, POINTY, ROUNDED, n_seeds=2, render=TINY)
    assert sc.values.shape == (2, 2) and sc.images.shape == (2, 3, 16, 16)
    assert sc.scale == (float(sc.values[0].max()), float(sc.values[1].max()))
    back = AxisScales.load(sc.save(tmp_path / "scales.npz"))
    assert back.scale == sc.scale and torch.equal(back.values, sc.values) and back.feature_a == POINTY
    assert back.summary()["features"] == [POINTY.name, ROUNDED.name]
    assert len(back.plot(tmp_path / "scales.png").axes) == 2 and (tmp_path / "scales.png").stat().st_size > 2_000
    # the scales are measured at the model-input size: the same values from a separate measurement
    y = measure_pair(model, sc.images, POINTY, ROUNDED, size=(16, 16))
    assert torch.allclose(y[0, 0], torch.tensor(sc.scale[0])) and torch.allclose(y[1, 1], torch.tensor(sc.scale[1]))


def test_pair_statistics_summary_and_figure(model, tmp_path):
    images = torch.rand(10, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    st = pair_statistics(model, [(img, 0) for img in images], "head", settings=PassSettings(progress=False))  # (image, label) items
    s = st.summary()
    assert s["n_images"] == 10 and s["n_units"] == 2 and s["layer"] == "head"
    assert s["anticorrelated"][:2] == [0, 1]
    st.plot(tmp_path / "st.png")
    assert (tmp_path / "st.png").stat().st_size > 2_000
    with pytest.raises(ValueError, match="unit 2 out of range for layer 'head' with 2 units"):
        st.feature(2)
    with pytest.raises(ValueError, match="which must be one of"):
        st.pick("best")


def test_batches_do_not_change_the_renders(model):
    """Seed s starts from the same noise whatever the batch: one chunk per image gives the same sweep."""
    kw = dict(n_angles=5, n_seeds=2, scale=(1.0, 1.0), render=TINY)
    whole = sweep_combinations(model, POINTY, ROUNDED, chunk=10, **kw)
    single = sweep_combinations(model, POINTY, ROUNDED, chunk=1, **kw)
    assert torch.allclose(whole.values, single.values, rtol=1e-3, atol=1e-4)


def test_seed_none_records_a_seed_that_reproduces_the_sweep(model):
    kw = dict(n_angles=5, n_seeds=1, scale=(1.0, 1.0))
    free = sweep_combinations(model, POINTY, ROUNDED, render=TINY.replace(seed=None), **kw)
    again = sweep_combinations(model, POINTY, ROUNDED, render=TINY.replace(seed=free.info["seed"]), **kw)
    assert isinstance(free.info["seed"], int) and torch.equal(free.values, again.values)


@pytest.mark.parametrize("kw, match", [
    (dict(n_seeds=0), "n_seeds must be >= 1"),
    (dict(chunk=0), "chunk must be >= 1"),
    (dict(power=-1.0), "power must be >= 0"),
    (dict(scale_steps=0), "scale_steps must be >= 1"),
    (dict(render=RenderSettings(param="fourier")), r"render.param must be one of \(None, 'lucent', 'phase'\), got 'fourier'"),
])
def test_bad_arguments_name_the_parameter(model, kw, match):
    call = {**dict(n_angles=5, n_seeds=1, scale=(1.0, 1.0), render=TINY), **kw}
    with pytest.raises(ValueError, match=match):
        sweep_combinations(model, POINTY, ROUNDED, **call)


def test_render_settings_as_a_dict(model):
    res = sweep_combinations(model, POINTY, ROUNDED, n_angles=5, n_seeds=1, scale=(1.0, 1.0),
                             render=dict(steps=3, size=16, transforms=[]))
    assert res.info["steps"] == 3 and res.info["image_size"] == [16, 16] and res.render_size == (224, 224)


@pytest.mark.parametrize("param", ["lucent", "phase"])
def test_each_seed_starts_from_its_own_noise_whatever_its_batch(param):
    """A sweep element's start depends on its seed only (the same seed gives the same start in any batch), for
    Lucent's param.image and for the fixed-magnitude phase image."""
    from lucent_inhibit.combinations import seeded_image_param

    with torch.no_grad():
        _, together = seeded_image_param((16, 16), [5, 6, 7], param=param)
        _, alone = seeded_image_param((16, 16), [6], param=param)
        _, other = seeded_image_param((16, 16), [8], param=param)
        assert torch.allclose(together()[1], alone()[0], atol=1e-6)
        assert not torch.allclose(alone()[0], other()[0], atol=1e-3)


def test_phase_sweeps_render_and_say_so(model):
    res = sweep_combinations(model, POINTY, ROUNDED, n_angles=5, n_seeds=1, scale=(1.0, 1.0),
                             render=TINY.replace(param="phase"))
    assert res.info["param"] == "phase" and torch.isfinite(res.values).all()
    plain = sweep_combinations(model, POINTY, ROUNDED, n_angles=5, n_seeds=1, scale=(1.0, 1.0), render=TINY)
    assert plain.info["param"] == "lucent" and not torch.equal(res.values, plain.values)
