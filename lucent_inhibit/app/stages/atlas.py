"""Stage ``atlas``: the attribution atlas (or activation atlas) of one feature, a PNG figure and an
interactive HTML page (Hamblin et al., paper 000 and 002 section 4; Carter et al. 2019; SPEC 2.6).

Select images from a scan (--scan FILE, or scan the dataset first), collect their attribution (or
activation) vectors at --attr-layer, lay them out with UMAP, average them in grid cells, render one icon per
cell in batched render calls and measure the feature on each. Icons are shown cut to the feature's receptive
field: the atlas box's stride tiles on a convolutional layer; on a vision transformer's token layer the
targeted patches plus what attention mixes in, measured as the icons' input-gradient footprint (the rule and
the box size are printed and stored in the icons' params). Writes OUT/atlas.npz, OUT/atlas.png and
OUT/atlas.html (self-contained: pan, zoom, click a cell for its images).
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import List, Literal, Optional

from ...core.settings import ICON_RENDER
from ...core.validate import MAX_LR, MAX_MIN_DIST, MAX_POWER, check_int, check_number
from ..configs import DataConfig, FeatureConfig, ModelConfig, RenderConfig
from ..options import REQUIRED, check_choices, check_paths, flag, group, option
from ..registry import register_module

log = logging.getLogger("lucent_inhibit")

#: ``--map-memory``'s default: :data:`lucent_inhibit.atlas.spool.MAP_BUDGET` in MiB (not imported here, so that
#: ``--help`` does not load torch; a test checks they agree).
MAP_MEMORY_MIB = 32

#: ``--crop-size`` above which one icon's crop is checked against the machine's memory before any work (at
#: 2048 px one crop is under 64 MiB; the check imports torch). Every crop size is checked again before the icons
#: render, for all of them (:func:`lucent_inhibit.atlas.spool.check_icon_memory`).
LARGE_CROP = 2048

#: The files this stage writes into --out (lucent_inhibit.app.outputs: only these are ever overwritten).
OUTPUTS = ("atlas.npz", "atlas.png", "atlas.html", "scan.npz", "atlas-checkpoints/")
#: Its checkpoints (the scan's and the vectors' chunks), in --out while it runs (resumed by a rerun of the same
#: command), removed once it finished.
TRANSIENT = ("atlas-checkpoints",)


def work(cfg) -> List[str]:
    """The checkpoint folder this run writes in --out as it goes (:mod:`lucent_inhibit.app.staging`)."""
    return list(TRANSIENT)


@dataclass
class AtlasFeature(FeatureConfig):
    attr_layer: Optional[str] = option(None, "atlas layer, before the feature and close to it, best a "
                                       "post-activation layer (default for the default feature: "
                                       "blocks_4_0_bn2_act; with --scan: the scan's first layer)")


@dataclass
class AtlasRender(RenderConfig):
    steps: int = option(ICON_RENDER.steps, "render steps per icon")
    lr: float = option(ICON_RENDER.lr, f"Adam learning rate of the icons ({ICON_RENDER.lr:g}: with no transforms, "
                       f"icons reach their targets and a visible contrast in {ICON_RENDER.steps} steps; 0.05 leaves "
                       f"them grey; at most {MAX_LR:g})")
    size: Optional[int] = option(None, "side of the rendered icon image (default: --size)", flag="--icon-size")
    seed: Optional[int] = option(None, "(the atlas uses --seed)", hidden=True)


@dataclass
class AtlasStageConfig:
    """Options of ``lucent-inhibit atlas`` (the atlas choices are :class:`lucent_inhibit.atlas.AtlasConfig`'s,
    with its defaults)."""

    out: str = option(REQUIRED, "output folder (atlas.npz, atlas.png, atlas.html)", metavar="DIR")
    model: ModelConfig = group(ModelConfig)
    data: DataConfig = group(DataConfig)
    scan: Optional[str] = option(None, "a scan file (scan.npz) or finished scan folder of the same feature, dataset "
                                 "and attribution layer; default: scan the dataset first (written to OUT/scan.npz)",
                                 metavar="FILE")
    feature: AtlasFeature = group(AtlasFeature)
    kind: Literal["attribution", "activation"] = option(
        "attribution", "lay out attribution vectors (attribution atlas) or activations (activation atlas)")
    mode: Literal["sum", "position"] = option(
        "sum", "one vector per image summed over the receptive-field box, or one per position in it")
    top_abs: int = option(128, "select the k images with the largest |S|_2")
    top_activation: int = option(64, "select the k MEIs")
    bottom_activation: int = option(64, "select the k MIIs")
    top_tension: int = option(64, "select the k MTIs by min(P, N)")
    distinct: bool = option(True, "select by the plain rankings, several crops of one photo allowed (default: each "
                            "ranking takes one crop per source photo first)", flag="--no-distinct")
    crop: float = option(0.01, "receptive-field box: where mean |S| exceeds this fraction of its maximum")
    map_memory: int = option(MAP_MEMORY_MIB, "MiB of whole layer maps held in memory until the box is known "
                             "(every selected image's map is needed for it); more are written to a temporary file "
                             "in TMPDIR, deleted when done", metavar="MIB")
    n_neighbors: int = option(10, "UMAP n_neighbors", flag="--neighbors")
    min_dist: float = option(0.1, f"UMAP min_dist (0 to {MAX_MIN_DIST:g}, UMAP's spread)")
    pca: Optional[int] = option(None, "PCA components before UMAP (default: none)")
    grid_size: Optional[int] = option(None, "grid side in cells (default: chosen from the number of points, at "
                                      "most 30)", flag="--grid")
    min_points: int = option(3, "points a cell needs to get an icon")
    render: AtlasRender = group(AtlasRender)
    power: float = option(4.0, f"cosine exponent of the spatial cosdot (0 to {MAX_POWER:g})")
    icon_target: Literal["box", "center", "positions"] = option(
        "box", "render the cell vector over the whole receptive-field box, at its centre only, or (with --mode "
        "position) each point's vector at its own position")
    crop_size: int = option(128, "side in pixels of each displayed icon: its receptive-field crop, enlarged")
    zoom_crops: int = option(0, "random zooms per render step about the icon's target position, each rendered "
                             "(MaCo's many crops; needs --icon-target center; each step costs about N times as much; "
                             "0: none)")
    frame: Literal["activation", "net"] = option(
        "activation", "colour the icon frames by the feature's activation on the icon or by the cell's net "
        "attribution (the HTML page switches between both)")

    def __post_init__(self):
        check_choices(self)
        check_paths(self)
        for name, low in (("top_abs", 0), ("top_activation", 0), ("bottom_activation", 0), ("top_tension", 0),
                          ("n_neighbors", 2), ("min_points", 1), ("crop_size", 8), ("map_memory", 0),
                          ("zoom_crops", 0)):
            check_int(flag(AtlasStageConfig, name), getattr(self, name), low=low)
        for name, low in (("pca", 2), ("grid_size", 1)):
            if getattr(self, name) is not None:
                check_int(flag(AtlasStageConfig, name), getattr(self, name), low=low)
        check_number(flag(AtlasStageConfig, "crop"), self.crop, low=0, high=1)
        check_number(flag(AtlasStageConfig, "min_dist"), self.min_dist, 0, MAX_MIN_DIST)
        check_number(flag(AtlasStageConfig, "power"), self.power, 0, MAX_POWER)
        if self.icon_target == "positions" and self.mode != "position":
            raise ValueError(f"--icon-target positions needs --mode position, got --mode {self.mode}")
        if self.zoom_crops and self.icon_target != "center":
            raise ValueError(f"--zoom-crops {self.zoom_crops} needs --icon-target center, got --icon-target "
                             f"{self.icon_target}")
        if self.crop_size > LARGE_CROP:  # even one icon's crop may not fit: refused before any work
            from ...atlas.spool import check_icon_memory

            side = self.render.size or self.data.size
            check_icon_memory(1, (side, side), self.crop_size, flag(AtlasStageConfig, "crop_size"))

    def atlas_config(self):
        """The library's :class:`~lucent_inhibit.atlas.AtlasConfig` of these options."""
        from ...atlas import AtlasConfig

        names = ("kind", "mode", "crop", "top_abs", "top_activation", "bottom_activation", "top_tension",
                 "n_neighbors", "min_dist", "pca", "grid_size", "min_points", "icon_target", "power", "crop_size",
                 "zoom_crops")
        return AtlasConfig(**{n: getattr(self, n) for n in names}, umap_seed=self.data.seed,
                           memory_budget=self.map_memory * 2 ** 20)


