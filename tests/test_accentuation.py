"""Feature accentuation, +/- inversions and tense synthesis: unit checks on a tiny net, method checks on
the embedded pretrained EfficientNet-Lite0 (slow)."""
import numpy as np
import pytest
import torch
from lucent.optvis import objectives as lobj
from lucent.optvis import param as lparam
from lucent.optvis import render

from lucent_inhibit import Feature, attribute, sample_crops
from lucent_inhibit.core.layers import hooks_restored
from lucent_inhibit.core.rendering import NonFiniteLoss
from lucent_inhibit.core.settings import RenderSettings
from lucent_inhibit.synthesis import objectives as O
from lucent_inhibit.synthesis.accentuation import Accentuation, accentuate
from lucent_inhibit.synthesis.figures import plot_inversions
from lucent_inhibit.synthesis.inversion import InversionResult, inversions
from lucent_inhibit.synthesis.tense import TenseResult, tense_image


def R(steps, **kw):
    """Render settings of a test: explicit (small) steps."""
    return RenderSettings(steps=steps, **kw)

FEAT = Feature("conv3", unit=1)

pytestmark = pytest.mark.usefixtures("one_thread")



def _seed(n=1, size=24, s=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(s)) * 0.8 + 0.1


def test_accentuate_balances_regularizer_and_raises_objective(tiny_net):
    seed = _seed()
    hooks_before = sum(len(m._forward_hooks) for m in tiny_net.modules())
    res = accentuate(tiny_net, seed, O.feature(FEAT), reg_layer="conv2", reg_lambda=1.0, render=R(12, seed=0))
    assert sum(len(m._forward_hooks) for m in tiny_net.modules()) == hooks_before  # render_vis hooks removed
    assert np.isfinite(res.balance) and res.balance > 0
    assert res.images.shape == seed.shape and res.regularizer.shape == (12,)
    f0, f1 = attribute(tiny_net, torch.cat([seed, res.images]), FEAT, "conv1").activation.tolist()
    assert f1 > f0 + 0.5, (f0, f1)
    assert float(res.regularizer[0]) == pytest.approx(0.0, abs=1e-3)  # step 0 renders the seed
    # lambda = 0 is plain image-seeded visualization: no seed rows, balance 1
    free = accentuate(tiny_net, seed, O.feature(FEAT), reg_layer=None, render=R(3, seed=0))
    assert free.balance == 1.0 and free.regularizer.numel() == 0 and free.reg_layer is None


def test_accentuate_balance_is_the_gradient_ratio(tiny_net):
    """Doubling the objective doubles the measured balance (the ratio of gradient norms)."""
    seed = _seed(s=4)
    b1 = accentuate(tiny_net, seed, O.feature(FEAT), reg_layer="conv2", render=R(1, seed=1)).balance
    b2 = accentuate(tiny_net, seed, 2 * O.feature(FEAT), reg_layer="conv2", render=R(1, seed=1)).balance
    assert b2 == pytest.approx(2 * b1, rel=1e-3)


def test_accentuate_tense_over_several_crops(tiny_net):
    """The objective sees only the renders of each crop block (tense differentiates through the views)."""
    seed = _seed(2, s=6)
    seen = []

    def spy(T):
        seen.append(T("conv3").shape[0])
        return O.tense(FEAT, "conv1")(T)

    res = accentuate(tiny_net, seed, lobj.Objective(spy), reg_layer="conv2", n_crops=3, render=R(2, seed=0), balance=1.0)
    assert set(seen) == {2} and len(seen) == 3 * 2  # 3 crop blocks per step, 2 renders each (seeds excluded)
    assert res.images.shape == (2, 3, 24, 24) and float((res.images - seed).abs().max()) > 1e-3


def test_accentuate_mask_confines_changes(tiny_net):
    seed = _seed(size=32, s=5)
    mask = torch.zeros(32, 32)
    mask[8:24, 8:24] = 1
    res = accentuate(tiny_net, seed, O.feature(FEAT), reg_layer="conv2", render=R(6, seed=0), mask=mask)
    d = (res.images - seed).abs()
    assert float(d[..., mask == 0].max()) < 1e-5 and float(d[..., mask == 1].max()) > 1e-2


def test_accentuate_resizes_seed_and_rejects_bad_input(tiny_net):
    res = accentuate(tiny_net, torch.rand(3, 30, 20), O.feature(FEAT), render=R(1, size=16))
    assert res.images.shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="Unknown layer 'conv9'"):
        accentuate(tiny_net, _seed(), O.feature(FEAT), reg_layer="conv9", render=R(1))
    with pytest.raises(ValueError, match="reg_lambda"):
        accentuate(tiny_net, _seed(), O.feature(FEAT), reg_layer="conv2", reg_lambda=-1, render=R(1))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        accentuate(tiny_net, _seed() * 4, O.feature(FEAT), render=R(1))
    with pytest.raises(ValueError, match="does not depend on the image"):
        accentuate(tiny_net, _seed(), lobj.Objective(lambda T: T("conv3").sum() * 0), reg_layer="conv2", render=R(1))


