"""Stage ``combos``: feature-combination plots of unit pairs, cosdot sweeps over target angles
(Hamblin, Alvarez & Konkle, paper 004; SPEC 2.7).

Measure a layer's units over the data and pick the pairs the paper picks (by default the most anti-correlated,
the most correlated and the closest to zero correlation of an early layer; or one of them, or --units; a picked
pair's units are each driven above zero by some image). For each pair render each unit alone for the axis
scales (a picked pair whose unit's own visualization stays at or below zero cannot be scaled: the next-ranked
pair is tried, up to --pair-candidates, and every skipped pair is reported), then maximise the pair's cosdot
toward --n-angles angles from --n-seeds noise seeds in batches of Lucent's render_vis; write
OUT/pair_stats.npz and OUT/combos_<pair>.npz, OUT/combos_<pair>.png per pair (``<pair>``: ``anticorrelated``,
``correlated``, ``zero`` or ``units``), each pair with its own verdict.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Literal, NamedTuple, Optional, Tuple

from ...core.validate import MAX_BATCH, MAX_IMAGES, MAX_POWER, MAX_STEPS, check_int, check_number
from ..configs import DataConfig, ModelConfig, RenderConfig, parse_position
from ..options import REQUIRED, check_choices, check_paths, flag, group, option
from ..registry import register_module

#: The embedded model's paired layer: an early pre-ReLU6 layer (the second block's expansion), whose units take
#: both signs; the paper picks its pairs in an early layer (InceptionV1's conv2d2).
EMBEDDED_COMBO_LAYER = "blocks_1_1_bn1_drop"

#: The pairs ``--pair paper`` sweeps, in this order: the paper's three picks from the dataset statistics.
PAPER_PAIRS = ("anticorrelated", "correlated", "zero")
#: Every name a pair's files take (``combos_<name>.npz``): the statistics' picks, or ``units`` for --units.
PAIR_NAMES = PAPER_PAIRS + ("units",)

#: The files this stage writes into --out (lucent_inhibit.app.outputs: only these are ever overwritten).
OUTPUTS = ("pair_stats.npz", *(f"combos_{p}.{e}" for p in PAIR_NAMES for e in ("npz", "png")), "combos-checkpoints/")
#: Its checkpoints (the sweep's rendered batches), in --out while it runs (resumed by a rerun of the same
#: command), removed once it finished.
TRANSIENT = ("combos-checkpoints",)


def work(cfg) -> List[str]:
    """The checkpoint folder this run writes in --out as it goes (:mod:`lucent_inhibit.app.staging`)."""
    return list(TRANSIENT)

#: The sweep needs at least this many angles (lucent_inhibit.combinations.MIN_ANGLES; a test checks).
MIN_ANGLES = 5


@dataclass
class CombosRender(RenderConfig):
    size: Optional[int] = option(None, "side of the rendered images (default: --size)", flag="--render-size")
    model_size: Optional[int] = option(None, "side of the image the model sees (default: the render size, so "
                                       "positions mean the same neurons as in the dataset statistics)")
    seed: Optional[int] = option(None, "(the sweep uses --seed)", hidden=True)


@dataclass
class CombosConfig:
    """Options of ``lucent-inhibit combos``. A picked pair has both units driven above zero by at least one
    dataset image (a unit the data never excites has no positive axis)."""

    out: str = option(REQUIRED, "output folder", metavar="DIR")
    model: ModelConfig = group(ModelConfig)
    data: DataConfig = group(DataConfig)
    layer: Optional[str] = option(None, f"layer whose units are paired (default: {EMBEDDED_COMBO_LAYER}, an early "
                                  "pre-ReLU6 layer, on the embedded model; a vision transformer's default feature layer, "
                                  "the MLP's hidden pre-GELU two thirds deep; required for other models)")
    position: str = option("center", "where each unit is read (the same in the statistics, scales and sweep): "
                           "'center', 'mean' or 'y,x'; on a token layer (B, T, C) also 'cls' or 'token:i' "
                           "('y,x' a patch, 'mean' over the patch tokens)")
    pair: Literal["paper", "anticorrelated", "correlated", "zero"] = option(
        "paper", "which pairs the dataset statistics pick: 'paper' sweeps the paper's three (the most "
        "anti-correlated, the most correlated and the closest to zero correlation), each with its verdict")
    units: Optional[Tuple[int, int]] = option(None, "use these two units instead of a picked pair", metavar="UNIT")
    pair_candidates: int = option(8, "ranked pairs tried, in order, until both units' own visualizations reach a "
                                  "positive value (the axis scales); the pairs skipped are reported")
    n_angles: int = option(60, f"target angles on [0, 2 pi) (at least {MIN_ANGLES})")
    n_seeds: int = option(5, "noise seeds per angle")
    power: float = option(4.0, f"cosine exponent p of cosdot (0 to {MAX_POWER:g})")
    render: CombosRender = group(CombosRender)
    scale_steps: Optional[int] = option(None, "render steps of each unit's axis-scale render (default: --steps)")
    chunk: int = option(60, "most images per render_vis batch")

    def __post_init__(self):
        check_choices(self)
        check_paths(self)
        check_int(flag(CombosConfig, "n_angles"), self.n_angles, MIN_ANGLES, MAX_IMAGES)
        for name, high in (("n_seeds", MAX_IMAGES), ("chunk", MAX_BATCH), ("pair_candidates", MAX_IMAGES)):
            check_int(flag(CombosConfig, name), getattr(self, name), 1, high)
        if self.scale_steps is not None:
            check_int(flag(CombosConfig, "scale_steps"), self.scale_steps, 1, MAX_STEPS)
        check_number(flag(CombosConfig, "power"), self.power, 0, MAX_POWER)
        parse_position(self.position)
        if self.units is not None:
            self.units = tuple(check_int("--units", u, low=0) for u in self.units)
            if len(self.units) != 2 or self.units[0] == self.units[1]:
                raise ValueError(f"--units must be two different unit indices, got {self.units}")


class PairRun(NamedTuple):
    name: str  # which pick ("anticorrelated", "correlated", "zero") or "units"
    sweep: object  # CombinationResult
    r: float  # the pair's correlation over the dataset
    skipped: Tuple[str, ...] = ()  # higher-ranked pairs whose axis scale was not positive, with why


class CombosRun(NamedTuple):
    stats: object  # PairStatistics
    pairs: Tuple[PairRun, ...]  # one per pair swept, in PAPER_PAIRS order


def scaled_pair(model, stats, candidates, settings):
    """The first of ``candidates`` ``[(unit_a, unit_b, r)]`` whose units both reach a positive value on their
    own visualizations: ``(a, b, r, AxisScales, skipped)``, ``skipped`` naming each earlier pair and why.

    A unit already seen unexcitable is not rendered again; any other render error is raised as it is, and
    ``ValueError`` lists every pair tried when none can be scaled.
    """
    from ...combinations import NotExcitable, axis_scales

    skipped, dead = [], {}
    for a, b, r in candidates:
        known = [u for u in (a, b) if u in dead]
        if known:
            skipped.append(f"units {a}, {b} (r={r:.3f}): {dead[known[0]]}")
            continue
        try:
            return a, b, r, axis_scales(model, stats.feature(a), stats.feature(b), render=settings), skipped
        except NotExcitable as exc:
            unit = exc.feature.unit
            dead[unit] = str(exc).split(";")[0]
            skipped.append(f"units {a}, {b} (r={r:.3f}): {dead[unit]}")
    raise ValueError(
        f"none of the {len(candidates)} best-ranked pairs of {stats.layer!r} can be scaled: " + "; ".join(skipped)
        + f". Give the scale renders more steps (--scale-steps, now {settings.steps}), a larger --render-size, "
        "more --pair-candidates, or a layer whose units can be excited (random weights often cannot be)")


def _combo_layer(model, layer: Optional[str]) -> str:
    """``layer``, or the default for ``model`` (said): :data:`EMBEDDED_COMBO_LAYER` where the model has it,
    else the model's default feature layer (:func:`~lucent_inhibit.models.defaults.default_feature_layers`)."""
    from ...core.layers import layer_table
    from ...models.defaults import default_feature_layers
    from ..runtime import log

    if layer is not None:
        return layer
    if EMBEDDED_COMBO_LAYER in layer_table(model):
        return EMBEDDED_COMBO_LAYER
    layer, _, why = default_feature_layers(model)
    log.info("paired layer: %s (%s)", layer, why)
    return layer