def _scan(cfg: AtlasStageConfig, model, data, feature, attr, progress: bool = True):
    """The scan the atlas selects from: ``cfg.scan`` (checked against the data), or a fresh one."""
    from ...core.checkpoints import OtherWorkError
    from ...scanning.result import ScanResult
    from ...scanning.run import scan

    if cfg.scan is None:
        folder = os.path.join(cfg.out, TRANSIENT[0], "scan")
        try:
            result = scan(model, data, feature, [attr], settings=cfg.data.passes(progress), out=folder)
        except OtherWorkError:  # checkpoints of an interrupted atlas with other options: this run's own
            log.info("discarding the checkpoints of an interrupted atlas run with other options")
            result = scan(model, data, feature, [attr], settings=cfg.data.passes(progress), out=folder, resume=False)
        result.save(os.path.join(cfg.out, "scan.npz"))
        return result
    if not os.path.exists(cfg.scan):
        raise FileNotFoundError(f"scan file {cfg.scan!r} does not exist")
    result = ScanResult.load(cfg.scan)
    if result.dataset != getattr(data, "identity", result.dataset):
        raise ValueError(f"the scan is of dataset {result.dataset}, but the images given are {data.identity}; pass "
                         "the same --images/--n-images/--size/--seed as the scan")
    return result


