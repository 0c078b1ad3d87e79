"""Stage ``scan``: maximally exciting, inhibiting and tense images of one feature over a dataset
(Hamblin et al., paper 000; SPEC 2.2).

Stream images through the model, keep per-image activation and excitatory/inhibitory attribution totals (P,
N) at the attribution layers, write the scan (resumable checkpoint folder and scan.npz) and figures (P-vs-N
scatter, MEI/MII/MTI grids, signed overlays) to --out.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Literal, Optional, Tuple

from ...core.validate import check_int
from ..configs import AUTOCAST_HELP, DataConfig, FeatureConfig, ModelConfig
from ..options import REQUIRED, check_choices, check_paths, flag, group, option
from ..registry import register_module

Score = Literal["percentile", "min", "geometric", "harmonic", "product"]

#: the files this stage writes into --out (read by :func:`lucent_inhibit.app.outputs.stage_files`).
OUTPUTS = ("scan.npz", "scatter.png", "scatter_percentile.png", "meis.png", "miis.png", "mtis.png", "overlay_mti*.png",
           "scan/", "shard-*-of-*/")


def work(cfg) -> List[str]:
    """The checkpoint folder this run writes in --out as it goes (:mod:`lucent_inhibit.app.staging`)."""
    return [] if cfg.merge else [cfg.shard_dir()]


@dataclass
class ScanFeature(FeatureConfig):
    attr_layer: Optional[str] = option(None, "(scan: use --attr-layers)", hidden=True)


@dataclass
class ScanConfig:
    """Options of ``lucent-inhibit scan``."""

    out: str = option(REQUIRED, "output folder (scan checkpoints, scan.npz, figures)", metavar="DIR")
    model: ModelConfig = group(ModelConfig)
    data: DataConfig = group(DataConfig)
    feature: ScanFeature = group(ScanFeature)
    attr_layers: Optional[Tuple[str, ...]] = option(
        None, "attribution layer(s) before the feature; pick them close to it (default for the default "
        "feature: blocks_4_0_bn2_act, inside the same block, where E = P - N tracks the feature)", metavar="LAYER")
    chunk_size: Optional[int] = option(None, "images per checkpoint file (default ~256)")
    shard: Optional[str] = option(None, "'i/n': scan only the i-th of n parts into OUT/shard-i-of-n (no figures)")
    merge: Optional[Tuple[str, ...]] = option(None, "merge these finished shard folders into OUT/scan.npz and draw "
                                              "the figures instead of scanning", metavar="DIR")
    resume: bool = option(True, "start over instead of resuming OUT's checkpoints", flag="--no-resume")
    keep_maps: bool = option(True, "do not keep the spatial attribution maps", flag="--no-maps")
    top_k: int = option(10, "images per MEI/MII/MTI grid")
    score: Score = option("percentile", "tension score ranking MTIs (percentile: the smaller of P's and N's "
                          "percentile ranks in the scan, needs >= 10 images; min: min(P, N) of the raw totals)")
    distinct: bool = option(True, "show every crop in the MEI/MII/MTI grids, also several of one photo (default: "
                            "at most one crop per source photo while there are enough)", flag="--no-distinct")
    figures: bool = option(True, "write the scan only", flag="--no-figures")
    autocast: bool = option(False, AUTOCAST_HELP)

    def __post_init__(self):
        check_int(flag(ScanConfig, "top_k"), self.top_k, low=1)
        if self.chunk_size is not None:
            check_int(flag(ScanConfig, "chunk_size"), self.chunk_size, low=1)
        check_choices(self)
        check_paths(self)
        if self.shard is not None:
            self.shard_dir()
        if self.attr_layers is not None:
            self.attr_layers = tuple(self.attr_layers)

    def shard_dir(self) -> str:
        """The folder of this run's checkpoints inside ``--out``: ``scan``, or ``shard-i-of-n`` for ``--shard i/n``."""
        if self.shard is None:
            return "scan"
        from ...core.validate import parse_shard

        try:
            i, n = parse_shard(self.shard)
        except ValueError as exc:
            raise ValueError(f"--shard: {exc}") from None
        return f"shard-{i}-of-{n}"


