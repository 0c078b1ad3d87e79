"""Disinhibition (the causal test of MTIs), the inhibitor dictionary, the percentile tension score and the
`inhibitors` stage: planted nets where the answer is known, bad input, hooks, and the embedded model (slow)."""
import json
import os
import warnings

import numpy as np
import pytest
import torch
from test_scan import (
    FEATURE,
    CountingDataset,
    RedMinusGreen,
    SmallNet,
    TwoBranch,
    _planted_images,
)

from lucent_inhibit.attribution.agreement import IncompletenessWarning
from lucent_inhibit.causal.disinhibition import Disinhibition, disinhibit
from lucent_inhibit.causal.inhibitors import InhibitorDictionary, inhibitor_dictionary
from lucent_inhibit.core.features import Feature
from lucent_inhibit.core.layers import hook_count
from lucent_inhibit.core.settings import PassSettings, RenderSettings
from lucent_inhibit.scanning.result import ScanResult
from lucent_inhibit.scanning.run import scan

PLANTED = Feature("out", unit=0, position="mean")
TINY_RENDER = RenderSettings(steps=2, size=16)


@pytest.fixture(scope="module")
def planted():
    images, kinds = _planted_images()
    net = RedMinusGreen()
    r = scan(net, images, PLANTED, "relu", settings=PassSettings(batch_size=8, progress=False, preprocess=False))
    return net, images, kinds, r


def _state(model):
    return hook_count(model), [p.requires_grad for p in model.parameters()]


# ------------------------------------------------------------------------------------------------
# percentile tension
# ------------------------------------------------------------------------------------------------
def test_percentile_tension_is_the_default_and_ranks_within_the_scan():
    r = scan(SmallNet(), CountingDataset(30), FEATURE, ["relu2", "relu1"], settings=PassSettings(batch_size=8, progress=False))
    pct = r.percentiles("relu1")
    p, n = r.P("relu1"), r.N("relu1")
    # percentile rank = share below + half the share equal, in [0, 100]
    assert pct.shape == (30, 2) and pct.min() > 0 and pct.max() < 100
    np.testing.assert_allclose(pct[:, 0], [100 * ((p < x).mean() + 0.5 * (p == x).mean()) for x in p])
    np.testing.assert_allclose(pct[:, 1], [100 * ((n < x).mean() + 0.5 * (n == x).mean()) for x in n])
    t = pct.min(1)
    np.testing.assert_allclose(r.tension("relu1"), t)
    expected = r.indices[np.lexsort((r.indices, -pct.max(1), -t))[:5]]
    np.testing.assert_array_equal(r.mtis(5, layer="relu1"), expected)
    np.testing.assert_array_equal(r.mtis(5, score="percentile", layer="relu1"), expected)
    assert r.info["score"] == "percentile"
    s = r.summary()["layers"]["relu1"]
    rows = np.isin(r.indices, r.mtis(10, layer="relu1"))
    assert s["mti_median_P_percentile"] == pytest.approx(float(np.median(pct[rows, 0])))
    assert s["mti_median_N_percentile"] == pytest.approx(float(np.median(pct[rows, 1])))


def test_percentile_tension_puts_both_totals_high_on_the_planted_net(planted):
    _, _, kinds, r = planted
    both = set(np.nonzero(kinds == "both")[0].tolist())
    assert set(r.mtis(len(both)).tolist()) == both
    pct = r.percentiles()[np.isin(r.indices, r.mtis(len(both)))]
    assert pct.min() > 50


def test_scan_too_small_for_percentiles_says_how_many_images_are_needed():
    with pytest.warns(UserWarning, match="at least 10 images; this scan has 6"):
        r = scan(SmallNet(), CountingDataset(6), FEATURE, "relu2", settings=PassSettings(batch_size=4, progress=False))
    with pytest.raises(ValueError, match="at least 10 images; this scan has 6"):
        r.percentiles()
    with pytest.raises(ValueError, match="at least 10 images"):
        r.mtis(3)
    np.testing.assert_array_equal(r.mtis(3, score="min"), r.indices[np.argsort(-np.minimum(r.P(), r.N()))[:3]])
    assert r.summary()["mti_score"] == "min"  # the summary still works, by the raw score
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scan(SmallNet(), CountingDataset(6), FEATURE, "relu2", score="min", settings=PassSettings(batch_size=4, progress=False))


