"""Throughput of ``lucent_inhibit.attribute`` against captum's ``LayerGradientXActivation``.

Both compute gradient x activation at the same 5 layers of the real embedded EfficientNet-Lite0, for the
same batches, in one forward and one backward pass (captum accepts a list of layers). Two features:

- an intermediate one (``blocks_4_0_bn3_drop`` unit 5): captum's ``forward_func`` must return the feature,
  so it runs the whole network and reads the feature layer with a hook (the natural captum usage);
  ``attribute`` stops the forward pass at the feature layer.
- a logit (``classifier`` unit 285): both run the whole network; captum uses ``target=285``.

Each side is timed several times, alternating; the fastest run of each is compared (on a shared machine
the minimum is the least disturbed). ratio = our images/s / captum's images/s for the slower of the two
features (both ratios are in details). Also checks that both give the same scores.

Usage: python benchmarks/attribution.py [--batch-size 8] [--size 224] [--repeats 3] [--threads 1]
Writes benchmarks/results/attribution.json.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import captum_runner, time_pair, write_result  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

CASES = {
    "intermediate": (
        ("blocks_4_0_bn3_drop", 5),
        ["blocks_1_1", "blocks_2_0", "blocks_2_1", "blocks_3_0", "blocks_3_2"],
    ),
    "logit": (("classifier", 285), ["blocks_2_1", "blocks_3_2", "blocks_4_2", "blocks_5_3", "blocks_6_0"]),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    from lucent_inhibit import Feature, attribute, efficientnet_lite0, sample_crops
    from lucent_inhibit.core.layers import get_layer
    from lucent_inhibit.core.preparation import preprocess_fn

    model = efficientnet_lite0()
    images = torch.stack(list(sample_crops(a.batch_size, size=a.size, seed=0)))
    x_norm = preprocess_fn(model)(images)
    details = {"batch_size": a.batch_size, "size": a.size, "threads": a.threads, "repeats": a.repeats}
    ratios = {}
    for case, ((layer, unit), names) in CASES.items():
        feat = Feature(layer, unit=unit)
        modules = [get_layer(model, n) for n in names]
        run_captum = captum_runner(model, feat, modules, x_norm, "classifier")

        def run_ours():
            return attribute(model, images, feat, names)

        ours, theirs = run_ours(), run_captum()  # warm-up, and the agreement check
        worst = 0.0
        for n, t in zip(names, theirs):
            t = t.detach()
            worst = max(worst, float((ours.scores[n] - t).abs().max() / t.abs().max()))
        t_ours, t_captum = time_pair(run_ours, run_captum, a.repeats)
        ratio = min(t_captum) / min(t_ours)
        ratios[case] = ratio
        details[f"{case}_feature"] = feat.name
        details[f"{case}_layers"] = ", ".join(names)
        details[f"{case}_ours_img_per_s"] = a.batch_size / min(t_ours)
        details[f"{case}_captum_img_per_s"] = a.batch_size / min(t_captum)
        details[f"{case}_ratio"] = ratio
        details[f"{case}_max_rel_diff"] = worst
        print(f"{case:12s} {feat.name}: ours {a.batch_size / min(t_ours):.2f} img/s, captum "
              f"{a.batch_size / min(t_captum):.2f} img/s: ratio {ratio:.2f}x (max rel. score diff {worst:.1e})",
              flush=True)
    write_result("attribution", "captum LayerGradientXActivation on the same 5 layers (one pass), same model, batch, "
                 "threads; the lower of the intermediate and the logit feature's ratios", min(ratios.values()), details,
                 a.threads)


if __name__ == "__main__":
    main()
