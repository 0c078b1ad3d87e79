"""Toy models: result files (ToySnapshot, TrainResult, ToyAnalysis), divergence, validation, hooks."""
import json
import os
import warnings

import numpy as np
import pytest
import torch

from lucent_inhibit import toy
from lucent_inhibit.attribution.attribute import attribute
from lucent_inhibit.core.features import Feature
from lucent_inhibit.core.layers import hook_count
from lucent_inhibit.core.rendering import NonFiniteLoss
from lucent_inhibit.core.results import ResultFileError, load_result
from lucent_inhibit.toy import ToyAnalysis, ToyConfig, ToyModel, ToySnapshot, TrainResult
from lucent_inhibit.toy import training as toy_train_module


@pytest.fixture(scope="module")
def small_run():
    """A few steps of a small abs model over two seeds."""
    return toy.train_toy(ToyConfig("abs", n=3, m=2, S=0.1), steps=40, seeds=[0, 1], eval_batch=2000, progress=False)


def _state_equal(a: ToyModel, b: ToyModel) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------------
# result files
# ------------------------------------------------------------------------------------------------
def test_model_saves_as_a_snapshot_under_the_path_rule(tmp_path):
    model = ToyModel(ToyConfig("xor", n=3, m=4, S=0.2), seed=3)
    written = model.save(str(tmp_path / "m"))
    assert written == str(tmp_path / "m.npz") and os.path.isfile(written)
    snap = ToySnapshot.load(str(tmp_path / "m"))
    assert snap.config == model.config.to_dict()
    assert _state_equal(snap.to_model(), model)
    back = ToyModel.load(str(tmp_path / "m"), kind="xor", n=3)
    assert _state_equal(back, model) and not back.training
    assert load_result(written).config == model.config.to_dict()
    s = snap.summary()
    assert s["config"]["kind"] == "xor"
    assert s["max_abs_hidden.weight"] == pytest.approx(float(model.hidden.weight.detach().abs().max()))


def test_train_result_round_trips_and_holds_a_loadable_model(tmp_path, small_run):
    path = small_run.save(str(tmp_path / "run.npz"))
    back = TrainResult.load(path)
    assert isinstance(back.model, ToyModel) and _state_equal(back.model, small_run.model)
    assert back.summary() == small_run.summary()
    assert (back.seeds, back.losses, back.best_seed, back.diverged) == (
        small_run.seeds, small_run.losses, small_run.best_seed, [])
    assert _state_equal(ToyModel.load(path, expect=small_run.model.config), small_run.model)
    assert isinstance(load_result(path), TrainResult)


def test_analysis_round_trip_keeps_every_array(tmp_path):
    an = toy.analyze_toy(toy.inhibition_model(3), count=8)
    back = ToyAnalysis.load(an.save(str(tmp_path / "an")))
    for name in ("inputs_two", "active_two", "scores_one", "P_two", "N_one", "tension_two", "represented"):
        assert torch.equal(getattr(back, name), getattr(an, name)), name
    assert back.active_two.dtype == torch.bool and back.config == an.config and back.score == "min"


def test_loading_a_file_of_another_result_type_is_refused(tmp_path, small_run):
    an_path = toy.analyze_toy(toy.inhibition_model(3), count=4).save(str(tmp_path / "an.npz"))
    with pytest.raises(ResultFileError, match=r"not a saved toy model.*holds a ToyAnalysis.*expected a ToySnapshot"):
        ToyModel.load(an_path)
    with pytest.raises(ResultFileError, match="holds a ToyAnalysis"):
        ToyModel(ToyConfig("exclusive", n=3, m=6)).load_weights(an_path)
    snap_path = ToyModel(ToyConfig(n=3, m=2)).save(str(tmp_path / "snap.npz"))
    with pytest.raises(ResultFileError, match=r"holds a ToySnapshot.*expected a TrainResult"):
        TrainResult.load(snap_path)
    run_path = small_run.save(str(tmp_path / "run.npz"))
    with pytest.raises(ResultFileError, match=r"holds a TrainResult.*expected a ToyAnalysis"):
        ToyAnalysis.load(run_path)
    x = torch.zeros(2, 3)
    att_path = attribute(ToyModel(ToyConfig(n=3, m=2)), x, Feature("out", unit=0), "relu", preprocess=False).save(
        str(tmp_path / "att.npz"))
    with pytest.raises(ResultFileError, match=r"holds a Attribution"):
        ToyModel.load(att_path)


