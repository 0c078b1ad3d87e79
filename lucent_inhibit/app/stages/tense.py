"""Stage ``tense``: synthesise maximally tense images, large excitation P and inhibition N at once,
with the tense objective in Lucent's render loop (Hamblin et al., paper 000; SPEC 2.5).

Render the tense objective (tension of the image's excitatory and inhibitory attribution at --attr-layer)
with Lucent's render_vis; record P, N and the feature along the way; write OUT/tense.npz and OUT/tense.png.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Literal, Optional

from ...core.validate import MAX_BATCH, check_int
from ..configs import FeatureConfig, ModelConfig, RenderConfig
from ..options import REQUIRED, check_choices, check_paths, flag, group, option
from ..registry import register_module

#: The files this stage writes into --out (lucent_inhibit.app.outputs: only these are ever overwritten).
OUTPUTS = ("tense.npz", "tense.png")


@dataclass
class TenseRender(RenderConfig):
    size: Optional[int] = option(None, "side of the rendered image in pixels (default: 128)",
                                 flag="--size")
    model_size: Optional[int] = option(None, "side of the image the model sees (default: the render size)")
    seed: Optional[int] = option(0, "seed of the render (torch and numpy)", flag="--seed")


@dataclass
class TenseConfig:
    """Options of ``lucent-inhibit tense``."""

    out: str = option(REQUIRED, "output folder", metavar="DIR")
    batch: int = option(1, f"images rendered together (1 to {MAX_BATCH})")
    model: ModelConfig = group(ModelConfig)
    feature: FeatureConfig = group(FeatureConfig)
    render: TenseRender = group(TenseRender)
    mode: Literal["auto", "fast", "exact"] = option(
        "auto", "gradient mode: fast treats the attribution's gradient as constant (exact for ReLU/ReLU6 nets), exact "
        "double-backpropagates, auto keeps fast where its gradient matches the exact one at the first step")
    score: Literal["min", "geometric", "harmonic", "product"] = option("min", "tension score (min: min(P, N))")
    param: Optional[Literal["fourier", "phase"]] = option(None, "image parameterization (default: fourier)")
    seed_image: Optional[str] = option(None, "start from this image file instead of noise", metavar="FILE")
    record_every: int = option(8, "measure P/N/f every this many steps")

    def __post_init__(self):
        check_choices(self)
        check_paths(self)
        check_int(flag(TenseConfig, "batch"), self.batch, 1, MAX_BATCH)
        check_int(flag(TenseConfig, "record_every"), self.record_every, low=1)


def run(cfg: TenseConfig, progress: bool = True):
    from ...data.images import load_image
    from ...synthesis.figures import plot_tense
    from ...synthesis.tense import tense_image
    from ..runtime import feature_and_layers, load_model, out_folder

    model = load_model(cfg.model)
    feature, (attr,) = feature_and_layers(model, cfg.feature)
    seed = None
    if cfg.seed_image:
        try:  # load_image names what the path is when it is no image (missing, a FIFO, a loop, ...)
            seed = load_image(cfg.seed_image, size=cfg.render.size)
        except ValueError as exc:
            raise ValueError(f"--seed-image: {exc}") from None
    settings = cfg.render.settings(progress, **({"param": cfg.param} if cfg.param else {}))
    res = tense_image(model, feature, attr, render=settings, score=cfg.score, mode=cfg.mode, batch=cfg.batch,
                      seed_image=seed, record_every=cfg.record_every)
    out_folder(cfg.out)
    res.save(os.path.join(cfg.out, "tense.npz"))
    plot_tense(res, os.path.join(cfg.out, "tense.png"))
    return res


def describe(res, cfg: TenseConfig) -> List[str]:
    t = res.tension[:, 0]
    lines = [f"tense ({cfg.mode}, {cfg.score}): {res.feature.name}, attribution at {res.layer}"]
    for k in (0, -1):
        lines.append(f"  step {int(res.steps[k])}: P={float(res.positive[k, 0]):.4g} N={float(res.negative[k, 0]):.4g} "
                     f"tension={float(t[k]):.4g} f={float(res.activation[k, 0]):.4g}")
    return lines + [f"  wrote {os.path.join(cfg.out, 'tense.npz')}, {os.path.join(cfg.out, 'tense.png')}"]


def section(runs, root: str):
    from ...findings.synthesis import tense_finding
    from ..runtime import files_section

    cfg, res = runs[0]
    t = res.tension[:, 0]
    text = ("The tense objective rewards min(P, N) of the rendered image, so the render loop raises excitation "
            "and inhibition together while they keep cancelling: the feature stays far below what its maximally "
            "exciting images reach (compare the top MEI activation of the scan).")
    numbers = [("tense synthesis: min(P, N) start -> end", f"{float(t[0]):.3g} -> {float(t[-1]):.3g}", ""),
               ("tense synthesis: final activation", float(res.activation[-1, 0]), "compare the top MEI activation")]
    sec = files_section("A synthesised maximally tense image", text, cfg.out, root, ["tense.png"], ["tense.npz"])
    sec.findings = [tense_finding(res)]
    return sec, numbers


STAGE = register_module(
    __name__, TenseConfig, "synthesise maximally tense images (large P and N at once) with the tense objective")