def run(cfg: ScanConfig, progress: bool = True):
    """Scan (or merge shards), write ``scan.npz`` and the figures to ``cfg.out``; returns the ScanResult.
    Under ``torchrun`` every rank scans its share and returns the whole scan; rank 0 alone writes."""
    from ...core.distributed import all_gather, init_from_env
    from ...scanning.merge import merge_scans
    from ...scanning.run import scan
    from ..runtime import feature_and_layers, load_data, load_model, out_folder, precision_context

    rank = init_from_env()[0]
    model = load_model(cfg.model)
    data = load_data(cfg.data)
    feature, layers = feature_and_layers(model, cfg.feature, cfg.attr_layers, "--attr-layers", cfg.data.size, data)
    out_folder(cfg.out)
    if cfg.merge:
        result = merge_scans(list(cfg.merge))
        if result.feature != feature or result.layers != layers:
            raise ValueError(f"the shards scan {result.feature.name} at {result.layers}, not {feature.name} at "
                             f"{layers}; pass the same --layer/--unit/--position/--attr-layers as the shard runs")
    else:
        precision, check = precision_context(cfg.autocast, model, data, feature, layers, cfg.data.batch_size)
        with precision:
            result = scan(model, data, feature, layers, settings=cfg.data.passes(progress),
                          out=os.path.join(cfg.out, cfg.shard_dir()), resume=cfg.resume, shard=cfg.shard,
                          keep_maps=cfg.keep_maps, chunk_size=cfg.chunk_size, score=cfg.score)
        if check is not None:
            result.info["autocast_check"] = check.to_dict()
        if cfg.shard:
            return result
    all_gather(lambda: _write(result, data, cfg) if rank == 0 else None)  # the others wait for rank 0
    return result


def _write(result, data, cfg: ScanConfig) -> None:
    """``scan.npz`` and (unless ``--no-figures``) the figures of ``result`` in ``cfg.out``."""
    from ...scanning.figures import save_scan_figures

    result.save(os.path.join(cfg.out, "scan.npz"))
    if cfg.figures:
        if getattr(data, "identity", None) != result.dataset:
            raise ValueError(f"the images given ({getattr(data, 'identity', '?')}) are not the scanned dataset "
                             f"({result.dataset}); pass the same --images/--n-images/--size/--seed to draw figures")
        save_scan_figures(result, cfg.out, dataset=data, k=min(cfg.top_k, len(result)), score=_score(result, cfg),
                          distinct=cfg.distinct)


def _mean_act(result, indices) -> float:
    import numpy as np

    return float(result.activation[np.isin(result.indices, indices)].mean())


def _score(result, cfg: ScanConfig) -> str:
    """``cfg.score``, or ``"min"`` when it is ``"percentile"`` and the scan is too small for percentile ranks."""
    from ...attribution.totals import MIN_PERCENTILE_IMAGES

    return "min" if cfg.score == "percentile" and len(result) < MIN_PERCENTILE_IMAGES else cfg.score


def _mti_percentiles(result, mtis, layer=None):
    """(k, 2) P and N percentile ranks of the MTIs ``mtis`` at ``layer``, or None for a scan under 10 images."""
    from ...scanning.stats import percentiles_or_none

    pct = percentiles_or_none(result, layer)
    return None if pct is None else pct[[result.row(int(i)) for i in mtis]]


def describe(result, cfg: ScanConfig) -> List[str]:
    if cfg.shard:
        return [f"shard {cfg.shard}: {len(result)} images -> {os.path.join(cfg.out, cfg.shard_dir())}"]
    import numpy as np

    k = min(cfg.top_k, len(result))
    lines = [f"scan of {result.feature.name}: {len(result)} images -> {os.path.join(cfg.out, 'scan.npz')}"]
    lines += [f"  completeness r(f, E) at {l}: {r:.3f}" for l, r in result.completeness.items()]
    score = _score(result, cfg)
    mt, me, mi = result.mtis(k, score, distinct=cfg.distinct), result.meis(k, cfg.distinct), result.miis(k, cfg.distinct)
    lines.append(f"  MEIs {me.tolist()} mean activation {_mean_act(result, me):.3g}")
    lines.append(f"  MIIs {mi.tolist()} mean activation {_mean_act(result, mi):.3g}")
    lines.append(f"  MTIs {mt.tolist()} mean activation {_mean_act(result, mt):.3g} (score {score})")
    pct = _mti_percentiles(result, mt)
    if pct is not None:
        lines.append(f"  MTI percentile ranks among all images at {result.layers[0]}: P {np.round(pct[:, 0]).astype(int).tolist()}, "
                     f"N {np.round(pct[:, 1]).astype(int).tolist()}")
    if cfg.figures:
        lines.append("  figures: " + ", ".join(_figures(result, cfg)))
    return lines


