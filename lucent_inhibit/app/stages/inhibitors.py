"""Stage ``inhibitors``: the causal test of maximally tense images and the channels that inhibit a feature
(Hamblin et al., paper 000; SPEC 1 and 2.2).

Read a scan (--scan FILE, or scan the dataset first), remove the inhibitory elements (S < 0) of the
attribution layer on the MEIs, MIIs, MTIs and random images and re-run the forward pass (disinhibition,
with the verdict on the paper's claim that the feature would fire on its MTIs were it not for inhibition);
rank the layer's channels by their inhibition of the feature on the MTIs, with each channel's share of N,
the change in the feature when it alone is removed, its top dataset images and a render of Lucent's channel
objective. Writes OUT/disinhibition.npz/.png and OUT/inhibitors.npz/.png (and OUT/scan.npz when it scanned).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Literal, Optional

from ...core.validate import MAX_FRACTION, check_int, check_number
from ..configs import RENDER, DataConfig, FeatureConfig, ModelConfig, RenderConfig
from ..options import REQUIRED, check_choices, check_paths, flag, group, option
from ..registry import register_module

#: the files this stage writes into --out (read by :func:`lucent_inhibit.app.outputs.stage_files`).
OUTPUTS = ("disinhibition.npz", "disinhibition.png", "inhibitors.npz", "inhibitors.png", "scan.npz")


@dataclass
class InhibitorsRender(RenderConfig):
    steps: int = option(RENDER.steps, "render steps per channel visualization")
    size: Optional[int] = option(None, "side of each channel visualization in pixels (default: 96)",
                                 flag="--render-size")


@dataclass
class InhibitorsConfig:
    """Options of ``lucent-inhibit inhibitors``."""

    out: str = option(REQUIRED, "output folder (disinhibition.npz/.png, inhibitors.npz/.png)", metavar="DIR")
    scan: Optional[str] = option(None, "a scan file (scan.npz) or finished scan folder of the same feature, dataset "
                                 "and attribution layer; default: scan the dataset first (written to OUT/scan.npz)",
                                 metavar="FILE")
    model: ModelConfig = group(ModelConfig)
    data: DataConfig = group(DataConfig)
    feature: FeatureConfig = group(FeatureConfig)
    render: InhibitorsRender = group(InhibitorsRender)
    top_k: int = option(10, "MEIs, MIIs and MTIs per group")
    n_random: int = option(32, "random images, the control group")
    baseline: Literal["zero", "mean"] = option("zero", "value of removed elements/channels: zero or their dataset mean")
    fraction: float = option(0.5, "verdict bar: the MTIs' disinhibited f must reach this fraction of the MEIs' f "
                             f"(> 0, at most {MAX_FRACTION:g})")
    n_channels: int = option(8, "inhibitory channels in the dictionary")
    n_top_images: int = option(4, "top dataset images per channel")
    distinct: bool = option(True, "show every crop among a channel's top images, also several of one photo "
                            "(default: at most one crop per source photo while there are enough)", flag="--no-distinct")
    n_remove: int = option(5, "channels removed together in the top-vs-random removal check")
    random_draws: int = option(5, "random draws of the removal check")
    visualize: bool = option(True, "skip the channel visualizations", flag="--no-render")

    def __post_init__(self):
        check_choices(self)
        check_paths(self)
        for name in ("top_k", "n_channels", "n_top_images", "n_remove", "random_draws"):
            check_int(flag(InhibitorsConfig, name), getattr(self, name), low=1)
        check_int(flag(InhibitorsConfig, "n_random"), self.n_random, low=2)
        check_number(flag(InhibitorsConfig, "fraction"), self.fraction, 0, MAX_FRACTION, low_open=True)
        if self.scan is not None and not os.path.exists(self.scan):
            raise ValueError(f"--scan {self.scan!r} does not exist (give a scan.npz file or a finished scan folder)")


def run(cfg: InhibitorsConfig, progress: bool = True):
    """Disinhibition and the inhibitor dictionary; writes both results and figures; returns the dictionary."""
    from ...attribution.passes import dataset_pass
    from ...causal.disinhibition import disinhibit
    from ...causal.inhibitors import inhibitor_dictionary
    from ...causal.removal import ensure_scan, layer_statistics
    from ..runtime import feature_and_layers, load_data, load_model, out_folder

    model = load_model(cfg.model)
    data = load_data(cfg.data)
    feature, (layer,) = feature_and_layers(model, cfg.feature, size=cfg.data.size, data=data)
    passes = cfg.data.passes(progress)
    scan = ensure_scan(model, data, feature, layer, cfg.scan, passes)
    stats = layer_statistics(dataset_pass(model, data, [layer], [feature], passes), layer)
    common = dict(scan=scan, k=cfg.top_k, baseline=cfg.baseline, seed=cfg.data.seed, statistics=stats,
                  settings=passes)
    dis = disinhibit(model, data, feature, layer, n_random=cfg.n_random, fraction=cfg.fraction, **common)
    res = inhibitor_dictionary(model, data, feature, layer, n_channels=cfg.n_channels, n_top_images=cfg.n_top_images,
                               n_remove=cfg.n_remove, random_draws=cfg.random_draws, render=cfg.render.settings(progress),
                               visualize=cfg.visualize, distinct=cfg.distinct, **common)
    out_folder(cfg.out)
    if cfg.scan is None:
        scan.save(os.path.join(cfg.out, "scan.npz"))
    for name, result in (("disinhibition", dis), ("inhibitors", res)):
        result.save(os.path.join(cfg.out, f"{name}.npz"))
        result.plot(os.path.join(cfg.out, f"{name}.png"))
    return res


def _disinhibition(cfg: InhibitorsConfig):
    from ...causal.disinhibition import Disinhibition

    return Disinhibition.load(os.path.join(cfg.out, "disinhibition.npz"))


def _written(cfg: InhibitorsConfig) -> List[str]:
    """The files :func:`run` wrote into ``cfg.out`` (not the other files there)."""
    return [f for f in OUTPUTS if f != "scan.npz" or cfg.scan is None]


def describe(res, cfg: InhibitorsConfig) -> List[str]:
    dis = _disinhibition(cfg)
    lines = [f"disinhibition of {res.feature.name} at {res.layer} ({res.baseline} baseline): {dis.explanation()}"]
    for g, m in dis.means().items():
        lines.append(f"  {g:>6}: f {m['f']:.4g}  disinhibited f {m['disinhibited']:.4g}  f + N {m['f_plus_N']:.4g}")
    lines.append(f"inhibitor channels on {res.mtis.size} MTIs (share of N, change of f when removed alone):")
    lines += [f"  channel {r['channel']}: {100 * r['share']:.1f}%  {r['delta']:+.4g}  top images {r['top_images']}"
              for r in res.table()]
    rm = res.removal
    lines.append(f"  removing the top {rm['n']} together: {rm['top']:+.4g}; {rm['n']} random channels: "
                 f"{rm['random_mean']:+.4g} (mean of {len(rm['random'])} draws)")
    return lines + [f"  wrote {', '.join(_written(cfg))}"]


def section(runs, root: str):
    """Report section: the disinhibition bars with the verdict, and the inhibitor dictionary."""
    from ...findings.causal import disinhibition_finding, inhibitor_finding
    from ..runtime import files_section

    cfg, res = runs[0]
    dis = _disinhibition(cfg)
    m, rm = dis.means(), res.removal
    text = ("The paper reads maximally tense images as what inhibition is for: the feature would fire on them were "
            "it not for inhibition. Removing the inhibitory elements (S < 0) of the attribution layer and re-running "
            "the forward pass tests this causally, against a control: images matched to the MTIs on their "
            "excitation P with little inhibition. Removing inhibition raises every image, so the verdict asks "
            "what can fail: are the MTIs held below the matched images, does removal release them to the matched "
            "images' level, and does their excitation point the way the MEIs' does (more than random images')? The dictionary ranks the layer's channels by their share of the "
            "MTIs' inhibition N, with the change of the feature when each alone is removed, its top dataset images "
            "and a render of the channel.")
    numbers = [(f"{g}: mean f / disinhibited f / f + N", f"{v['f']:.3g} / {v['disinhibited']:.3g} / {v['f_plus_N']:.3g}",
                f"{v['images']} images") for g, v in m.items()]
    numbers += [("MTIs' f / images matched on P: Welch t (held down)", dis.held_down_t, "bar 2"),
                ("MTIs' disinhibited f / matched images' f (released)", dis.released, f"bar {dis.fraction:g}"),
                ("excitation cosine to the MEIs': MTIs vs random, Welch t", dis.evidence_t, dis.verdict),
                ("MTIs' disinhibited f / MEIs' f (context)", dis.ratio, ""),
                (f"removing the top-{rm['n']} inhibitory channels: change of f on the MTIs", rm["top"],
                 f"random {rm['n']}: {rm['random_mean']:.3g}")]
    numbers += [(f"inhibitor channel {r['channel']}: share of N / change of f", f"{100 * r['share']:.1f}% / "
                 f"{r['delta']:+.3g}", "") for r in res.table()[:5]]
    sec = files_section("Removing inhibition: the causal test and the inhibitor dictionary", text, cfg.out, root,
                        ["disinhibition.png", "inhibitors.png"], ["disinhibition.npz", "inhibitors.npz"])
    sec.findings = [disinhibition_finding(dis), inhibitor_finding(res)]
    return sec, numbers


def demo_configs(plan, tmp: str) -> List[InhibitorsConfig]:
    """The report's config: the demo's model, images and feature, the scan it wrote, small renders."""
    s = plan.sizes
    return [InhibitorsConfig(out=os.path.join(tmp, "inhibitors"), model=plan.model, data=plan.data,
                             feature=plan.feature(FeatureConfig), scan=os.path.join(tmp, "scan", "scan.npz"),
                             top_k=min(10, s.n_images), n_random=min(32, s.n_images),
                             render=InhibitorsRender(steps=min(48, s.atlas_steps), size=min(96, s.atlas_icon_size)))]


STAGE = register_module(
    __name__, InhibitorsConfig, "remove inhibition on the MTIs (causal test) and rank the channels that inhibit a feature")