def test_non_finite_loss_stops_with_the_step(tiny_net):
    calls = {"n": 0}

    def bad(T):
        calls["n"] += 1
        v = O.feature(FEAT)(T)
        return v * float("nan") if calls["n"] >= 3 else v

    with pytest.raises(NonFiniteLoss, match="step 3 of 5"):
        accentuate(tiny_net, _seed(), lobj.Objective(bad), render=R(5, seed=0))
    with pytest.raises(NonFiniteLoss, match="step 1 of"):
        tense_image(tiny_net, FEAT, "conv1", render=R(2, size=16), extra=lobj.Objective(lambda T: T("conv3").sum() * float("inf")))


def test_inversions_result_roundtrip_and_figure(tiny_net, tmp_path):
    img = _seed(size=16, s=7)[0]
    res = inversions(tiny_net, img, FEAT, "relu1", render=R(8, seed=0))
    assert res.images.shape == (3, 3, 16, 16) and torch.equal(res.original, img)
    assert res.maps.shape == (3, 2, 16, 16) and res.objective.shape == (8, 2)
    a = attribute(tiny_net, res.images, FEAT, "relu1")
    assert torch.allclose(res.activation, a.activation) and torch.allclose(res.positive, a.positive("relu1"))
    res.save(tmp_path / "inv.npz")
    back = InversionResult.load(tmp_path / "inv.npz")
    assert torch.equal(back.images, res.images) and back.feature == FEAT and back.layer == "relu1" and not back.seeded
    out = plot_inversions(back, str(tmp_path / "inv.png"))
    assert (tmp_path / "inv.png").stat().st_size > 5000 and len(out.axes) == 9  # the Figure, 3 x 3 panels
    with pytest.raises(ValueError, match="does not feed"):
        inversions(tiny_net, img, Feature("conv1", unit=0), "conv2", render=R(1))
    with pytest.raises(ValueError, match="one image"):
        inversions(tiny_net, _seed(2, 16), FEAT, "relu1", render=R(1))


def test_tense_image_and_results_roundtrip(tiny_net, tmp_path):
    res = tense_image(tiny_net, FEAT, "conv1", render=R(8, size=16), record_every=4, batch=2)
    assert res.images.shape == (2, 3, 16, 16)
    assert res.steps.tolist() == [0, 4, 8] and res.positive.shape == (3, 2)
    last = attribute(tiny_net, res.images, FEAT, "conv1")
    assert torch.allclose(res.negative[-1], last.negative("conv1"), rtol=1e-4)
    res.save(tmp_path / "t.npz")
    back = TenseResult.load(tmp_path / "t.npz")
    assert torch.equal(back.positive, res.positive) and back.mode == "fast"
    acc = accentuate(tiny_net, _seed(), O.feature(FEAT), reg_layer="conv2", render=R(2))
    acc.save(tmp_path / "a.npz")
    assert Accentuation.load(tmp_path / "a.npz").balance == acc.balance


# ------------------------------------------------------------------------------------------------
# real model (slow): feature blocks_4_0_bn3_drop unit 5, attribution at blocks_4_0_bn2_act (adjacent)
# ------------------------------------------------------------------------------------------------
REAL_FEATURE = Feature("blocks_4_0_bn3_drop", unit=5)
REAL_LAYER = "blocks_4_0_bn2_act"


@pytest.fixture(scope="module")
def mtis(lite0):
    crops = sample_crops(48, size=128, seed=0)
    x = torch.stack([crops[i] for i in range(len(crops))])
    a = attribute(lite0, x, REAL_FEATURE, REAL_LAYER)
    t = a.tension(REAL_LAYER)
    top = t.argsort(descending=True)[:3]
    return x, a, top


@pytest.mark.slow
@pytest.mark.parametrize("seeded", [False, True])
def test_real_inversions_separate_excitation_from_inhibition(lite0, mtis, seeded):
    x, a, top = mtis
    for i in top.tolist():
        res = inversions(lite0, x[i], REAL_FEATURE, REAL_LAYER, seeded=seeded, render=R(24, seed=0))
        print(f"seeded={seeded} image {i}: " + ", ".join(f"{k} f={v['activation']:.2f} P={v['P']:.1f} N={v['N']:.1f}" for k, v in res.summary().items()))
        assert res.activation[1] > res.activation[2]
        assert res.activation[1] > res.activation[0] > res.activation[2]
        assert res.positive[1] > res.positive[0] and res.negative[2] > res.negative[0]


