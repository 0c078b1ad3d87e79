"""Stage ``microscope``: every unit of one or more layers as a browsable static site, with what inhibits it
(Hamblin et al., paper 000, section 2, for whole layers).

One census pass per layer (f, P, N and tension of every unit on every image; resumable checkpoints in
OUT/microscope-checkpoints, where each finished feature-visualization render is kept too) and, per unit, its
attribution on its maximally tense images split by channel of the attribution layer. Writes OUT/microscope.npz
(a Microscope), OUT/microscope.png (share of inhibition against median tension), OUT/index.html (every unit in one sortable, filterable table), OUT/units/LAYER/UNIT.html (one
page per unit: MTIs, MEIs, MIIs, P-vs-N scatter, top inhibitory and excitatory channels, linked to their own
pages when their layer is also given with --layer; the change of f when each channel is removed on the MTIs),
OUT/images/ (each image shown, once, as a thumbnail) and OUT/visuals/ (the feature visualization of every unit
and listed channel, rendered --render-batch at a time); with --inversions K, OUT/inversions/ (the +/- inversions
of each unit's first K MTIs).
Open OUT/index.html in a browser: no server, no network.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

from ...core.settings import MICROSCOPE_RENDER
from ...core.validate import check_int
from ...models.defaults import DEFAULT_ATTR_LAYER, DEFAULT_LAYER
from ..configs import AUTOCAST_HELP, DataConfig, ModelConfig, RenderConfig, parse_position
from ..options import REQUIRED, check_choices, check_paths, flag, group, option
from ..registry import register_module

#: the files this stage writes into --out (read by :func:`lucent_inhibit.app.outputs.stage_files`).
OUTPUTS = ("microscope.npz", "microscope.png", "index.html", "units/", "images/", "visuals/", "inversions/",
           "microscope-checkpoints/")
#: Its checkpoints, in --out while it runs (resumed by a rerun of the same command), removed once it finished.
TRANSIENT = ("microscope-checkpoints",)
#: ``--max-units``' default: :data:`lucent_inhibit.microscope.build.MAX_UNITS` (not imported: --help stays fast)
MAX_UNITS = 1024


def work(cfg) -> List[str]:
    """The checkpoint folder this run writes in --out as it goes (:mod:`lucent_inhibit.app.staging`)."""
    return list(TRANSIENT)


def parse_units(text: Optional[str], option_name: str = "--units") -> Optional[Tuple[int, ...]]:
    """``"0-63"``, ``"1,5,9"`` or ``"0-3,8"`` as a tuple of unit numbers (None stays None); ``ValueError``
    naming the option for anything else."""
    if text is None:
        return None
    units: List[int] = []
    try:
        for part in str(text).replace(" ", "").split(","):
            lo, _, hi = part.partition("-")
            a, b = int(lo), int(hi) if hi else int(lo)
            if a < 0 or b < a:
                raise ValueError
            units.extend(range(a, b + 1))
    except ValueError:
        raise ValueError(f"{option_name} {text!r}: give units as a range and/or list of non-negative numbers, "
                         "e.g. 0-63 or 1,5,9 or 0-3,8") from None
    return tuple(dict.fromkeys(units))


@dataclass
class MicroscopeRender(RenderConfig):
    steps: int = option(MICROSCOPE_RENDER.steps, "render steps of the feature visualizations")
    size: Optional[int] = option(MICROSCOPE_RENDER.size, "side of each feature visualization in pixels", flag="--render-size")
    model_size: Optional[int] = option(MICROSCOPE_RENDER.model_size, "side of the image the model sees while rendering")


@dataclass
class MicroscopeConfig:
    """Options of ``lucent-inhibit microscope``."""

    out: str = option(REQUIRED, "output folder of the site (index.html, units/, images/, microscope.npz)",
                      metavar="DIR")
    model: ModelConfig = group(ModelConfig)
    data: DataConfig = group(DataConfig)
    layer: Optional[Tuple[str, ...]] = option(
        None, f"feature layer(s) whose units are shown (default: the model's default feature layer, "
        f"{DEFAULT_LAYER} on the embedded model; the pick is said)", metavar="LAYER")
    units: Optional[str] = option(None, "units of every layer, e.g. 0-63 or 1,5,9 (default: all)", metavar="UNITS")
    position: str = option("center", "where each unit is read: 'center', 'mean' or 'y,x' (a token layer also takes "
                           "'cls' and 'token:i'; a linear layer has no position: leave it at 'center')")
    attr_layer: Optional[Tuple[str, ...]] = option(
        None, f"attribution layer: one for all layers or one per --layer, a cut before it (default: each layer's "
        f"nearest cut; {DEFAULT_ATTR_LAYER} for the default layer)", metavar="LAYER")
    n_top: int = option(8, "MEIs, MIIs and MTIs shown per unit (the MTIs are where its channels are ranked)")
    n_channels: int = option(5, "top inhibitory and excitatory channels listed per unit")
    max_units: int = option(MAX_UNITS, "refuse a layer with more units than this (pick some with --units)")
    distinct: bool = option(True, "top images by plain ranking, several crops of one photo allowed (default: one "
                            "crop per source photo first)", flag="--no-distinct")
    render: MicroscopeRender = group(MicroscopeRender)
    visualize: bool = option(True, "skip the feature visualizations of the units and listed channels",
                             flag="--no-render")
    render_batch: int = option(16, "channels rendered together, one batch item each (memory grows with it)")
    n_channel_images: int = option(3, "top dataset images shown per listed channel")
    autocast: bool = option(False, AUTOCAST_HELP + "; the renders run in float32")
    inversions: int = option(0, "+/- attribution inversions of each unit's first K MTIs, one render each with the "
                             "render options (default 0: none)", metavar="K")

    def __post_init__(self):
        check_choices(self)
        check_paths(self)
        check_int(flag(MicroscopeConfig, "inversions"), self.inversions, low=0)
        for name in ("n_top", "n_channels", "max_units", "render_batch", "n_channel_images"):
            check_int(flag(MicroscopeConfig, name), getattr(self, name), low=1)
        parse_units(self.units, flag(MicroscopeConfig, "units"))
        parse_position(self.position)
        for name in ("layer", "attr_layer"):
            if getattr(self, name) is not None:
                setattr(self, name, tuple(getattr(self, name)))
        if self.layer is not None and self.attr_layer is not None and len(self.attr_layer) not in (1, len(self.layer)):
            raise ValueError(f"--attr-layer names {len(self.attr_layer)} layers for {len(self.layer)} --layer: give "
                             "one for all or one per --layer")


def run(cfg: MicroscopeConfig, progress: bool = True):
    """Build the microscope and write its site into ``cfg.out`` (under torchrun, rank 0 writes); returns the
    Microscope."""
    from ...core.distributed import all_gather, init_from_env
    from ...core.features import Feature
    from ...microscope import microscope
    from ...microscope.build import resolve_layers
    from ..runtime import load_data, load_model, out_folder, precision_context

    rank = init_from_env()[0]
    model = load_model(cfg.model)
    data = load_data(cfg.data)
    out_folder(cfg.out)
    layers = None if cfg.layer is None else list(cfg.layer)
    attr = None if cfg.attr_layer is None else (cfg.attr_layer[0] if len(cfg.attr_layer) == 1 else list(cfg.attr_layer))
    units, position = parse_units(cfg.units), parse_position(cfg.position)
    precision, check = contextlib.nullcontext(), None
    if cfg.autocast:  # checked on the first layer's first unit, at its attribution layer
        names, attrs = resolve_layers(model, layers, attr, int(data[0].shape[-1]))
        first = Feature(names[0], unit=(units or (0,))[0], position=position)
        precision, check = precision_context(True, model, data, first, [attrs[0]], cfg.data.batch_size)
    with precision:
        result = microscope(model, data, layers, units=units, attr_layer=attr, n_top=cfg.n_top, n_channels=cfg.n_channels,
                            position=position, settings=cfg.data.passes(progress),
                            checkpoint=os.path.join(cfg.out, TRANSIENT[0]), max_units=cfg.max_units,
                            distinct=cfg.distinct, visualize=cfg.visualize, render=cfg.render.settings(progress),
                            render_batch=cfg.render_batch, n_channel_images=cfg.n_channel_images,
                            inversions=cfg.inversions)
    if check is not None:
        result.info["autocast_check"] = check.to_dict()
    all_gather(lambda: _write(result, cfg, progress) if rank == 0 else None)  # under torchrun rank 0 writes
    return result


def _write(result, cfg: MicroscopeConfig, progress: bool) -> None:
    from ...microscope import write_microscope_site

    result.save(os.path.join(cfg.out, "microscope.npz"))
    result.plot(os.path.join(cfg.out, "microscope.png"))
    write_microscope_site(result, cfg.out, progress=progress)


def describe(result, cfg: MicroscopeConfig) -> List[str]:
    order = result.ranking()
    lines = [f"microscope of {len(result)} units of {', '.join(result.layers)} (attributed at "
             f"{', '.join(result.attr_layers)}) over {result.indices.size} images -> "
             f"{os.path.join(cfg.out, 'index.html')}"]
    for j in order[:5]:
        r = result.unit_row(j)
        lines.append(f"  {result.features[j].name}: share {r['share']:.3f}, median tension {r['median_tension']:.1f}, "
                     f"quiet MTIs {r['quiet']:.2f}, top inhibitor {r['attr_layer']} {r['inhibitors'][0]} "
                     f"({r['inhibitor_share'][0]:.2f} of N)")
    return lines


def section(runs, root: str):
    """Report section: the units by share of inhibition and median tension, and a link to the site."""
    import numpy as np

    from ..runtime import files_section

    cfg, result = runs[0]
    top = result.ranking()[0]
    numbers = [("microscope units", len(result), ", ".join(result.layers)), ("images", int(result.indices.size), ""),
               ("mean share of inhibition", float(np.nanmean(result.share)), "N/(P+N), mean over units"),
               ("most inhibited unit", result.features[top].name, f"share {float(result.share[top]):.3f}")]
    text = ("Every unit of the layers, each a dot: its share of inhibition N/(P+N) against its median tension. Open "
            "the microscope to browse the units, their tense images and the channels that inhibit them.")
    return files_section("Inhibition microscope", text, cfg.out, root, ["microscope.png"],
                         ["index.html", "microscope.npz"]), numbers


STAGE = register_module(
    __name__, MicroscopeConfig, "inhibition microscope: every unit of a layer as a static site, with its inhibitors")
