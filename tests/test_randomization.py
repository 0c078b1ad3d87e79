"""The model-parameter randomization test (Adebayo et al. 2018; paper 002, section 6.3): natural blocks found from
the module tree, seeded re-initialisation on a copy, the cascade's steps split at the attribution layer, the
verdict's rule, planted models whose MTIs follow from the architecture (not reproduced) or from the learned
readout (reproduced), and the embedded model's curve (slow)."""
import math

import numpy as np
import pytest
import torch
from conftest import TinyConvNet
from torch import nn

import lucent_inhibit as li
from lucent_inhibit.causal.randomization import RandomizationCascade, randomization_cascade, spearman
from lucent_inhibit.core.figures import pyplot
from lucent_inhibit.core.layers import hook_count
from lucent_inhibit.findings import randomization as rule
from lucent_inhibit.findings.verdicts import NOT_MEASURABLE, NOT_REPRODUCED, REPRODUCED
from lucent_inhibit.models.blocks import natural_blocks, parameter_modules, reinitialize

QUIET = li.PassSettings(batch_size=16, progress=False)


# ------------------------------------------------------------------------------------------------
# planted models
# ------------------------------------------------------------------------------------------------
class Shifts(nn.Module):
    """Parameter-free: ``c`` channels. ``spread`` 0: each the image's grey level ``g``; else pairs ``g``, ``1 - g`` at
    ``c // 2`` distinct shifts of up to ``spread`` pixels (every image's channels add up to the same total)."""

    def __init__(self, c: int, spread: int):
        super().__init__()
        n = c if not spread else c // 2
        self.spread = spread
        grid = [(dy, dx) for dy in range(-spread, spread + 1) for dx in range(-spread, spread + 1)]
        assert len(grid) >= n or not spread, "spread too small for c // 2 distinct shifts"
        self.shifts = [grid[(i * 7) % len(grid)] for i in range(n)] if spread else [(0, 0)] * n

    def forward(self, x):
        g = x.mean(1, keepdim=True)
        maps = [torch.roll(g, s, dims=(2, 3)) for s in self.shifts]
        return torch.cat(maps if not self.spread else [m for g_s in maps for m in (g_s, 1 - g_s)], 1)


class Planted(nn.Module):
    """stem (1x1 conv, a learned colour mix) -> shifts -> act (the attribution layer) -> head (1x1 conv, the
    feature). ``spread=0``: every channel of ``act`` is the same map, so any readout with weights of both signs
    gives P and N proportional to it at the feature's position: the MTIs follow from the architecture. ``spread>0``:
    the channels are the grey level and its complement at distinct pixels, adding up to the same total on every
    image; the planted readout excites with the grey level at half of the pixels and inhibits with it at the other
    half (complements weighted 0), so which images are tense is the readout's choice."""

    def __init__(self, spread: int = 0, c: int = 32):
        super().__init__()
        self.stem = nn.Conv2d(3, 3, 1)
        self.shifts = Shifts(c, spread)
        self.act = nn.ReLU()
        self.head = nn.Conv2d(c, 2, 1, bias=False)
        with torch.no_grad():
            self.stem.weight.copy_(torch.eye(3).reshape(3, 3, 1, 1))
            self.stem.bias.zero_()
            signs = torch.tensor([1.0, 1.0, -1.0, -1.0]).repeat(c // 4)  # half excite, half inhibit
            if spread:
                signs = torch.tensor([1.0, 0.0, -1.0, 0.0]).repeat(c // 4)  # the grey levels only, not complements
            self.head.weight.copy_((signs * torch.linspace(0.5, 1.5, c)).reshape(1, c, 1, 1).repeat(2, 1, 1, 1))

    def forward(self, x):
        return self.head(self.act(self.shifts(self.stem(x))))


def _noise(n=48, size=12, seed=1):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------
# blocks and re-initialisation
# ------------------------------------------------------------------------------------------------
class Stage(nn.Module):  # a ConvNeXt-like stage: no parameters of its own, its parameterised children containers
    def __init__(self):
        super().__init__()
        self.downsample = nn.Sequential(nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1))
        self.blocks = nn.Sequential(TinyConvNet(width=4), TinyConvNet(width=4))


class Nested(nn.Module):
    def __init__(self):
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(3))
        self.stem = nn.Conv2d(3, 4, 1)
        self.stages = nn.Sequential(Stage(), nn.ModuleList([nn.Conv2d(4, 4, 1), nn.ReLU()]))
        self.head = nn.Linear(4, 2)


