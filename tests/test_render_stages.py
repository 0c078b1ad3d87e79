"""The rendering stages of this area (accentuate, inversions, tense_image) under the render contract:
one ``render=RenderSettings`` argument, the model left as found (hooks, requires_grad) also when a
stage raises half-way, the global RNGs untouched by a seeded render, result files and figures."""
import numpy as np
import pytest
import torch
from lucent.optvis import objectives as lobj

from lucent_inhibit import Feature
from lucent_inhibit.core.layers import hook_count
from lucent_inhibit.core.results import load_result
from lucent_inhibit.core.settings import RenderSettings
from lucent_inhibit.synthesis import objectives as O
from lucent_inhibit.synthesis.accentuation import Accentuation, accentuate
from lucent_inhibit.synthesis.figures import plot_tense
from lucent_inhibit.synthesis.inversion import InversionResult, inversions
from lucent_inhibit.synthesis.objectives import cosdots
from lucent_inhibit.synthesis.tense import TenseResult, tense_image

FEAT = Feature("conv3", unit=1)

pytestmark = pytest.mark.usefixtures("one_thread")


def _seed(n=1, size=16, s=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(s)) * 0.8 + 0.1


def _state(model):
    """What a stage must leave as it found it: hook count and every parameter's requires_grad flag."""
    return hook_count(model), tuple((n, p.requires_grad) for n, p in model.named_parameters())


@pytest.fixture
def mixed_net(tiny_net):
    """The tiny net with some parameters frozen, so a restore to 'all True' or 'all False' would show."""
    for p in tiny_net.conv1.parameters():
        p.requires_grad_(False)
    return tiny_net


class Boom(RuntimeError):
    pass


