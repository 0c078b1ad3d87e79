"""The main job: every method of the papers on one model, written as a browsable report.

:func:`run_demo` runs, with tqdm progress for every stage, the completeness study, a scan with its
MEI/MII/MTI figures, +/- inversions and accentuations of the top MTIs, a synthesised maximally tense
image, an attribution atlas (PNG and interactive HTML), one feature-combination plot and the
superposition toy figure, then writes ``index.html`` that links every figure with a paragraph on what
it shows and a table of the numbers measured in the run.

The report is built in a temporary folder beside ``out`` and moved into place only when every stage
succeeded, so a failed run never leaves a half-written report.
"""
from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Dict, List, Optional, Tuple


@dataclass
class Section:
    """One report entry: a title, files (figures are shown, others linked) and what they show."""

    title: str
    text: str
    figures: List[str] = field(default_factory=list)
    links: List[str] = field(default_factory=list)


@dataclass
class Report:
    """Sections plus a table of measured numbers ``(name, value, note)``."""

    title: str
    intro: str
    sections: List[Section] = field(default_factory=list)
    numbers: List[Tuple[str, str, str]] = field(default_factory=list)
    settings: Dict[str, str] = field(default_factory=dict)

    def add_number(self, name: str, value, note: str = "") -> None:
        if isinstance(value, float):
            value = f"{value:.4g}"
        self.numbers.append((name, str(value), note))

    def to_html(self) -> str:
        e = html.escape
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{e(self.title)}</title>",
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
            "img{max-width:100%;border:1px solid #ddd;margin:.5em 0}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}h2{margin-top:2em}"
            "nav a{margin-right:1em}</style>",
            "</head><body>",
            f"<h1>{e(self.title)}</h1>",
            f"<p>{e(self.intro)}</p>",
            "<nav>" + "".join(f'<a href="#s{i}">{e(s.title)}</a>' for i, s in enumerate(self.sections)) + "</nav>",
        ]
        if self.settings:
            parts.append("<h2>Settings</h2><table>")
            parts += [f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in self.settings.items()]
            parts.append("</table>")
        for i, s in enumerate(self.sections):
            parts.append(f'<h2 id="s{i}">{e(s.title)}</h2>')
            parts.append(f"<p>{e(s.text)}</p>")
            for fig in s.figures:
                parts.append(f'<a href="{e(fig)}"><img src="{e(fig)}" alt="{e(s.title)}"></a>')
            if s.links:
                parts.append(
                    "<p>Files: " + ", ".join(f'<a href="{e(l)}">{e(os.path.basename(l))}</a>' for l in s.links) + "</p>"
                )
        parts.append('<h2 id="numbers">Numbers measured in this run</h2><table>')
        parts.append("<tr><th>quantity</th><th>value</th><th>what it means</th></tr>")
        parts += [f"<tr><td>{e(n)}</td><td>{e(v)}</td><td>{e(note)}</td></tr>" for n, v, note in self.numbers]
        parts.append("</table></body></html>")
        return "\n".join(parts)

    def write(self, folder: str) -> str:
        path = os.path.join(folder, "index.html")
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_html())
        with open(os.path.join(folder, "numbers.json"), "w") as f:
            json.dump({n: v for n, v, _ in self.numbers}, f, indent=1)
        return path

    def missing_files(self, folder: str) -> List[str]:
        """Files the page refers to that do not exist under ``folder``."""
        refs = [p for s in self.sections for p in s.figures + s.links]
        return [p for p in refs if not os.path.exists(os.path.join(folder, p))]


class StagingDir:
    """Build output in a temporary sibling folder; move it onto ``out`` only on success.

    On failure the temporary folder is removed and ``out`` is left as it was.
    """

    def __init__(self, out: str):
        self.out = os.path.abspath(out)
        self.tmp: Optional[str] = None

    def __enter__(self) -> str:
        parent = os.path.dirname(self.out) or "."
        os.makedirs(parent, exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix=".partial-" + os.path.basename(self.out) + "-", dir=parent)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        if os.path.exists(self.out):
            old = self.out + f".old-{int(time.time())}"
            os.replace(self.out, old)
            os.replace(self.tmp, self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.out)
        return False


# ------------------------------------------------------------------------------------------------
# the main job
# ------------------------------------------------------------------------------------------------
class DemoInputError(ValueError):
    """The demo was pointed at something that does not exist or cannot be used (nothing was written)."""


