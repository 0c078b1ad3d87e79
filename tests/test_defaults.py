"""One set of defaults: every option of every stage defaults to the library's default of the parameter it
sets. The table below names, for each option, the library parameter it becomes (``module:callable.param``,
``module:Class.field`` or ``module:OBJECT.attribute``), or why the option has no library counterpart. A new
option without an entry fails the test, so the table stays complete."""
import dataclasses
import importlib
import inspect

import pytest

from lucent_inhibit.app.options import REQUIRED, options
from lucent_inhibit.app.stages import STAGES

SETTINGS = "lucent_inhibit.core.settings"
SCAN, CENSUS = "lucent_inhibit.scanning.run:scan", "lucent_inhibit.census.run:layer_census"
DIS, INH = "lucent_inhibit.causal.disinhibition:disinhibit", "lucent_inhibit.causal.inhibitors:inhibitor_dictionary"
ATLAS = "lucent_inhibit.atlas.build:AtlasConfig"
SWEEP = "lucent_inhibit.combinations.sweeps:sweep_combinations"
MICRO = "lucent_inhibit.microscope.build:build_microscope"


def cli(why):
    """An option with no library parameter: ``why`` says what it controls instead."""
    return ("cli", why)


#: options every stage that has them shares
SHARED = {
    ("out",): cli("the output folder"),
    ("model", "spec"): cli("the model to load: the embedded model unless named"),
    ("model", "weights"): "lucent_inhibit.models.loading:load_model.weights",
    ("model", "device"): cli("where the model runs"),
    ("data", "images"): cli("a folder of the user's images instead of the bundled crops"),
    ("data", "n_images"): "lucent_inhibit.data.bundled:sample_crops.n",
    ("data", "size"): "lucent_inhibit.data.bundled:sample_crops.size",
    ("data", "seed"): "lucent_inhibit.data.bundled:sample_crops.seed",
    ("data", "batch_size"): f"{SETTINGS}:PassSettings.batch_size",
    ("data", "workers"): "lucent_inhibit.data.folders:ImageFolder.workers",
    ("feature", "layer"): cli("the feature layer; None: the library's pick (models.defaults)"),
    ("feature", "unit"): cli("the feature's channel (a Feature has no default unit)"),
    ("feature", "position"): "lucent_inhibit.core.features:Feature.position",
    ("feature", "attr_layer"): cli("the attribution layer; None: the library's pick (models.defaults)"),
    ("render", "steps"): f"{SETTINGS}:RenderSettings.steps",
    ("render", "lr"): f"{SETTINGS}:RenderSettings.lr",
    ("render", "size"): f"{SETTINGS}:RenderSettings.size",
    ("render", "model_size"): f"{SETTINGS}:RenderSettings.model_size",
    ("render", "seed"): f"{SETTINGS}:RenderSettings.seed",
    ("autocast",): cli("run the pass under torch.autocast after the precision check (off: float32)"),
    ("figures",): cli("whether the stage draws its figures"),
}

