"""Combination stages leave the model as they found it: no hooks, same requires_grad, also when they raise.

Lucent's ``render_vis`` registers a forward hook on every module and never removes it; every render of
the combination stages goes through ``rendering.run_render`` and every layer read through
``hooks.capture``, which remove what they add, also on error.
"""
import pytest
import torch
from test_combinations import POINTY, ROUNDED, PointyRounded

from lucent_inhibit.combinations import axis_scales, pair_statistics, sweep_combinations
from lucent_inhibit.core.features import Feature
from lucent_inhibit.core.layers import hook_count
from lucent_inhibit.core.settings import PassSettings, RenderSettings


class InjectedFailure(Exception):
    """Raised half-way through a stage by the tests (not a RuntimeError, which capture rewords)."""


TINY = RenderSettings(steps=3, size=16, model_size=16, transforms=[])


def _model():
    """A small net with a user hook already on it and a mix of frozen and trainable parameters."""
    model = PointyRounded(gated=True).eval()
    model.conv1.weight.requires_grad_(False)
    model.relu1.register_forward_hook(lambda m, i, o: None)
    return model


def _state(model):
    return hook_count(model), {n: p.requires_grad for n, p in model.named_parameters()}, model.training


def _raise_in_render(monkeypatch, on_call: int, at_step: int = 2):
    """Make the ``on_call``-th ``render_vis`` call raise :class:`InjectedFailure` at step ``at_step`` (Lucent's hooks
    are on the model by then); returns a record of the calls and the hooks seen when it raised."""
    from lucent.optvis import render

    real = render.render_vis
    seen = {"calls": 0, "hooks_when_raised": None}

    def render_vis(model, objective_f, *args, **kwargs):
        seen["calls"] += 1
        if seen["calls"] == on_call:
            inner, steps = objective_f, [0]

            def objective_f(T):
                steps[0] += 1
                if steps[0] == at_step:
                    seen["hooks_when_raised"] = hook_count(model)
                    raise InjectedFailure("injected failure half-way through the render")
                return inner(T)

        return real(model, objective_f, *args, **kwargs)

    monkeypatch.setattr(render, "render_vis", render_vis)
    return seen


# -- pair statistics (capture) ------------------------------------------------------------------------
def test_pair_statistics_restores_hooks_and_grads():
    model = _model()
    before = _state(model)
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    pair_statistics(model, images, "head", settings=PassSettings(batch_size=4, progress=False))
    assert _state(model) == before


def test_pair_statistics_restores_hooks_when_a_batch_raises(monkeypatch):
    model = _model()
    before = _state(model)
    real, batches, seen = model.conv2.forward, [0], []

    def forward(x):  # fails inside the second real batch (the layer-order probe runs on one image)
        if x.shape[0] == 4:
            batches[0] += 1
            if batches[0] == 2:
                seen.append(hook_count(model))
                raise InjectedFailure("injected failure in the second batch")
        return real(x)

    monkeypatch.setattr(model.conv2, "forward", forward)
    images = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with pytest.raises(InjectedFailure, match="second batch"):
        pair_statistics(model, images, "head", settings=PassSettings(batch_size=4, progress=False))
    assert seen and seen[0] > before[0]  # capture's hooks were on when it raised
    assert _state(model) == before


# -- axis scales and the sweep (run_render) ---------------------------------------------------------------
#: stage -> (call on a model, the render_vis call that raises half-way: the sweep's call 1 renders the axis
#: scales, call 2 the first chunk of the sweep)
RENDER_STAGES = {
    "axis_scales": (lambda m: axis_scales(m, POINTY, ROUNDED, n_seeds=2, render=TINY), 1),
    "sweep_combinations": (
        lambda m: sweep_combinations(m, POINTY, ROUNDED, n_angles=5, n_seeds=1, chunk=3, render=TINY), 2),
}


@pytest.mark.parametrize("stage", sorted(RENDER_STAGES))
def test_render_stage_restores_hooks_and_grads(stage):
    model = _model()
    before = _state(model)
    RENDER_STAGES[stage][0](model)
    assert _state(model) == before


@pytest.mark.parametrize("stage", sorted(RENDER_STAGES))
def test_render_stage_restores_hooks_when_a_render_raises(stage, monkeypatch):
    run, on_call = RENDER_STAGES[stage]
    model = _model()
    before = _state(model)
    seen = _raise_in_render(monkeypatch, on_call=on_call)
    with pytest.raises(InjectedFailure, match="half-way"):
        run(model)
    assert seen["calls"] == on_call and seen["hooks_when_raised"] > before[0]  # Lucent's hooks were on
    assert _state(model) == before


def test_inceptionv1_sweep_leaves_no_lucent_hooks(monkeypatch):
    """Lucent's InceptionV1 (random weights): render_vis hooks its 138 modules; none stay, also on error."""
    from lucent.modelzoo import inceptionv1

    from lucent_inhibit.core.preparation import prepare

    with torch.random.fork_rng():
        torch.manual_seed(0)  # random weights, the same every run: units 2 and 6 are active at the centre
        model = prepare(inceptionv1(pretrained=False))
    before = _state(model)
    fa, fb = Feature("mixed3a", 2), Feature("mixed3a", 6)
    kw = dict(n_angles=5, n_seeds=1, scale=(1.0, 1.0), render=RenderSettings(steps=2, size=32, model_size=224))
    res = sweep_combinations(model, fa, fb, **kw)  # one render_vis call: 5 angles in one batch
    assert res.render_size == (224, 224) and torch.isfinite(res.values).all()
    assert _state(model) == before
    seen = _raise_in_render(monkeypatch, on_call=2)  # chunks of 2: the second chunk raises half-way
    with pytest.raises(InjectedFailure, match="half-way"):
        sweep_combinations(model, fa, fb, chunk=2, **kw)
    assert seen["hooks_when_raised"] >= before[0] + 138
    assert _state(model) == before