@dataclass
class DemoConfig:
    """Sizes of each stage of :func:`run_demo`. ``DemoConfig.quick()`` shrinks everything for tests."""

    n_images: int = 256
    size: int = 224
    batch_size: int = 32
    completeness_features: int = 12
    completeness_images: int = 64
    top_mtis: int = 3
    inversion_steps: int = 96
    inversion_size: int = 128
    tense_steps: int = 96
    tense_size: int = 128
    atlas_select: int = 96
    atlas_steps: int = 48
    atlas_icon_size: int = 128
    combo_angles: int = 30
    combo_seeds: int = 3
    combo_steps: int = 64
    combo_size: int = 96
    combo_images: int = 128
    toy_steps: int = 3000
    toy_seeds: int = 3

    @classmethod
    def quick(cls) -> "DemoConfig":
        return cls(
            n_images=24, size=128, batch_size=12, completeness_features=2, completeness_images=12, top_mtis=1,
            inversion_steps=8, inversion_size=64, tense_steps=8, tense_size=64, atlas_select=24, atlas_steps=4,
            atlas_icon_size=32, combo_angles=4, combo_seeds=1, combo_steps=4, combo_size=48, combo_images=16,
            toy_steps=150, toy_seeds=1,
        )


def default_attribution_layer(model, feature_layer: str) -> str:
    """The last activation (ReLU-like) module that runs before ``feature_layer`` in the forward pass.

    On the embedded model and the default feature this is the ReLU6 output inside the same block,
    where completeness holds (SPEC section 3: attribution far from the feature does not add up).
    """
    import torch

    from .attribution import _StopForward
    from .hooks import layer_table as _layer_table

    table = _layer_table(model)
    if feature_layer not in table:
        from .models import unknown_layer_message

        raise ValueError(unknown_layer_message(feature_layer, list(table)))
    order: List[str] = []
    handles = []
    acts = ("ReLU", "ReLU6", "GELU", "SiLU", "Hardswish", "LeakyReLU", "ELU", "Tanh", "Sigmoid", "Mish")

    def make(n):
        def hook(m, i, o):
            order.append(n)
            if n == feature_layer:
                raise _StopForward

        return hook

    for n, m in table.items():
        handles.append(m.register_forward_hook(make(n)))
    try:
        from .attribution import model_device
        from .models import preprocess_fn

        x = torch.rand(1, 3, 224, 224, device=model_device(model))
        with torch.no_grad():
            model(preprocess_fn(model)(x))
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    before = order[:-1] if order and order[-1] == feature_layer else order
    for n in reversed(before):
        if type(table[n]).__name__ in acts or n.endswith("_act"):
            return n
    if before:
        return before[-1]
    raise ValueError(f"no layer runs before feature layer {feature_layer!r}; pick a later feature layer")