def test_natural_blocks_follow_the_module_tree():
    assert natural_blocks(TinyConvNet()) == ["conv1", "conv2", "conv3"]
    assert natural_blocks(Nested()) == ["", "stem", "stages_0_downsample_0", "stages_0_downsample_1",
                                        "stages_0_blocks_0", "stages_0_blocks_1", "stages_1_0", "head"]
    assert parameter_modules(Nested(), "stages_0_blocks_1") == [f"stages_0_blocks_1_conv{i}" for i in (1, 2, 3)]
    assert parameter_modules(Nested(), "") == [""]


def test_natural_blocks_of_the_embedded_model(lite0):
    blocks = natural_blocks(lite0)
    assert blocks[:3] == ["conv_stem", "bn1", "blocks_0_0"] and "blocks_4_0" in blocks and blocks[-1] == "classifier"
    assert parameter_modules(lite0, "blocks_4_0")[-2:] == ["blocks_4_0_conv_pwl", "blocks_4_0_bn3"]


def test_reinitialize_is_seeded_and_leaves_the_global_generator_alone():
    a, b = TinyConvNet(), TinyConvNet()
    bn = nn.BatchNorm1d(3)
    bn.running_mean.fill_(5.0)
    state = torch.random.get_rng_state()
    assert reinitialize(a, ["conv2"], 7) == {"conv2": "reset_parameters"}
    assert torch.equal(torch.random.get_rng_state(), state)
    reinitialize(b, ["conv2"], 7)
    assert torch.equal(a.conv2.weight, b.conv2.weight) and not torch.equal(a.conv2.weight, TinyConvNet().conv2.weight)
    assert torch.equal(a.conv1.weight, TinyConvNet().conv1.weight)  # only the named module
    wrapped = nn.Sequential(bn)
    reinitialize(wrapped, ["0"], 0)
    assert float(bn.running_mean.abs().max()) == 0.0  # a batch norm's own reset: running statistics too
    net = Nested()
    assert reinitialize(net, [""], 0) == {"": "redrawn"} and net.pos.abs().max() == 0  # mean 0, std 0: kept constant


# ------------------------------------------------------------------------------------------------
# the cascade
# ------------------------------------------------------------------------------------------------
def test_cascade_steps_split_the_block_at_the_attribution_layer_and_leave_the_model_untouched(lite0):
    images = li.sample_crops(10, size=64)
    before = [p.detach().clone() for p in lite0.parameters()]
    hooks = hook_count(lite0)
    res = randomization_cascade(lite0, images, li.Feature("blocks_4_0_bn3_drop", unit=3), "blocks_4_0_bn2_act",
                                blocks=3, k=3, settings=QUIET)
    assert res.steps == ["trained", "blocks_4_0 (after bn2_act)", "blocks_4_0 (up to bn2_act)", "blocks_3_2"]
    assert res.modules[1] == ["blocks_4_0_conv_pwl", "blocks_4_0_bn3"] and res.between == 1
    assert all(torch.equal(p, q) for p, q in zip(before, lite0.parameters())) and hook_count(lite0) == hooks
    assert res.pos.shape == (4, 10) and res.maps.shape[:2] == (4, 3) and res.attribution_rho.shape == (4, 3)
    curves = res.curves()
    assert all(math.isclose(v[0], 1.0) for v in curves.values())
    assert res.info["reinitialised"]["blocks_4_0_bn3"] == "reset_parameters"


def test_named_blocks_are_steps_in_the_order_given(tiny_net):
    res = randomization_cascade(tiny_net, _noise(12, 16), li.Feature("conv3", unit=1), "relu2", blocks=["conv1", "conv3"],
                                k=3, settings=QUIET)
    assert res.steps == ["trained", "conv1", "conv3"] and res.between == 2
    with pytest.raises(ValueError, match="relu1"):
        randomization_cascade(tiny_net, _noise(12, 16), li.Feature("conv3", unit=1), "relu2", blocks=["relu1"],
                              settings=QUIET)
    with pytest.raises(ValueError, match="blocks must be <= 3"):
        randomization_cascade(tiny_net, _noise(12, 16), li.Feature("conv3", unit=1), "relu2", blocks=4, settings=QUIET)