def _figures(result, cfg: ScanConfig) -> List[str]:
    """The figure files :func:`run` wrote for ``result`` (the names
    :func:`~lucent_inhibit.scanning.figures.save_scan_figures` gives them), none of the other files in ``cfg.out``."""
    from ...attribution.totals import MIN_PERCENTILE_IMAGES

    if not cfg.figures or cfg.shard:
        return []
    k = max(1, min(cfg.top_k, len(result)))
    names = ["scatter"] + (["scatter_percentile"] if len(result) >= MIN_PERCENTILE_IMAGES else [])
    names += ["meis", "miis", "mtis"] + ([f"overlay_mti{r}" for r in range(min(3, k))]
                                         if result.layers[0] in result.pos_maps else [])
    return [f"{n}.png" for n in names if os.path.exists(os.path.join(cfg.out, f"{n}.png"))]


def section(runs, root: str):
    """Report section: the P-vs-N scatter, the MEI/MII/MTI grids and the overlays, their numbers and the
    findings on MTIs and on completeness at the attribution layer."""
    import numpy as np

    from ...findings.scanning import scan_findings
    from ..runtime import files_section

    cfg, result = runs[0]
    layer, k = result.layers[0], min(cfg.top_k, len(result))
    mtis = result.mtis(k, _score(result, cfg), layer=layer, distinct=cfg.distinct)
    mti_rows, pct = [result.row(int(i)) for i in mtis], _mti_percentiles(result, mtis, layer)
    pct = np.full((len(mtis), 2), np.nan) if pct is None else pct
    numbers = [
        ("images scanned", len(result), ""),
        ("top MEI activation", float(result.activation[result.row(int(result.meis(1)[0]))]), ""),
        (f"mean activation of the top-{k} MTIs", float(np.mean(result.activation[mti_rows])),
         "near the typical value: between the MIIs' and the MEIs'"),
        (f"top-{k} MTIs: median P percentile", float(np.median(pct[:, 0])), "percentile rank of P among all images"),
        (f"top-{k} MTIs: median N percentile", float(np.median(pct[:, 1])), "percentile rank of N among all images"),
    ] + [(f"scan completeness r at {l}", float(r), "Pearson r(f, E) over the images") for l, r in
         result.completeness.items()]
    text = ("Each dot is an image: its excitatory attribution P (x) against its inhibitory attribution N (y), "
            "coloured by the feature's activation (red positive, blue negative); the solid line is where a straight "
            "fit f = a + b (P - N) over the scan gives f = 0 (the bias a moves it off the dashed P = N line). The "
            "second scatter puts both on "
            "the scale-free percentile ranks within the scan. Maximally tense images (ringed; ranked by the smaller "
            "of their P and N percentile ranks) sit far from the origin along the diagonal with activation near "
            "its typical value: excitation and inhibition cancel. The grids show the top MEIs, MIIs and MTIs with "
            "their activation, P and N; the overlays show where in an MTI the feature is excited (red) and "
            "inhibited (blue).")
    sec = files_section("Maximally exciting, inhibiting and tense images", text, cfg.out, root,
                        _figures(result, cfg), ["scan.npz"])
    sec.findings = scan_findings(result, k, _score(result, cfg), layer)
    return sec, numbers


STAGE = register_module(
    __name__, ScanConfig, "scan a dataset for MEIs, MIIs and maximally tense images (MTIs) of one feature")
