"""Benchmark: the batched feature-combination sweep against one render per angle and seed.

Both sides render the same (angle, seed) grid on the embedded EfficientNet-Lite0 with the same objective
(``objectives.feature_pair``), render settings, initial noise and axis scales, through the same engine
(``rendering.run_render``); the peer calls Lucent's ``render_vis`` once per (angle, seed) with a batch of
one, as a sweep without batching would.
Prints the speed-up and writes benchmarks/results/combinations.json.

Usage: python benchmarks/combinations.py [--angles 8] [--seeds 2] [--steps 8] [--size 48]
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import write_result  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lucent_inhibit import efficientnet_lite0, sample_crops  # noqa: E402
from lucent_inhibit.combinations import measure_pair, pair_statistics, sweep_combinations  # noqa: E402
from lucent_inhibit.combinations.scales import render_batch  # noqa: E402
from lucent_inhibit.core.settings import PassSettings, RenderSettings
from lucent_inhibit.synthesis.objectives import cosdot_value, feature_pair, pair_targets  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--angles", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = efficientnet_lite0()
    layer = "blocks_3_0_bn1_drop"
    st = pair_statistics(model, sample_crops(32, size=args.size, seed=0), layer, settings=PassSettings(progress=False))
    a, b, r = st.pick("anticorrelated")
    fa, fb = st.feature(a), st.feature(b)
    scale = (1.0, 1.0)  # the same fixed scales on both sides (the axis-scale render is not what is compared)
    render = RenderSettings(steps=args.steps, size=args.size, model_size=args.size, seed=0)

    t0 = time.perf_counter()
    res = sweep_combinations(model, fa, fb, n_angles=args.angles, n_seeds=args.seeds, chunk=args.angles * args.seeds,
                             scale=scale, render=render)
    t_batched = time.perf_counter() - t0

    t0 = time.perf_counter()
    scores = []
    for theta in res.theta.tolist():
        for s in range(args.seeds):
            obj = feature_pair(fa, fb, theta=theta, power=4.0, scale=scale)
            img = render_batch(model, obj, [render.seed + s], render, "one render per angle and seed").images
            y = measure_pair(model, img, fa, fb, size=args.size) / torch.tensor(scale)
            scores.append(float(cosdot_value(y, pair_targets(theta), 4.0)[0]))
    t_single = time.perf_counter() - t0

    ratio = t_single / t_batched
    n = args.angles * args.seeds
    print(f"batched sweep: {t_batched:.2f} s; one render per angle and seed: {t_single:.2f} s; speed-up {ratio:.2f}x")
    details = {
        "renders": n,
        "angles": args.angles,
        "seeds": args.seeds,
        "steps": args.steps,
        "image_size": args.size,
        "layer": layer,
        "pair": f"units {a}, {b} (dataset r = {r:.3f})",
        "batched_seconds": t_batched,
        "single_seconds": t_single,
        "mean_C_batched": float(res.score.mean()),
        "mean_C_single": float(np.mean(scores)),
        "threads": args.threads,
    }
    write_result("combinations", "one render_vis call per (angle, seed), batch of 1, same steps/size/objective",
                 ratio, details, args.threads)


if __name__ == "__main__":
    main()