@pytest.mark.slow
def test_real_tense_raises_tension_below_mei_activation(lite0, mtis):
    x, a, _ = mtis
    dataset_mei = float(a.activation.max())
    res = tense_image(lite0, REAL_FEATURE, REAL_LAYER, render=R(32, size=128, seed=0), record_every=8)
    # the rendered MEI: the feature itself maximised with the same loop, parameterization and steps
    torch.manual_seed(0)
    with hooks_restored(lite0):
        mei_img = render.render_vis(
            lite0, O.feature(REAL_FEATURE), param_f=lambda: lparam.image(128), thresholds=(32,),
            show_image=False, progress=False, fixed_image_size=128,
        )[0]
    mei = float(attribute(lite0, torch.from_numpy(mei_img).permute(0, 3, 1, 2), REAL_FEATURE, REAL_LAYER).activation[0])
    t = res.tension[:, 0]
    print(f"tense: min(P,N) {[round(v, 1) for v in t.tolist()]}, f {[round(v, 2) for v in res.activation[:, 0].tolist()]}; "
          f"rendered MEI f {mei:.2f}, dataset MEI f {dataset_mei:.2f}, dataset max min(P,N) {float(a.tension(REAL_LAYER).max()):.1f}")
    assert float(t[-1]) > 1.5 * float(t[0])
    assert float(t[-1]) > float(a.tension(REAL_LAYER).max())  # tenser than every sample crop
    assert mei > dataset_mei and abs(float(res.activation[-1, 0])) < 0.4 * mei


@pytest.mark.slow
def test_real_regularizer_keeps_accentuation_close_to_seed(lite0, mtis):
    x, _, top = mtis
    seed = x[int(top[0])]
    obj = O.feature(REAL_FEATURE)
    measured = {}

    def track(name):
        def cb(step, img):
            if step % 2 == 0:
                f = float(attribute(lite0, img, REAL_FEATURE, REAL_LAYER).activation[0])
                measured.setdefault(name, []).append((step, f, float((img - seed).pow(2).mean().sqrt())))
        return cb

    steps = 24
    reg = accentuate(lite0, seed, obj, reg_layer="blocks_3_0", reg_lambda=1.0, render=R(steps, seed=0), callback=track("reg"))
    f_reg = float(attribute(lite0, reg.images, REAL_FEATURE, REAL_LAYER).activation[0])
    d_reg = float((reg.images[0] - seed).pow(2).mean().sqrt())
    free = accentuate(lite0, seed, obj, reg_layer=None, render=R(steps, seed=0), callback=track("free"))
    f_free = float(attribute(lite0, free.images, REAL_FEATURE, REAL_LAYER).activation[0])
    d_free = float((free.images[0] - seed).pow(2).mean().sqrt())
    # the unregularized run at the first step where it matches the regularized run's final activation
    match = [m for m in measured["free"] + [(steps, f_free, d_free)] if m[1] >= f_reg]
    print(f"reg: f={f_reg:.2f} rms={d_reg:.4f} (balance {reg.balance:.3g}); free: f={f_free:.2f} rms={d_free:.4f}; "
          f"free at matching f: {match[:1]}")
    assert f_reg > float(attribute(lite0, seed, REAL_FEATURE, REAL_LAYER).activation[0])  # it did accentuate
    assert match, "the unregularized run never reached the regularized activation"
    assert d_reg < match[0][2]


@pytest.mark.slow
def test_real_tense_plus_lucent_channel_renders(lite0):
    obj = O.tense(REAL_FEATURE, REAL_LAYER) + 0.1 * lobj.channel("blocks_4_0_bn3_drop", 5)
    with hooks_restored(lite0):
        imgs = render.render_vis(
            lite0, obj, param_f=lambda: lparam.image(64), thresholds=(3,), show_image=False, progress=False,
            fixed_image_size=64,
        )
    assert imgs[0].shape == (1, 64, 64, 3) and np.isfinite(imgs[0]).all()


@pytest.mark.slow
def test_cli_invert_and_tense(tmp_path, capsys):
    from lucent_inhibit.app.cli import main

    assert main(["invert", "--n-images", "8", "--size", "96", "--steps", "6", "--out", str(tmp_path / "inv")]) == 0
    out = capsys.readouterr().out
    assert "excitatory > inhibitory" in out and "data image" in out
    res = InversionResult.load(str(tmp_path / "inv" / "inversion.npz"))
    assert res.images.shape == (3, 3, 96, 96) and (tmp_path / "inv" / "inversion.png").exists()
    assert main(["tense", "--size", "64", "--steps", "4", "--record-every", "2", "--out", str(tmp_path / "t")]) == 0
    t = TenseResult.load(str(tmp_path / "t" / "tense.npz"))
    assert t.steps.tolist() == [0, 2, 4] and (tmp_path / "t" / "tense.png").exists()
    # bad input: one line, exit status 2
    assert main(["invert", "--layer", "blocks_4_0_bn3_dorp", "--out", str(tmp_path / "x")]) == 2
    assert "Unknown layer 'blocks_4_0_bn3_dorp'" in capsys.readouterr().err
    # a feature layer without --attr-layer: the nearest activation that is a cut, said (not timm's Identity act)
    assert main(["tense", "--layer", "blocks_5_0", "--size", "32", "--steps", "1", "--out", str(tmp_path / "t5")]) == 0
    assert "attribution layer: blocks_5_0_bn2_act" in capsys.readouterr().err
    assert main(["tense", "--attr-layer", "blocks_5_0", "--steps", "1", "--out", str(tmp_path / "x")]) == 2
    assert "does not feed" in capsys.readouterr().err
    assert main(["invert", "--index", "99", "--n-images", "4", "--out", str(tmp_path / "x")]) == 2
    assert "out of range" in capsys.readouterr().err