def _pair(model, stats, name: str, cfg: CombosConfig, settings):
    """``(a, b, r, AxisScales, skipped)`` of pair ``name`` (a statistics pick, or ``"units"``: --units)."""
    from ...combinations import axis_scales

    if name == "units":  # the user's pair: no other is tried
        a, b = cfg.units
        r = float(stats.correlation[a, b]) if max(a, b) < stats.n_units else float("nan")
        return a, b, r, axis_scales(model, stats.feature(a), stats.feature(b), render=settings), []
    ranked = {"correlated": stats.most_correlated, "anticorrelated": stats.most_anticorrelated,
              "zero": stats.least_correlated}[name]
    return scaled_pair(model, stats, ranked(cfg.pair_candidates, excited=True), settings)


def _sweep(model, stats, name: str, cfg: CombosConfig, settings) -> PairRun:
    """Scale and sweep pair ``name``; its checkpoints in ``combos-checkpoints/<name>``."""
    import warnings

    from ...combinations import sweep_combinations

    a, b, r, scales, skipped = _pair(model, stats, name, cfg, settings.replace(steps=cfg.scale_steps or settings.steps))
    if skipped:
        warnings.warn(f"combos: skipped {len(skipped)} higher-ranked {name} pair(s) that cannot be scaled ("
                      + "; ".join(skipped) + f"); using units {a}, {b} (r={r:.3f})")
    res = sweep_combinations(model, stats.feature(a), stats.feature(b), n_angles=cfg.n_angles, n_seeds=cfg.n_seeds,
                             power=cfg.power, chunk=cfg.chunk, scale=scales.scale, render=settings,
                             checkpoint=os.path.join(cfg.out, TRANSIENT[0], name))
    res.scale_images = scales.images
    return PairRun(name, res, r, tuple(skipped))


