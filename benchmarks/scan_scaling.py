"""Scan cost against dataset size: per-image time linear, peak memory flat (n = 500, 2,000, 8,000 at 64 px).

Each size runs in a fresh subprocess (one torch thread): a warm-up scan of 64 images, then ``scan`` of ``n``
lazily built 64-px images (no dataset held in memory) on the embedded EfficientNet-Lite0, feature
blocks_4_0_bn3_drop unit 5 attributed at blocks_4_0_bn2_act, in memory (no --out). Measured: wall time per
image and the growth of peak resident memory during the scan (kernel peak mark reset before it). Peer: the
same scan of the smallest n. Ratio = per-image time at the smallest n / per-image time at the largest
(1.0 = linear; the target is within 15%); the details give every size's numbers and the memory growth ratio.

Usage: python benchmarks/scan_scaling.py [--sizes 500 2000 8000] [--batch-size 32]
Writes benchmarks/results/scan_scaling.json.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from _common import LazyImages, proc_status, reset_peak, write_result  # noqa: E402

from lucent_inhibit.core.settings import PassSettings


def child(n: int, batch_size: int) -> dict:
    import torch

    import lucent_inhibit as li

    torch.set_num_threads(1)
    model = li.efficientnet_lite0()
    feature, layers = li.Feature("blocks_4_0_bn3_drop", unit=5), ["blocks_4_0_bn2_act"]
    li.scan(model, LazyImages(64), feature, layers, settings=PassSettings(batch_size=batch_size, progress=False))  # warm-up
    before, reset = proc_status("VmRSS"), reset_peak()
    t0 = time.perf_counter()
    li.scan(model, LazyImages(n), feature, layers, settings=PassSettings(batch_size=batch_size, progress=False))
    seconds = time.perf_counter() - t0
    peak = proc_status("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"n": n, "seconds": seconds, "ms_per_image": 1000 * seconds / n,
            "peak_growth_mib": (peak - before) / 2 ** 20, "peak_reset": reset}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 8000])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.batch_size)))
        return
    rows = []
    for n in sorted(args.sizes):
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--batch-size", str(args.batch_size)],
                             capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"n={n}: {rows[-1]['ms_per_image']:.2f} ms/image, peak growth {rows[-1]['peak_growth_mib']:.1f} MiB",
              flush=True)
    small, large = rows[0], rows[-1]
    details = {"batch_size": args.batch_size, "image_size": 64, "torch_threads": 1}
    for r in rows:
        details[f"n{r['n']}_ms_per_image"] = round(r["ms_per_image"], 3)
        details[f"n{r['n']}_peak_growth_mib"] = round(r["peak_growth_mib"], 1)
    details["per_image_time_largest_over_smallest"] = round(large["ms_per_image"] / small["ms_per_image"], 3)
    details["peak_growth_largest_over_smallest"] = round(large["peak_growth_mib"] / max(small["peak_growth_mib"], 1e-9), 3)
    write_result("scan_scaling", f"the same scan of the smallest dataset (n = {small['n']}), per image",
                 round(small["ms_per_image"] / large["ms_per_image"], 3), details, threads=1)


if __name__ == "__main__":
    main()
