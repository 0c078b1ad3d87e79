"""The ``lucent-inhibit`` command: one sub-command per stage of the papers' pipeline.

Each stage is a pair of functions in this module: ``_add_<stage>(subparsers)`` declares its options
(with help that explains each), ``_run_<stage>(args)`` runs it. Errors in user input print one clear
line (``lucent-inhibit: error: ...``) and exit with status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional


class UsageError(Exception):
    """Bad user input: printed as one line, exit status 2."""


# ------------------------------------------------------------------------------------------------
# shared options
# ------------------------------------------------------------------------------------------------
def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="efficientnet_lite0",
        help="model spec: 'efficientnet_lite0' (embedded ImageNet weights, default), 'inceptionv1', "
        "'torchvision:NAME', 'timm:NAME' or 'package.module:constructor'",
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. 'cpu' or 'cuda' (default: cpu)")


def _add_data_options(p: argparse.ArgumentParser, n_default: int = 128, size_default: int = 224) -> None:
    p.add_argument(
        "--images",
        default=None,
        help="folder of your own images (recursive); default: deterministic crops of the bundled photos",
    )
    p.add_argument("--n-images", type=int, default=n_default, help=f"number of bundled crops (default {n_default})")
    p.add_argument("--size", type=int, default=size_default, help=f"image side in pixels (default {size_default})")
    p.add_argument("--seed", type=int, default=0, help="seed of the bundled crops (default 0)")


def _load_model(args):
    from .models import load_model

    try:
        model = load_model(args.model)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return model.to(args.device)


def _load_data(args):
    from .data import ImageFolder, sample_crops

    if args.images:
        try:
            return ImageFolder(args.images, size=args.size)
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(str(exc)) from exc
    return sample_crops(args.n_images, size=args.size, seed=args.seed)


def _check_layer(model, layer: str) -> None:
    from .models import layers, unknown_layer_message

    if layer not in layers(model) and layer != "input":
        raise UsageError(unknown_layer_message(layer, layers(model)))


# ------------------------------------------------------------------------------------------------
# stages (each: _add_<stage>, _run_<stage>)
# ------------------------------------------------------------------------------------------------
STAGES: List[str] = []


# -- scan (issue 3): MEIs, MIIs and maximally tense images of a dataset ---------------------------
def _add_scan(sub) -> None:
    p = sub.add_parser(
        "scan",
        help="scan a dataset for MEIs, MIIs and maximally tense images (MTIs) of one feature",
        description="Stream images through the model, keep per-image activation and excitatory/inhibitory "
        "attribution totals (P, N) at the attribution layers, write the scan (resumable checkpoint folder "
        "and scan.npz) and figures (P-vs-N scatter, MEI/MII/MTI grids, signed overlays) to --out.",
    )
    _add_model_options(p)
    _add_data_options(p)
    p.add_argument("--layer", default=None, help="feature layer (default: blocks_4_0_bn3_drop, a pre-activation)")
    p.add_argument("--unit", type=int, default=5, help="channel of the feature (default 5)")
    p.add_argument(
        "--position", default="center", help="feature position: 'center', 'mean' or 'y,x' (default center)"
    )
    p.add_argument(
        "--attr-layers",
        nargs="+",
        default=None,
        help="attribution layer(s) before the feature; pick them close to it (default for the default "
        "feature: blocks_4_0_bn2_act, inside the same block, where E = P - N tracks the feature)",
    )
    p.add_argument("--out", required=True, help="output folder (scan checkpoints, scan.npz, figures)")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward/backward pass (default 16)")
    p.add_argument("--chunk-size", type=int, default=None, help="images per checkpoint file (default ~256)")
    p.add_argument(
        "--shard", default=None, help="'i/n': scan only the i-th of n parts into OUT/shard-i-of-n (no figures)"
    )
    p.add_argument(
        "--merge", nargs="+", default=None, metavar="DIR",
        help="merge these finished shard folders into OUT/scan.npz and draw the figures instead of scanning",
    )
    p.add_argument("--no-resume", action="store_true", help="start over instead of resuming OUT's checkpoints")
    p.add_argument("--no-maps", action="store_true", help="do not keep the spatial attribution maps")
    p.add_argument("--top-k", type=int, default=10, help="images per MEI/MII/MTI grid (default 10)")
    p.add_argument(
        "--score", default="min", choices=["min", "geometric", "harmonic", "product"],
        help="tension score ranking MTIs (default min(P, N))",
    )
    p.add_argument("--no-figures", action="store_true", help="write the scan only")


def _run_scan(args) -> None:
    import numpy as np

    from .attribution import Feature
    from .models import DEFAULT_LAYER
    from .plots import save_scan_figures
    from .scan import merge, scan

    layer = args.layer or DEFAULT_LAYER
    if args.attr_layers:
        attr = args.attr_layers
    elif layer == DEFAULT_LAYER:
        attr = ["blocks_4_0_bn2_act"]
    else:
        raise UsageError(f"--attr-layers is required for feature layer {layer!r} (name layers before it, close to it)")
    if args.position in ("center", "mean"):
        position = args.position
    else:
        try:
            y, x = (int(v) for v in args.position.split(","))
            position = (y, x)
        except ValueError:
            raise UsageError(f"--position must be 'center', 'mean' or 'y,x', got {args.position!r}")
    try:
        feature = Feature(layer, unit=args.unit, position=position)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {args.top_k}")
    model = _load_model(args)
    for l in [layer] + list(attr):
        _check_layer(model, l)
    data = _load_data(args)
    os.makedirs(args.out, exist_ok=True)
    try:
        if args.merge:
            result = merge(args.merge)
            if result.feature != feature or result.layers != list(attr):
                raise UsageError(
                    f"the shards scan {result.feature.name} at {result.layers}, not {feature.name} at {list(attr)}; "
                    "pass the same --layer/--unit/--position/--attr-layers as the shard runs"
                )
        else:
            shard_dir = "scan"
            if args.shard:
                try:
                    i, n = (int(v) for v in args.shard.split("/"))
                except ValueError:
                    raise UsageError(f"--shard must be 'i/n' with 0 <= i < n, got {args.shard!r}")
                shard_dir = f"shard-{i}-of-{n}"
            result = scan(
                model, data, feature, attr, batch_size=args.batch_size, out=os.path.join(args.out, shard_dir),
                resume=not args.no_resume, shard=args.shard, keep_maps=not args.no_maps, chunk_size=args.chunk_size,
                score=args.score,
            )
            if args.shard:
                print(f"shard {args.shard}: {len(result)} images -> {os.path.join(args.out, shard_dir)}")
                return
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    path = os.path.join(args.out, "scan.npz")
    result.save(path)
    k = min(args.top_k, len(result))
    act = result.activation
    rows = lambda idx: np.isin(result.indices, idx)  # noqa: E731
    print(f"scan of {feature.name}: {len(result)} images -> {path}")
    for l, r in result.completeness.items():
        print(f"  completeness r(f, E) at {l}: {r:.3f}")
    print(f"  MEIs {result.meis(k).tolist()} mean activation {act[rows(result.meis(k))].mean():.3g}")
    print(f"  MIIs {result.miis(k).tolist()} mean activation {act[rows(result.miis(k))].mean():.3g}")
    mt = result.mtis(k, args.score)
    print(f"  MTIs {mt.tolist()} mean activation {act[rows(mt)].mean():.3g} (score {args.score})")
    p, n = result.P(), result.N()
    pct = lambda v, sel: [round(100.0 * float((v < x).mean())) for x in v[sel]]  # noqa: E731
    print(f"  MTI percentiles among all images at {result.layers[0]}: P {pct(p, rows(mt))}, N {pct(n, rows(mt))}")
    if not args.no_figures:
        if getattr(data, "identity", None) != result.dataset:
            raise UsageError(
                f"the images given ({getattr(data, 'identity', '?')}) are not the scanned dataset ({result.dataset}); "
                "pass the same --images/--n-images/--size/--seed to draw figures"
            )
        files = save_scan_figures(result, data, args.out, k=k, score=args.score)
        print("  figures: " + ", ".join(sorted(os.path.basename(p) for p in files.values())))


STAGES.append("scan")


def _add_toy(sub) -> None:
    p = sub.add_parser(
        "toy",
        help="superposition toy models: train, attribute, and show interference that looks like inhibition",
        description="Train the absolute-value (or scaled XOR) toy model over several seeds and keep the best "
        "(CPU, about a minute by default), save it, attribute every output to the hidden units on inputs with "
        "one and two active features, and draw the interference-vs-inhibition figure.",
    )
    p.add_argument("--out", required=True, help="output folder (model toy_model.npz, analysis, figure, summary JSON)")
    p.add_argument("--kind", default="abs", choices=["abs", "xor"], help="'abs' (|x|, default) or 'xor' (scaled XOR)")
    p.add_argument("--n", type=int, default=6, help="number of features / outputs (default 6)")
    p.add_argument("--m", type=int, default=8, help="number of hidden ReLU units (default 8)")
    p.add_argument("--S", type=float, default=None,
                   help="probability that a feature is active, in (0, 1] (default 0.01 for abs, 0.05 for xor)")
    p.add_argument("--decay", type=float, default=0.9, help="importance of output i is decay**i (default 0.9)")
    p.add_argument("--steps", type=int, default=3000, help="training steps per seed (default 3000)")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds to train; the best is kept (default 5)")
    p.add_argument("--batch-size", type=int, default=1024, help="samples per training step (default 1024)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak Adam learning rate (default 3e-3)")
    p.add_argument("--count", type=int, default=512, help="one- and two-feature inputs analysed each (default 512)")
    p.add_argument("--load", default=None,
                   help="skip training and load this saved toy model (.npz); its hyper-parameters must match "
                   "--kind/--n/--m (and --S/--decay if given)")


def _run_toy(args) -> None:
    import json

    from . import toy

    S = args.S if args.S is not None else (0.01 if args.kind == "abs" else 0.05)
    try:
        config = toy.ToyConfig(args.kind, n=args.n, m=args.m, S=S, decay=args.decay)
        for name in ("steps", "seeds", "batch_size", "count"):
            if getattr(args, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
        if config.n < 2:
            raise ValueError(f"--n must be >= 2 to compare one- and two-feature inputs, got {config.n}")
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    os.makedirs(args.out, exist_ok=True)
    summary = {}
    if args.load:
        expected = {"kind": config.kind, "n": config.n, "m": config.m, "decay": config.decay}
        if args.S is not None:
            expected["S"] = config.S
        try:
            model = toy.ToyModel.load(args.load, **expected)
        except (OSError, ValueError) as exc:
            raise UsageError(str(exc)) from exc
        loss, zero = toy.evaluate(model)
        summary["train"] = {"loaded": args.load, "loss": loss, "zero_loss": zero, "loss_ratio": loss / zero}
    else:
        result = toy.train(config, steps=args.steps, seeds=range(args.seeds), batch_size=args.batch_size, lr=args.lr)
        model = result.model
        result.save(os.path.join(args.out, "toy_model.npz"))
        summary["train"] = result.summary()
    analysis = toy.analyze(model, count=args.count)
    inhibitory = toy.inhibition_model(config.n, config.decay, config.S)
    inhib_analysis = toy.analyze(inhibitory, count=args.count)
    analysis.save(os.path.join(args.out, "toy_analysis.npz"))
    fig_path = os.path.join(args.out, "toy_superposition.png")
    toy.plot_superposition(model, inhibitory, fig_path, analyses=(analysis, inhib_analysis))
    summary["analysis"] = analysis.summary()
    summary["analysis"]["units_per_feature"] = toy.units_per_feature(model).tolist()
    summary["inhibition_model"] = inhib_analysis.summary()
    with open(os.path.join(args.out, "toy_summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2)

    t, a, c = summary["train"], summary["analysis"], config
    print(f"toy model: {c.kind}, n={c.n} features, m={c.m} hidden units, S={c.S}, importance {c.decay}^i")
    if "seeds" in t:
        print(f"  seeds {t['seeds']}: losses " + ", ".join(f"{v:.4g}" for v in t["losses"]) + f"; best seed {t['best_seed']}")
    print(f"  loss {t['loss']:.4g} vs all-zero predictor {t['zero_loss']:.4g} (ratio {t['loss_ratio']:.3f})")
    print(f"  features represented (alone, output >= half its target): {a['n_represented']} of {c.n} "
          f"(without sharing {c.m} units fit {c.m // 2}); hidden units per feature {a['units_per_feature']}")
    print(f"  mean tension min(P, N): one-feature inputs {a['mean_tension_one']:.4f}, "
          f"two-feature inputs {a['mean_tension_two']:.4f} "
          f"(inactive outputs {a['mean_tension_two_inactive_outputs']:.4f}, active {a['mean_tension_two_active_outputs']:.4f})")
    print("  tension per output (one / two features): " + ", ".join(
        f"{k}: {u:.3f}/{v:.3f}" for k, (u, v) in enumerate(zip(a["tension_per_output_one"], a["tension_per_output_two"]))))
    i = summary["inhibition_model"]
    print(f"  hand-built inhibition model (m={2 * c.n}): one-feature {i['mean_tension_one']:.4f}, "
          f"two-feature {i['mean_tension_two']:.4f}")
    print(f"  wrote {', '.join(sorted(os.listdir(args.out)))} to {args.out}")


STAGES.append("toy")


# ---- completeness ------------------------------------------------------------------------------
def _add_completeness(sub) -> None:
    p = sub.add_parser(
        "completeness",
        help="Pearson r between features and their total attribution E at each layer (paper 000, Figure 3)",
        description="Measure how well gradient x activation attributions add up to the feature: for each "
        "attribution layer, the Pearson correlation over a dataset between the feature f and E = sum(grad f * h). "
        "Writes completeness.npz (reload with CompletenessResult.load) and completeness.png (r against depth), "
        "and prints the per-layer table.",
    )
    _add_model_options(p)
    _add_data_options(p, n_default=96)
    p.add_argument(
        "--layers",
        default=None,
        help="comma-separated attribution layers in any order ('input' = pixels after normalisation); default: "
        "the block outputs and conv_head (timm models), else every pre-activation layer before the features",
    )
    p.add_argument(
        "--n-features", type=int, default=20,
        help="number of random logits (output units) to study when --layer is not given (default 20)",
    )
    p.add_argument("--feature-seed", type=int, default=0, help="seed choosing the random logits (default 0)")
    p.add_argument(
        "--layer", default=None,
        help="study units of this layer instead of random logits (with --unit), e.g. blocks_4_0",
    )
    p.add_argument("--unit", default=None, help="comma-separated channel indices at --layer, e.g. 3,17,40")
    p.add_argument(
        "--position", default="center",
        help="where a conv feature is read: 'center', 'mean' or 'y,x' (default center)",
    )
    p.add_argument(
        "--method", default="gradient_x_activation", choices=["gradient_x_activation", "integrated_gradients"],
        help="attribution method (default gradient_x_activation, the paper's)",
    )
    p.add_argument("--steps", type=int, default=16, help="integration points for integrated gradients (default 16)")
    p.add_argument(
        "--ig-features", type=int, default=0,
        help="also run integrated gradients for the first K features and draw it on the same figure (default 0; "
        "costs --ig-steps forward/backward passes per layer)",
    )
    p.add_argument("--ig-layers", default=None, help="comma-separated layers for the IG comparison (default: --layers)")
    p.add_argument("--ig-steps", type=int, default=8, help="integration points of the IG comparison (default 8)")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    p.add_argument("--out", default="completeness_out", help="output folder (default completeness_out)")


def _completeness_features(args, model):
    from torch import nn

    from .attribution import Feature
    from .completeness import random_logits
    from .hooks import layer_table as _layer_table

    position = args.position
    if position not in ("center", "mean"):
        try:
            y, x = (int(v) for v in position.split(","))
        except ValueError:
            raise UsageError(f"--position must be 'center', 'mean' or 'y,x', got {position!r}") from None
        position = (y, x)
    if args.layer is not None:
        _check_layer(model, args.layer)
        if args.unit is None:
            raise UsageError("--layer needs --unit (comma-separated channel indices)")
        try:
            units = [int(u) for u in args.unit.split(",") if u.strip()]
        except ValueError:
            raise UsageError(f"--unit must be comma-separated non-negative integers, got {args.unit!r}") from None
        if not units or min(units) < 0:
            raise UsageError(f"--unit must be comma-separated non-negative integers, got {args.unit!r}")
        return [Feature(args.layer, unit=u, position=position) for u in units]
    if args.unit is not None:
        raise UsageError("--unit needs --layer")
    linear = [(n, m) for n, m in _layer_table(model).items() if isinstance(m, nn.Linear)]
    if not linear:
        raise UsageError("the model has no linear output layer for random logits; give --layer and --unit")
    name, head = linear[-1]
    if not 1 <= args.n_features <= head.out_features:
        raise UsageError(f"--n-features must be between 1 and {head.out_features} (outputs of {name!r}), got {args.n_features}")
    return random_logits(args.n_features, seed=args.feature_seed, n_classes=head.out_features, layer=name)


def _completeness_layers(spec, model, features):
    from .models import block_outputs, layers as all_layers, preactivation_layers

    if spec:
        names = [s.strip() for s in spec.split(",") if s.strip()]
        if not names:
            raise UsageError(f"--layers is empty: {spec!r}")
        for n in names:
            _check_layer(model, n)
        return names
    blocks = block_outputs(model)
    if blocks:
        return blocks + (["conv_head"] if "conv_head" in all_layers(model) else [])
    feature_layers = {f.layer for f in features}
    names = []
    for n in preactivation_layers(model):
        if n in feature_layers:
            break
        names.append(n)
    if not names:
        raise UsageError("could not choose default layers for this model; give --layers")
    return names


def _run_completeness(args) -> None:
    from .completeness import completeness, plot_completeness

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    model = _load_model(args)
    data = _load_data(args)
    if len(data) < 2:
        raise UsageError(f"completeness needs at least 2 images, the dataset has {len(data)}")
    features = _completeness_features(args, model)
    layers = _completeness_layers(args.layers, model, features)
    os.makedirs(args.out, exist_ok=True)
    try:
        result = completeness(model, data, features, layers, batch_size=args.batch_size, method=args.method,
                              steps=args.steps)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    result.save(os.path.join(args.out, "completeness.npz"))
    print(result.table())
    compare = None
    if args.ig_features > 0:
        ig_layers = _completeness_layers(args.ig_layers, model, features) if args.ig_layers else layers
        try:
            compare = completeness(model, data, features[: args.ig_features], ig_layers, batch_size=args.batch_size,
                                   method="integrated_gradients", steps=args.ig_steps)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        compare.save(os.path.join(args.out, "completeness_ig.npz"))
        print()
        print(compare.table())
    png = plot_completeness(result, os.path.join(args.out, "completeness.png"), compare=compare)
    print(f"wrote {os.path.join(args.out, 'completeness.npz')} and {png}")


STAGES.append("completeness")


# -- atlas (issue 5): attribution atlas and activation atlas, static PNG and interactive HTML ------
ATLAS_DEFAULT_ATTR_LAYER = "blocks_4_0_bn2_act"  # the scan stage's default too


def _add_atlas(sub) -> None:
    p = sub.add_parser(
        "atlas",
        help="attribution atlas (or activation atlas) of one feature: PNG figure and interactive HTML",
        description="Select images from a scan (--scan FILE, or scan the dataset first), collect their attribution "
        "(or activation) vectors at --attr-layer, lay them out with UMAP, average them in grid cells, render one "
        "icon per cell in batched render calls and measure the feature on each. Writes OUT/atlas.npz, "
        "OUT/atlas.png and OUT/atlas.html (self-contained: pan, zoom, click a cell for its images).",
    )
    _add_model_options(p)
    _add_data_options(p, n_default=256, size_default=128)
    p.add_argument("--scan", default=None, help="a scan file (scan.npz) or finished scan folder of the same feature, "
                   "dataset and attribution layer; default: scan the dataset first (written to OUT/scan.npz)")
    p.add_argument("--layer", default=None, help="feature layer (default: blocks_4_0_bn3_drop, a pre-activation)")
    p.add_argument("--unit", type=int, default=5, help="channel of the feature (default 5)")
    p.add_argument("--position", default="center", help="feature position: 'center', 'mean' or 'y,x' (default center)")
    p.add_argument("--attr-layer", default=None, help="atlas layer, before the feature and close to it, best a "
                   f"post-activation layer (default for the default feature: {ATLAS_DEFAULT_ATTR_LAYER}; "
                   "with --scan: the scan's first layer)")
    p.add_argument("--kind", default="attribution", choices=["attribution", "activation"],
                   help="lay out attribution vectors (attribution atlas, default) or activations (activation atlas)")
    p.add_argument("--mode", default="sum", choices=["sum", "position"],
                   help="one vector per image summed over the receptive-field box (default) or one per position in it")
    p.add_argument("--top-abs", type=int, default=128, help="select the k images with the largest |S|_2 (default 128)")
    p.add_argument("--top-activation", type=int, default=64, help="select the k MEIs (default 64)")
    p.add_argument("--bottom-activation", type=int, default=64, help="select the k MIIs (default 64)")
    p.add_argument("--top-tension", type=int, default=64, help="select the k MTIs by min(P, N) (default 64)")
    p.add_argument("--crop", type=float, default=0.01,
                   help="receptive-field box: where mean |S| exceeds this fraction of its maximum (default 0.01)")
    p.add_argument("--neighbors", type=int, default=10, help="UMAP n_neighbors (default 10)")
    p.add_argument("--min-dist", type=float, default=0.1, help="UMAP min_dist (default 0.1)")
    p.add_argument("--pca", type=int, default=None, help="PCA components before UMAP (default: none)")
    p.add_argument("--grid", type=int, default=None, help="grid side in cells (default: chosen from the number of "
                   "points, at most 30)")
    p.add_argument("--min-points", type=int, default=2, help="points a cell needs to get an icon (default 2)")
    p.add_argument("--steps", type=int, default=48, help="render steps per icon (default 48)")
    p.add_argument("--icon-size", type=int, default=None, help="side of the rendered icon image (default: --size)")
    p.add_argument("--batch-size", type=int, default=64, help="icons per render call and images per pass (default 64)")
    p.add_argument("--power", type=float, default=2.0, help="cosine exponent of the spatial cosdot (default 2)")
    p.add_argument("--icon-target", default="box", choices=["box", "center"],
                   help="render the cell vector over the whole receptive-field box (default) or at its centre only")
    p.add_argument("--out", required=True, help="output folder (atlas.npz, atlas.png, atlas.html)")


def _run_atlas(args) -> None:
    import time

    from .atlas import build_atlas, plot_atlas, select_images, write_atlas_html
    from .attribution import Feature
    from .models import DEFAULT_LAYER
    from .scan import ScanResult, scan

    t0 = time.time()
    layer = args.layer or DEFAULT_LAYER
    if args.position in ("center", "mean"):
        position = args.position
    else:
        try:
            y, x = (int(v) for v in args.position.split(","))
            position = (y, x)
        except ValueError:
            raise UsageError(f"--position must be 'center', 'mean' or 'y,x', got {args.position!r}")
    try:
        feature = Feature(layer, unit=args.unit, position=position)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    result = None
    if args.scan:
        if not os.path.exists(args.scan):
            raise UsageError(f"scan file {args.scan!r} does not exist")
        try:
            result = ScanResult.load(args.scan)
        except (ValueError, OSError, KeyError) as exc:
            raise UsageError(f"cannot read scan {args.scan!r}: {exc}") from exc
    attr = args.attr_layer
    if attr is None:
        if result is not None:
            attr = result.layers[0]
        elif layer == DEFAULT_LAYER:
            attr = ATLAS_DEFAULT_ATTR_LAYER
        else:
            raise UsageError(f"--attr-layer is required for feature layer {layer!r} (a layer before it, close to it)")
    for name in ("top_abs", "top_activation", "bottom_activation", "top_tension"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    model = _load_model(args)
    for l in (layer, attr):
        _check_layer(model, l)
    data = _load_data(args)
    os.makedirs(args.out, exist_ok=True)
    try:
        if result is None:
            result = scan(model, data, feature, [attr], batch_size=min(args.batch_size, 32), progress=True)
            result.save(os.path.join(args.out, "scan.npz"))
        elif result.dataset != getattr(data, "identity", result.dataset):
            raise UsageError(
                f"the scan is of dataset {result.dataset}, but the images given are {data.identity}; pass the same "
                "--images/--n-images/--size/--seed as the scan"
            )
        selection = select_images(result, feature, attr, top_abs=args.top_abs, top_activation=args.top_activation,
                                  bottom_activation=args.bottom_activation, top_tension=args.top_tension)
        atlas = build_atlas(
            model, data, feature, attr, selection, kind=args.kind, mode=args.mode, crop=args.crop,
            n_neighbors=args.neighbors, min_dist=args.min_dist, pca=args.pca, grid_size=args.grid,
            min_points=args.min_points, steps=args.steps, icon_size=args.icon_size, batch_size=args.batch_size,
            power=args.power, icon_target=args.icon_target, seed=args.seed, progress=True,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    paths = [os.path.join(args.out, n) for n in ("atlas.npz", "atlas.png", "atlas.html")]
    atlas.save(paths[0])
    plot_atlas(atlas, paths[1])
    write_atlas_html(atlas, paths[2])
    s = atlas.activation_by_sign()
    print(f"{args.kind} atlas of {feature.name} at {attr}: {len(selection)} images, {len(atlas.points)} points, "
          f"{len(atlas.grid)} icons ({atlas.grid.size}x{atlas.grid.size} grid), {time.time() - t0:.1f} s")
    print(f"  icon activation: net-positive cells {s['positive_mean']:.4g} (n={s['n_positive']}), "
          f"net-negative cells {s['negative_mean']:.4g} (n={s['n_negative']})")
    print("  wrote " + ", ".join(paths))


STAGES.append("atlas")


# -- invert and tense (issue 4): +/- attribution inversions and tense synthesis -------------------
def _add_feature_options(p, what: str) -> None:
    p.add_argument("--layer", default=None, help="feature layer (default: blocks_4_0_bn3_drop, a pre-activation)")
    p.add_argument("--unit", type=int, default=5, help="channel of the feature (default 5)")
    p.add_argument("--position", default="center", help="feature position: 'center', 'mean' or 'y,x' (default center)")
    p.add_argument(
        "--attr-layer",
        default=None,
        help=f"attribution layer of the {what}, feeding the feature and close to it (default for the default "
        "feature: blocks_4_0_bn2_act, inside the same block; required for other feature layers)",
    )


def _feature_and_layer(args, model):
    from .attribution import Feature
    from .models import DEFAULT_LAYER

    layer = args.layer or DEFAULT_LAYER
    _check_layer(model, layer)
    pos = args.position
    if pos not in ("center", "mean"):
        try:
            y, x = (int(v) for v in pos.split(","))
        except ValueError:
            raise UsageError(f"--position must be 'center', 'mean' or 'y,x', got {pos!r}")
        pos = (y, x)
    try:
        feature = Feature(layer, unit=args.unit, position=pos)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    attr = args.attr_layer
    if attr is None:
        if layer != DEFAULT_LAYER:
            raise UsageError(f"--attr-layer is required for feature layer {layer!r} (pick a layer close before it)")
        attr = "blocks_4_0_bn2_act"
    _check_layer(model, attr)
    return feature, attr


def _add_invert(sub) -> None:
    p = sub.add_parser(
        "invert",
        help="+/- attribution inversion (or accentuation) of one image: what excites and what inhibits a feature",
        description="Render two images against relu(S) and relu(-S) of one image's attribution S at --attr-layer "
        "(spatial cosdot), from noise (inversion) or from the image (--seeded, accentuation); measure the feature "
        "and P/N on each, write OUT/inversion.npz and OUT/inversion.png.",
    )
    _add_model_options(p)
    _add_data_options(p, n_default=48, size_default=128)
    _add_feature_options(p, "inversion")
    p.add_argument("--image", default=None, help="path of an image file to invert (default: pick from the data)")
    p.add_argument(
        "--index", default="tense",
        help="which data image: an integer index, or 'tense' (default) for the one with the largest min(P, N)",
    )
    p.add_argument("--seeded", action="store_true", help="start from the image (accentuation) instead of noise")
    p.add_argument("--steps", type=int, default=64, help="optimisation steps (default 64)")
    p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate (default 0.05)")
    p.add_argument("--param", default="fourier", choices=["fourier", "phase"], help="image parameterization")
    p.add_argument("--power", type=float, default=2.0, help="cosine exponent of the spatial cosdot (default 2)")
    p.add_argument("--out", required=True, help="output folder")


def _run_invert(args) -> None:
    import torch

    from .accentuation import inversions, plot_inversions
    from .attribution import attribute
    from .data import load_image

    if args.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {args.steps}")
    model = _load_model(args)
    feature, attr = _feature_and_layer(args, model)
    if args.image:
        if not os.path.exists(args.image):
            raise UsageError(f"--image {args.image!r} does not exist")
        try:
            img = load_image(args.image, size=args.size)
        except (OSError, ValueError, TypeError) as exc:
            raise UsageError(f"cannot read --image {args.image!r}: {exc}") from exc
        what = args.image
    else:
        data = _load_data(args)
        if args.index == "tense":
            x = torch.stack([data[i] for i in range(len(data))])
            try:
                a = attribute(model, x, feature, attr)
            except ValueError as exc:
                raise UsageError(str(exc)) from exc
            idx = int(a.tension(attr).argmax())
        else:
            try:
                idx = int(args.index)
            except ValueError:
                raise UsageError(f"--index must be an integer or 'tense', got {args.index!r}")
            if not 0 <= idx < len(data):
                raise UsageError(f"--index {idx} out of range for {len(data)} images")
        img, what = data[idx], f"data image {idx}"
    try:
        res = inversions(model, img, feature, attr, seeded=args.seeded, steps=args.steps, lr=args.lr,
                         param=args.param, power=args.power, progress=True)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    os.makedirs(args.out, exist_ok=True)
    res.save(os.path.join(args.out, "inversion.npz"))
    plot_inversions(res, os.path.join(args.out, "inversion.png"))
    print(f"{'accentuation' if args.seeded else 'inversion'} of {what}: {feature.name}, attribution at {attr}")
    for k, v in res.summary().items():
        print(f"  {k:11s} f={v['activation']:9.4g}  P={v['P']:9.4g}  N={v['N']:9.4g}")
    print(f"  excitatory > inhibitory: {res.separated}")
    print(f"  wrote {os.path.join(args.out, 'inversion.npz')}, {os.path.join(args.out, 'inversion.png')}")


STAGES.append("invert")


def _add_tense(sub) -> None:
    p = sub.add_parser(
        "tense",
        help="synthesise maximally tense images (large P and N at once) with the tense objective",
        description="Render the tense objective (tension of the image's excitatory and inhibitory attribution "
        "at --attr-layer) with Lucent's render_vis; record P, N and the feature along the way; write "
        "OUT/tense.npz and OUT/tense.png.",
    )
    _add_model_options(p)
    _add_feature_options(p, "tension")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    p.add_argument("--steps", type=int, default=64, help="optimisation steps (default 64)")
    p.add_argument("--batch", type=int, default=1, help="images rendered together (default 1)")
    p.add_argument("--mode", default="fast", choices=["fast", "exact"],
                   help="fast: gradient treated as constant (exact for ReLU/ReLU6 nets); exact: double backprop")
    p.add_argument("--score", default="min", choices=["min", "geometric", "harmonic", "product"],
                   help="tension score (default min(P, N))")
    p.add_argument("--param", default="fourier", choices=["fourier", "phase"], help="image parameterization")
    p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate (default 0.05)")
    p.add_argument("--seed-image", default=None, help="start from this image file instead of noise")
    p.add_argument("--record-every", type=int, default=8, help="measure P/N/f every this many steps (default 8)")
    p.add_argument("--out", required=True, help="output folder")


def _run_tense(args) -> None:
    from .accentuation import plot_tense, tense_image
    from .data import load_image

    for name in ("steps", "size", "batch", "record_every"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    model = _load_model(args)
    feature, attr = _feature_and_layer(args, model)
    seed = None
    if args.seed_image:
        if not os.path.exists(args.seed_image):
            raise UsageError(f"--seed-image {args.seed_image!r} does not exist")
        seed = load_image(args.seed_image, size=args.size)
    try:
        res = tense_image(model, feature, attr, steps=args.steps, size=args.size, score=args.score, mode=args.mode,
                          batch=args.batch, seed_image=seed, param=args.param, lr=args.lr,
                          record_every=args.record_every, progress=True)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    os.makedirs(args.out, exist_ok=True)
    res.save(os.path.join(args.out, "tense.npz"))
    plot_tense(res, os.path.join(args.out, "tense.png"))
    t = res.tension[:, 0]
    print(f"tense ({args.mode}, {args.score}): {feature.name}, attribution at {attr}")
    print(f"  step {int(res.steps[0])}: P={float(res.positive[0, 0]):.4g} N={float(res.negative[0, 0]):.4g} "
          f"tension={float(t[0]):.4g} f={float(res.activation[0, 0]):.4g}")
    print(f"  step {int(res.steps[-1])}: P={float(res.positive[-1, 0]):.4g} N={float(res.negative[-1, 0]):.4g} "
          f"tension={float(t[-1]):.4g} f={float(res.activation[-1, 0]):.4g}")
    print(f"  wrote {os.path.join(args.out, 'tense.npz')}, {os.path.join(args.out, 'tense.png')}")


STAGES.append("tense")


def _add_combos(sub) -> None:
    p = sub.add_parser(
        "combos",
        help="feature-combination plot of a unit pair (cosdot sweep over angles, paper 004)",
        description="Measure a layer's units over the data, pick a pair (or take --units), render each unit "
        "alone for the axis scales, then maximise the pair's cosdot toward --n-angles angles from --n-seeds "
        "noise seeds in batches of Lucent's render_vis; write OUT/pair_stats.npz, OUT/combos.npz, OUT/combos.png.",
    )
    _add_model_options(p)
    _add_data_options(p, n_default=256, size_default=128)
    p.add_argument("--layer", default="blocks_3_0_bn1_drop",
                   help="layer whose units are paired (default blocks_3_0_bn1_drop, a pre-ReLU6 middle layer)")
    p.add_argument("--position", default="center",
                   help="where each unit is read: 'center', 'mean' or 'Y,X' (default center)")
    p.add_argument("--pair", default="anticorrelated", choices=["anticorrelated", "correlated", "zero"],
                   help="which pair the dataset statistics pick (default: the most anti-correlated)")
    p.add_argument("--units", type=int, nargs=2, default=None, metavar=("A", "B"),
                   help="use these two units instead of a picked pair")
    p.add_argument("--n-angles", type=int, default=60, help="target angles on [0, 2 pi) (default 60)")
    p.add_argument("--n-seeds", type=int, default=5, help="noise seeds per angle (default 5)")
    p.add_argument("--power", type=float, default=4.0, help="cosine exponent p of cosdot (default 4)")
    p.add_argument("--steps", type=int, default=128, help="optimisation steps per render (default 128)")
    p.add_argument("--chunk", type=int, default=60, help="most images per render_vis batch (default 60)")
    p.add_argument("--out", required=True, help="output folder")


def _run_combos(args) -> None:
    import numpy as np

    from .combinations import pair_statistics, plot, sweep

    for name in ("n_seeds", "steps", "chunk", "n_images"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.n_angles < 4:
        raise UsageError(f"--n-angles must be at least 4 (one angle per quadrant), got {args.n_angles}")
    position = args.position
    if position not in ("center", "mean"):
        try:
            y, x = (int(v) for v in position.split(","))
        except ValueError:
            raise UsageError(f"--position must be 'center', 'mean' or 'Y,X', got {position!r}") from None
        position = (y, x)
    model = _load_model(args)
    _check_layer(model, args.layer)
    data = _load_data(args)
    np.random.seed(args.seed)  # Lucent's transforms draw from numpy's global generator
    try:
        stats = pair_statistics(model, data, args.layer, position=position)
        if args.units:
            a, b = args.units
            r = float(stats.correlation[a, b]) if max(a, b) < stats.n_units else float("nan")
            fa, fb = stats.feature(a), stats.feature(b)
        else:
            a, b, r = stats.pick(args.pair)
            fa, fb = stats.feature(a), stats.feature(b)
        res = sweep(model, fa, fb, n_angles=args.n_angles, n_seeds=args.n_seeds, power=args.power, steps=args.steps,
                    image_size=args.size, fixed_image_size=args.size, chunk=args.chunk, seed=args.seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    os.makedirs(args.out, exist_ok=True)
    stats.save(os.path.join(args.out, "pair_stats.npz"))
    res.save(os.path.join(args.out, "combos.npz"))
    plot(res, cloud=stats.values(a, b), path=os.path.join(args.out, "combos.png"))
    q = res.quadrant_scores()
    print(f"combos: {fa.name} x {fb.name}, dataset r = {r:.3f}, scales {res.scale[0]:.4g}, {res.scale[1]:.4g}")
    print("  mean C by quadrant (signs of a, b): " + "  ".join(f"{k} {v:.3f}" for k, v in q.items()))
    print(f"  wrote {args.out}/pair_stats.npz, combos.npz, combos.png")


STAGES.append("combos")


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="the main job: every method on one model, written as report/index.html",
        description="Run every stage (completeness, scan with MEI/MII/MTI figures, +/- inversions and "
        "accentuations of the top MTIs, a synthesised tense image, an attribution atlas, a feature-combination "
        "plot, the superposition toy figure) and write OUT/index.html linking every figure with an explanation "
        "and a table of the numbers measured. The report folder is replaced only when the whole run succeeds.",
    )
    _add_model_options(p)
    p.add_argument("--out", default="report", help="report folder (default: report)")
    p.add_argument("--images", default=None, help="folder of your own images (recursive); default: bundled sample crops")
    p.add_argument("--layer", default=None,
                   help="feature layer, a pre-activation layer (default on the embedded model: blocks_4_0_bn3_drop)")
    p.add_argument("--unit", type=int, default=None,
                   help="feature channel (default: the unit whose activation varies most over the first images)")
    p.add_argument("--attribution-layer", default=None,
                   help="layer where the feature is attributed (default: the last activation before the feature layer)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes and few steps for every stage (a smoke run in about a minute, not a measurement)")


def _run_demo(args) -> None:
    from .report import DemoConfig, DemoInputError, run_demo

    if args.images and not os.path.isdir(args.images):
        raise UsageError(f"image folder {args.images!r} does not exist or is not a directory")
    try:
        report = run_demo(
            out=args.out, model=args.model, layer=args.layer, unit=args.unit,
            attribution_layer=args.attribution_layer, images=args.images, device=args.device,
            config=DemoConfig.quick() if args.quick else None,
        )
    except DemoInputError as exc:
        raise UsageError(str(exc).splitlines()[0]) from exc
    print(f"wrote {os.path.join(args.out, 'index.html')}")
    width = max(len(n) for n, _, _ in report.numbers)
    for name, value, _ in report.numbers:
        print(f"  {name.ljust(width)}  {value}")


STAGES.append("demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lucent-inhibit",
        description="See and measure inhibition in vision models (Lucent plugin). Every stage runs on the "
        "embedded pretrained EfficientNet-Lite0 and bundled images by default.",
    )
    sub = parser.add_subparsers(dest="stage", metavar="STAGE")
    sub.required = True
    module = sys.modules[__name__]
    for stage in STAGES:
        getattr(module, f"_add_{stage}")(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    runner = getattr(sys.modules[__name__], f"_run_{args.stage}")
    try:
        runner(args)
    except UsageError as exc:
        print(f"lucent-inhibit: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