def test_planted_architecture_model_says_not_reproduced():
    """Every channel of the attribution layer is one parameter-free map: whatever the readout's weights (both signs),
    P and N are proportional to it, and the re-initialised head ranks the images exactly as the trained one."""
    res = randomization_cascade(Planted(spread=0).eval(), _noise(), li.Feature("head", unit=0), "act", k=5,
                                settings=QUIET)
    assert res.steps == ["trained", "head", "stem"] and res.between == 1
    rho = res.tension_correlation()
    assert rho[1] > 0.99 and res.mti_overlap()[1] == 1.0
    found = li.findings.judge(res)[0]
    assert found.verdict == NOT_REPRODUCED and "architecture" in found.why, found


def test_planted_readout_model_says_reproduced():
    """Each channel is the grey level at another pixel: which images are tense is the learned readout's choice."""
    res = randomization_cascade(Planted(spread=2).eval(), _noise(64), li.Feature("head", unit=0), "act", k=5,
                                settings=QUIET)
    assert res.between == 1
    found = li.findings.judge(res)[0]
    assert found.verdict == REPRODUCED, found


def test_result_file_and_figure(tmp_path, tiny_net):
    res = randomization_cascade(tiny_net, _noise(12, 16), li.Feature("conv3", unit=1), "relu2", k=3, settings=QUIET)
    back = RandomizationCascade.load(res.save(tmp_path / "r"))
    assert back.steps == res.steps and back.modules == res.modules and np.array_equal(back.pos, res.pos)
    assert li.load_result(tmp_path / "r.npz").summary()["table"] == res.summary()["table"]
    fig = back.plot(tmp_path / "r.png")
    assert (tmp_path / "r.png").exists() and len(fig.axes) > 4
    _, ax = pyplot().subplots()
    assert back.plot(ax=ax) is ax.figure and ax.lines


# ------------------------------------------------------------------------------------------------
# the rule
# ------------------------------------------------------------------------------------------------
def test_the_rule_has_both_verdicts_and_a_bootstrap_guard():
    rng = np.random.default_rng(0)
    t0 = rng.normal(size=400)
    noisy = lambda w: w * t0 + rng.normal(size=400)  # noqa: E731
    assert rule.weight_dependence_finding(t0, noisy(0.0), "head", 1).verdict == REPRODUCED
    assert rule.weight_dependence_finding(t0, noisy(5.0), "head", 1).verdict == NOT_REPRODUCED
    assert rule.weight_dependence_finding(t0, np.zeros(400), "head", 1).verdict == REPRODUCED  # no ranking left
    assert rule.weight_dependence_finding(t0, t0, "head", -1).verdict == NOT_MEASURABLE  # nothing between
    assert rule.weight_dependence_finding(np.ones(400), t0, "head", 1).verdict == NOT_MEASURABLE
    few = rng.normal(size=12)
    edge = rule.weight_dependence_finding(few, few + rng.normal(size=12) * 1.2, "head", 1)
    assert edge.verdict == NOT_MEASURABLE and "inside the interval" in edge.why and "bootstrap" in edge.measured
    assert math.isclose(spearman([1, 2, 3, 4], [10, 20, 30, 40]), 1.0) and math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_partial_rank_correlation_removes_what_a_shared_magnitude_explains():
    """Two rankings that agree only through a shared magnitude: high Spearman rho, partial rho near 0 given the
    magnitude; the partial rho equals the textbook formula on the ranks' Pearson correlations."""
    rng = np.random.default_rng(1)
    m = rng.normal(size=2000)
    a, b = m + 0.5 * rng.normal(size=2000), m + 0.5 * rng.normal(size=2000)
    assert spearman(a, b) > 0.7 and abs(rule.partial_spearman(a, b, m)) < 0.06
    e = rng.normal(size=2000)
    assert rule.partial_spearman(m + e, m + e + 0.01 * rng.normal(size=2000), m) > 0.99
    r_ab, r_am, r_bm = spearman(a, b), spearman(a, m), spearman(b, m)
    textbook = (r_ab - r_am * r_bm) / math.sqrt((1 - r_am ** 2) * (1 - r_bm ** 2))
    assert rule.partial_spearman(a, b, m) == pytest.approx(textbook, abs=1e-9)
    assert math.isnan(rule.partial_spearman(m, m, m))
    text = rule.weight_dependence_finding(a, b, "head", 1, magnitude=m).measured
    assert f"partial rho with the re-initialised tension given the total {rule.partial_spearman(a, b, m):.3f}" in text