def pair_names(cfg: CombosConfig) -> Tuple[str, ...]:
    """The pairs a run sweeps: ``("units",)`` with --units, the paper's three for ``--pair paper``, else one."""
    return ("units",) if cfg.units else PAPER_PAIRS if cfg.pair == "paper" else (cfg.pair,)


def run(cfg: CombosConfig, progress: bool = True) -> CombosRun:
    from ...combinations import pair_statistics, plot_combinations
    from ..runtime import check_layers, load_data, load_model, out_folder

    model = load_model(cfg.model)
    layer = _combo_layer(model, cfg.layer)
    check_layers(model, layer)
    data = load_data(cfg.data)
    stats = pair_statistics(model, data, layer, position=parse_position(cfg.position),
                            settings=cfg.data.passes(progress))
    size = cfg.render.size or cfg.data.size
    settings = cfg.render.settings(progress, size=size, model_size=cfg.render.model_size or size, seed=cfg.data.seed)
    pairs = tuple(_sweep(model, stats, name, cfg, settings) for name in pair_names(cfg))
    out_folder(cfg.out)
    stats.save(os.path.join(cfg.out, "pair_stats.npz"))
    for p in pairs:
        p.sweep.save(os.path.join(cfg.out, f"combos_{p.name}.npz"))
        plot_combinations(p.sweep, os.path.join(cfg.out, f"combos_{p.name}.png"),
                          cloud=stats.values(p.sweep.feature_a.unit, p.sweep.feature_b.unit))
    return CombosRun(stats, pairs)


def describe(run_: CombosRun, cfg: CombosConfig) -> List[str]:
    lines = []
    for p in run_.pairs:
        res = p.sweep
        lines += [f"combos ({p.name}): {res.feature_a.name} x {res.feature_b.name}, dataset r = {p.r:.3f}, scales "
                  f"{res.scale[0]:.4g}, {res.scale[1]:.4g}",
                  "  mean C by quadrant (signs of a, b): " + "  ".join(f"{k} {v:.3f}"
                                                                        for k, v in res.quadrant_scores().items())]
        lines += [f"  skipped {s}" for s in p.skipped]
    files = ", ".join(f"combos_{p.name}.npz, combos_{p.name}.png" for p in run_.pairs)
    return lines + [f"  wrote {cfg.out}/pair_stats.npz, {files}"]


def section(runs, root: str):
    from ...findings.combinations import pair_finding
    from ..runtime import files_section

    cfg, run_ = runs[0]
    first = run_.pairs[0].sweep
    text = (f"Pairs of units in {first.feature_a.layer} picked from their correlation over the images, as the paper "
            "picks them (" + ", ".join(f"{p.name}: {p.sweep.feature_a.unit} and {p.sweep.feature_b.unit}, r = "
                                      f"{p.r:.2f}" for p in run_.pairs) + "). Each feature's axis is scaled by its own "
            "unconstrained maximum; for each angle the render loop maximises the cosdot of the pair towards that "
            "direction. The red loop is the mean cosdot reached per angle; where it collapses the model cannot "
            "produce that combination. Grey: the dataset's activations. Each pair has its own verdict: the paper "
            "finds the collapse in the most anti-correlated pair of an early layer, in the quadrant where both "
            "features rise (++), so that pair reproduces only with its collapse there; the other pairs with a "
            "collapse in any quadrant.")
    skipped = [s for p in run_.pairs for s in p.skipped]
    if skipped:
        text += (f" {len(skipped)} higher-ranked pair(s) were skipped because a unit's own visualization did not "
                 "reach a positive value, so its axis could not be scaled: " + "; ".join(skipped) + ".")
    numbers = []
    for p in run_.pairs:
        res = p.sweep
        numbers += [(f"combination pair, {p.name} (units, r)", f"{res.feature_a.unit}, {res.feature_b.unit}, "
                     f"r={p.r:.3f}", ""),
                    (f"combinations, {p.name}: mean C by quadrant",
                     "  ".join(f"{k} {v:.3f}" for k, v in res.quadrant_scores().items()),
                     "low where the model cannot produce the combination")]
    numbers.append(("combinations: pairs skipped (not excitable)", len(skipped), "higher-ranked pairs without a "
                    "positive axis scale"))
    sec = files_section("Feature-combination plots", text, cfg.out, root,
                        [f"combos_{p.name}.png" for p in run_.pairs],
                        [f"combos_{p.name}.npz" for p in run_.pairs] + ["pair_stats.npz"])
    sec.findings = [pair_finding(p.name, p.r, p.sweep) for p in run_.pairs]
    return sec, numbers


STAGE = register_module(
    __name__, CombosConfig, "feature-combination plot of a unit pair (cosdot sweep over angles, paper 004)")
