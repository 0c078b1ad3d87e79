"""Superposition toy models: data, training, save/load, attribution analysis, figure, CLI."""
import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from lucent_inhibit import toy
from lucent_inhibit.app.cli import main
from lucent_inhibit.app.outputs import MANIFEST
from lucent_inhibit.attribution.attribute import attribute, measure
from lucent_inhibit.core.features import Feature
from lucent_inhibit.findings.toy import toy_finding
from lucent_inhibit.findings.verdicts import NOT_REPRODUCED, REPRODUCED
from lucent_inhibit.toy import ToyConfig, ToyModel


@pytest.fixture(scope="module")
def trained_abs():
    """The absolute-value model at the paper's size (n=6, m=8, S=0.01), fewer steps than the default."""
    return toy.train_toy(ToyConfig("abs", n=6, m=8, S=0.01), steps=1000, seeds=[0, 1], eval_batch=20000, progress=False)


# ------------------------------------------------------------------------------------------------
# hyper-parameters and bad input
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n=0), "n must be >= 1, got 0"),
        (dict(m=0), "m must be >= 1, got 0"),
        (dict(n=-3), "n must be"),
        (dict(m=2.5), "m must be an integer, got 2.5"),
        (dict(S=0.0), r"S .* must be > 0, got 0.0"),
        (dict(S=1.5), r"S .* must be <= 1, got 1.5"),
        (dict(S=-0.1), r"S .*got -0.1"),
        (dict(kind="sine"), "kind must be one of"),
        (dict(decay=0.0), "decay"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ToyConfig(**kwargs)


def test_config_accepts_S_one_and_counts_inputs():
    assert ToyConfig(S=1.0).S == 1.0
    assert ToyConfig("abs", n=5).n_inputs == 5
    assert ToyConfig("xor", n=5).n_inputs == 10
    assert torch.allclose(ToyConfig(n=3, decay=0.5).importance, torch.tensor([1.0, 0.5, 0.25]))


def test_data_generators_reject_bad_values():
    with pytest.raises(ValueError, match="n must be"):
        toy.abs_data(10, 0, 0.1)
    with pytest.raises(ValueError, match=r"S .*got 2"):
        toy.xor_data(10, 3, 2)
    with pytest.raises(ValueError, match="batch must be"):
        toy.abs_data(0, 3, 0.1)


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
def test_abs_data_is_sparse_uniform_and_targets_abs():
    x, y = toy.abs_data(40000, 5, 0.3, generator=0)
    assert x.shape == y.shape == (40000, 5)
    assert torch.equal(y, x.abs())
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    active = x != 0
    assert abs(float(active.float().mean()) - 0.3) < 0.01
    vals = x[active]
    assert abs(float(vals.mean())) < 0.02 and abs(float(vals.abs().mean()) - 0.5) < 0.02  # uniform on [-1, 1]
    x2, _ = toy.abs_data(100, 5, 0.3, generator=0)
    assert torch.equal(x2, toy.abs_data(100, 5, 0.3, generator=0)[0])  # seeded


def test_xor_data_targets_xor_of_pairs():
    x, y = toy.xor_data(30000, 4, 0.5, generator=1)
    assert x.shape == (30000, 8) and y.shape == (30000, 4)
    pairs = x.reshape(-1, 4, 2)
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(y, (pairs[..., 0] != pairs[..., 1]).float())
    # an active pair has bits Bernoulli(0.5): P(xor = 1) = S * 0.5
    assert abs(float(y.mean()) - 0.25) < 0.01
    assert torch.equal(toy.targets(ToyConfig("xor", n=4), x), y)


def test_k_feature_inputs_have_exactly_k_active():
    for kind in ("abs", "xor"):
        c = ToyConfig(kind, n=5, m=3)
        for k in (1, 2):
            x, active = toy.k_feature_inputs(c, k, 200, generator=3)
            assert torch.equal(active.sum(1), torch.full((200,), k))
            if kind == "abs":
                assert torch.equal(x != 0, active)
                assert float(x.abs()[active].min()) >= 0.25
            else:
                assert torch.equal(x.reshape(200, 5, 2).sum(2) > 0, active)
    with pytest.raises(ValueError, match="k .*got 6"):
        toy.k_feature_inputs(ToyConfig(n=5), 6, 10)


# ------------------------------------------------------------------------------------------------
# training: reconstruction and superposition
# ------------------------------------------------------------------------------------------------
def test_trained_abs_model_reconstructs_abs(trained_abs):
    r = trained_abs
    assert r.best_seed in r.seeds and r.loss == min(r.losses)
    # far better than predicting zero everywhere (the trivial predictor)
    assert r.loss < 0.1 * r.zero_loss, (r.loss, r.zero_loss)
    loss, zero = toy.evaluate(r.model, batch=20000, generator=7)
    assert loss < 0.1 * zero
    x = torch.tensor([[0.8, 0, 0, 0, 0, 0], [0, -0.6, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    with torch.no_grad():
        y = r.model(x)
    assert abs(float(y[0, 0]) - 0.8) < 0.2 and abs(float(y[1, 1]) - 0.6) < 0.2
    assert float(y[2].abs().max()) < 0.2


def test_trained_abs_model_is_in_superposition(trained_abs):
    model = trained_abs.model
    c = model.config
    assert 2 * c.n > c.m  # each |x_i| needs two ReLU units: without sharing only m // 2 features fit
    rep = toy.represented_features(model)
    assert int(rep.sum()) > c.m // 2, rep
    # features share units: more (unit, feature) memberships than units
    assert int(toy.units_per_feature(model).sum()) > c.m


def test_two_feature_inputs_are_more_tense_than_one_feature_inputs(trained_abs):
    an = toy.analyze_toy(trained_abs.model, count=256)
    assert an.tension_one.shape == an.tension_two.shape == (256, 6)
    assert an.mean_tension_two > an.mean_tension_one
    assert an.tension_per_output_two.shape == (6,)
    # the motif: the most tense two-feature case has large P and N that nearly cancel
    b, i = an.most_tense()
    p, n = float(an.P_two[b, i]), float(an.N_two[b, i])
    assert min(p, n) > 0.5 and abs(p - n) < 0.5 * max(p, n)


@pytest.mark.parametrize("kind", ["abs", "xor"])
def test_control_solves_the_task_with_each_feature_on_its_own_units(kind):
    config = ToyConfig(kind, n=5, m=4, S=0.05)
    control = toy.separated_model(config)
    assert control.config.m == 2 * config.n and control.config.kind == kind
    loss, zero = toy.evaluate(control, batch=20000, generator=3)
    assert loss < 1e-10 < zero  # the exact solution of the same task
    carried = toy.carried_features(control)  # (n, m)
    assert carried.shape == (5, 10) and carried.sum(1).tolist() == [2] * 5  # two units per feature
    assert toy.features_per_unit(control).max() == 1  # no unit shared: no superposition
    with pytest.raises(ValueError, match="got kind 'exclusive'"):
        toy.separated_model(ToyConfig("exclusive", n=3, m=6))


def test_control_has_no_motif_where_the_superposed_model_has_it(trained_abs):
    an = toy.analyze_toy(trained_abs.model, count=256)
    assert an.shared_units > 0  # the trained model shares units
    ctl = an.control
    assert ctl["m"] == 12 and ctl["shared_units"] == 0
    # the same two-feature inputs: own units only, nothing to cancel
    assert ctl["mean_tension_two"] < 1e-6 < an.mean_tension_two
    found = toy_finding(an)
    assert "control (12 units, 0 shared)" in found.measured and found.verdict == REPRODUCED, found
    # a control that shares units makes the verdict fail
    shared = dataclasses.replace(an, control={**ctl, "shared_units": 2})
    assert toy_finding(shared).verdict == NOT_REPRODUCED
    # the hand-built inhibition model has no control (its targets need inhibition) and shares no unit
    inhib = toy.analyze_toy(toy.inhibition_model(4), count=32)
    assert inhib.control is None and inhib.shared_units == 0


def test_training_keeps_the_best_seed():
    c = ToyConfig("abs", n=3, m=2, S=0.1)
    r = toy.train_toy(c, steps=30, seeds=[5, 6, 7], eval_batch=2000, progress=False)
    assert r.best_seed == [5, 6, 7][int(np.argmin(r.losses))]
    assert toy.evaluate(r.model, batch=2000)[0] == pytest.approx(r.loss)
    again = toy.train_toy(c, steps=30, seeds=[r.best_seed], eval_batch=2000, progress=False)
    assert torch.equal(again.model.out.weight, r.model.out.weight)  # seeded and reproducible


def test_training_rejects_bad_settings():
    with pytest.raises(ValueError, match="steps"):
        toy.train_toy(ToyConfig(n=2, m=2), steps=0, progress=False)
    with pytest.raises(ValueError, match="seeds is empty"):
        toy.train_toy(ToyConfig(n=2, m=2), steps=5, seeds=[], progress=False)


def test_scaled_xor_model_learns():
    r = toy.train_toy(ToyConfig("xor", n=3, m=4, S=0.05), steps=800, seeds=[0], eval_batch=20000, progress=False)
    assert r.loss < 0.5 * r.zero_loss
    assert r.model.hidden.in_features == 6


# ------------------------------------------------------------------------------------------------
# the hand-built inhibition model
# ------------------------------------------------------------------------------------------------
def test_inhibition_model_computes_exclusive_abs_and_tension_only_with_two_features():
    model = toy.inhibition_model(4)
    x = torch.randn(50, 4)
    with torch.no_grad():
        y = model(x)
    a = x.abs()
    expected = (a - (a.sum(1, keepdim=True) - a)).clamp(min=0)
    assert torch.allclose(y, expected, atol=1e-6)
    assert torch.allclose(toy.targets(model.config, x), expected, atol=1e-6)
    an = toy.analyze_toy(model, count=64)
    assert float(an.tension_one.max()) == 0.0  # one feature: nothing to inhibit
    assert an.mean_tension_two > 0.1
    # with features j, k active, output j gets +|x_j| and -|x_k|: the motif, by design
    b, i = an.most_tense()
    j, k = torch.nonzero(an.active_two[b]).flatten().tolist()
    assert i in (j, k)
    other = k if i == j else j
    xb = an.inputs_two[b]
    assert float(an.P_two[b, i]) == pytest.approx(float(xb[i].abs()), abs=1e-5)
    assert float(an.N_two[b, i]) == pytest.approx(float(xb[other].abs()), abs=1e-5)
    assert bool(toy.represented_features(model).all())


def test_represented_features_detects_a_missing_feature():
    model = toy.inhibition_model(3)
    with torch.no_grad():
        model.out.weight[1, 2:4] = 0.0  # output 1 no longer reads its own units
    assert toy.represented_features(model).tolist() == [True, False, True]


# ------------------------------------------------------------------------------------------------
# attribution through the shared `attribute`
# ------------------------------------------------------------------------------------------------
def test_output_attributions_use_attribute_and_are_complete(trained_abs):
    model = trained_abs.model
    x, _ = toy.k_feature_inputs(model.config, 2, 16, generator=2)
    scores, act = toy.output_attributions(model, x)
    assert scores.shape == (16, 6, 8) and act.shape == (16, 6)
    # piecewise-linear, so grad x activation at the hidden ReLU sums to the pre-activation minus the bias
    assert torch.allclose(scores.sum(-1) + model.out.bias.detach(), act, atol=1e-5)
    with torch.no_grad():
        h = model.relu(model.hidden(x))
    assert torch.allclose(scores[:, 3], h * model.out.weight.detach()[3], atol=1e-6)
    a = attribute(model, x, Feature("out", unit=3), "relu", preprocess=False)
    assert torch.allclose(a.scores["relu"], scores[:, 3])
    assert torch.allclose(measure(model, x, Feature("out", unit=3), preprocess=False), act[:, 3])
    ig = attribute(model, x, Feature("out", unit=3), "relu", method="integrated_gradients", steps=8, preprocess=False)
    assert torch.allclose(ig.total("relu"), act[:, 3] - ig.baseline_activation["relu"], atol=1e-4)


def test_vector_inputs_need_preprocess_false_and_valid_shapes(trained_abs):
    model = trained_abs.model
    f = Feature("out", unit=0)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        attribute(model, torch.zeros(2, 6), f, "relu")  # preprocess=True still means images
    with pytest.raises(ValueError, match="NaN"):
        attribute(model, torch.full((2, 6), float("nan")), f, "relu", preprocess=False)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 6\)"):
        toy.output_attributions(model, torch.zeros(2, 5))


# ------------------------------------------------------------------------------------------------
# save / load
# ------------------------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path, trained_abs):
    path = str(tmp_path / "abs.npz")
    trained_abs.save(path)
    loaded = ToyModel.load(path, n=6, m=8, kind="abs")
    assert loaded.config == trained_abs.model.config
    x, _ = toy.abs_data(64, 6, 0.3, generator=4)
    with torch.no_grad():
        assert torch.equal(loaded(x), trained_abs.model(x))
    assert ToyModel.load(path, expect=trained_abs.model.config).config.m == 8
    fresh = ToyModel(ToyConfig("abs", n=6, m=8, S=0.01))
    fresh.load_weights(path)
    assert torch.equal(fresh.hidden.weight, trained_abs.model.hidden.weight)
    with np.load(path, allow_pickle=False) as z:  # no pickle inside
        meta = json.loads(bytes(z["__meta__"]).decode())
    assert meta["type"] == "TrainResult"
    assert meta["fields"]["model"]["fields"]["config"]["value"]["n"] == 6
    assert meta["fields"]["best_seed"]["value"] == trained_abs.best_seed


def test_load_rejects_incompatible_hyper_parameters(tmp_path):
    path = str(tmp_path / "m.npz")
    ToyModel(ToyConfig("abs", n=4, m=3, S=0.1), seed=0).save(path)
    with pytest.raises(ValueError, match=r"incompatible hyper-parameters .*n: saved 4, expected 5"):
        ToyModel.load(path, n=5)
    with pytest.raises(ValueError, match=r"m: saved 3, expected 6.*S: saved 0.1, expected 0.2"):
        ToyModel.load(path, m=6, S=0.2)
    with pytest.raises(ValueError, match="kind: saved 'abs', expected 'xor'"):
        ToyModel.load(path, expect=ToyConfig("xor", n=4, m=3, S=0.1))
    with pytest.raises(ValueError, match="m: saved 3, expected 5"):
        ToyModel(ToyConfig("abs", n=4, m=5, S=0.1)).load_weights(path)
    with pytest.raises(ValueError, match="unknown hyper-parameter 'width'"):
        ToyModel.load(path, width=3)
    # weights that do not match their own hyper-parameters
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    keys = json.loads(bytes(arrays["__meta__"]).decode())["fields"]["state"]["keys"]
    arrays[f"state/{keys.index('hidden.weight')}"] = np.zeros((7, 4), np.float32)
    bad = str(tmp_path / "bad.npz")
    np.savez(bad, **arrays)
    with pytest.raises(ValueError, match=r"'hidden.weight' has shape \(7, 4\).*expected \(3, 4\)"):
        ToyModel.load(bad)
    other = str(tmp_path / "other.npz")
    np.savez(other, meta=np.frombuffer(json.dumps({"format": "x"}).encode(), np.uint8))
    with pytest.raises(ValueError, match="not a saved toy model"):
        ToyModel.load(other)


def test_analysis_save_load(tmp_path):
    an = toy.analyze_toy(toy.inhibition_model(3), count=16)
    path = str(tmp_path / "an.npz")
    an.save(path)
    back = toy.ToyAnalysis.load(path)
    assert torch.equal(back.scores_two, an.scores_two) and torch.equal(back.active_one, an.active_one)
    assert back.summary() == an.summary()


# ------------------------------------------------------------------------------------------------
# figure and CLI
# ------------------------------------------------------------------------------------------------
def test_plot_superposition_draws_both_mechanisms_and_the_control(tmp_path, trained_abs):
    path = str(tmp_path / "fig.png")
    an = toy.analyze_toy(trained_abs.model, count=64)
    control = toy.analyze_toy(toy.separated_model(trained_abs.model.config), count=64)
    inhibition = toy.analyze_toy(toy.inhibition_model(6), count=64)
    with pytest.raises(ValueError, match=r"one ToyAnalysis per row \(3: superposed, control, inhibition\), got 2"):
        toy.plot_superposition(trained_abs.model, analyses=(an, inhibition))
    fig = toy.plot_superposition(trained_abs.model, path=path, analyses=(an, control, inhibition))
    assert os.path.getsize(path) > 10_000
    axes = fig.axes
    titles = " ".join(a.get_title() for a in axes)
    assert "interference" in titles and "inhibition" in titles and "no superposition" in titles
    control_bars = [a for a in axes if a.patches and "most tense" in a.get_title()][1]  # the control's row
    b, i = control.most_tense()
    assert np.allclose([p.get_height() for p in control_bars.patches], control.scores_two[b, i].numpy(), atol=1e-6)
    b, i = an.most_tense()
    bar_ax = [a for a in axes if a.patches and "most tense" in a.get_title()][0]
    got = np.array([p.get_height() for p in bar_ax.patches])
    assert np.allclose(got, an.scores_two[b, i].numpy(), atol=1e-6)


def test_cli_toy(tmp_path, capsys):
    out = str(tmp_path / "toy")
    assert main(["toy", "--out", out, "--n", "4", "--m", "3", "--S", "0.1", "--steps", "150", "--seeds", "2",
                 "--count", "32"]) == 0
    text = capsys.readouterr().out
    assert "all-zero predictor" in text and "features represented" in text and "two-feature" in text
    assert sorted(f for f in os.listdir(out) if f != MANIFEST) == ["toy_analysis.npz", "toy_model.npz", "toy_summary.json", "toy_superposition.png"]
    with open(os.path.join(out, "toy_summary.json")) as fh:
        summary = json.load(fh)
    assert summary["train"]["seeds"] == [0, 1] and summary["analysis"]["config"]["m"] == 3
    assert summary["inhibition_model"]["mean_tension_one"] == 0.0
    # reuse the saved model; a mismatching --m is refused with the reason
    assert main(["toy", "--out", str(tmp_path / "again"), "--n", "4", "--m", "3", "--load",
                 os.path.join(out, "toy_model.npz"), "--count", "16"]) == 0
    assert main(["toy", "--out", str(tmp_path / "bad"), "--n", "4", "--m", "5", "--load",
                 os.path.join(out, "toy_model.npz")]) == 2
    assert "m: saved 3, expected 5" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--m", "0"], "m must be >= 1, got 0"),
        (["--n", "0"], "n must be >= 1, got 0"),
        (["--S", "1.5"], "S (feature activation probability) must be <= 1, got 1.5"),
        (["--S", "0"], "S (feature activation probability) must be > 0, got 0.0"),
        (["--steps", "0"], "--steps must be >= 1"),
    ],
)
def test_cli_toy_bad_input(tmp_path, capsys, argv, message):
    assert main(["toy", "--out", str(tmp_path / "o")] + argv) == 2
    assert message in capsys.readouterr().err
