"""What the render engine's CPU numerics buy (:mod:`lucent_inhibit.core.numerics`): a batched render's step with
the model input in channels-last memory and float subnormals flushed, against the same render with neither
(peer: the engine as it was before, NCHW input, subnormals computed).

On the real embedded EfficientNet-Lite0: ``--channels`` channels of ``blocks_4_0_bn3_drop`` rendered in one
batch (:func:`lucent_inhibit.synthesis.channels.visualize_channels`, the microscope's render settings). Each of
the four variants renders ``--short`` and ``--long`` steps; the cost of a step is the difference over the extra
steps (setup and probes cancel), per image, in ms. The variants run interleaved, ``--reps`` times, fastest kept.
ratio = peer step / step with both (higher: faster).

Usage: python benchmarks/render_numerics.py [--channels 32] [--short 3] [--long 11] [--reps 2] [--threads 1]
Writes benchmarks/results/render_numerics.json.
"""
import argparse
import contextlib
import os
import sys
import time
import warnings

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from _common import write_result  # noqa: E402

LAYER = "blocks_4_0_bn3_drop"
VARIANTS = {"neither": (False, False), "channels_last": (True, False), "flushed": (False, True), "both": (True, True)}


def step_ms(model, channels, settings, short, long, cl, flush) -> float:
    """ms per image per render step, with channels-last input ``cl`` and flushed subnormals ``flush``."""
    from lucent_inhibit.core import rendering
    from lucent_inhibit.core.numerics import channels_last, subnormals_flushed
    from lucent_inhibit.synthesis.channels import visualize_channels

    rendering.channels_last = channels_last if cl else (lambda x: x)
    rendering.subnormals_flushed = subnormals_flushed if flush else contextlib.nullcontext
    try:
        took = []
        for steps in (short, long):
            t = time.perf_counter()
            visualize_channels(model, LAYER, channels, settings.replace(steps=steps))
            took.append(time.perf_counter() - t)
    finally:
        rendering.channels_last, rendering.subnormals_flushed = channels_last, subnormals_flushed
    return (took[1] - took[0]) / (long - short) / len(channels) * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, default in (("channels", 32), ("short", 3), ("long", 11), ("reps", 2), ("threads", 1)):
        ap.add_argument(f"--{name}", type=int, default=default)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    warnings.simplefilter("ignore")

    from lucent_inhibit import efficientnet_lite0
    from lucent_inhibit.core.settings import MICROSCOPE_RENDER

    model = efficientnet_lite0().eval()
    channels = list(range(a.channels))
    step_ms(model, channels[:2], MICROSCOPE_RENDER, 1, 2, True, True)  # warm-up
    runs = {name: [] for name in VARIANTS}
    for _ in range(a.reps):
        for name, (cl, flush) in VARIANTS.items():
            runs[name].append(step_ms(model, channels, MICROSCOPE_RENDER, a.short, a.long, cl, flush))
            print(f"{name}: {runs[name][-1]:.1f} ms per image-step", flush=True)
    best = {name: min(v) for name, v in runs.items()}
    ratio = best["neither"] / best["both"]
    details = {"channels": a.channels, "layer": LAYER, "render": MICROSCOPE_RENDER.describe(), "threads": a.threads,
               **{f"{name}_ms_per_image_step": v for name, v in best.items()},
               **{f"{name}_runs": [round(x, 2) for x in v] for name, v in runs.items()},
               "channels_last_alone": best["neither"] / best["channels_last"],
               "flushed_alone": best["neither"] / best["flushed"]}
    print(f"{a.channels} channels in one render: {best['neither']:.1f} ms per image-step before, {best['both']:.1f} "
          f"with both ({ratio:.2f}x; channels-last alone {details['channels_last_alone']:.2f}x, flushed alone "
          f"{details['flushed_alone']:.2f}x)")
    write_result("render_numerics", "the same batched render with NCHW input and subnormals computed (the engine "
                 "before core.numerics)", ratio, details, a.threads)


if __name__ == "__main__":
    main()
