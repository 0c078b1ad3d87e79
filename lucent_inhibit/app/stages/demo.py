"""Stage ``demo``: the main job, every other stage on one model, written as ``OUT/index.html``
(composed by :func:`lucent_inhibit.app.report.run_demo`).

Run every stage (completeness, scan with MEI/MII/MTI figures, +/- inversions and accentuations of the top
MTIs, a synthesised tense image, an attribution atlas, a feature-combination plot, the superposition toy
figure) with the other sub-commands' defaults and write OUT/index.html linking every figure with an
explanation and a table of the numbers measured. The report folder is replaced only when the whole run
succeeds.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional

from ...core.validate import check_int
from ..configs import ModelConfig
from ..options import flag, group, option
from ..registry import register_module


@dataclass
class DemoStageConfig:
    """Options of ``lucent-inhibit demo``."""

    out: str = option("report", "report folder", metavar="DIR")
    model: ModelConfig = group(ModelConfig)
    images: Optional[str] = option(None, "folder of your own images (recursive); default: bundled sample crops",
                                   metavar="DIR")
    layer: Optional[str] = option(None, "feature layer, a pre-activation layer (default on the embedded model: "
                                  "blocks_4_0_bn3_drop)")
    unit: Optional[int] = option(None, "feature channel (default: the unit whose activation varies most over the "
                                 "first images)")
    attribution_layer: Optional[str] = option(None, "layer where the feature is attributed (default: the last "
                                              "activation before the feature layer)")
    quick: bool = option(False, "tiny sizes and few steps for every stage (a smoke run of 2-3 minutes, not a "
                         "measurement)")

    def __post_init__(self):
        if self.unit is not None:
            check_int(flag(DemoStageConfig, "unit"), self.unit, low=0)


def run(cfg: DemoStageConfig, progress: bool = True):
    from ..report import DemoConfig, run_demo

    return run_demo(out=cfg.out, model=cfg.model.spec, layer=cfg.layer, unit=cfg.unit,
                    attribution_layer=cfg.attribution_layer, images=cfg.images, device=cfg.model.device,
                    config=DemoConfig.quick() if cfg.quick else None, progress=progress, weights=cfg.model.weights)


def describe(report, cfg: DemoStageConfig) -> List[str]:
    width = max(len(n) for n, _, _ in report.numbers)
    return [f"wrote {os.path.join(cfg.out, 'index.html')}"] + [
        f"  {name.ljust(width)}  {value}" for name, value, _ in report.numbers]


STAGE = register_module(
    __name__, DemoStageConfig, "the main job: every method on one model, written as report/index.html")