# ------------------------------------------------------------------------------------------------
# disinhibition
# ------------------------------------------------------------------------------------------------
def test_planted_disinhibition_lifts_the_mtis_to_the_meis(planted, tmp_path):
    net, images, kinds, r = planted
    d = disinhibit(net, images, PLANTED, "relu", scan=r, k=6, n_random=12, settings=PassSettings(preprocess=False))
    assert set(kinds[d.indices["mtis"]]) == {"both"} and set(kinds[d.indices["meis"]]) == {"red"}
    m = d.means()
    # MTIs: excitation and inhibition cancel; without the inhibitory elements the feature fires
    assert abs(m["mtis"]["f"]) < 0.05 * m["meis"]["f"]
    assert m["mtis"]["disinhibited"] > 0.5 * m["meis"]["f"] and m["mtis"]["disinhibited"] > 100 * abs(m["mtis"]["f"])
    # MEIs (red only) carry no inhibition: unchanged; bias-free ReLU net, zero baseline: f + N is exact
    np.testing.assert_allclose(d.disinhibited["meis"], d.activation["meis"], atol=1e-6)
    for g in d.indices:
        np.testing.assert_allclose(d.disinhibited[g], d.linear[g], atol=1e-5)
    assert d.ratio == pytest.approx(m["mtis"]["disinhibited"] / m["meis"]["f"])
    s = d.summary()
    json.dumps(s)
    assert s["verdict"] in ("reproduced", "not reproduced on this model") and s["verdict"] in s["explanation"]
    assert s["completeness"]["complete"] is True
    back = Disinhibition.load(d.save(str(tmp_path / "dis")))
    assert back.summary() == s
    assert d.plot(str(tmp_path / "dis.png")).axes
    with open(tmp_path / "dis.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    mean = disinhibit(net, images, PLANTED, "relu", scan=r, k=6, n_random=12, baseline="mean", settings=PassSettings(preprocess=False))
    assert mean.baseline == "mean" and not np.allclose(mean.disinhibited["mtis"], d.disinhibited["mtis"])


def test_verdict_is_computed_from_the_numbers_and_the_matched_control(planted):
    net, images, kinds, r = planted
    d = disinhibit(net, images, PLANTED, "relu", scan=r, k=6, n_random=12, settings=PassSettings(preprocess=False))
    # the control: images matched to the MTIs on P with little inhibition, mostly the red-only ones
    assert (kinds[d.indices["matched"]] == "red").sum() >= 4 and not set(d.indices["matched"]) & set(d.indices["mtis"])
    assert not (kinds[d.indices["matched"]] == "green").any()
    assert d.held_down_t > 2 and d.released > 0.9 and d.evidence_t > 2
    assert d.verdict == "reproduced" and all(d.checks().values())
    for name in ("matched on P", "Welch t", "cosine of excitation"):
        assert name in d.explanation()
    strict = disinhibit(net, images, PLANTED, "relu", scan=r, k=6, n_random=12, fraction=50.0,
                        settings=PassSettings(preprocess=False))
    assert strict.verdict == "not reproduced on this model" and "bar 50" in strict.explanation()
    assert strict.checks() == {"held_down": True, "released": False, "evidence": True}


class ForeignExcitation(torch.nn.Module):
    """feature = 3 relu(red) + relu(blue) - relu(green): its MEIs are red, its tense images blue and green: excited
    by something unlike its preferred input, so the causal claim must not be reproduced."""

    def __init__(self):
        super().__init__()
        self.detect = torch.nn.Conv2d(3, 3, 1, bias=False)
        self.relu = torch.nn.ReLU()
        self.out = torch.nn.Conv2d(3, 1, 1, bias=False)
        with torch.no_grad():
            self.detect.weight.copy_(torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1]]).view(3, 3, 1, 1))
            self.out.weight.copy_(torch.tensor([3.0, -1.0, 1.0]).view(1, 3, 1, 1))
        self.eval()

    def forward(self, x):
        return self.out(self.relu(self.detect(x)))


