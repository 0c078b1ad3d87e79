"""Stage ``randomize``: the model-parameter randomization test of maximally tense images (Adebayo et al. 2018,
"Sanity checks for saliency maps"; paper 002, section 6.3).

Re-initialise the model's natural blocks one after the other, cumulatively (on a copy of the model; each
module's own reset_parameters, seeded), from the feature's block backwards through the attribution layer to
the input (a block holding the attribution layer is split there). At each step, attribute every image again and
compare with the trained model: the Spearman rank correlation of the images' tension, the overlap of the
top-k MTIs, the rank correlation of the trained MTIs' attributions and of the inhibitor dictionary's channel
ranking. The verdicts, once every weight between the attribution layer and the feature is re-initialised: the MTIs
depend on the learned weights when the tension ranking's rank correlation falls below 0.5, the inhibitor dictionary
does when its channel ranking's does. Writes OUT/randomization.npz and OUT/randomization.png (the input maps of the
top MTIs at each step above the curves); each finished step is kept in OUT/randomization-checkpoints until the
end, so an interrupted run resumes at its first unfinished step.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional

from ...core.validate import check_int
from ..configs import DataConfig, FeatureConfig, ModelConfig, check_optional_int
from ..options import REQUIRED, check_paths, flag, group, option
from ..registry import register_module

#: the files this stage writes into --out (read by :func:`lucent_inhibit.app.outputs.stage_files`).
OUTPUTS = ("randomization.npz", "randomization.png", "randomization-checkpoints/")
#: Its checkpoints (one file per finished step), in --out while it runs (resumed by a rerun of the same command),
#: removed once it finished.
TRANSIENT = ("randomization-checkpoints",)


def work(cfg) -> List[str]:
    """The checkpoint folder this run writes in --out as it goes (:mod:`lucent_inhibit.app.staging`)."""
    return list(TRANSIENT)


@dataclass
class RandomizeConfig:
    """Options of ``lucent-inhibit randomize``."""

    out: str = option(REQUIRED, "output folder (randomization.npz/.png)", metavar="DIR")
    model: ModelConfig = group(ModelConfig)
    data: DataConfig = group(DataConfig)
    feature: FeatureConfig = group(FeatureConfig)
    top_k: int = option(10, "MTIs compared per step (their overlap, their attributions, the inhibitor ranking)")
    blocks: Optional[int] = option(None, "cascade steps: the first N blocks back from the feature (default: every "
                                   "block back to the input)")

    def __post_init__(self):
        check_paths(self)
        check_int(flag(RandomizeConfig, "top_k"), self.top_k, low=1)
        check_optional_int(RandomizeConfig, self, "blocks", 1)


def run(cfg: RandomizeConfig, progress: bool = True):
    """The randomization cascade; writes its result and figure; returns the result."""
    from ...causal.randomization import randomization_cascade
    from ...core.figures import close
    from ..runtime import feature_and_layers, load_data, load_model, out_folder

    model = load_model(cfg.model)
    data = load_data(cfg.data)
    feature, (layer,) = feature_and_layers(model, cfg.feature, size=cfg.data.size, data=data)
    out_folder(cfg.out)
    res = randomization_cascade(model, data, feature, layer, blocks=cfg.blocks, k=cfg.top_k,
                                settings=cfg.data.passes(progress), seed=cfg.data.seed,
                                checkpoint=os.path.join(cfg.out, TRANSIENT[0]))
    res.save(os.path.join(cfg.out, "randomization.npz"))
    close(res.plot(os.path.join(cfg.out, "randomization.png")))
    return res


def describe(res, cfg: RandomizeConfig) -> List[str]:
    from ...findings.randomization import dictionary_finding, randomization_finding

    found, words = randomization_finding(res), dictionary_finding(res)
    lines = [f"randomization cascade of {res.feature.name} attributed at {res.layer} ({res.indices.size} images, "
             f"top-{res.k} MTIs): {found.verdict}", f"  {found.measured}", f"  {found.why}",
             f"  inhibitor dictionary: {words.verdict}: {words.measured}",
             "  step  tension rho  MTI overlap  MTI attribution rho  inhibitor rho  re-initialised"]
    for row in res.table():
        values = list(row.values())[2:]
        mark = " <- attribution layer to feature" if row["step"] == res.between else ""
        lines.append(f"  {row['step']:4d}  " + "  ".join(f"{v:11.3f}" for v in values) + f"  {row['reinitialised']}{mark}")
    return lines + [f"  wrote {', '.join(OUTPUTS[:2])}"]


def section(runs, root: str):
    """Report section: the cascade figure, its numbers per step and the finding."""
    from ...findings.randomization import dictionary_finding, randomization_finding
    from ..runtime import files_section

    cfg, res = runs[0]
    text = ("A sanity check (Adebayo et al. 2018, paper 002 section 6.3): re-initialise the model's blocks one after "
            "the other, from the feature backwards, and ask whether the same images stay the most tense. Were the "
            "MTIs a product of the architecture alone, an untrained network would give them too. Each row of maps is "
            "one of the trained model's top MTIs, its attribution at the input at each step (red excitation, blue inhibition); "
            "below, each step's rank correlation of the images' tension, the overlap of the top MTIs, the rank "
            "correlation of the MTIs' attributions and of the inhibitor dictionary's channel ranking with the "
            f"trained model's ({res.indices.size} images of {cfg.data.size} px).")
    numbers = [(f"randomization step {row['step']} ({row['reinitialised']}): tension rho / top-{res.k} overlap / "
                "attribution rho / inhibitor rho", " / ".join(f"{v:.3f}" for v in list(row.values())[2:]),
                "attribution layer to feature re-initialised" if row["step"] == res.between else "")
               for row in res.table()[1:]]
    sec = files_section("Sanity check: do the MTIs depend on the learned weights?", text, cfg.out, root,
                        ["randomization.png"], ["randomization.npz"])
    sec.findings = [randomization_finding(res), dictionary_finding(res)]
    return sec, numbers


def demo_configs(plan, tmp: str) -> List[RandomizeConfig]:
    """The report's config: the demo's model and feature on its first ``randomize_images`` images at
    ``randomize_size`` px (every step attributes them all again)."""
    import dataclasses

    s = plan.sizes
    data = dataclasses.replace(plan.data, size=s.randomize_size, limit=min(s.randomize_images, s.n_images))
    return [RandomizeConfig(out=os.path.join(tmp, "randomize"), model=plan.model, data=data,
                            feature=plan.feature(FeatureConfig), top_k=min(10, data.limit))]


STAGE = register_module(
    __name__, RandomizeConfig, "the model-parameter randomization test: do the MTIs depend on the learned weights?")
