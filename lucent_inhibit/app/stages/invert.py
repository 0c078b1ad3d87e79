"""Stage ``invert``: +/- attribution inversions (or accentuations) of one image: what in it excites a
feature and what inhibits it (Hamblin et al., papers 000 and 003; SPEC 2.4).

Render two images against relu(S) and relu(-S) of one image's attribution S at --attr-layer (spatial
cosdot), from noise (inversion) or from the image (--seeded, accentuation); measure the feature and P/N on
each, write OUT/inversion.npz and OUT/inversion.png. On a vision transformer's token layer the targets are
the patch tokens on the model's patch grid (class and register tokens left out), and the images are at the
model's one input size (--size 224 for ViT-*/16-224).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Literal, NamedTuple, Optional

from ...core.validate import MAX_POWER, check_number
from ..configs import DataConfig, FeatureConfig, ModelConfig, RenderConfig
from ..options import REQUIRED, check_choices, check_paths, flag, group, option
from ..registry import register_module

#: The files this stage writes into --out (lucent_inhibit.app.outputs: only these are ever overwritten).
OUTPUTS = ("inversion.npz", "inversion.png")


@dataclass
class InvertRender(RenderConfig):
    size: Optional[int] = option(None, "side of the rendered images (default: the image's)", flag="--render-size")


@dataclass
class InvertConfig:
    """Options of ``lucent-inhibit invert``."""

    out: str = option(REQUIRED, "output folder", metavar="DIR")
    model: ModelConfig = group(ModelConfig)
    data: DataConfig = group(DataConfig)
    feature: FeatureConfig = group(FeatureConfig)
    image: Optional[str] = option(None, "path of an image file to invert (default: pick from the data)", metavar="FILE")
    index: str = option("tense", "which data image: an integer index, or 'tense' for the one with the largest "
                        "min(P, N)")
    seeded: bool = option(False, "start from the image (accentuation) instead of noise")
    render: InvertRender = group(InvertRender)
    param: Optional[Literal["fourier", "phase"]] = option(None, "image parameterization (default: fourier)")
    power: float = option(2.0, f"cosine exponent of the spatial cosdot (0 to {MAX_POWER:g})")

    def __post_init__(self):
        check_choices(self)
        check_paths(self)
        check_number(flag(InvertConfig, "power"), self.power, 0, MAX_POWER)
        if self.index != "tense":
            try:
                int(self.index)
            except (TypeError, ValueError):
                raise ValueError(f"--index must be an integer or 'tense', got {self.index!r}") from None


class InvertRun(NamedTuple):
    result: object  # InversionResult
    image: str  # what was inverted: a file path or "data image I"


def _pick(cfg: InvertConfig, model, feature, attr):
    """The image to invert and its description."""
    import torch

    from ...attribution.attribute import attribute
    from ...data.batching import iter_batches
    from ...data.images import load_image
    from ..runtime import load_data

    if cfg.image:
        try:  # load_image names what the path is when it is no image (missing, a FIFO, a loop, ...)
            return load_image(cfg.image, size=cfg.data.size), cfg.image
        except ValueError as exc:
            raise ValueError(f"--image: {exc}") from None
    data = load_data(cfg.data)
    if cfg.index == "tense":  # the most tense image by min(P, N), one batch at a time
        tension = [attribute(model, x, feature, attr).tension(attr) for _, x in iter_batches(data, cfg.data.batch_size)]
        idx = int(torch.cat(tension).argmax())
    else:
        idx = int(cfg.index)
        if not 0 <= idx < len(data):
            raise ValueError(f"--index {idx} out of range for {len(data)} images")
    return torch.as_tensor(data[idx]), f"data image {idx}"


def run(cfg: InvertConfig, progress: bool = True):
    from ...core.tokens import check_input_size
    from ...synthesis.figures import plot_inversions
    from ...synthesis.inversion import inversions
    from ..runtime import feature_and_layers, load_data, load_model, out_folder

    model = load_model(cfg.model)
    check_input_size(model, (cfg.data.size, cfg.data.size))  # a strict ViT: --size must be its input size
    feature, (attr,) = feature_and_layers(model, cfg.feature, size=cfg.data.size,
                                          data=None if cfg.image else load_data(cfg.data))
    image, what = _pick(cfg, model, feature, attr)
    settings = cfg.render.settings(progress, **({"param": cfg.param} if cfg.param else {}))
    res = inversions(model, image, feature, attr, seeded=cfg.seeded, render=settings, power=cfg.power)
    out_folder(cfg.out)
    res.save(os.path.join(cfg.out, "inversion.npz"))
    plot_inversions(res, os.path.join(cfg.out, "inversion.png"))
    return InvertRun(res, what)


def describe(run_: InvertRun, cfg: InvertConfig) -> List[str]:
    kind, res = "accentuation" if cfg.seeded else "inversion", run_.result
    lines = [f"{kind} of {run_.image}: {res.feature.name}, attribution at {res.layer}"]
    grid, hw = res.feature.grid, tuple(res.maps.shape[-2:])
    if grid is not None and (grid.grid_h, grid.grid_w) == hw:
        lines.append(f"  targets: the {hw[0]}x{hw[1]} patch tokens ({grid.describe()}; class / register tokens "
                     "left out)")
    lines += [f"  {k:11s} f={v['activation']:9.4g}  P={v['P']:9.4g}  N={v['N']:9.4g}" for k, v in res.summary().items()
              if isinstance(v, dict)]
    lines.append(f"  excitatory > inhibitory: {res.separated}")
    lines.append(f"  wrote {os.path.join(cfg.out, 'inversion.npz')}, {os.path.join(cfg.out, 'inversion.png')}")
    return lines


def section(runs, root: str):
    from ...findings.synthesis import inversion_finding
    from ..page import Section

    figures, links, numbers = [], [], []
    for cfg, (res, image) in runs:
        rel = os.path.relpath(cfg.out, root)
        figures.append(os.path.join(rel, "inversion.png"))
        links.append(os.path.join(rel, "inversion.npz"))
        s = res.summary()
        numbers.append((f"{image} {'accentuation' if cfg.seeded else 'inversion'}: activation "
                        "excitatory / inhibitory", f"{s['excitatory']['activation']:.3g} / "
                        f"{s['inhibitory']['activation']:.3g}", "the method works when the first exceeds the second"))
    text = ("For each maximally tense image, two images are optimised together: one towards its excitatory "
            "attribution map relu(S), one towards its inhibitory map relu(-S) (spatial cosdot at the attribution "
            "layer; on a vision transformer's token layer over the patch grid, class and register tokens left out). "
            "Inversions start from noise, accentuations from the image itself. The excitatory image should "
            "drive the feature higher than the inhibitory one.")
    return Section("+/- attribution inversions and accentuations of the top MTIs", text, figures=figures,
                   links=links, findings=[inversion_finding([res for _, (res, _) in runs])]), numbers


STAGE = register_module(
    __name__, InvertConfig, "+/- attribution inversion (or accentuation) of one image: what excites and what inhibits a feature")