def _colour_images(per_kind=8, size=16, seed=0):
    """Red, green, blue, blue-and-green patches and grey ones on black."""
    rng = np.random.default_rng(seed)
    images, kinds = [], []
    for kind in ("red", "green", "blue", "blue+green", "grey"):
        for _ in range(per_kind):
            img = torch.zeros(3, size, size)
            side = int(rng.integers(4, 7))
            y1, y2 = (int(v) for v in rng.integers(0, size - side, 2))
            for channel, colour in ((0, "red"), (1, "green"), (2, "blue")):
                if colour in kind:
                    x0 = 1 if colour != "green" else size - 1 - side
                    img[channel, (y1 if colour != "green" else y2): (y1 if colour != "green" else y2) + side,
                        x0: x0 + side] = 1.0
            if kind == "grey":
                img[:, y1: y1 + side, 1: 1 + side] = 0.5
            images.append(img)
            kinds.append(kind)
    return images, np.array(kinds)


def test_tense_images_excited_unlike_the_feature_do_not_reproduce_the_causal_claim():
    images, kinds = _colour_images()
    settings = PassSettings(batch_size=8, progress=False, preprocess=False)
    d = disinhibit(ForeignExcitation(), images, PLANTED, "relu", k=6, n_random=16, settings=settings)
    assert set(kinds[d.indices["meis"]]) == {"red"} and set(kinds[d.indices["mtis"]]) == {"blue+green"}
    cos = d.cosines()
    assert cos["mtis"].mean() < 0.2 < cos["random"].mean()  # blue excitation, red-preferring feature
    assert not d.checks()["evidence"] and d.verdict == "not reproduced on this model"
    assert "failed: evidence" in d.explanation()


def test_incomplete_layer_warns_and_says_so():
    ds = CountingDataset(30)
    with pytest.warns(IncompletenessWarning, match="a_relu"):
        r = scan(TwoBranch(), ds, Feature("sum", unit=0), "a_relu", settings=PassSettings(batch_size=10, progress=False))
    with pytest.warns(IncompletenessWarning, match="a_relu.*incomplete"):
        d = disinhibit(TwoBranch(), ds, Feature("sum", unit=0), "a_relu", scan=r, k=5, n_random=8)
    assert d.completeness["complete"] is False and "incomplete" in d.explanation()
    with pytest.warns(IncompletenessWarning, match="a_relu"):
        res = inhibitor_dictionary(TwoBranch(), ds, Feature("sum", unit=0), "a_relu", scan=r, k=5, n_channels=2,
                                   n_remove=1, visualize=False)
    assert res.completeness["complete"] is False


def test_bad_input(planted):
    net, images, _, r = planted
    kw = dict(scan=r, settings=PassSettings(preprocess=False))
    with pytest.raises(ValueError, match="baseline must be one of 'zero', 'mean'.*got 'one'"):
        disinhibit(net, images, PLANTED, "relu", baseline="one", **kw)
    with pytest.raises(ValueError, match="fraction must be > 0"):
        disinhibit(net, images, PLANTED, "relu", fraction=0, **kw)
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        disinhibit(net, images, PLANTED, "relu", k=0, **kw)
    with pytest.raises(ValueError, match="scan holds out unit 0 @ mean attributed at .*relu.*, not"):
        disinhibit(net, images, Feature("out", unit=0, position="center"), "relu", **kw)
    with pytest.raises(ValueError, match="Unknown layer 'relu9'"):
        disinhibit(net, images, PLANTED, "relu9", **kw)
    with pytest.raises(TypeError, match="scan must be a ScanResult"):
        disinhibit(net, images, PLANTED, "relu", scan=3, settings=PassSettings(preprocess=False))
    with pytest.raises(ValueError, match="not the scanned dataset"):
        disinhibit(net, images[:20], PLANTED, "relu", **kw)
    with pytest.raises(ValueError, match="n_channels must be >= 1"):
        inhibitor_dictionary(net, images, PLANTED, "relu", n_channels=0, visualize=False, **kw)


