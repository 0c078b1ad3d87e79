"""The stage registry: records, configs validated with messages naming the option, the same defaults as
the library functions the stages call, the demo composed of the registered stages, and stage runs that
leave the model as they found it."""
import dataclasses
import inspect
import os

import pytest

from lucent_inhibit.app import configs
from lucent_inhibit.app.runtime import load_model
from lucent_inhibit.app.stages import STAGES, Stage, get_stage, register, shared_inputs
from lucent_inhibit.app.stages import atlas as atlas_stage
from lucent_inhibit.app.stages import combos as combos_stage
from lucent_inhibit.app.stages import toy as toy_stage
from lucent_inhibit.app.stages.completeness import CompletenessConfig
from lucent_inhibit.app.stages.demo import DemoConfig, DemoPlan
from lucent_inhibit.app.stages.scan import ScanConfig, ScanFeature
from lucent_inhibit.core.layers import hook_count


def _defaults(fn):
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


def test_registry_lists_the_stages_and_refuses_duplicates():
    assert list(STAGES) == ["scan", "census", "inhibitors", "randomize", "completeness", "atlas", "microscope", "invert", "tense", "combos", "toy",
                           "demo"]
    assert get_stage("scan").config is ScanConfig
    with pytest.raises(ValueError, match="Did you mean scan"):
        get_stage("scna")
    with pytest.raises(ValueError, match="already registered"):
        register(dataclasses.replace(STAGES["toy"]))
    with pytest.raises(ValueError, match="one non-empty line"):
        Stage("x", "two\nlines", "", ScanConfig, print, print)
    for stage in STAGES.values():
        assert stage.section is not None or stage.name == "demo"


@pytest.mark.parametrize("make, flag", [
    (lambda: configs.DataConfig(n_images=0), "--n-images"),
    (lambda: configs.DataConfig(batch_size=True), "--batch-size"),
    (lambda: configs.ModelConfig(spec=""), "--model"),
    (lambda: configs.FeatureConfig(unit=-1), "--unit"),
    (lambda: configs.FeatureConfig(position="left"), "--position"),
    (lambda: configs.RenderConfig(steps=0), "--steps"),
    (lambda: configs.RenderConfig(lr=float("nan")), "--lr"),
    (lambda: configs.RenderConfig(size=4), "--render-size"),
    (lambda: ScanConfig(out="o", score="max"), "--score"),
    (lambda: CompletenessConfig(method="saliency"), "--method"),
    (lambda: atlas_stage.AtlasStageConfig(out="o", mode="pixel"), "--mode"),
    (lambda: combos_stage.CombosConfig(out="o", n_angles=3), "--n-angles"),
    (lambda: toy_stage.ToyStageConfig(out="o", S=0.0), "--S"),
])
def test_configs_name_the_option_in_their_messages(make, flag):
    with pytest.raises(ValueError, match=flag):
        make()


def test_feature_config_defaults_and_attribution_layer():
    from lucent_inhibit.models.defaults import DEFAULT_LAYER

    f = configs.FeatureConfig(position="2,3")
    assert f.feature(DEFAULT_LAYER, 4).position == (2, 3) and f.feature("blocks_5_0", 4).layer == "blocks_5_0"
    assert configs.FeatureConfig(unit=7).feature(DEFAULT_LAYER).unit == 7
    with pytest.raises(ValueError, match="give --layer and --unit"):
        f.feature(DEFAULT_LAYER)  # the stages pick a unit first (runtime.feature_and_layers)


def test_render_config_is_the_render_contract():
    from lucent_inhibit.core.settings import RenderSettings

    base = configs.RenderConfig()
    assert (base.steps, base.lr, base.size, base.model_size, base.seed) == (
        RenderSettings().steps, RenderSettings().lr, RenderSettings().size, RenderSettings().model_size,
        RenderSettings().seed)
    s = configs.RenderConfig(steps=7, lr=0.1, size=32, model_size=48, seed=3).settings(progress=True, param="phase")
    assert s == RenderSettings(steps=7, lr=0.1, size=32, model_size=48, seed=3, param="phase", progress=True)


