"""Throughput of ``lucent_inhibit.attribute`` on a vision transformer's token layers against captum's
``LayerGradientXActivation``.

Both compute gradient x activation at the same 4 token layers (B, T, C) of timm's ViT-Ti/16
(``vit_tiny_patch16_224``, random weights: no pretrained weights can be fetched here; the timing does not
depend on the weights) for the same batch, in one forward and one backward pass (captum accepts a list of
layers). Two features:

- an intermediate one (``blocks_11`` unit 5 at the mean over the patch tokens): captum's ``forward_func``
  must return the feature, so it runs the whole network and reads the feature layer with a hook (the
  natural captum usage); ``attribute`` stops the forward pass at the feature layer.
- a logit (``head`` unit 285): both run the whole network; captum uses ``target=285``.

Each side is timed ``--repeats`` times, alternating; the fastest run of each is compared (on a shared
machine the minimum is the least disturbed) and the spread (slowest / fastest) of each side is reported.
ratio = our images/s / captum's images/s for the slower of the two features (both ratios are in details).
Also checks that both give the same scores (max over layers of max |ours - captum| / max |captum|).

Usage: python benchmarks/attribution_vit.py [--batch-size 8] [--repeats 3] [--threads 1]
Writes benchmarks/results/attribution_vit.json.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import captum_runner, time_pair, write_result  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

SPEC = "timm:vit_tiny_patch16_224"
LAYERS = ["blocks_2", "blocks_5", "blocks_8_mlp_fc1", "blocks_10"]
CASES = {"intermediate": ("blocks_11", 5, "mean"), "logit": ("head", 285, None)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    import lucent_inhibit as li
    from lucent_inhibit import Feature, attribute
    from lucent_inhibit.core.layers import get_layer
    from lucent_inhibit.core.preparation import preprocess_fn

    torch.manual_seed(0)
    model = li.load_model(SPEC, weights="none")
    images = torch.rand(a.batch_size, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    x_norm = preprocess_fn(model)(images)
    modules = [get_layer(model, n) for n in LAYERS]
    details = {"model": SPEC + " (random weights)", "batch_size": a.batch_size, "size": 224, "threads": a.threads,
               "repeats": a.repeats, "layers": ", ".join(LAYERS)}
    ratios = {}
    for case, (layer, unit, position) in CASES.items():
        feat = Feature(layer, unit=unit) if position is None else Feature(layer, unit=unit, position=position)
        run_captum = captum_runner(model, feat, modules, x_norm, "head")

        def run_ours():
            return attribute(model, images, feat, LAYERS)

        ours, theirs = run_ours(), run_captum()  # warm-up, and the agreement check
        worst = max(float((ours.scores[n] - t.detach()).abs().max() / t.detach().abs().max())
                    for n, t in zip(LAYERS, theirs))
        t_ours, t_captum = time_pair(run_ours, run_captum, a.repeats)
        ratio = min(t_captum) / min(t_ours)
        ratios[case] = ratio
        details.update({f"{case}_feature": feat.name, f"{case}_ratio": ratio, f"{case}_max_rel_diff": worst,
                        f"{case}_ours_img_per_s": a.batch_size / min(t_ours),
                        f"{case}_captum_img_per_s": a.batch_size / min(t_captum),
                        f"{case}_ours_times_s": t_ours, f"{case}_captum_times_s": t_captum,
                        f"{case}_ours_spread": max(t_ours) / min(t_ours),
                        f"{case}_captum_spread": max(t_captum) / min(t_captum)})
        print(f"{case:12s} {feat.name}: ours {a.batch_size / min(t_ours):.2f} img/s (spread "
              f"{max(t_ours) / min(t_ours):.2f}), captum {a.batch_size / min(t_captum):.2f} img/s (spread "
              f"{max(t_captum) / min(t_captum):.2f}): ratio {ratio:.2f}x (max rel. score diff {worst:.1e})", flush=True)
    write_result("attribution_vit", "captum LayerGradientXActivation on the same 4 ViT token layers (one pass), same "
                 "model, batch, threads; the lower of the intermediate and the logit feature's ratios",
                 min(ratios.values()), details, a.threads)


if __name__ == "__main__":
    main()