# ------------------------------------------------------------------------------------------------
# inhibitor dictionary
# ------------------------------------------------------------------------------------------------
def test_planted_dictionary_finds_the_green_channel(planted, tmp_path):
    net, images, kinds, r = planted
    res = inhibitor_dictionary(net, images, PLANTED, "relu", scan=r, k=6, n_channels=2, n_top_images=4, n_remove=1,
                               random_draws=4, render=TINY_RENDER, settings=PassSettings(preprocess=False))
    assert res.channels.tolist() == [1, 0]  # the green detector inhibits, the red one does not
    assert res.share[0] == pytest.approx(1.0) and res.share[1] == pytest.approx(0.0)
    assert res.delta[0] > 0.5 * float(r.activation[np.isin(r.indices, r.meis(6))].mean())  # removing it: f fires
    assert res.delta[1] < 0  # removing the excitatory channel lowers f
    assert set(kinds[res.top_images[0]]) <= {"green", "both"} and set(kinds[res.top_images[1]]) <= {"red", "both"}
    assert res.removal["top"] == pytest.approx(res.delta[0]) and res.removal["top"] >= max(res.removal["random"])
    assert res.visualizations.shape == (2, 3, 16, 16) and res.thumbnails.shape == (2, 4, 3, 64, 64)
    json.dumps(res.summary())
    back = InhibitorDictionary.load(res.save(str(tmp_path / "inh.npz")))
    assert back.table() == res.table() and torch.equal(back.visualizations, res.visualizations)
    assert len(res.plot(str(tmp_path / "inh.png")).axes) == 2 * 5  # a row per channel: render and 4 images
    with open(tmp_path / "inh.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("which", ["disinhibition", "dictionary", "render"])
def test_hooks_and_grad_flags_restored_also_on_error(planted, monkeypatch, which):
    import lucent_inhibit.causal.disinhibition as dis_mod
    import lucent_inhibit.causal.inhibitors as inh_mod
    import lucent_inhibit.synthesis.channels as channels_mod

    net, images, _, r = planted
    before = _state(net)
    run = {"disinhibition": lambda: disinhibit(net, images, PLANTED, "relu", scan=r, k=4, n_random=4, settings=PassSettings(preprocess=False)),
           "dictionary": lambda: inhibitor_dictionary(net, images, PLANTED, "relu", scan=r, k=4, n_channels=2,
                                                      n_remove=1, render=TINY_RENDER, settings=PassSettings(preprocess=False))}
    run["render"] = run["dictionary"]
    run[which]()
    assert _state(net) == before
    calls = []
    target = {"disinhibition": (dis_mod, "forward_replaced"), "dictionary": (inh_mod, "forward_replaced"),
              "render": (channels_mod, "run_render")}[which]
    original = getattr(*target)

    def second_call_raises(*a, **k):
        calls.append(1)
        if len(calls) == 2 or which == "render":
            raise RuntimeError("half-way")
        return original(*a, **k)

    monkeypatch.setattr(*target, second_call_raises)
    with pytest.raises(RuntimeError, match="half-way"):
        run[which]()
    assert _state(net) == before and not net.training


# ------------------------------------------------------------------------------------------------
# the stage
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def inhibitors_stage():
    """The stage module (registered by the stages package at import)."""
    from lucent_inhibit.app.stages import inhibitors

    return inhibitors


def test_cli_inhibitors_stage_reads_a_scan_or_scans_first(inhibitors_stage, tmp_path, capsys):
    from lucent_inhibit.app.cli import main

    base = ["--model", "test_scan:SmallNet", "--layer", "conv3", "--unit", "1", "--n-images", "12", "--size", "16",
            "--batch-size", "4"]
    assert main(["scan", *base, "--attr-layers", "relu2", "--out", str(tmp_path / "scan"), "--no-figures"]) == 0
    capsys.readouterr()
    out = str(tmp_path / "inh")
    args = ["inhibitors", *base, "--attr-layer", "relu2", "--top-k", "3", "--n-random", "4", "--n-channels", "3",
            "--n-remove", "2", "--steps", "2", "--render-size", "16", "--out", out]
    assert main([*args, "--scan", str(tmp_path / "scan" / "scan.npz")]) == 0
    text = capsys.readouterr().out
    for name in ("disinhibition.npz", "disinhibition.png", "inhibitors.npz", "inhibitors.png"):
        assert os.path.exists(os.path.join(out, name))
    res = InhibitorDictionary.load(os.path.join(out, "inhibitors.npz"))
    dis = Disinhibition.load(os.path.join(out, "disinhibition.npz"))
    assert len(res) == 3 and dis.verdict in text and f"channel {int(res.channels[0])}:" in text
    section, numbers = inhibitors_stage.section([(inhibitors_stage.InhibitorsConfig(
        out=out, feature=inhibitors_stage.FeatureConfig(layer="conv3", unit=1, attr_layer="relu2")), res)], str(tmp_path))
    assert section.figures == [os.path.join("inh", "disinhibition.png"), os.path.join("inh", "inhibitors.png")]
    assert any("MTIs' disinhibited f" in n[0] for n in numbers)
    assert main([*args[:-1], str(tmp_path / "inh2"), "--no-render", "--baseline", "mean"]) == 0  # scans first
    assert ScanResult.load(os.path.join(tmp_path, "inh2", "scan.npz")).feature == FEATURE
    assert InhibitorDictionary.load(os.path.join(tmp_path, "inh2", "inhibitors.npz")).visualizations.numel() == 0
    capsys.readouterr()
    assert main([*args, "--baseline", "one"]) == 2 and "--baseline" in capsys.readouterr().err
    assert main([*args, "--n-channels", "0"]) == 2 and "--n-channels" in capsys.readouterr().err
    assert main([*args, "--scan", str(tmp_path / "nope.npz")]) == 2 and "--scan" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# the embedded model (slow)
# ------------------------------------------------------------------------------------------------
REAL_FEATURE = Feature("blocks_4_0_bn3_drop", unit=70)
REAL_LAYER = "blocks_4_0_bn2_act"


@pytest.mark.slow
def test_real_model_percentile_mtis_have_both_totals_high(lite0):
    """The demo's setting: 256 crops at 224 px (about 20 s on one CPU thread)."""
    from lucent_inhibit.data.bundled import sample_crops

    r = scan(lite0, sample_crops(256, size=224, seed=0), REAL_FEATURE, [REAL_LAYER], settings=PassSettings(batch_size=16, progress=False))
    pct = r.percentiles()[np.isin(r.indices, r.mtis(10))]
    assert np.median(pct[:, 0]) >= 75 and np.median(pct[:, 1]) >= 75, pct


@pytest.mark.slow
def test_real_model_top_inhibitors_raise_the_feature_more_than_random_channels(lite0):
    from lucent_inhibit.data.bundled import sample_crops

    ds = sample_crops(64, size=128, seed=0)
    res = inhibitor_dictionary(lite0, ds, REAL_FEATURE, REAL_LAYER, k=10, n_channels=5, n_remove=5, random_draws=5,
                               visualize=False)
    assert res.removal["top"] > res.removal["random_mean"], res.removal
    assert res.removal["top"] > 0 and np.all(np.diff(res.share) <= 0)


def test_result_files_of_another_type_are_refused(planted, tmp_path):
    from lucent_inhibit.core.results import ResultFileError

    _, _, _, r = planted
    path = r.save(str(tmp_path / "scan"))
    for cls in (Disinhibition, InhibitorDictionary):
        with pytest.raises(ResultFileError, match=rf"holds a ScanResult .*expected a {cls.__name__}"):
            cls.load(path)