def test_stage_defaults_are_the_library_defaults():
    from lucent_inhibit.app.stages.invert import InvertConfig
    from lucent_inhibit.app.stages.tense import TenseConfig
    from lucent_inhibit.atlas import AtlasConfig
    from lucent_inhibit.attribution.completeness import completeness
    from lucent_inhibit.combinations import MIN_ANGLES, sweep_combinations
    from lucent_inhibit.synthesis.inversion import inversions
    from lucent_inhibit.synthesis.tense import tense_image
    from lucent_inhibit.toy import ToyConfig, train_toy

    lib, stage = AtlasConfig(), atlas_stage.AtlasStageConfig(out="o")
    for name in ("kind", "mode", "crop", "top_abs", "top_activation", "bottom_activation", "top_tension",
                 "n_neighbors", "min_dist", "pca", "grid_size", "min_points", "icon_target", "power"):
        assert getattr(stage, name) == getattr(lib, name), name
    assert stage.atlas_config() == AtlasConfig(icon_batch_size=64)
    assert combos_stage.MIN_ANGLES == MIN_ANGLES
    sweep, combos = _defaults(sweep_combinations), combos_stage.CombosConfig(out="o")
    assert [sweep[k] for k in ("n_angles", "n_seeds", "power", "chunk")] == [
        combos.n_angles, combos.n_seeds, combos.power, combos.chunk]
    assert CompletenessConfig().method == _defaults(completeness)["method"]
    assert InvertConfig(out="o").power == _defaults(inversions)["power"]
    tense, tense_lib = TenseConfig(out="o"), _defaults(tense_image)
    assert [tense.score, tense.mode, tense.batch, tense.record_every] == [
        tense_lib[k] for k in ("score", "mode", "batch", "record_every")]
    toy, train = toy_stage.ToyStageConfig(out="o"), _defaults(train_toy)
    assert [toy.steps, toy.batch_size, toy.lr] == [train["steps"], train["batch_size"], train["lr"]]
    assert toy.toy_config() == ToyConfig()


def test_demo_config_sets_only_sizes():
    for f in dataclasses.fields(DemoConfig):
        assert f.type in ("int", int), f.name
    assert DemoConfig.quick().combo_angles >= combos_stage.MIN_ANGLES


def test_demo_plan_composes_the_registered_stage_configs(tmp_path):
    from lucent_inhibit.app.configs import DataConfig, ModelConfig

    plan = DemoPlan(ModelConfig(), DataConfig(n_images=8, size=64), "blocks_4_0_bn3_drop", 5, "blocks_4_0_bn2_act",
                    "blocks_4_0_bn1_act", DemoConfig.quick())
    tmp = str(tmp_path)
    for name in ("completeness", "scan", "tense", "atlas", "combos", "toy"):
        (cfg,) = getattr(plan, name)(tmp)
        assert isinstance(cfg, get_stage(name).config)
        assert os.path.dirname(cfg.out) == tmp
    atlas = plan.atlas(tmp)[0]
    assert atlas.min_points == atlas_stage.AtlasStageConfig(out="o").min_points  # the CLI's default
    assert atlas.feature.attr_layer == "blocks_4_0_bn1_act" and atlas.scan.endswith(os.path.join("scan", "scan.npz"))
    assert plan.scan(tmp)[0].attr_layers == ("blocks_4_0_bn2_act", "blocks_4_0_bn1_act")


def _tiny_scan(tmp_path, **kw):
    return ScanConfig(out=str(tmp_path / "scan"), model=configs.ModelConfig("conftest:TinyConvNet"),
                      data=configs.DataConfig(n_images=6, size=16, batch_size=3),
                      feature=ScanFeature(layer="conv3", unit=1), attr_layers=("relu2",), top_k=2, **kw)


