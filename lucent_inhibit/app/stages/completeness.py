"""Stage ``completeness``: how well gradient x activation attributions add up to the feature, layer by
layer (Hamblin et al., paper 000, Figure 3): Pearson r over a dataset between f and E = sum(grad f * h).

Measure how well gradient x activation attributions add up to the feature: for each attribution layer, the
Pearson correlation over a dataset between the feature f and E = sum(grad f * h). Writes completeness.npz
(reload with CompletenessResult.load) and completeness.png (r against depth), and prints the per-layer
table.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Literal, NamedTuple, Optional

from ...core.validate import check_int
from ..configs import DataConfig, ModelConfig, parse_position
from ..options import check_choices, check_paths, flag, group, option
from ..registry import register_module

#: The files this stage writes into --out (lucent_inhibit.app.outputs: only these are ever overwritten).
OUTPUTS = ("completeness.npz", "completeness_ig.npz", "completeness.png", "completeness-checkpoints/")
#: Its checkpoints, in --out while it runs (resumed by a rerun of the same command), removed once it finished.
TRANSIENT = ("completeness-checkpoints",)


def work(cfg) -> List[str]:
    """The checkpoint folder this run writes in --out as it goes (:mod:`lucent_inhibit.app.staging`)."""
    return list(TRANSIENT)


def _names(text: Optional[str], name: str) -> Optional[List[str]]:
    if text is None:
        return None
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise ValueError(f"{name} is empty: {text!r}")
    return names


@dataclass
class CompletenessConfig:
    """Options of ``lucent-inhibit completeness``."""

    out: str = option("completeness_out", "output folder", metavar="DIR")
    model: ModelConfig = group(ModelConfig)
    data: DataConfig = group(DataConfig)
    layers: Optional[str] = option(None, "comma-separated attribution layers in any order ('input' = pixels after "
                                   "normalisation); default: the block outputs and conv_head (timm models), else "
                                   "every pre-activation layer before the features")
    n_features: int = option(20, "number of random logits (output units) to study when --layer is not given")
    feature_seed: int = option(0, "seed choosing the random logits")
    layer: Optional[str] = option(None, "study units of this layer instead of random logits (with --unit), "
                                  "e.g. blocks_4_0")
    unit: Optional[str] = option(None, "comma-separated channel indices at --layer, e.g. 3,17,40")
    position: str = option("center", "where a feature is read: 'center', 'mean' or 'y,x' (a token layer also takes "
                           "'cls' and 'token:i')")
    method: Literal["gradient_x_activation", "integrated_gradients"] = option(
        "gradient_x_activation", "attribution method (gradient_x_activation is the paper's)")
    steps: int = option(16, "integration points for integrated gradients")
    ig_features: int = option(0, "also run integrated gradients for the first K features and draw it on the "
                              "same figure (costs --ig-steps forward/backward passes per layer)")
    ig_layers: Optional[str] = option(None, "comma-separated layers for the IG comparison (default: --layers)")
    ig_steps: int = option(16, "integration points of the IG comparison")
    title: Optional[str] = option(None, "figure title", hidden=True)

    def __post_init__(self):
        check_choices(self)
        check_paths(self)
        for name, low in (("n_features", 1), ("feature_seed", 0), ("steps", 1), ("ig_features", 0), ("ig_steps", 1)):
            check_int(flag(CompletenessConfig, name), getattr(self, name), low=low)
        parse_position(self.position)
        _names(self.layers, "--layers"), _names(self.ig_layers, "--ig-layers")
        if self.unit is not None:
            self.units()
        if (self.layer is None) != (self.unit is None):
            raise ValueError("--layer needs --unit (comma-separated channel indices)" if self.unit is None
                             else "--unit needs --layer")

    def units(self) -> List[int]:
        try:
            units = [int(u) for u in str(self.unit).split(",") if u.strip()]
        except ValueError:
            units = []
        if not units or min(units) < 0:
            raise ValueError(f"--unit must be comma-separated non-negative integers, got {self.unit!r}")
        return units


class CompletenessRun(NamedTuple):
    result: object  # CompletenessResult
    compare: Optional[object]  # the integrated-gradients CompletenessResult, or None
    figure: str


def features(cfg: CompletenessConfig, model):
    """The studied features: units of ``cfg.layer``, or random logits of the model's last linear layer."""
    from torch import nn

    from ...attribution.completeness import random_logits
    from ...core.features import Feature
    from ...core.layers import layer_table
    from ...models.layers import logits_input_size
    from ..runtime import check_layers

    if cfg.layer is not None:
        check_layers(model, cfg.layer)
        return [Feature(cfg.layer, unit=u, position=parse_position(cfg.position)) for u in cfg.units()]
    linear = [(n, m) for n, m in layer_table(model).items() if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError("the model has no linear output layer for random logits; give --layer and --unit")
    name, head = linear[-1]
    need = logits_input_size(model)
    if need is not None and cfg.data.size != need:
        raise ValueError(f"--size {cfg.data.size}: the logits of this model ({name!r}) are defined for {need} px "
                         f"inputs only; use --size {need}, or study units of a convolutional layer (--layer, --unit)")
    if cfg.n_features > head.out_features:
        raise ValueError(f"--n-features must be between 1 and {head.out_features} (outputs of {name!r}), "
                         f"got {cfg.n_features}")
    return random_logits(cfg.n_features, seed=cfg.feature_seed, n_classes=head.out_features, layer=name)


def depth_layers(model, spec: Optional[str], feats) -> List[str]:
    """``spec``'s layers, or the block outputs (+ conv_head), or the pre-activations before the features."""
    from ...core.layers import layers as all_layers
    from ...models.layers import block_outputs, preactivation_layers
    from ..runtime import check_layers

    if spec:
        names = _names(spec, "--layers")
        check_layers(model, *names)
        return names
    blocks = block_outputs(model)
    if blocks:
        return blocks + (["conv_head"] if "conv_head" in all_layers(model) else [])
    feature_layers, names = {f.layer for f in feats}, []
    for n in preactivation_layers(model):
        if n in feature_layers:
            break
        names.append(n)
    if not names:
        raise ValueError("could not choose default layers for this model; give --layers")
    return names


def run(cfg: CompletenessConfig, progress: bool = True) -> CompletenessRun:
    from ...attribution.completeness import completeness
    from ...attribution.figures import plot_completeness
    from ..runtime import load_data, load_model, out_folder

    model = load_model(cfg.model)
    data = load_data(cfg.data)
    if len(data) < 2:
        raise ValueError(f"completeness needs at least 2 images, the dataset has {len(data)}")
    feats = features(cfg, model)
    layers = depth_layers(model, cfg.layers, feats)
    ig_layers = depth_layers(model, cfg.ig_layers, feats) if cfg.ig_layers else layers  # checked even when unused
    out_folder(cfg.out)
    checkpoints = os.path.join(cfg.out, TRANSIENT[0])
    result = completeness(model, data, feats, layers, method=cfg.method, steps=cfg.steps,
                          settings=cfg.data.passes(progress), checkpoint=os.path.join(checkpoints, "main"))
    result.save(os.path.join(cfg.out, "completeness.npz"))
    compare = None
    if cfg.ig_features > 0:
        compare = completeness(model, data, feats[: cfg.ig_features], ig_layers, method="integrated_gradients",
                               steps=cfg.ig_steps, settings=cfg.data.passes(progress),
                               checkpoint=os.path.join(checkpoints, "ig"))
        compare.save(os.path.join(cfg.out, "completeness_ig.npz"))
    png = os.path.join(cfg.out, "completeness.png")
    plot_completeness(result, png, compare=compare, title=cfg.title)
    return CompletenessRun(result, compare, png)


def describe(run_: CompletenessRun, cfg: CompletenessConfig) -> List[str]:
    lines = [run_.result.table()]
    if run_.compare is not None:
        lines += ["", run_.compare.table()]
    files = [os.path.join(cfg.out, "completeness.npz")] + (
        [os.path.join(cfg.out, "completeness_ig.npz")] if run_.compare is not None else [])
    return lines + [f"wrote {', '.join(files)} and {run_.figure}"]


def section(runs, root: str):
    from ...findings.completeness import completeness_study_finding
    from ..runtime import files_section

    cfg, run_ = runs[0]
    text = ("Pearson correlation, over the images, between a feature and its total gradient-x-activation "
            "attribution E at each layer (one line per feature, the mean in bold). Where r is near 1 the "
            "attribution adds up to the feature, and rankings by positive and negative attribution mean what "
            "they say; where it is low they do not. The scan below attributes the feature at a layer close to it.")
    numbers = [(f"completeness r, {cfg.n_features if cfg.layer is None else len(cfg.units())} features, {l}",
                float(r), "mean over the features") for l, r in zip(run_.result.layers, run_.result.mean_r())]
    sec = files_section("Attribution and its completeness", text, cfg.out, root, ["completeness.png"],
                        ["completeness.npz"] + (["completeness_ig.npz"] if run_.compare is not None else []))
    sec.findings = [completeness_study_finding(run_.result)]
    return sec, numbers


STAGE = register_module(
    __name__, CompletenessConfig, "Pearson r between features and their total attribution E at each layer (paper 000, Figure 3)")