def run(cfg: AtlasStageConfig, progress: bool = True):
    from ...atlas import build_atlas, plot_atlas, select_images, write_atlas_html
    from ...scanning.result import ScanResult
    from ..runtime import feature_and_layers, load_data, load_model, out_folder

    model = load_model(cfg.model)
    feature = cfg.feature
    if feature.attr_layer is None and cfg.scan is not None and os.path.exists(cfg.scan):
        feature = dataclasses.replace(feature, attr_layer=ScanResult.load(cfg.scan).layers[0])
    data = load_data(cfg.data)
    feature, (attr,) = feature_and_layers(model, feature, size=cfg.data.size, data=data)
    out_folder(cfg.out)
    result = _scan(cfg, model, data, feature, attr, progress)
    settings, config = cfg.render.settings(progress, seed=cfg.data.seed), cfg.atlas_config()
    selection = select_images(result, feature, attr, **config.criteria(), distinct=cfg.distinct)
    atlas = build_atlas(model, data, feature, attr, selection, config=config, render=settings,
                        settings=cfg.data.passes(progress), checkpoint=os.path.join(cfg.out, TRANSIENT[0], "vectors"))
    atlas.save(os.path.join(cfg.out, "atlas.npz"))
    plot_atlas(atlas, os.path.join(cfg.out, "atlas.png"), frame=cfg.frame)
    write_atlas_html(atlas, os.path.join(cfg.out, "atlas.html"), frame=cfg.frame)
    return atlas


def _crop_line(atlas) -> str:
    """The icon crop's rule and size (:func:`lucent_inhibit.atlas.icon_crop`), as the icons' params hold them."""
    p, ic = atlas.icons.params, atlas.icons
    h, w = p.get("crop_box_size", list(ic.images.shape[1:3]))
    rule = p.get("crop_rule_text", "not recorded")
    return (f"  icon crop: {h}x{w} px of {ic.images.shape[1]}x{ic.images.shape[2]} px icons, box {ic.crop_box} "
            f"by rule: {rule}")


def _mean_of(mean: float, n: int) -> str:
    return f"{mean:.4g} (n={n})" if n else "none (n=0)"


def describe(atlas, cfg: AtlasStageConfig) -> List[str]:
    s, q = atlas.activation_by_sign(), atlas.quality()
    n_images = len(set(int(i) for i in atlas.points.image_index))
    return [
        f"{cfg.kind} atlas of {atlas.points.feature.name} at {atlas.points.layer}: {n_images} images, "
        f"{len(atlas.points)} points, {len(atlas.grid)} icons ({atlas.grid.size}x{atlas.grid.size} grid, "
        f"{q['occupancy']:.0%} occupied, median {q['median_points']:.0f} points per icon)",
        f"  icons: median cosine to their targets {q['median_cosine']:.3f} (the cells' own images: "
        f"{q['median_member_cosine']:.3f}), median RMS contrast of the receptive-field crops {q['median_contrast']:.3f}",
        _crop_line(atlas),
        f"  icon activation: net-positive cells {_mean_of(s['positive_mean'], s['n_positive'])}, "
        f"net-negative cells {_mean_of(s['negative_mean'], s['n_negative'])}",
        "  wrote " + ", ".join(os.path.join(cfg.out, n) for n in ("atlas.npz", "atlas.png", "atlas.html")
                               + (("scan.npz",) if cfg.scan is None else ())),
    ]


def section(runs, root: str):
    from ...findings.atlas import atlas_finding
    from ..runtime import files_section

    cfg, atlas = runs[0]
    s = atlas.activation_by_sign()
    q = atlas.quality()
    framed = ("the feature's activation on the icon" if cfg.frame == "activation" else "the cell's net attribution")
    text = ("The attribution vectors of many images (one per position of the feature's receptive field in "
            "position mode) laid out by UMAP and averaged on a grid; each cell's icon is a feature visualization "
            "of its averaged attribution, shown cut to the feature's receptive field and framed by " + framed +
            " (red excites the feature, blue inhibits it). The right panel shows the points coloured by "
            "activation. Open the interactive atlas to see each icon large with the images in its cell.")
    numbers = [("atlas layer", atlas.points.layer, f"{cfg.mode} mode, icon target {cfg.icon_target}"),
               ("atlas icons", len(atlas.grid), f"{atlas.grid.size}x{atlas.grid.size} grid, "
                f"{q['occupancy']:.0%} occupied"),
               ("atlas icon crop", "x".join(str(v) for v in atlas.icons.params.get("crop_box_size", [])) + " px",
                atlas.icons.params.get("crop_rule_text", "")),
               ("atlas: median icon cosine to its target", q["median_cosine"], ""),
               ("atlas: median cosine of the cells' own images to the same target", q["median_member_cosine"],
                "control for the icons' cosine"),
               ("atlas: median RMS contrast of the icon crops", q["median_contrast"], ""),
               ("atlas: mean icon activation, net-positive cells", s["positive_mean"], ""),
               ("atlas: mean icon activation, net-negative cells", s["negative_mean"],
                "should be below the net-positive cells'")]
    sec = files_section("Attribution atlas", text, cfg.out, root, ["atlas.png"], ["atlas.html", "atlas.npz"])
    sec.findings = [atlas_finding(atlas)]
    return sec, numbers


STAGE = register_module(
    __name__, AtlasStageConfig, "attribution atlas (or activation atlas) of one feature: PNG figure and interactive HTML")
