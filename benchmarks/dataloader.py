"""Folder scan with decoding in DataLoader worker processes against the same scan decoding in the main process.

A folder of JPEGs (bundled photo crops saved at --source px) is scanned at --size px on the embedded
EfficientNet-Lite0 with one torch thread: once with ``ImageFolder(workers=0)`` (decode + resize in the main
process, between batches) and once with ``workers=--workers`` (a DataLoader decodes the next batches while the
model runs). Ratio = main-process wall time / worker wall time (> 1: the workers hide the decoding), the best
of --reps alternating runs each; the opening of the folder (its readability check) is timed separately, as it
also runs in the workers. Both scans must give identical activations.

Usage: python benchmarks/dataloader.py [--images 192] [--source 448] [--size 128] [--workers 1] [--reps 2]
Writes benchmarks/results/dataloader.json.
"""
import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from _common import write_result  # noqa: E402

from lucent_inhibit.core.settings import PassSettings


def make_folder(root, n, side):
    import numpy as np
    from PIL import Image

    import lucent_inhibit as li

    for i, img in enumerate(li.sample_crops(n, size=side)):
        arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(arr).save(os.path.join(root, f"{i:05d}.jpg"), quality=92)


def timed_scan(model, root, size, workers, batch_size):
    import lucent_inhibit as li

    t0 = time.perf_counter()
    data = li.ImageFolder(root, size=size, workers=workers)
    t_open = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = li.scan(model, data, li.Feature("blocks_4_0_bn3_drop", unit=5), ["blocks_4_0_bn2_act"], settings=PassSettings(batch_size=batch_size, progress=False))
    return t_open, time.perf_counter() - t0, res.activation


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=192)
    ap.add_argument("--source", type=int, default=448)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    import numpy as np
    import torch

    import lucent_inhibit as li

    torch.set_num_threads(1)
    model = li.efficientnet_lite0()
    with tempfile.TemporaryDirectory() as root:
        make_folder(root, args.images, args.source)
        runs = {0: [], args.workers: []}
        for _ in range(args.reps):
            for w in runs:
                runs[w].append(timed_scan(model, root, args.size, w, args.batch_size))
    same = all(np.array_equal(runs[0][0][2], r[2]) for r in runs[args.workers])
    best = {w: min(r[1] for r in rs) for w, rs in runs.items()}
    details = {"images": args.images, "source_px": args.source, "size": args.size, "workers": args.workers,
               "batch_size": args.batch_size, "reps": args.reps, "torch_threads": 1,
               "main_process_scan_s": [round(r[1], 2) for r in runs[0]],
               "workers_scan_s": [round(r[1], 2) for r in runs[args.workers]],
               "main_process_open_s": [round(r[0], 2) for r in runs[0]],
               "workers_open_s": [round(r[0], 2) for r in runs[args.workers]],
               "identical_activations": bool(same)}
    ratio = best[0] / best[args.workers]
    print(f"scan: main process {best[0]:.1f} s, {args.workers} worker(s) {best[args.workers]:.1f} s: {ratio:.2f}x; "
          f"identical: {same}")
    write_result("dataloader", "the same folder scan decoding in the main process (ImageFolder workers=0)",
                 round(ratio, 3), details, threads=1)


if __name__ == "__main__":
    main()