def pick_unit(model, dataset, layer: str, n: int = 32, batch_size: int = 16) -> int:
    """The unit of ``layer`` (at the centre) whose activation varies most over the first ``n`` images."""
    import torch

    from .attribution import capture, model_device
    from .models import preprocess_fn

    vals = []
    for start in range(0, min(n, len(dataset)), batch_size):
        x = torch.stack([dataset[i] for i in range(start, min(start + batch_size, n, len(dataset)))])
        x = preprocess_fn(model)(x.to(model_device(model)))
        with torch.no_grad():
            a = capture(model, x, [layer], stop_at=layer)[layer]
        vals.append(a[:, :, a.shape[2] // 2, a.shape[3] // 2] if a.dim() == 4 else a)
    return int(torch.cat(vals).std(0).argmax())


def run_demo(
    out: str = "report",
    model: str = "efficientnet_lite0",
    layer: Optional[str] = None,
    unit: Optional[int] = None,
    attribution_layer: Optional[str] = None,
    images: Optional[str] = None,
    device: str = "cpu",
    config: Optional[DemoConfig] = None,
    progress: bool = True,
) -> Report:
    """Run every stage on one model and write ``out/index.html`` (see the module docstring).

    Args:
        out: report folder; replaced only when the whole run succeeds.
        model: model spec (:func:`lucent_inhibit.load_model`), default the embedded EfficientNet-Lite0.
        layer, unit: the feature (a pre-activation layer and a channel). Defaults: ``blocks_4_0_bn3_drop``
            on the embedded model (else required) and the unit with the most varied activation.
        attribution_layer: where the feature is attributed; default :func:`default_attribution_layer`.
        images: folder of the user's images; default the bundled sample crops.
        device: torch device.
        config: stage sizes (:class:`DemoConfig`).

    Returns:
        The :class:`Report` written.
    """
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from .data import ImageFolder, sample_crops
    from .models import DEFAULT_LAYER, layers as model_layers, load_model, unknown_layer_message

    cfg = config or DemoConfig()
    torch.manual_seed(0)
    np.random.seed(0)  # Lucent's augmentations draw from numpy's global generator: a rerun gives the same report
    # -- validate everything before any heavy work: bad input is one clear DemoInputError ----------
    try:
        dataset = ImageFolder(images, size=cfg.size) if images else sample_crops(cfg.n_images, size=cfg.size, seed=0)
        net = load_model(model).to(device)
        names = model_layers(net)
        if layer is None:
            if model not in ("efficientnet_lite0", "embedded", "default"):
                raise ValueError(f"--layer is required for model {model!r} (a pre-activation layer; see lucent_inhibit.preactivation_layers)")
            layer = DEFAULT_LAYER
        if layer not in names:
            raise ValueError(unknown_layer_message(layer, names))
        if attribution_layer is not None and attribution_layer not in names and attribution_layer != "input":
            raise ValueError(unknown_layer_message(attribution_layer, names))
        attr_layer = attribution_layer or default_attribution_layer(net, layer)
        # the atlas needs many points per image: one layer further back, where the feature's receptive
        # field spans several positions (on the default feature: the ReLU6 before the 5x5 depthwise conv)
        atlas_layer = default_attribution_layer(net, attr_layer) if attr_layer != "input" else attr_layer
        if unit is None:
            unit = pick_unit(net, dataset, layer)
        from .attribution import Feature, measure

        feature = Feature(layer, unit=unit)
        measure(net, dataset[0][None], feature)  # unit / position against the layer's real shape
    except (ValueError, FileNotFoundError, ImportError) as exc:
        raise DemoInputError(str(exc)) from exc
    report = Report(
        "lucent-inhibit report",
        "Inhibition in a vision model, seen and measured: which images excite the feature, which inhibit it, and "
        "which do both at once (maximally tense images, MTIs), what in an image excites or inhibits it, and which "
        "feature combinations the model can represent.",
    )
    report.settings = {
        "model": model,
        "feature": feature.name,
        "attribution layer": attr_layer,
        "images": images or f"{len(dataset)} bundled sample crops ({cfg.size} px)",
        "device": device,
    }
    stages = tqdm(total=7, desc="report stages", disable=not progress)
    t_start = time.time()
    with StagingDir(out) as tmp:
        _stage_completeness(report, tmp, net, dataset, feature, attr_layer, cfg, progress)
        stages.update()
        result = _stage_scan(report, tmp, net, dataset, feature, attr_layer, cfg, progress, extra=[atlas_layer])
        stages.update()
        _stage_inversions(report, tmp, net, dataset, result, feature, attr_layer, cfg, progress)
        stages.update()
        _stage_tense(report, tmp, net, result, feature, attr_layer, cfg, progress)
        stages.update()
        _stage_atlas(report, tmp, net, dataset, result, feature, atlas_layer, cfg, progress)
        stages.update()
        _stage_combinations(report, tmp, net, dataset, feature, cfg, progress)
        stages.update()
        _stage_toy(report, tmp, cfg, progress)
        stages.update()
        report.add_number("total run time (s)", round(time.time() - t_start, 1), "all seven stages")
        report.write(tmp)
        missing = report.missing_files(tmp)
        if missing:
            raise RuntimeError(f"report refers to files that were not written: {missing}")
    stages.close()
    return report


def _stage_completeness(report, tmp, net, dataset, feature, attr_layer, cfg, progress):
    import numpy as np

    from .completeness import completeness, plot_completeness, random_logits
    from .models import block_outputs, layers as model_layers, preactivation_layers

    sub = _subset(dataset, cfg.completeness_images)
    names = model_layers(net)
    depth_layers = block_outputs(net) + (["conv_head"] if "conv_head" in names else [])
    if not depth_layers:
        pre = preactivation_layers(net)
        depth_layers = [pre[i] for i in np.linspace(0, len(pre) - 2, min(8, len(pre) - 1)).astype(int)]
    head = names[-1]
    logits = random_logits(cfg.completeness_features, seed=0, layer=head, n_classes=_n_outputs(net))
    res = completeness(net, sub, logits, depth_layers, batch_size=cfg.batch_size, progress=progress)
    res.save(os.path.join(tmp, "completeness.npz"))
    plot_completeness(res, os.path.join(tmp, "completeness.png"), title="Completeness: random logits")
    mine = completeness(net, sub, [feature], [attr_layer], batch_size=cfg.batch_size, progress=progress)
    r_feature = float(mine.mean_r()[0])
    report.sections.append(
        Section(
            "1. Attribution and its completeness",
            "Pearson correlation, over the images, between a feature and its total gradient-x-activation attribution "
            "E at each layer (one line per random logit, the mean in bold). Where r is near 1 the attribution adds up "
            "to the feature, and rankings by positive and negative attribution mean what they say; where it is low "
            "they do not. The scan below attributes the feature at a layer close to it.",
            figures=["completeness.png"],
            links=["completeness.npz"],
        )
    )
    mean_r = res.mean_r()
    for l, r in zip(res.layers, mean_r):
        report.add_number(f"completeness r, random logits, {l}", float(r), "mean over logits")
    report.add_number(f"completeness r, {feature.name} at {attr_layer}", r_feature, "the pair used below")


def _n_outputs(net) -> int:
    from .attribution import model_device
    from .models import preprocess_fn
    import torch

    with torch.no_grad():
        return int(net(preprocess_fn(net)(torch.rand(1, 3, 224, 224, device=model_device(net)))).shape[1])


class _Subset(Sequence):
    """The first ``n`` items of a dataset, keeping its item descriptions."""

    def __init__(self, ds, n):
        self.ds, self.n = ds, min(n, len(ds))

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for {self.n} images")
        return self.ds[i % self.n]

    def describe(self, i):
        from .data import describe_item

        return describe_item(self.ds, i)

    @property
    def identity(self):
        from .data import dataset_identity

        return f"first {self.n} of {dataset_identity(self.ds)}"


def _subset(dataset, n):
    return _Subset(dataset, n)


def _stage_scan(report, tmp, net, dataset, feature, attr_layer, cfg, progress, extra=()):
    import numpy as np

    from .plots import save_scan_figures
    from .scan import scan

    layers = [attr_layer] + [l for l in extra if l != attr_layer]
    result = scan(net, dataset, feature, layers, batch_size=cfg.batch_size, out=os.path.join(tmp, "scan"),
                  progress=progress)
    result.save(os.path.join(tmp, "scan.npz"))
    figs = save_scan_figures(result, dataset, os.path.join(tmp, "scan_figures"), k=8, layer=attr_layer)
    rel = {k: os.path.relpath(v, tmp) for k, v in figs.items()}
    k = min(10, len(result))
    mei = result.activation[result.row(int(result.meis(1)[0]))] if len(result) else float("nan")
    mti_rows = [result.row(int(i)) for i in result.mtis(k, layer=attr_layer)]
    p, n = result.P(attr_layer), result.N(attr_layer)
    report.sections.append(
        Section(
            "2. Maximally exciting, inhibiting and tense images",
            "Each dot is an image: its excitatory attribution P (x) against its inhibitory attribution N (y), coloured "
            "by the feature's activation (red positive, blue negative). Maximally tense images (ringed) sit far from "
            "the origin along the diagonal with activation near zero: excitation and inhibition cancel. The grids show "
            "the top MEIs, MIIs and MTIs with their activation, P and N; the overlays show where in an MTI the feature "
            "is excited (red) and inhibited (blue).",
            figures=sorted(rel.values()),
            links=["scan.npz"],
        )
    )
    report.add_number("images scanned", len(result))
    report.add_number("top MEI activation", float(mei))
    report.add_number(f"mean activation of the top-{k} MTIs", float(np.mean(result.activation[mti_rows])),
                      "near zero relative to the MEI's")
    report.add_number(f"top-{k} MTIs: median P percentile", float(np.median([(p < p[r]).mean() * 100 for r in mti_rows])),
                      "percentile of P among all images")
    report.add_number(f"top-{k} MTIs: median N percentile", float(np.median([(n < n[r]).mean() * 100 for r in mti_rows])),
                      "percentile of N among all images")
    for l, r in result.completeness.items():
        report.add_number(f"scan completeness r at {l}", float(r))
    return result


def _stage_inversions(report, tmp, net, dataset, result, feature, attr_layer, cfg, progress):
    from .accentuation import inversions, plot_inversions

    figs, links = [], []
    for rank, idx in enumerate(result.mtis(cfg.top_mtis, layer=attr_layer)):
        image = dataset[int(idx)]
        for seeded in (False, True):
            kind = "accentuation" if seeded else "inversion"
            inv = inversions(net, image, feature, attr_layer, seeded=seeded, steps=cfg.inversion_steps,
                             size=cfg.inversion_size, progress=progress)
            name = f"mti{rank + 1}_{kind}"
            inv.save(os.path.join(tmp, name + ".npz"))
            plot_inversions(inv, os.path.join(tmp, name + ".png"))
            figs.append(name + ".png")
            links.append(name + ".npz")
            s = inv.summary()
            report.add_number(f"MTI {rank + 1} {kind}: activation excitatory / inhibitory",
                              f"{s['excitatory']['activation']:.3g} / {s['inhibitory']['activation']:.3g}",
                              "the method works when the first exceeds the second")
    report.sections.append(
        Section(
            "3. +/- attribution inversions and accentuations of the top MTIs",
            "For each maximally tense image, two images are optimised together: one towards its excitatory attribution "
            "map relu(S), one towards its inhibitory map relu(-S) (spatial cosdot at the attribution layer). Inversions "
            "start from noise, accentuations from the image itself. The excitatory image should drive the feature "
            "higher than the inhibitory one.",
            figures=figs,
            links=links,
        )
    )


def _stage_tense(report, tmp, net, result, feature, attr_layer, cfg, progress):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .accentuation import tense_image

    res = tense_image(net, feature, attr_layer, steps=cfg.tense_steps, size=cfg.tense_size, progress=progress)
    res.save(os.path.join(tmp, "tense.npz"))
    t = res.tension[:, 0].numpy()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    axes[0].imshow(res.images[0].permute(1, 2, 0).numpy())
    axes[0].set_axis_off()
    axes[0].set_title("synthesised maximally tense image")
    steps = res.steps.numpy()
    axes[1].plot(steps, res.positive[:, 0].numpy(), "r-", label="P (excitation)")
    axes[1].plot(steps, res.negative[:, 0].numpy(), "b-", label="N (inhibition)")
    axes[1].plot(steps, res.activation[:, 0].numpy(), "k--", label="feature activation")
    axes[1].axhline(float(result.activation.max()), color="grey", lw=0.8, ls=":", label="top MEI activation")
    axes[1].set_xlabel("step")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(tmp, "tense.png"), dpi=110)
    plt.close(fig)
    report.sections.append(
        Section(
            "4. A synthesised maximally tense image",
            "The tense objective rewards min(P, N) of the rendered image, so the render loop raises excitation and "
            "inhibition together while they keep cancelling: the feature stays far below what its maximally exciting "
            "images reach.",
            figures=["tense.png"],
            links=["tense.npz"],
        )
    )
    report.add_number("tense synthesis: min(P, N) start -> end", f"{t[0]:.3g} -> {t[-1]:.3g}")
    report.add_number("tense synthesis: final activation", float(res.activation[-1, 0]),
                      f"top MEI activation in the scan: {float(result.activation.max()):.3g}")


def _stage_atlas(report, tmp, net, dataset, result, feature, attr_layer, cfg, progress):
    from .atlas import build_atlas, plot_atlas, select_images, write_atlas_html

    k = cfg.atlas_select
    sel = select_images(result, feature, attr_layer, top_abs=k, top_activation=k // 2, bottom_activation=k // 2,
                        top_tension=k // 2)
    atlas = build_atlas(net, dataset, feature, attr_layer, sel, mode="position", steps=cfg.atlas_steps,
                        icon_size=cfg.atlas_icon_size, icon_target="positions", progress=progress)
    atlas.save(os.path.join(tmp, "atlas.npz"))
    plot_atlas(atlas, os.path.join(tmp, "atlas.png"))
    write_atlas_html(atlas, os.path.join(tmp, "atlas.html"))
    s = atlas.activation_by_sign()
    report.sections.append(
        Section(
            "5. Attribution atlas",
            "The attribution vectors of many images (one per position of the feature's receptive field) laid out by "
            "UMAP and averaged on a grid; each cell's icon is a feature visualization of its averaged attribution, "
            "framed red when the cell's net attribution excites the feature and blue when it inhibits it. The right "
            "panel shows the points coloured by activation. Open the interactive atlas to see the images in each cell.",
            figures=["atlas.png"],
            links=["atlas.html", "atlas.npz"],
        )
    )
    report.add_number("atlas layer; completeness r of the feature there", f"{attr_layer}; {result.completeness.get(attr_layer, float('nan')):.3f}")
    report.add_number("atlas icons", int(s["n_positive"] + s["n_negative"]))
    report.add_number("atlas: mean icon activation, net-positive cells", s["positive_mean"])
    report.add_number("atlas: mean icon activation, net-negative cells", s["negative_mean"],
                      "should be below the net-positive cells'")


def _stage_combinations(report, tmp, net, dataset, feature, cfg, progress):
    from .attribution import Feature
    from .combinations import pair_cloud, pair_statistics, plot, sweep

    sub = _subset(dataset, cfg.combo_images)
    stats = pair_statistics(net, sub, feature.layer, batch_size=cfg.batch_size, progress=progress)
    ua, ub, r = stats.pick("anticorrelated")
    fa, fb = Feature(feature.layer, unit=ua), Feature(feature.layer, unit=ub)
    res = sweep(net, fa, fb, n_angles=cfg.combo_angles, n_seeds=cfg.combo_seeds, steps=cfg.combo_steps,
                image_size=cfg.combo_size, scale_steps=max(cfg.combo_steps, 64), fixed_image_size=cfg.combo_size,
                progress=progress)
    res.save(os.path.join(tmp, "combinations.npz"))
    cloud = pair_cloud(net, sub, fa, fb, batch_size=cfg.batch_size)
    plot(res, cloud=cloud, path=os.path.join(tmp, "combinations.png"))
    report.sections.append(
        Section(
            "6. Feature-combination plot",
            f"The most anti-correlated pair of units in {feature.layer} (units {ua} and {ub}, r = {r:.2f} over the "
            "images). Each feature's axis is scaled by its own unconstrained maximum; for each angle the render loop "
            "maximises the cosdot of the pair towards that direction. The red loop is the mean cosdot reached per "
            "angle; where it collapses the model cannot produce that combination. Grey: the dataset's activations.",
            figures=["combinations.png"],
            links=["combinations.npz"],
        )
    )
    report.add_number("combination pair (units, r)", f"{ua}, {ub}, r={r:.3f}")


def _stage_toy(report, tmp, cfg, progress):
    from .toy import ToyConfig, analyze, inhibition_model, plot_superposition, train

    tr = train(ToyConfig(), steps=cfg.toy_steps, seeds=tuple(range(cfg.toy_seeds)), progress=progress)
    tr.save(os.path.join(tmp, "toy_abs.npz"))
    inhib = inhibition_model()
    a_sup, a_inh = analyze(tr.model), analyze(inhib)
    plot_superposition(tr.model, inhib, path=os.path.join(tmp, "superposition.png"), analyses=(a_sup, a_inh))
    summ = tr.summary()
    report.sections.append(
        Section(
            "7. Superposition: interference looks like inhibition",
            "A toy model that must store more features than it has neurons (absolute value of sparse inputs, two ReLU "
            "units per feature needed) puts them in superposition. Inputs with two active features produce large "
            "positive and negative attributions that cancel, the MTI motif, through interference alone; next to it, a "
            "model where the same motif comes from a genuine inhibition mechanism. Tension alone cannot tell them apart.",
            figures=["superposition.png"],
            links=["toy_abs.npz"],
        )
    )
    report.add_number("toy: weighted loss / all-zero predictor's loss", summ["loss_ratio"], "well below 1: it reconstructs |x|")
    report.add_number("toy: features represented (of n)", int(a_sup.represented.sum()),
                      f"m/2 = {tr.model.config.m // 2} would fit without sharing")
    report.add_number("toy: mean tension, one-feature inputs", a_sup.mean_tension_one)
    report.add_number("toy: mean tension, two-feature inputs", a_sup.mean_tension_two, "higher: interference")
