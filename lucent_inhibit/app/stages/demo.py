"""Stage ``demo``: the main job, every other stage on one model, written as a browsable report
``OUT/index.html`` (:func:`run_demo`).

Run every stage (completeness, scan with MEI/MII/MTI figures, the causal test and inhibitor dictionary, the
model-parameter randomization test, +/- inversions and accentuations of the top
MTIs, a synthesised tense image, an attribution atlas, a feature-combination plot, the superposition toy
figure) with the other sub-commands' defaults and write OUT/index.html linking every figure with an
explanation and a table of the numbers measured. The report folder is replaced only when the whole run
succeeds.

:func:`run_demo` runs the stages of this package with the command line's defaults, only the sizes set by
:class:`DemoConfig` (the one named preset of smaller settings); each stage writes its files into its own
sub-folder (as ``lucent-inhibit STAGE --out`` would) and its section writer adds a paragraph per figure, its
numbers and its findings (:mod:`lucent_inhibit.findings`). ``index.html`` opens with a table of every finding,
``numbers.json`` holds the numbers and ``findings.json`` the findings. The report is built in a temporary
folder beside ``out`` and swapped into place only when every stage succeeded
(:class:`~lucent_inhibit.app.staging.StagingDir`); ``out`` must be new, empty or a previous report of its
own, apart from the input images, checked before any work.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import List, Literal, Optional

from ...core.validate import check_choice, check_int
from ..configs import ModelConfig
from ..options import check_choices, check_paths, flag, group, option
from ..outputs import check_report_target
from ..staging import StagingDir
from ..page import Report
from ..registry import register_module


#: The demo atlas's icon target: each position-mode cell's averaged vector at the receptive-field box's centre
#: (the activation atlas's convention, Carter et al. 2019). On the demo's 23 cells (48 steps, power 4) the icons
#: reached a median cosine of 0.613 (90% interval 0.572 to 0.625) this way, 0.586 broadcast over the box and
#: 0.572 with each point's vector at its own position (BENCHMARKS.md, "atlas icons").
ICON_TARGET = "center"


# ------------------------------------------------------------------------------------------------
# the main job
# ------------------------------------------------------------------------------------------------
class DemoInputError(ValueError):
    """The demo was pointed at something that does not exist or cannot be used (nothing was written)."""


@dataclass
class DemoConfig:
    """Sizes of each stage of :func:`run_demo` (every other choice is the stage's command-line default).
    ``DemoConfig.quick()`` shrinks everything for a smoke run."""

    n_images: int = 256
    size: int = 224
    batch_size: int = 32
    completeness_features: int = 12
    completeness_images: int = 64
    #: images per attribution batch of the completeness study: it keeps every block's activation and gradient of
    #: a batch at once (at batch 32 it raised the demo's peak memory by 2.3 GB, about 72 MiB per 224-px image)
    completeness_batch_size: int = 16
    top_mtis: int = 3
    inversion_steps: int = 96
    inversion_size: int = 128
    tense_steps: int = 96
    tense_size: int = 128
    atlas_select: int = 96
    atlas_steps: int = 48
    atlas_icon_size: int = 128
    #: the combination plots sweep the paper's three pairs (most anti-correlated, most correlated, closest to zero)
    combo_angles: int = 24
    combo_seeds: int = 2
    combo_steps: int = 64
    combo_scale_steps: int = 64
    combo_size: int = 96
    combo_images: int = 128
    toy_steps: int = 3000
    toy_seeds: int = 3
    #: the randomization cascade attributes its images once per step (13 steps on the embedded model): it reads
    #: the first of the demo's images at a small size
    randomize_images: int = 64
    randomize_size: int = 96

    @classmethod
    def quick(cls) -> "DemoConfig":
        return cls(
            n_images=24, size=128, batch_size=12, completeness_features=2, completeness_images=12, top_mtis=1,
            inversion_steps=8, inversion_size=64, tense_steps=8, tense_size=64, atlas_select=24, atlas_steps=4,
            atlas_icon_size=32, combo_angles=5, combo_seeds=1, combo_steps=4, combo_scale_steps=32, combo_size=96,
            combo_images=16, toy_steps=150, toy_seeds=1, randomize_images=16, randomize_size=64,
        )


@dataclass
class DemoPlan:
    """What the demo studies (checked before any work) and the stage configs it composes from it.

    The atlas reads one layer further back than the scan's attribution layer, in position mode with
    position targets: there the feature's receptive field spans several positions per image, and each
    point's attribution keeps its place in the icon. The completeness study of random logits reads images at
    ``logits_size`` where the model's logits take only one input size (InceptionV1: 224 px).
    """

    model: "object"  # stages.configs.ModelConfig
    data: "object"  # stages.configs.DataConfig
    layer: str
    unit: int
    attr_layer: str
    atlas_layer: str
    sizes: DemoConfig
    logits_size: Optional[int] = None  # the one input side the model's logits take (InceptionV1: 224), if any
    mode: str = "auto"  # tense synthesis's gradient mode

    def feature(self, cls, attr_layer: Optional[str] = None):
        return cls(layer=self.layer, unit=self.unit, attr_layer=attr_layer or self.attr_layer)

    def completeness(self, tmp):
        from .completeness import CompletenessConfig

        s = self.sizes
        return [CompletenessConfig(out=os.path.join(tmp, "completeness"), model=self.model,
                                   data=dataclasses.replace(self.data, limit=s.completeness_images,
                                                            batch_size=min(self.data.batch_size,
                                                                           s.completeness_batch_size),
                                                            size=self.logits_size or self.data.size),
                                   n_features=s.completeness_features, title="Completeness: random logits")]

    def scan(self, tmp):
        from .scan import ScanConfig, ScanFeature

        layers = tuple(dict.fromkeys([self.attr_layer, self.atlas_layer]))
        return [ScanConfig(out=os.path.join(tmp, "scan"), model=self.model, data=self.data,
                           feature=ScanFeature(layer=self.layer, unit=self.unit), attr_layers=layers)]

    def invert(self, tmp, scan):
        from ..configs import FeatureConfig
        from .invert import InvertConfig, InvertRender

        s, configs = self.sizes, []
        for rank, idx in enumerate(scan.mtis(s.top_mtis, layer=self.attr_layer)):
            for seeded in (False, True):
                configs.append(InvertConfig(
                    out=os.path.join(tmp, f"mti{rank + 1}_{'accentuation' if seeded else 'inversion'}"),
                    model=self.model, data=self.data, feature=self.feature(FeatureConfig), index=str(int(idx)),
                    seeded=seeded, render=InvertRender(steps=s.inversion_steps, size=s.inversion_size)))
        return configs

    def tense(self, tmp):
        from ..configs import FeatureConfig
        from .tense import TenseConfig, TenseRender

        render = TenseRender(steps=self.sizes.tense_steps, size=self.sizes.tense_size)
        return [TenseConfig(out=os.path.join(tmp, "tense"), model=self.model, feature=self.feature(FeatureConfig),
                            render=render, mode=self.mode)]

    def atlas(self, tmp):
        from .atlas import AtlasFeature, AtlasRender, AtlasStageConfig

        s, k = self.sizes, self.sizes.atlas_select
        return [AtlasStageConfig(
            out=os.path.join(tmp, "atlas"), model=self.model, data=self.data, scan=os.path.join(tmp, "scan", "scan.npz"),
            feature=self.feature(AtlasFeature, self.atlas_layer), mode="position", icon_target=ICON_TARGET,
            top_abs=k, top_activation=k // 2, bottom_activation=k // 2, top_tension=k // 2,
            render=AtlasRender(steps=s.atlas_steps, size=s.atlas_icon_size))]

    def combos(self, tmp):
        from .combos import CombosConfig, CombosRender

        s = self.sizes
        data = dataclasses.replace(self.data, size=s.combo_size, limit=s.combo_images)
        # layer None: the stage's early layer (the paper picks its pairs early), not the studied feature's
        return [CombosConfig(out=os.path.join(tmp, "combos"), model=self.model, data=data, layer=None,
                             n_angles=s.combo_angles, n_seeds=s.combo_seeds, scale_steps=s.combo_scale_steps,
                             render=CombosRender(steps=s.combo_steps))]

    def toy(self, tmp):
        from .toy import ToyStageConfig

        return [ToyStageConfig(out=os.path.join(tmp, "toy"), steps=self.sizes.toy_steps, seeds=self.sizes.toy_seeds)]


def plan_demo(model: str, layer, unit, attribution_layer, images, device, cfg: DemoConfig,
              weights: str = "default") -> DemoPlan:
    """Check the demo's inputs and choose its defaults; every problem is one :class:`DemoInputError`."""
    from ...models.defaults import default_attribution_layer, pick_unit, resolve_feature_layers
    from ..configs import DataConfig, ModelConfig
    from ..runtime import load_data, load_model, log

    try:
        model_cfg = ModelConfig(spec=model, weights=weights, device=device)
        net = load_model(model_cfg)
        cfg = _model_sizes(net, cfg)
        data_cfg = DataConfig(images=images, n_images=cfg.n_images, size=cfg.size, batch_size=cfg.batch_size)
        dataset = load_data(data_cfg)
        layer, attr = resolve_feature_layers(net, layer, attribution_layer, data_cfg.size)
        atlas_layer = default_attribution_layer(net, attr) if attr != "input" else attr
        if unit is None:
            unit = pick_unit(net, dataset, layer)
            log.info("unit: %d of %s (its activation at the centre varies most over the first images)", unit, layer)
        from ...core.features import Feature

        _check_both_signs(net, dataset, Feature(layer, unit=unit), attr)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        raise DemoInputError(str(exc)) from exc
    from ...models.layers import logits_input_size

    return DemoPlan(model_cfg, data_cfg, layer, unit, attr, atlas_layer, cfg, logits_input_size(net))


def _model_sizes(net, cfg: DemoConfig) -> DemoConfig:
    """``cfg`` with its image sizes set to the one input size a model takes (a strict ViT patch embedding:
    timm's 224 px), and the inversions' render size too (their target maps live on the patch grid of the image
    they render), said when changed; unchanged for models that take any size. Other render sizes stay (those
    renders are resized to the model's size: :func:`lucent_inhibit.core.rendering.run_render`)."""
    from ...core.tokens import required_input_size
    from ..runtime import log

    need = required_input_size(net)
    sizes = (cfg.size, cfg.combo_size, cfg.inversion_size, cfg.randomize_size)
    if need is None or need[0] != need[1] or sizes == (need[0],) * len(sizes):
        return cfg
    log.info("images, inversions and the randomization cascade at %d px (the demo's %d, %d, %d and %d px): %s takes "
             "%dx%d px inputs only", need[0], *sizes, type(net).__name__, need[0], need[1])
    return dataclasses.replace(cfg, size=need[0], combo_size=need[0], inversion_size=need[0], randomize_size=need[0])


def _check_both_signs(net, dataset, feature, attr: str, n: int = 8) -> None:
    """``ValueError`` before any work when the feature has no inhibitory (or no excitatory) attribution at
    ``attr`` on the first ``n`` images: MTIs and +/- inversions need both signs (a max-pool or ReLU feature
    layer is a monotone function of the ReLU before it, so N is 0 there)."""
    import torch

    from ...attribution.attribute import attribute

    x = torch.stack([dataset[i] for i in range(min(n, len(dataset)))])
    att = attribute(net, x, feature, [attr])
    for name, total in (("inhibitory", att.negative(attr)), ("excitatory", att.positive(attr))):
        if not bool((total > 0).any()):
            raise ValueError(
                f"feature {feature.name} has no {name} attribution at {attr!r} on the first {len(x)} images, so "
                "it has no maximally tense images nor +/- inversions; pick a pre-activation feature layer "
                "(lucent_inhibit.preactivation_layers) or another --attribution-layer")


#: The stages of the report, in order, each with the plan method that makes its configs.
REPORT_STAGES = ("completeness", "scan", "inhibitors", "randomize", "invert", "tense", "atlas", "combos", "toy")


def _run_stages(plan: DemoPlan, tmp: str, progress: bool, report: Report) -> None:
    """Run the stages in order, each with its configs, and add each one's section to ``report``."""
    import importlib

    from tqdm.auto import tqdm

    bar = tqdm(total=len(REPORT_STAGES), desc="report stages", disable=not progress)
    results = {}
    for name in REPORT_STAGES:
        module = importlib.import_module(f"{__package__}.{name}")  # the stage module itself (its STAGE)
        if name in ("inhibitors", "randomize"):
            configs = module.demo_configs(plan, tmp)
        else:
            configs = plan.invert(tmp, results["scan"]) if name == "invert" else getattr(plan, name)(tmp)
        runs = [(c, module.STAGE.run(c, progress)) for c in configs]
        results[name] = runs[0][1]
        section, numbers = module.STAGE.section(runs, tmp)
        section.title = f"{len(report.sections) + 1}. {section.title}"
        report.sections.append(section)
        for n, value, note in numbers:
            report.add_number(n, value, note)
        bar.update()
    bar.close()


def run_demo(
    out: str = "report",
    model: str = "efficientnet_lite0",
    layer: Optional[str] = None,
    unit: Optional[int] = None,
    attribution_layer: Optional[str] = None,
    images: Optional[str] = None,
    device: str = "cpu",
    config: Optional[DemoConfig] = None,
    progress: bool = True,
    weights: str = "default",
    mode: str = "auto",
) -> Report:
    """Run every stage on one model and write ``out/index.html`` (see the module docstring).

    Args:
        out: report folder: new, empty, or a previous report (whose manifest lists every file in it),
            not the input image folder nor inside or around it; replaced only when the whole run succeeds.
        model: model spec (:func:`lucent_inhibit.load_model`), default the embedded EfficientNet-Lite0;
            ``weights``: ``"default"``, ``"none"`` (random) or a local state dict file.
        layer, unit: the feature (a pre-activation layer and a channel). Defaults: ``blocks_4_0_bn3_drop``
            on the embedded model, :func:`lucent_inhibit.default_feature_layers` on others (said), and the
            unit with the most varied activation (:func:`lucent_inhibit.pick_unit`).
        attribution_layer: where the feature is attributed; default
            :func:`lucent_inhibit.models.defaults.default_attribution_layer`.
        images: folder of the user's images; default the bundled sample crops.
        device: torch device.
        config: stage sizes (:class:`DemoConfig`).
        progress: tqdm bars for the stages and inside them.
        mode: the gradient mode of tense synthesis (``"auto"``, ``"fast"``, ``"exact"``: see
            :func:`lucent_inhibit.objectives.tense`).

    Returns:
        The :class:`Report` written. Bad input raises :class:`DemoInputError` before anything is written.
    """
    import numpy as np
    import torch

    from ..runtime import shared_inputs

    check_report_target(out, [images])
    check_choice("mode", mode, ("auto", "fast", "exact"))
    cfg = config or DemoConfig()
    torch.manual_seed(0)
    np.random.seed(0)  # Lucent's augmentations draw from numpy's global generator: a rerun gives the same report
    with shared_inputs():
        plan = dataclasses.replace(plan_demo(model, layer, unit, attribution_layer, images, device, cfg, weights),
                                   mode=mode)
        report = Report(
            "lucent-inhibit report",
            "Inhibition in a vision model, seen and measured: which images excite the feature, which inhibit it, "
            "and which do both at once (maximally tense images, MTIs), what in an image excites or inhibits it, and "
            "which feature combinations the model can represent.",
        )
        report.settings = {"model": model, "feature": f"{plan.layer} unit {plan.unit} @ center",
                           "attribution layer": plan.attr_layer, "atlas layer": plan.atlas_layer,
                           "images": images or f"{cfg.n_images} bundled sample crops ({cfg.size} px)", "device": device}
        t_start = time.time()
        with StagingDir(out, inputs=[images]) as tmp:
            _run_stages(plan, tmp, progress, report)
            report.add_number("total run time (s)", round(time.time() - t_start, 1), "all seven stages")
            report.write(tmp)
            missing = report.missing_files(tmp)
            if missing:
                raise RuntimeError(f"report refers to files that were not written: {missing}")
    return report


@dataclass
class DemoStageConfig:
    """Options of ``lucent-inhibit demo``."""

    out: str = option("report", "report folder", metavar="DIR")
    model: ModelConfig = group(ModelConfig)
    images: Optional[str] = option(None, "folder of your own images (recursive); default: bundled sample crops",
                                   metavar="DIR")
    layer: Optional[str] = option(None, "feature layer, a pre-activation layer (default on the embedded model: "
                                  "blocks_4_0_bn3_drop; on others the pre-activation map about two thirds deep, "
                                  "lucent_inhibit.default_feature_layers; said)")
    unit: Optional[int] = option(None, "feature channel (default: the unit whose activation varies most over the "
                                 "first images)")
    attribution_layer: Optional[str] = option(None, "layer where the feature is attributed (default: the last "
                                              "activation before the feature layer)")
    quick: bool = option(False, "tiny sizes and few steps for every stage (a smoke run of 2-3 minutes, not a "
                         "measurement)")
    mode: Literal["auto", "fast", "exact"] = option(
        "auto", "gradient mode of the tense synthesis (lucent-inhibit tense --help): auto compares fast and exact "
        "at the first step and says which it keeps")

    def __post_init__(self):
        check_choices(self)
        check_paths(self)
        if self.unit is not None:
            check_int(flag(DemoStageConfig, "unit"), self.unit, low=0)


def run(cfg: DemoStageConfig, progress: bool = True):
    return run_demo(out=cfg.out, model=cfg.model.spec, layer=cfg.layer, unit=cfg.unit,
                    attribution_layer=cfg.attribution_layer, images=cfg.images, device=cfg.model.device,
                    config=DemoConfig.quick() if cfg.quick else None, progress=progress, weights=cfg.model.weights,
                    mode=cfg.mode)


def describe(report, cfg: DemoStageConfig) -> List[str]:
    width = max(len(n) for n, _, _ in report.numbers)
    return [f"wrote {os.path.join(cfg.out, 'index.html')}"] + [
        f"  {name.ljust(width)}  {value}" for name, value, _ in report.numbers]


STAGE = register_module(
    __name__, DemoStageConfig, "the main job: every method on one model, written as report/index.html")