def test_stage_runs_leave_hooks_and_grad_flags_also_on_error(tmp_path, monkeypatch):
    import lucent_inhibit.scanning.figures as plots

    with shared_inputs():
        cfg = _tiny_scan(tmp_path)
        model = load_model(cfg.model)
        grads = [p.requires_grad for p in model.parameters()]
        before = hook_count(model)
        result = get_stage("scan").run(cfg, progress=False)
        assert len(result) == 6 and os.path.exists(os.path.join(cfg.out, "scan.npz"))
        assert get_stage("scan").describe(result, cfg)[0].startswith("scan of conv3 unit 1")
        assert hook_count(model) == before and [p.requires_grad for p in model.parameters()] == grads

        def boom(*a, **k):
            raise RuntimeError("figure failed")

        monkeypatch.setattr(plots, "save_scan_figures", boom)
        with pytest.raises(RuntimeError, match="figure failed"):
            get_stage("scan").run(_tiny_scan(tmp_path / "again"), progress=False)
        assert hook_count(model) == before and [p.requires_grad for p in model.parameters()] == grads
        comp = CompletenessConfig(out=str(tmp_path / "c"), model=cfg.model, data=cfg.data, layer="conv3", unit="0,1",
                                  layers="relu1,relu2")
        run = get_stage("completeness").run(comp, progress=False)
        assert run.result.r.shape == (2, 2) and hook_count(model) == before


def test_shared_inputs_loads_each_model_and_image_set_once(tmp_path):
    from lucent_inhibit.app.runtime import load_data

    m, d = configs.ModelConfig("conftest:TinyConvNet"), configs.DataConfig(n_images=4, size=16)
    assert load_model(m) is not load_model(m)
    with shared_inputs():
        assert load_model(m) is load_model(m)
        assert load_data(d) is load_data(d)
        limited = load_data(dataclasses.replace(d, limit=2))
        assert len(limited) == 2 and limited.identity.startswith("first 2 of")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_data(configs.DataConfig(images=str(tmp_path / "none")))


def test_describe_and_section_list_only_the_files_the_stage_wrote(tmp_path, monkeypatch):
    import lucent_inhibit.scanning.figures as plots
    from lucent_inhibit.app.runtime import run_stage

    written = {}
    save = plots.save_scan_figures

    def recording(*a, **k):
        written.update(save(*a, **k))
        return written

    monkeypatch.setattr(plots, "save_scan_figures", recording)
    cfg = dataclasses.replace(_tiny_scan(tmp_path), data=configs.DataConfig(n_images=12, size=16, batch_size=6))
    os.makedirs(cfg.out)
    for name in ("holiday.png", "notes.txt"):  # the user's files, kept beside the stage's
        open(os.path.join(cfg.out, name), "w").write("mine")
    with shared_inputs():
        result = run_stage(get_stage("scan"), cfg, progress=False)
    figures = sorted(os.path.basename(p) for p in written.values())
    assert "scatter_percentile.png" in figures and "overlay_mti0.png" in figures
    (line,) = [l for l in get_stage("scan").describe(result, cfg) if l.strip().startswith("figures:")]
    assert sorted(line.split(":", 1)[1].strip().split(", ")) == figures
    section, _ = get_stage("scan").section([(cfg, result)], str(tmp_path))
    assert sorted(os.path.basename(f) for f in section.figures) == figures
    assert os.path.exists(os.path.join(cfg.out, "holiday.png"))

    out = tmp_path / "toy"
    out.mkdir()
    (out / "holiday.png").write_text("mine")
    toy_cfg = toy_stage.ToyStageConfig(out=str(out), steps=5, seeds=1, batch_size=64, count=8)
    run_ = run_stage(get_stage("toy"), toy_cfg, progress=False)
    text = "\n".join(get_stage("toy").describe(run_, toy_cfg))
    assert "toy_summary.json" in text and "holiday.png" not in text
    section, _ = get_stage("toy").section([(toy_cfg, run_)], str(tmp_path))
    assert all("holiday" not in f for f in section.figures + section.links) and section.findings
