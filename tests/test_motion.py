"""Renders that did not move, named: the measures (RMS image change, the objective's relative gain), their floors,
the warning, the render engine's measurement and the ``moved`` / ``motion`` fields of the results holding renders."""
import warnings

import numpy as np
import pytest
import torch
from conftest import TinyConvNet
from lucent.optvis import objectives as lucent_objectives
from lucent.optvis import param as lucent_param

import lucent_inhibit as li
from lucent_inhibit.core import motion, rendering
from lucent_inhibit.core.motion import (MIN_IMAGE_CHANGE, MIN_OBJECTIVE_GAIN, Motion, StillRenderWarning,
                                        measure_motion, relative_gain, warn_still)

SETTINGS = li.RenderSettings(steps=6, size=16, model_size=16, seed=0, transforms=[], lr=0.05)


def test_relative_gain_is_last_minus_first_over_the_largest_value():
    assert relative_gain([1.0, 2.0, 4.0]) == pytest.approx(0.75)
    assert relative_gain([-4.0, -1.0]) == pytest.approx(0.75)  # a negative objective that rose
    assert relative_gain([3.0, 1.0]) == pytest.approx(-2 / 3)  # one that fell
    assert relative_gain([]) == 0.0 and relative_gain([5.0]) == 0.0 and relative_gain([0.0, 0.0]) == 0.0
    assert relative_gain([1.0, float("nan")]) == 0.0


def test_measure_motion_per_image_and_the_floors():
    start = torch.zeros(3, 3, 4, 4)
    final = start.clone()
    final[0] += 0.1  # moved: RMS 0.1
    final[1] += MIN_IMAGE_CHANGE / 2  # below the change floor
    history = {"objective": [1.0, 2.0], "objective/2": [1.0, 1.0 + MIN_OBJECTIVE_GAIN / 4]}
    m = measure_motion(start, final, history)
    assert m.change.tolist() == pytest.approx([0.1, MIN_IMAGE_CHANGE / 2, 0.0])
    assert m.gain.tolist() == pytest.approx([0.5, 0.5, (MIN_OBJECTIVE_GAIN / 4) / (1 + MIN_OBJECTIVE_GAIN / 4)])
    assert m.moved.tolist() == [True, False, False]
    assert m.table().shape == (3, 2) and m.table().dtype == torch.float32
    assert m.take([0, 2]).change.tolist() == pytest.approx([0.1, 0.0])
    moved, table = motion.motion_fields(m)
    assert moved.tolist() == [True, False, False] and torch.equal(table, m.table())
    assert motion.motion_fields(None) == (None, None)


def test_warn_still_names_each_still_render_with_its_numbers():
    m = Motion(torch.tensor([0.2, 0.0, 0.3]), torch.tensor([0.5, 0.0, 0.001]))
    with pytest.warns(StillRenderWarning) as caught:
        warn_still("my render", m, ["first", "second", "third"])
    (w,) = caught
    text = str(w.message)
    assert text.startswith("my render: 2 of 3 render(s) did not move")
    assert "second: RMS change 0" in text and "third: RMS change 0.3" in text and "first" not in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_still("all moved", Motion(torch.tensor([0.2]), torch.tensor([0.5])))  # nothing to say


def test_still_reason_tells_a_flat_render_from_an_objective_that_did_not_rise():
    assert "no gradient" in motion.still_reason(0.0, 0.0)
    assert "did not rise" in motion.still_reason(0.2, 0.001) and "0.001" in motion.still_reason(0.2, 0.001)


def test_a_render_without_gradient_keeps_its_start_and_is_named():
    net = TinyConvNet().eval()
    torch.manual_seed(0)
    start = lucent_param.image(16)
    with pytest.warns(StillRenderWarning, match=r"flat test: 1 of 1 render\(s\) did not move: the channel"):
        run = rendering.run_render(net, lucent_objectives.channel("conv2", 1) * 0, start, SETTINGS, "flat test",
                                   labels=["the channel"])
    assert run.motion.change.tolist() == [0.0] and run.motion.gain.tolist() == [0.0]
    assert run.motion.moved.tolist() == [False]


def test_a_render_that_moves_is_measured_and_not_named():
    net = TinyConvNet().eval()
    torch.manual_seed(0)
    start = lucent_param.image(16)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StillRenderWarning)
        run = rendering.run_render(net, lucent_objectives.channel("conv2", 1), start, SETTINGS, "moving test")
    assert float(run.motion.change[0]) > MIN_IMAGE_CHANGE and float(run.motion.gain[0]) > MIN_OBJECTIVE_GAIN
    values = run.history["objective"]
    assert float(run.motion.gain[0]) == pytest.approx((values[-1] - values[0]) / max(abs(v) for v in values))


def test_results_holding_renders_keep_moved_and_motion_through_their_file(tmp_path):
    net = TinyConvNet().eval()
    feature = li.Feature("conv3", unit=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StillRenderWarning)
        tense = li.tense_image(net, feature, "relu1", render=SETTINGS)
        inv = li.inversions(net, torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)), feature, "relu1",
                            render=SETTINGS)
    assert tense.moved.shape == (tense.images.shape[0],) and tense.motion.shape == (tense.images.shape[0], 2)
    assert tense.moved.dtype == torch.bool
    # the original image is not a render: counted as moved, its measures NaN
    assert inv.moved.shape == (3,) and bool(inv.moved[0]) and torch.isnan(inv.motion[0]).all()
    assert torch.equal(inv.moved[1:], (inv.motion[1:, 0] >= MIN_IMAGE_CHANGE) & (inv.motion[1:, 1] >= MIN_OBJECTIVE_GAIN))
    for r in (tense, inv):
        back = li.load_result(r.save(tmp_path / type(r).__name__))
        assert torch.equal(back.moved, r.moved)
        assert np.allclose(back.motion.numpy(), r.motion.numpy(), equal_nan=True)


def test_a_sweep_measures_each_angle_on_its_own_objective():
    """The combination sweep renders all angles as one batch; each render's gain is its own C's, not the batch's."""
    from test_combinations import POINTY, ROUNDED, PointyRounded

    from lucent_inhibit.combinations.sweeps import per_image_pair

    net = PointyRounded(gated=True).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StillRenderWarning)
        res = li.sweep_combinations(net, POINTY, ROUNDED, n_angles=5, n_seeds=1, render=SETTINGS.replace(steps=5))
    assert res.moved.shape == (5,) and res.motion.shape == (5, 2)
    assert len(set(np.round(res.motion[:, 1].numpy(), 6))) > 1  # one gain per angle
    # the loss is feature_pair's, unchanged: minus the batch mean of the recorded per-image C
    out = li.capture(net, torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)), [POINTY.layer])
    loss, named = per_image_pair(POINTY, ROUNDED, np.array([0.0, 2.0]), 4.0, res.scale).fn(out.__getitem__)
    assert float(loss) == pytest.approx(-(float(named["objective/0"]) + float(named["objective/1"])) / 2, rel=1e-5)
    assert float(named["objective"]) == pytest.approx(-float(loss))