#: stage -> option path -> target (overriding SHARED)
STAGE_OPTIONS = {
    "scan": {
        ("attr_layers",): cli("the attribution layers; None: the library's pick"),
        ("chunk_size",): f"{SCAN}.chunk_size", ("shard",): f"{SCAN}.shard", ("resume",): f"{SCAN}.resume",
        ("merge",): cli("shard folders to merge instead of scanning"), ("keep_maps",): f"{SCAN}.keep_maps",
        ("top_k",): "lucent_inhibit.scanning.figures:save_scan_figures.k", ("score",): f"{SCAN}.score",
        ("distinct",): "lucent_inhibit.scanning.figures:save_scan_figures.distinct",
    },
    "census": {
        ("layer",): cli("the layer; None: the library's pick"), ("units",): f"{CENSUS}.units",
        ("position",): f"{CENSUS}.position", ("attr_layers",): cli("the attribution layers; None: the library's pick"),
        ("chunk_size",): f"{CENSUS}.chunk_size", ("backward",): f"{CENSUS}.backward",
        ("top_k",): cli("MTIs listed per unit on the console"),
    },
    "inhibitors": {
        ("scan",): f"{INH}.scan", ("top_k",): f"{INH}.k", ("n_random",): f"{DIS}.n_random",
        ("baseline",): f"{INH}.baseline", ("fraction",): f"{DIS}.fraction", ("n_channels",): f"{INH}.n_channels",
        ("n_top_images",): f"{INH}.n_top_images", ("n_remove",): f"{INH}.n_remove",
        ("random_draws",): f"{INH}.random_draws", ("visualize",): f"{INH}.visualize",
        ("distinct",): f"{INH}.distinct",
    },
    "randomize": {
        ("top_k",): "lucent_inhibit.causal.randomization:randomization_cascade.k",
        ("blocks",): "lucent_inhibit.causal.randomization:randomization_cascade.blocks",
    },
    "completeness": {
        ("layers",): cli("the attribution layers; None: the block outputs or pre-activations"),
        ("n_features",): "lucent_inhibit.attribution.completeness:random_logits.n",
        ("feature_seed",): "lucent_inhibit.attribution.completeness:random_logits.seed",
        ("layer",): cli("a layer whose units are studied instead of random logits"),
        ("unit",): cli("units of --layer"), ("position",): "lucent_inhibit.core.features:Feature.position",
        ("method",): "lucent_inhibit.attribution.completeness:completeness.method",
        ("steps",): "lucent_inhibit.attribution.completeness:completeness.steps",
        ("ig_features",): cli("how many features the integrated-gradients comparison repeats (0: none)"),
        ("ig_layers",): cli("the comparison's layers; None: the same layers"),
        ("ig_steps",): "lucent_inhibit.attribution.completeness:completeness.steps",
    },
    "atlas": {
        ("scan",): cli("a scan file to select from; None: scan first"),
        **{(f,): f"{ATLAS}.{f}" for f in ("kind", "mode", "top_abs", "top_activation", "bottom_activation",
                                           "top_tension", "crop", "n_neighbors", "min_dist", "pca", "grid_size",
                                           "min_points", "power", "icon_target", "crop_size", "zoom_crops")},
        ("map_memory",): cli("AtlasConfig.memory_budget in MiB (checked in tests/test_atlas_streaming.py)"),
        ("render", "steps"): f"{SETTINGS}:ICON_RENDER.steps", ("render", "lr"): f"{SETTINGS}:ICON_RENDER.lr",
        ("frame",): "lucent_inhibit.atlas.figures:plot_atlas.frame",
        ("distinct",): "lucent_inhibit.atlas.selection:select_images.distinct",
    },
    "microscope": {
        ("layer",): cli("the feature layers; None: the library's pick (models.defaults)"),
        ("units",): cli("a unit range text parsed into microscope(units=...); None: every unit"),
        ("attr_layer",): cli("the attribution layers; None: the library's pick"),
        ("n_top",): f"{MICRO}.n_top", ("n_channels",): f"{MICRO}.n_channels", ("max_units",): f"{MICRO}.max_units",
        ("distinct",): f"{MICRO}.distinct", ("visualize",): f"{MICRO}.visualize",
        ("render_batch",): f"{MICRO}.render_batch", ("n_channel_images",): f"{MICRO}.n_channel_images",
        ("inversions",): f"{MICRO}.inversions", ("position",): f"{MICRO}.position",
        **{("render", f): f"{SETTINGS}:MICROSCOPE_RENDER.{f}" for f in ("steps", "lr", "size", "model_size", "seed")},
    },
    "invert": {
        ("image",): cli("an image file to invert instead of a data image"),
        ("index",): cli("which data image: the most tense by default"),
        ("seeded",): "lucent_inhibit.synthesis.inversion:inversions.seeded",
        ("param",): f"{SETTINGS}:RenderSettings.param", ("power",): "lucent_inhibit.synthesis.inversion:inversions.power",
    },
    "tense": {
        ("batch",): "lucent_inhibit.synthesis.tense:tense_image.batch",
        ("mode",): "lucent_inhibit.synthesis.tense:tense_image.mode",
        ("score",): "lucent_inhibit.synthesis.tense:tense_image.score",
        ("param",): f"{SETTINGS}:RenderSettings.param",
        ("seed_image",): "lucent_inhibit.synthesis.tense:tense_image.seed_image",
        ("record_every",): "lucent_inhibit.synthesis.tense:tense_image.record_every",
    },
    "combos": {
        ("layer",): cli("the layer whose units are paired; None: the library's pick"),
        ("position",): "lucent_inhibit.combinations.statistics:pair_statistics.position",
        ("pair",): cli("which pairs of the statistics: the paper's three (anti-correlated, correlated, zero) by default"),
        ("units",): cli("a pair of units instead of a statistics pick"),
        ("pair_candidates",): cli("how many ranked pairs are tried until both units are excitable"),
        ("n_angles",): f"{SWEEP}.n_angles", ("n_seeds",): f"{SWEEP}.n_seeds", ("power",): f"{SWEEP}.power",
        ("scale_steps",): f"{SWEEP}.scale_steps", ("chunk",): f"{SWEEP}.chunk",
    },
    "toy": {
        **{(f,): f"lucent_inhibit.toy.model:ToyConfig.{f}" for f in ("kind", "n", "m", "decay")},
        ("S",): cli("the feature probability; None: ToyConfig's default for the kind (DEFAULT_S)"),
        ("steps",): "lucent_inhibit.toy.training:train_toy.steps",
        ("seeds",): cli("how many seeds train_toy runs (its default: range(5))"),
        ("batch_size",): "lucent_inhibit.toy.training:train_toy.batch_size",
        ("lr",): "lucent_inhibit.toy.training:train_toy.lr", ("count",): "lucent_inhibit.toy.analysis:analyze_toy.count",
        ("load",): cli("a saved toy model to analyse instead of training"),
    },
    "demo": {
        ("images",): cli("a folder of the user's images"), ("layer",): cli("the feature layer; None: the library's pick"),
        ("unit",): cli("the feature's unit; None: pick_unit"),
        ("attribution_layer",): cli("the attribution layer; None: the library's pick"),
        ("quick",): cli("DemoConfig.quick(): the one named preset of small sizes"),
        ("mode",): "lucent_inhibit.synthesis.tense:tense_image.mode",
    },
}