# ------------------------------------------------------------------------------------------------
# the embedded model
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_embedded_model_cascade(lite0, one_thread, capsys):
    """The default feature (blocks_4_0_bn3_drop, unit 3, attributed at blocks_4_0_bn2_act) on 64 bundled crops of
    96 px: the weights between the attribution layer and the feature decide the inhibitor dictionary and the MTIs'
    attributions (both rank correlations collapse at step 1: the dictionary's verdict is reproduced), not which
    images are tense; the tension ranking falls to 0.5 once the whole block, the part before the attribution
    layer too, is re-initialised."""
    res = randomization_cascade(lite0, li.sample_crops(64, size=96), li.Feature("blocks_4_0_bn3_drop", unit=3),
                                "blocks_4_0_bn2_act", settings=li.PassSettings(batch_size=32, progress=False))
    curves = res.curves()
    with capsys.disabled():
        print("\nstep  " + "  ".join(curves))
        for row in res.table():
            print(row["step"], row["reinitialised"], " ".join(f"{v:.3f}" for v in list(row.values())[2:]))
    assert res.between == 1 and len(res.steps) == 13
    assert curves["inhibitor ranking correlation"][1] < 0.3 and curves["MTI attribution rank correlation"][1] < 0.3
    rho = res.tension_correlation()
    assert rho[1] > 0.5 and rho[2] <= 0.5
    tension, dictionary = li.findings.judge(res)
    assert tension.verdict in (NOT_REPRODUCED, NOT_MEASURABLE) and dictionary.verdict == REPRODUCED, dictionary
    # the control: what survives at step 1 is the images' total attribution, which the re-initialised tension follows
    total = res.pos[1] + res.neg[1]
    assert spearman(res.tension()[1], total) > 0.8, tension.measured
    assert rule.partial_spearman(res.tension()[0], res.tension()[1], total) < 0.3, tension.measured
    assert "control: the re-initialised tension follows the images' total |S|" in tension.measured


# ------------------------------------------------------------------------------------------------
# checkpoints and another architecture
# ------------------------------------------------------------------------------------------------
def test_an_interrupted_cascade_resumes_from_its_steps_and_equals_an_uninterrupted_one(tmp_path, tiny_net):
    import json

    args = (tiny_net, _noise(12, 16), li.Feature("conv3", unit=1), "relu2")
    whole = randomization_cascade(*args, k=3, settings=QUIET, seed=3)
    folder = tmp_path / "ck"
    randomization_cascade(*args, k=3, settings=QUIET, seed=3, checkpoint=folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert sorted(manifest["chunks"]) == [f"{i:06d}" for i in range(len(whole.steps))] and manifest["complete"]
    for key in sorted(manifest["chunks"])[2:]:  # as if killed after step 1
        (folder / manifest["chunks"].pop(key)["file"]).unlink()
    manifest["complete"] = False
    (folder / "manifest.json").write_text(json.dumps(manifest))
    resumed = randomization_cascade(*args, k=3, settings=QUIET, seed=3, checkpoint=folder)
    for name in ("pos", "neg", "activation", "inhibition", "attribution_rho", "maps", "thumbnails"):
        assert np.array_equal(getattr(resumed, name), getattr(whole, name), equal_nan=True), name
    assert resumed.info["reinitialised"] == whole.info["reinitialised"]


def test_cascade_on_an_untrained_torchvision_resnet(one_thread):
    """Generality: a torchvision ResNet-18 with random weights (nothing downloaded), feature layer4_0_conv2
    attributed at layer3 (the block's ReLU module runs twice, so it is no attribution layer): the blocks are
    torchvision's, only the modules that run before the feature are re-initialised (not layer4_0's downsample,
    not fc)."""
    import torchvision

    net = torchvision.models.resnet18(weights=None).eval()
    res = randomization_cascade(net, li.sample_crops(12, size=64), li.Feature("layer4_0_conv2", unit=5),
                                "layer3", blocks=3, k=3, settings=QUIET)
    assert res.steps == ["trained", "layer4_0", "layer3_1", "layer3_0"] and res.between == 1
    assert res.modules[1] == ["layer4_0_conv1", "layer4_0_bn1", "layer4_0_conv2"]
    assert res.maps.shape[:2] == (4, 3) and np.isfinite(res.tension_correlation()).all()
    assert {f.claim.split(":")[0] for f in li.findings.judge(res)} == {
        "The maximally tense images depend on the learned weights", "The inhibitor dictionary depends on the learned weights"}