def _raise_on(call: int):
    """A callable raising :class:`Boom` on its ``call``-th call (counting from 1), counting its calls."""
    calls = {"n": 0}

    def fn(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= call:
            raise Boom(f"raised on call {calls['n']}")

    return fn, calls


# ------------------------------------------------------------------------------------------------
# hooks and requires_grad, on success and when a stage raises half-way
# ------------------------------------------------------------------------------------------------
def test_accentuate_leaves_the_model_as_found(mixed_net):
    before = _state(mixed_net)
    during = []
    accentuate(mixed_net, _seed(), O.feature(FEAT), reg_layer="conv2", render=RenderSettings(steps=3),
               callback=lambda step, images: during.append(hook_count(mixed_net)))
    assert min(during) > before[0]  # render_vis hooks every module while it runs ...
    assert _state(mixed_net) == before  # ... and they are gone afterwards
    cb, calls = _raise_on(2)  # the callback runs once per step: raise at step 2
    with pytest.raises(Boom):
        accentuate(mixed_net, _seed(), O.feature(FEAT), reg_layer="conv2", render=RenderSettings(steps=5),
                   callback=cb)
    assert calls["n"] == 2 and _state(mixed_net) == before


def test_accentuate_raising_in_the_step0_balance_leaves_the_model_as_found(mixed_net):
    before = _state(mixed_net)
    bad, calls = _raise_on(1)
    with pytest.raises(Boom):
        accentuate(mixed_net, _seed(), lobj.Objective(bad), reg_layer="conv2", render=RenderSettings(steps=3))
    assert calls["n"] == 1 and _state(mixed_net) == before


@pytest.mark.parametrize("seeded", [False, True])
def test_inversions_leave_the_model_as_found(mixed_net, monkeypatch, seeded):
    img = _seed(s=7)[0]
    before = _state(mixed_net)
    res = inversions(mixed_net, img, FEAT, "relu1", seeded=seeded, render=RenderSettings(steps=3),
                     completeness_images=0)
    assert res.objective.shape == (3, 2) and res.seeded == seeded
    assert _state(mixed_net) == before
    # the cosdot runs twice per step (excitatory, inhibitory target): raise at step 2
    real = cosdots.cosdot_value
    boom, calls = _raise_on(3)

    def cosdot_value(*args, **kwargs):
        boom()
        return real(*args, **kwargs)

    monkeypatch.setattr(cosdots, "cosdot_value", cosdot_value)
    with pytest.raises(Boom):
        inversions(mixed_net, img, FEAT, "relu1", seeded=seeded, render=RenderSettings(steps=5),
                   completeness_images=0)
    assert calls["n"] == 3 and _state(mixed_net) == before


def test_tense_image_leaves_the_model_as_found(mixed_net):
    before = _state(mixed_net)
    tense_image(mixed_net, FEAT, "conv1", render=RenderSettings(steps=2, size=16), record_every=1)
    assert _state(mixed_net) == before
    boom, calls = _raise_on(2)

    def extra(T):
        boom()
        return T("conv3").sum() * 0

    with pytest.raises(Boom):
        tense_image(mixed_net, FEAT, "conv1", render=RenderSettings(steps=5, size=16), extra=lobj.Objective(extra))
    assert calls["n"] == 2 and _state(mixed_net) == before


# ------------------------------------------------------------------------------------------------
# random state: a seeded render neither reads nor moves the global generators
# ------------------------------------------------------------------------------------------------
def _rng():
    return torch.get_rng_state(), np.random.get_state()[1].copy()


def _same_rng(a, b):
    return torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("stage", ["accentuate", "inversions", "inversions_seeded", "tense_image"])
def test_seeded_render_keeps_global_rng_and_repeats(tiny_net, stage):
    def run():
        s = RenderSettings(steps=2, size=16, seed=3)
        if stage == "accentuate":
            return accentuate(tiny_net, _seed(), O.feature(FEAT), reg_layer="conv2", render=s).images
        if stage.startswith("inversions"):
            return inversions(tiny_net, _seed(s=7)[0], FEAT, "relu1", seeded=stage.endswith("seeded"), render=s,
                              completeness_images=0).images
        return tense_image(tiny_net, FEAT, "conv1", render=s).images

    torch.manual_seed(123)
    np.random.seed(123)
    before = _rng()
    first = run()
    assert _same_rng(_rng(), before)
    torch.rand(5)  # moving the global generators changes nothing in a seeded render
    np.random.rand(5)
    assert torch.equal(run(), first)


# ------------------------------------------------------------------------------------------------
# the render contract: settings, stage defaults, bad input
# ------------------------------------------------------------------------------------------------
def test_stage_defaults_apply_only_when_a_setting_is_none(tiny_net, monkeypatch):
    """accentuate and seeded inversions default to the phase parameterization, noise-start inversions and
    tense synthesis to the Fourier one; an explicit setting wins."""
    from lucent_inhibit.synthesis import param as P

    used = []
    real = P.build

    def spy(kind, *args, **kwargs):
        used.append(kind)
        return real(kind, *args, **kwargs)

    monkeypatch.setattr(P, "build", spy)
    s = RenderSettings(steps=1, size=16)
    accentuate(tiny_net, _seed(), O.feature(FEAT), render=s)
    inversions(tiny_net, _seed(s=7)[0], FEAT, "relu1", seeded=True, render=s, completeness_images=0)
    inversions(tiny_net, _seed(s=7)[0], FEAT, "relu1", render=s, completeness_images=0)
    tense_image(tiny_net, FEAT, "conv1", render=s)
    accentuate(tiny_net, _seed(), O.feature(FEAT), render=s.replace(param="fourier"))
    tense_image(tiny_net, FEAT, "conv1", render=s.replace(param="phase"))
    assert used == ["phase", "phase", "fourier", "fourier", "fourier", "phase"]


def test_default_render_settings_and_sizes(tiny_net):
    # size None: the seed's size for accentuate and inversions; 128 for tense synthesis (run with 1 step)
    res = tense_image(tiny_net, FEAT, "conv1", render=RenderSettings(steps=1), record_every=1)
    assert res.images.shape == (1, 3, 128, 128) and res.steps.tolist() == [0, 1]
    acc = accentuate(tiny_net, _seed(size=20), O.feature(FEAT), render={"steps": 1})
    assert acc.images.shape == (1, 3, 20, 20) and acc.steps == 1
    assert RenderSettings().steps == 128


def test_bad_render_input(tiny_net):
    with pytest.raises(ValueError, match="batch must be >= 1, got 0"):
        tense_image(tiny_net, FEAT, "conv1", render=RenderSettings(steps=1, size=16), batch=0)
    with pytest.raises(ValueError, match="record_every"):
        tense_image(tiny_net, FEAT, "conv1", render=RenderSettings(steps=1, size=16), record_every=0)
    with pytest.raises(ValueError, match="steps"):
        RenderSettings(steps=2.5)
    with pytest.raises(TypeError, match="render must be a RenderSettings"):
        accentuate(tiny_net, _seed(), O.feature(FEAT), render=4)
    with pytest.raises(ValueError, match="model_size must be None or"):
        inversions(tiny_net, _seed(s=7)[0], FEAT, "relu1", render=RenderSettings(steps=1, model_size=32))
    with pytest.raises(ValueError, match="n_crops must be >= 1"):
        accentuate(tiny_net, _seed(), O.feature(FEAT), n_crops=0, render=RenderSettings(steps=1))
    with pytest.raises(ValueError, match="jitter must be an integer"):
        inversions(tiny_net, _seed(s=7)[0], FEAT, "relu1", jitter=1.5, render=RenderSettings(steps=1))
    with pytest.raises(ValueError, match="objective is required"):
        accentuate(tiny_net, _seed(), None, render=RenderSettings(steps=1))


# ------------------------------------------------------------------------------------------------
# results: one file format, summaries, figures
# ------------------------------------------------------------------------------------------------
def test_results_are_result_files_with_summaries_and_figures(tiny_net, tmp_path):
    acc = accentuate(tiny_net, _seed(2), O.feature(FEAT), reg_layer="conv2", render=RenderSettings(steps=3))
    path = acc.save(tmp_path / "acc")
    assert path.endswith(".npz")
    back = load_result(path)
    assert isinstance(back, Accentuation) and torch.equal(back.images, acc.images) and back.reg_layer == "conv2"
    s = acc.summary()
    assert s["steps"] == 3 and s["balance"] == acc.balance and s["regularizer_end"] == float(acc.regularizer[-1])
    assert len(acc.plot(str(tmp_path / "acc.png")).axes) >= 2 * 3  # the Figure: seeds, accentuations, curves
    assert (tmp_path / "acc.png").stat().st_size > 5000

    t = tense_image(tiny_net, FEAT, "conv1", render=RenderSettings(steps=2, size=16), record_every=1)
    assert isinstance(load_result(t.save(tmp_path / "t")), TenseResult)
    assert t.summary()["tension_end"] == float(t.tension[-1, 0])
    assert len(plot_tense(t, str(tmp_path / "t.png")).axes) == t.images.shape[0] + 1
    assert (tmp_path / "t.png").stat().st_size > 5000

    inv = inversions(tiny_net, _seed(s=7)[0], FEAT, "relu1", render=RenderSettings(steps=2), completeness_images=0)
    again = InversionResult.load(inv.save(tmp_path / "inv"))
    assert torch.equal(again.objective, inv.objective) and again.summary() == inv.summary()
    assert len(inv.plot(str(tmp_path / "inv.png")).axes) == 9