def library_default(target: str):
    """The default value ``target`` names (see the module docstring)."""
    module, path = target.split(":")
    owner_name, name = path.rsplit(".", 1)
    owner = importlib.import_module(module)
    for part in owner_name.split("."):
        owner = getattr(owner, part)
    if dataclasses.is_dataclass(owner) and isinstance(owner, type):
        field = {f.name: f for f in dataclasses.fields(owner)}[name]
        return field.default_factory() if field.default is dataclasses.MISSING else field.default
    if callable(owner) and not dataclasses.is_dataclass(owner):
        return inspect.signature(owner).parameters[name].default
    return getattr(owner, name)


def _cases():
    for stage_name, stage in STAGES.items():
        for opt in options(stage.config):
            yield pytest.param(stage_name, opt, id=f"{stage_name}:{'.'.join(opt.path)}")


@pytest.mark.parametrize("stage_name, opt", list(_cases()))
def test_every_option_defaults_to_the_library_default_of_the_parameter_it_sets(stage_name, opt):
    table = {**SHARED, **STAGE_OPTIONS[stage_name]}
    assert opt.path in table, f"{stage_name} {opt.flag}: name the library parameter it sets (or why none) above"
    target = table[opt.path]
    if isinstance(target, tuple):
        return  # a command-line choice with no library counterpart (the reason is in the table)
    expected = library_default(target)
    default = None if opt.default is REQUIRED else opt.default
    if isinstance(expected, tuple) and isinstance(default, (tuple, list)):
        default = tuple(default)
    assert default == expected, f"{stage_name} {opt.flag} defaults to {default!r}, the library's {target} to {expected!r}"


def test_the_table_names_only_options_that_exist():
    for stage_name, entries in STAGE_OPTIONS.items():
        paths = {o.path for o in options(STAGES[stage_name].config)}
        assert set(entries) <= paths, f"{stage_name}: no such options {sorted(set(entries) - paths)}"


def test_the_demo_preset_is_the_one_place_with_smaller_sizes():
    from lucent_inhibit.app.stages.demo import DemoConfig

    quick, full = DemoConfig.quick(), DemoConfig()
    assert quick.n_images < full.n_images and quick.inversion_steps < full.inversion_steps
