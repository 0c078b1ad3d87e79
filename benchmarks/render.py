"""Render-loop cost of the tense objective and of feature accentuation, against named peers.

1. Seconds per ``render_vis`` step of ``objectives.tense`` (fast and exact) divided by Lucent's own
   ``objectives.channel`` at the same image size, model, parameterization and transforms (target: fast
   <= 2.0x). Feature: EfficientNet-Lite0 ``blocks_4_0_bn3_drop`` unit 5, attribution at
   ``blocks_4_0_bn2_act``; also a feature two blocks on (``blocks_5_0`` unit 0 at ``blocks_4_2``),
   where the gradient passes through ReLU6s and ``exact`` really double-backpropagates.
2. Seconds per step of ``accentuate`` (phase parameterization, box crops, seed regularizer at
   ``blocks_3_0``) against faccent's own ``render_vis`` (``fourier_phase`` seeded, ``box_crop_2`` +
   noise, ``accent_reg_layer``) at the same image size, number of crops per step and steps, when faccent
   is installed (``pip install --no-deps faccent``).

Each configuration runs ``REPEATS`` times, alternating; the fastest run of each is compared (on a
shared machine the minimum is the least disturbed). One torch thread: on the shared 2-core machines,
two OpenMP threads make these renders an order of magnitude slower.

Usage: python benchmarks/render.py [--size 128] [--steps 10] [--crops 4]
Writes benchmarks/results/render.json.
"""
import argparse
import contextlib
import io
import os
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import write_result  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from lucent.optvis import objectives as lobj  # noqa: E402
from lucent.optvis import param as lparam  # noqa: E402
from lucent.optvis import render  # noqa: E402

from lucent_inhibit import Feature, efficientnet_lite0, sample_crops  # noqa: E402
from lucent_inhibit.core.layers import hooks_restored  # noqa: E402
from lucent_inhibit.core.settings import RenderSettings  # noqa: E402
from lucent_inhibit.synthesis import objectives as O  # noqa: E402
from lucent_inhibit.synthesis.accentuation import accentuate  # noqa: E402

REPEATS = 3


def seconds_per_step(model, objective, size, steps):
    torch.manual_seed(0)
    with hooks_restored(model):
        t = time.perf_counter()
        render.render_vis(
            model, objective, param_f=lambda: lparam.image(size), thresholds=(steps,), show_image=False,
            progress=False, fixed_image_size=size,
        )
        return (time.perf_counter() - t) / steps


def faccent_seconds_per_step(model, seed, size, steps, crops, layer, unit, reg_layer):
    from faccent import objectives as fobj
    from faccent import param as fparam
    from faccent import render as frender
    from faccent import transform as ftransform

    torch.manual_seed(0)
    pz = fparam.fourier_phase(init_img=seed, img_size=(size, size), device="cpu")
    with contextlib.redirect_stdout(io.StringIO()):
        t = time.perf_counter()
        frender.render_vis(
            model, fobj.channel(layer, unit, batch=0), parameterizer=pz,
            transforms=[ftransform.box_crop_2(0.05, 0.99), ftransform.uniform_gaussian_noise()],
            nb_transforms=crops, out_thresholds=range(steps), inline_thresholds=[], progress=False,
            model_input_size=(size, size), model_input_range=(-2, 2), img_size=(size, size),
            accent_reg_layer=reg_layer, accent_reg_alpha=1.0,
        )
        return (time.perf_counter() - t) / steps


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--crops", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    model = efficientnet_lite0()
    feat, layer = Feature("blocks_4_0_bn3_drop", unit=5), "blocks_4_0_bn2_act"
    deep, deep_layer = Feature("blocks_5_0", unit=0), "blocks_4_2"
    configs = {
        "channel": lobj.channel("blocks_4_0_bn3_drop", 5),
        "tense_fast": O.tense(feat, layer, mode="fast"),
        "tense_exact": O.tense(feat, layer, mode="exact"),
        "channel_deep": lobj.channel("blocks_5_0", 0),
        "tense_fast_deep": O.tense(deep, deep_layer, mode="fast"),
        "tense_exact_deep": O.tense(deep, deep_layer, mode="exact"),
    }
    times = {k: [] for k in configs}
    seconds_per_step(model, configs["channel"], args.size, 2)  # warm-up
    for _ in range(REPEATS):
        for k, obj in configs.items():
            times[k].append(seconds_per_step(model, obj, args.size, args.steps))
    best = {k: min(v) for k, v in times.items()}
    details = {f"{k}_s_per_step": v for k, v in best.items()}
    ratio_fast = best["tense_fast"] / best["channel"]
    details["tense_fast_over_channel"] = ratio_fast
    details["tense_exact_over_channel"] = best["tense_exact"] / best["channel"]
    details["deep_tense_fast_over_channel"] = best["tense_fast_deep"] / best["channel_deep"]
    details["deep_tense_exact_over_channel"] = best["tense_exact_deep"] / best["channel_deep"]
    details["image_size"] = args.size
    details["steps_per_run"] = args.steps
    details["repeats"] = REPEATS
    print(f"tense fast / channel: {ratio_fast:.2f}x (target <= 2.0), exact: {details['tense_exact_over_channel']:.2f}x; "
          f"deep feature: fast {details['deep_tense_fast_over_channel']:.2f}x, exact {details['deep_tense_exact_over_channel']:.2f}x")

    # accentuation against faccent's own render
    seed = sample_crops(1, size=args.size, seed=0)[0]
    ours = []
    theirs = []
    faccent_note = None
    try:
        import faccent.render  # noqa: F401
    except Exception as exc:  # pragma: no cover - depends on the environment
        faccent_note = f"faccent not importable: {type(exc).__name__}: {exc}"
    for _ in range(REPEATS):
        torch.manual_seed(0)
        t = time.perf_counter()
        accentuate(model, seed, lobj.channel("blocks_4_0_bn3_drop", 5), reg_layer="blocks_3_0",
                   render=RenderSettings(steps=args.steps, seed=0), n_crops=args.crops)
        ours.append((time.perf_counter() - t) / args.steps)
        if faccent_note is None:
            m2 = efficientnet_lite0()  # faccent's hook_model clears every hook on the model it is given
            theirs.append(faccent_seconds_per_step(m2, seed, args.size, args.steps, args.crops,
                                                   "blocks_4_0_bn3_drop", 5, "blocks_3_0"))
    details["accentuate_s_per_step"] = min(ours)
    details["accentuate_crops_per_step"] = args.crops
    if theirs:
        details["faccent_render_vis_s_per_step"] = min(theirs)
        details["accentuate_over_faccent"] = min(ours) / min(theirs)
        print(f"accentuate / faccent render_vis: {details['accentuate_over_faccent']:.2f}x "
              f"({min(ours):.3f} vs {min(theirs):.3f} s/step, {args.crops} crops, {args.size} px)")
    else:
        details["faccent"] = faccent_note
        print(faccent_note)
    write_result("render", "lucent.optvis.objectives.channel in lucent.optvis.render.render_vis (same size, model, "
                 "param, transforms)", ratio_fast, details, 1)


if __name__ == "__main__":
    main()