def test_loading_refuses_pickles_and_foreign_files(tmp_path):
    pickled = str(tmp_path / "pickled.npz")
    np.savez(pickled, __meta__=np.frombuffer(b"{}", np.uint8), w=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ResultFileError, match="pickle"):
        ToyModel.load(pickled)
    plain = str(tmp_path / "plain.npz")
    np.savez(plain, w=np.zeros(3))
    with pytest.raises(ResultFileError, match="not a saved toy model.*no lucent-inhibit metadata"):
        ToyModel.load(plain)
    with pytest.raises(FileNotFoundError):
        ToyModel.load(str(tmp_path / "missing.npz"))


def test_snapshot_refuses_weights_of_the_wrong_shape_or_name():
    good = ToyModel(ToyConfig(n=3, m=2)).snapshot()
    with pytest.raises(ValueError, match=r"'out.bias' has shape \(4,\).*expected \(3,\)"):
        ToySnapshot(config=good.config, state={**good.state, "out.bias": torch.zeros(4)})
    with pytest.raises(ValueError, match=r"'out.weight' has shape missing"):
        ToySnapshot(config=good.config, state={k: v for k, v in good.state.items() if k != "out.weight"})
    with pytest.raises(ValueError, match=r"unexpected saved weights \['extra.weight'\]"):
        ToySnapshot(config=good.config, state={**good.state, "extra.weight": torch.zeros(1)})


def test_every_result_type_plots_a_png(tmp_path, small_run):
    an = toy.analyze_toy(small_run.model, count=16)
    for result, name in ((small_run.model.snapshot(), "snap.png"), (small_run, "run.png"), (an, "an.png")):
        path = str(tmp_path / name)
        assert result.plot(path).axes  # the Figure, written at the path
        assert os.path.getsize(path) > 5_000
        with open(path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    summary = small_run.summary()
    assert summary["loss_ratio"] == pytest.approx(small_run.loss / small_run.zero_loss)
    assert json.loads(json.dumps(an.summary())) == an.summary()


# ------------------------------------------------------------------------------------------------
# divergence
# ------------------------------------------------------------------------------------------------
def test_training_that_diverges_for_every_seed_raises_naming_seed_step_and_lr():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(NonFiniteLoss, match=r"every seed with lr=1000000000.0 \(seed 0 at step \d+ of 20, "
                                                r"seed 1 at step \d+ of 20\).*smaller lr"):
            toy.train_toy(ToyConfig(n=3, m=2, S=0.1), steps=20, seeds=[0, 1], lr=1e9, eval_batch=100,
                          progress=False)
    diverged = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(diverged) == 2
    for seed, text in zip((0, 1), diverged):
        assert f"seed {seed} diverged (non-finite loss at step" in text and "lr=1000000000.0" in text, text


def test_a_diverging_seed_is_discarded_with_a_warning(monkeypatch, tmp_path):
    class Exploding(ToyModel):
        """Seed 1 starts with an infinite output bias: its first loss is infinite."""

        def __init__(self, config, seed=None):
            super().__init__(config, seed)
            if seed == 1:
                with torch.no_grad():
                    self.out.bias.fill_(float("inf"))

    monkeypatch.setattr(toy_train_module, "ToyModel", Exploding)
    with pytest.warns(RuntimeWarning, match=r"seed 1 diverged \(non-finite loss at step 1 of 30, lr=0.003\)"):
        r = toy.train_toy(ToyConfig(n=3, m=2, S=0.1), steps=30, seeds=[0, 1, 2], eval_batch=500, progress=False)
    assert r.seeds == [0, 2] and len(r.losses) == 2 and r.best_seed in (0, 2)
    assert r.diverged == [{"seed": 1, "step": 1}]
    assert all(np.isfinite(r.losses)) and bool(torch.isfinite(r.model.out.bias).all())
    back = TrainResult.load(r.save(str(tmp_path / "r.npz")))
    assert back.diverged == r.diverged and back.summary()["diverged"] == [{"seed": 1, "step": 1}]


# ------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------
CFG = ToyConfig(n=2, m=2)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(steps=0), ValueError, "steps must be >= 1, got 0"),
        (dict(steps=2.5), ValueError, "steps must be an integer, got 2.5"),
        (dict(steps=True), ValueError, "steps must be an integer, got True"),
        (dict(seeds=3), TypeError, r"seeds must be a sequence of integer seeds \(e.g. range\(5\)\), got 3"),
        (dict(seeds="01"), TypeError, "seeds must be a sequence"),
        (dict(seeds=[0, -1]), ValueError, r"seeds\[1\] must be >= 0, got -1"),
        (dict(seeds=[0.5]), ValueError, r"seeds\[0\] must be an integer, got 0.5"),
        (dict(batch_size=0), ValueError, "batch_size must be >= 1, got 0"),
        (dict(lr=0.0), ValueError, "lr must be > 0, got 0.0"),
        (dict(lr=-1e-3), ValueError, "lr must be > 0, got -0.001"),
        (dict(lr=float("inf")), ValueError, "lr must be finite, got inf"),
        (dict(lr=float("nan")), ValueError, "lr must be finite, got nan"),
        (dict(lr="fast"), ValueError, "lr must be a number, got 'fast'"),
        (dict(eval_batch=0), ValueError, "eval_batch must be >= 1, got 0"),
    ],
)
def test_train_toy_rejects_bad_settings(kwargs, error, match):
    with pytest.raises(error, match=match):
        toy.train_toy(CFG, **{"steps": 5, "progress": False, **kwargs})


