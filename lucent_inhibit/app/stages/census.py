"""Stage ``census``: every unit of a layer (or some of its units) over a dataset in one pass, ranked by how
much inhibition shapes them (Hamblin et al., paper 000; SPEC 2.2 for a whole layer).

One forward pass per batch for all the units, the backward in chunks of --chunk-size units; per image and
unit the activation and the excitatory/inhibitory attribution totals (P, N) at the attribution layers. Writes
OUT/census.npz (a Census: share of inhibition N/(P+N), tension distribution and MTIs of every unit) and
OUT/census.png (the units ranked by share of inhibition, with their tension quantiles).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Literal, Optional, Tuple

from ...core.validate import check_int
from ...models.defaults import DEFAULT_LAYER
from ..configs import AUTOCAST_HELP, DataConfig, ModelConfig, parse_position
from ..options import REQUIRED, check_choices, check_paths, flag, group, option
from ..registry import register_module

#: the files this stage writes into --out (read by :func:`lucent_inhibit.app.outputs.stage_files`).
OUTPUTS = ("census.npz", "census.png", "census-checkpoints/")
#: Its checkpoints, in --out while it runs (resumed by a rerun of the same command), removed once it finished.
TRANSIENT = ("census-checkpoints",)


def work(cfg) -> List[str]:
    """The checkpoint folder this run writes in --out as it goes (:mod:`lucent_inhibit.app.staging`)."""
    return list(TRANSIENT)


@dataclass
class CensusConfig:
    """Options of ``lucent-inhibit census``."""

    out: str = option(REQUIRED, "output folder (census.npz, census.png)", metavar="DIR")
    model: ModelConfig = group(ModelConfig)
    data: DataConfig = group(DataConfig)
    layer: Optional[str] = option(None, f"layer whose units are censused (default on the embedded model: "
                                  f"{DEFAULT_LAYER}, a pre-activation)")
    units: Optional[Tuple[int, ...]] = option(None, "units to census (default: every channel of the layer)",
                                              metavar="UNIT")
    position: str = option("center", "where each unit is read: 'center', 'mean' or 'y,x' (a token layer also takes "
                           "'cls' and 'token:i'; a linear layer has no position: leave it at 'center')")
    attr_layers: Optional[Tuple[str, ...]] = option(
        None, "attribution layer(s) before the layer, close to it (default: the last activation before it, "
        "blocks_4_0_bn2_act for the default layer)", metavar="LAYER")
    chunk_size: int = option(16, "units whose attributions are held in memory at once (about 16 x batch size x "
                             "attribution-layer activations bytes per unit)")
    backward: Literal["auto", "batched", "loop"] = option(
        "auto", "how each chunk's backward runs: batched (is_grads_batched), loop (one pass per unit), auto "
        "(batched on CUDA, loop on CPU, where it is as fast)")
    top_k: int = option(5, "MTIs listed per unit in the console summary")
    figures: bool = option(True, "write the census only", flag="--no-figures")
    autocast: bool = option(False, AUTOCAST_HELP)

    def __post_init__(self):
        check_choices(self)
        check_paths(self)
        check_int(flag(CensusConfig, "chunk_size"), self.chunk_size, low=1)
        check_int(flag(CensusConfig, "top_k"), self.top_k, low=1)
        parse_position(self.position)
        if self.units is not None:
            self.units = tuple(check_int(flag(CensusConfig, "units"), u, low=0) for u in self.units)
        if self.attr_layers is not None:
            self.attr_layers = tuple(self.attr_layers)


def _layers(model, cfg: CensusConfig) -> Tuple[str, List[str]]:
    """The censused layer and the attribution layers, checked against the model."""
    from ...models.defaults import resolve_feature_layers
    from ..runtime import check_layers

    first = cfg.attr_layers[0] if cfg.attr_layers else None
    layer, attr = resolve_feature_layers(model, cfg.layer, first, cfg.data.size)
    layers = list(cfg.attr_layers) if cfg.attr_layers else [attr]
    check_layers(model, *layers)
    return layer, layers


def run(cfg: CensusConfig, progress: bool = True):
    """Census the layer's units, write ``census.npz`` and ``census.png`` to ``cfg.out``; returns the Census.
    Under ``torchrun`` every rank censuses its share of the images and returns the whole census; rank 0 writes."""
    from ...census import layer_census
    from ...core.distributed import all_gather, init_from_env
    from ...core.features import Feature
    from ..runtime import load_data, load_model, out_folder, precision_context

    rank = init_from_env()[0]
    model = load_model(cfg.model)
    layer, layers = _layers(model, cfg)
    data = load_data(cfg.data)
    out_folder(cfg.out)
    checked = Feature(layer, unit=(cfg.units or [0])[0], position=parse_position(cfg.position))  # the first unit
    precision, check = precision_context(cfg.autocast, model, data, checked, layers, cfg.data.batch_size)
    with precision:
        result = layer_census(model, data, layer, layers, units=cfg.units, position=parse_position(cfg.position),
                              chunk_size=cfg.chunk_size, backward=cfg.backward, settings=cfg.data.passes(progress),
                              checkpoint=os.path.join(cfg.out, TRANSIENT[0]))
    if check is not None:
        result.info["autocast_check"] = check.to_dict()
    all_gather(lambda: _write(result, cfg) if rank == 0 else None)  # under torchrun rank 0 writes
    return result


def _write(result, cfg: CensusConfig) -> None:
    result.save(os.path.join(cfg.out, "census.npz"))
    if cfg.figures:
        result.plot(os.path.join(cfg.out, "census.png"))


def describe(result, cfg: CensusConfig) -> List[str]:
    import numpy as np

    from ...attribution.totals import MIN_PERCENTILE_IMAGES

    share, order = result.share(), result.ranking()
    f0 = result.features[0]
    lines = [f"census of {len(result.features)} units of {f0.layer} @ {f0.position} at {result.layers}: "
             f"{len(result)} images -> {os.path.join(cfg.out, 'census.npz')}",
             f"  share of inhibition N/(P+N): mean {float(np.nanmean(share)):.3f}, "
             f"range {float(share[order[-1]]):.3f}..{float(share[order[0]]):.3f}"]
    enough = len(result) >= MIN_PERCENTILE_IMAGES
    for j in order[:5]:
        f = result.features[j]
        mtis = f", MTIs {result.mtis(f, min(cfg.top_k, len(result))).tolist()}" if enough else ""
        lines.append(f"  unit {f.unit}: share {float(share[j]):.3f}{mtis}")
    if cfg.figures:
        lines.append(f"  figure: {os.path.join(cfg.out, 'census.png')}")
    return lines


def section(runs, root: str):
    """Report section: the units ranked by share of inhibition, and the numbers of the most inhibited."""
    import numpy as np

    from ..runtime import files_section

    cfg, result = runs[0]
    share, order = result.share(), result.ranking()
    numbers = [("units censused", len(result.features), ""), ("images", len(result), ""),
               ("mean share of inhibition", float(np.nanmean(share)), "N/(P+N) over the images, mean over units"),
               ("largest share of inhibition", float(share[order[0]]),
                f"unit {result.features[order[0]].unit}")]
    text = ("Every unit of the layer from one pass over the images: bars rank the units by their share of "
            "inhibition N/(P+N), the part of their total attribution that is inhibitory; below, the median and "
            "90th percentile of each unit's tension (the smaller of its P and N percentile ranks per image).")
    figures = ["census.png"] if cfg.figures else []
    return files_section("Layer census", text, cfg.out, root, figures, ["census.npz"]), numbers


STAGE = register_module(
    __name__, CensusConfig, "census every unit of a layer in one pass: share of inhibition, tension, MTIs per unit")