def test_train_toy_rejects_a_config_of_another_type():
    with pytest.raises(TypeError, match="config must be a ToyConfig, got dict"):
        toy.train_toy({"n": 2}, steps=5, progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(p=1.0), r"p \(probability of a 1 bit in an active xor pair\) must be < 1, got 1.0"),
        (dict(p=0.0), r"p .* must be > 0, got 0.0"),
        (dict(decay=1.5), r"decay \(importance decay\) must be <= 1, got 1.5"),
        (dict(S=float("nan")), r"S .* must be finite, got nan"),
        (dict(S="0.1"), r"S .* must be a number, got '0.1'"),
        (dict(n=True), "n must be an integer, got True"),
        (dict(kind="sine"), r"kind must be one of 'abs', 'xor', 'exclusive'; got 'sine'"),
    ],
)
def test_config_rejects_more_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ToyConfig(**kwargs)


def test_analysis_and_data_reject_bad_counts_and_seeds():
    model = toy.inhibition_model(3)
    with pytest.raises(ValueError, match="count must be >= 1, got 0"):
        toy.analyze_toy(model, count=0)
    with pytest.raises(ValueError, match="seed must be >= 0, got -1"):
        toy.analyze_toy(model, seed=-1)
    with pytest.raises(TypeError, match="model must be a ToyModel, got Linear"):
        toy.analyze_toy(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="needs n >= 2, got n=1"):
        toy.analyze_toy(ToyModel(ToyConfig(n=1, m=2)))
    with pytest.raises(ValueError, match=r"generator \(seed\) must be >= 0, got -2"):
        toy.abs_data(4, 2, 0.5, generator=-2)
    with pytest.raises(ValueError, match="seed must be >= 0, got -1"):
        ToyModel(CFG, seed=-1)
    with pytest.raises(TypeError, match="model must be a ToyModel"):
        toy.evaluate(torch.nn.Linear(2, 2))


# ------------------------------------------------------------------------------------------------
# hooks and requires_grad are left as they were
# ------------------------------------------------------------------------------------------------
def _flags(model):
    return [p.requires_grad for p in model.parameters()]


def test_analysis_leaves_hooks_and_grad_flags_alone():
    model = toy.inhibition_model(3)
    model.hidden.weight.requires_grad_(False)
    before = (hook_count(model), _flags(model))
    toy.analyze_toy(model, count=8)
    toy.output_attributions(model, torch.zeros(2, 3))
    assert (hook_count(model), _flags(model)) == before


def test_analysis_leaves_hooks_and_grad_flags_alone_when_it_fails_half_way(monkeypatch):
    from lucent_inhibit.toy import analysis

    calls = {"n": 0}
    real = analysis.attribute

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("attribution failed")
        return real(*args, **kwargs)

    monkeypatch.setattr(analysis, "attribute", flaky)
    model = toy.inhibition_model(3)
    model.out.bias.requires_grad_(False)
    before = (hook_count(model), _flags(model))
    with pytest.raises(RuntimeError, match="attribution failed"):
        toy.analyze_toy(model, count=8)
    assert calls["n"] == 2
    assert (hook_count(model), _flags(model)) == before
