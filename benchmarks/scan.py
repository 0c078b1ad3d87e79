"""Scan throughput against its physical limit, and peak memory against dataset size.

Peer ("bare loop"): on the same batches, same model, batch size and threads, a forward pass stopped at
the feature layer plus the minimal backward, ``torch.autograd.grad`` of the feature with respect to the
attribution layers only (no parameter gradients, no statistics, nothing kept). ``scan`` must do the
same work plus gradient x activation, P/N in four variants, maps and bookkeeping: ratio =
bare-loop time / scan time (1.0 = no overhead; target >= 0.8, aim 0.9). The two are interleaved and each
timed several times; the fastest of each is compared (on a shared machine the minimum is the least
noisy estimate of each loop's cost).

Memory: ``scan`` of 200 and of 800 images (with checkpoints and maps) each in a fresh subprocess,
peak resident memory (``ru_maxrss``) compared: it must not grow with the number of images.

Usage: python benchmarks/scan.py [--images 64] [--size 224] [--batch-size 16] [--threads 2] [--reps 3]
Writes benchmarks/results/scan.json.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
from _common import write_result  # noqa: E402

from lucent_inhibit.core.settings import PassSettings

FEATURE = ("blocks_4_0_bn3_drop", 5)
LAYERS = ["blocks_4_0_bn2_act", "blocks_3_2"]


class InMemory:
    """Pre-loaded images, so both loops read the same tensors at no cost."""

    def __init__(self, images, identity):
        self.images, self.identity = images, identity

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


def bare_loop(model, images, feature, layers, batch_size):
    """Forward to the feature layer and autograd.grad of the feature wrt the attribution layers."""
    import torch

    from lucent_inhibit.core.layers import layer_table
    from lucent_inhibit.core.preparation import preprocess_fn

    table = layer_table(model)
    norm = preprocess_fn(model)

    class Stop(Exception):
        pass

    for start in range(0, len(images), batch_size):
        x = norm(torch.stack(images[start : start + batch_size])).contiguous(memory_format=torch.channels_last)  # as attribute
        acts = {}

        def keep(name):
            def hook(module, inp, out):
                acts[name] = out
                if name == feature.layer:
                    raise Stop

            return hook

        handles = [table[n].register_forward_hook(keep(n)) for n in layers + [feature.layer]]
        try:
            with torch.enable_grad():
                try:
                    model(x.requires_grad_(True))
                except Stop:
                    pass
                f = feature(acts[feature.layer])
                grads = torch.autograd.grad(f.sum(), [acts[n] for n in layers])
        finally:
            for h in handles:
                h.remove()
        del grads, f, acts, x  # free this batch's graph before the next forward (as scan does)


def _vm(key):
    """VmHWM (peak) or VmRSS (current) of this process in MiB, from /proc (ru_maxrss survives exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(n, size, batch_size, threads):
    """Run in a subprocess: scan n crops with checkpoints, print peak RSS (MiB) as JSON.

    The peak (VmHWM) is reset just before the scan (``/proc/self/clear_refs``), so ``scan_peak_rss_mib``
    is the high-water mark while scanning, setup excluded."""
    import torch

    torch.set_num_threads(threads)
    from lucent_inhibit.core.features import Feature
    from lucent_inhibit.data.bundled import sample_crops
    from lucent_inhibit.models.embedded import efficientnet_lite0
    from lucent_inhibit.scanning.run import scan

    model = efficientnet_lite0()
    ds = sample_crops(n, size=size, seed=1)
    before = _vm("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak-RSS counter
    except OSError:
        pass
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        r = scan(model, ds, Feature(FEATURE[0], unit=FEATURE[1]), LAYERS,
                 out=os.path.join(d, "scan"), settings=PassSettings(batch_size=batch_size, progress=False))
        dt = time.perf_counter() - t
    peak = _vm("VmHWM")
    print(json.dumps({"n": len(r), "peak_rss_mib": peak, "rss_before_scan_mib": before, "seconds": dt}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64, help="images in the throughput comparison")
    ap.add_argument("--size", type=int, default=224, help="image side in pixels")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions of each loop (interleaved)")
    ap.add_argument("--memory-sizes", type=int, nargs="*", default=[200, 800], help="dataset sizes for memory")
    ap.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.memory_child is not None:
        memory_child(a.memory_child, a.size, a.batch_size, a.threads)
        return

    import torch

    torch.set_num_threads(a.threads)
    from lucent_inhibit.core.features import Feature
    from lucent_inhibit.data.bundled import sample_crops
    from lucent_inhibit.models.embedded import efficientnet_lite0
    from lucent_inhibit.scanning.run import scan

    model = efficientnet_lite0()
    crops = sample_crops(a.images, size=a.size, seed=0)
    images = [crops[i] for i in range(len(crops))]
    ds = InMemory(images, f"bench-{crops.identity}")
    feature = Feature(FEATURE[0], unit=FEATURE[1])

    def run_scan():
        scan(model, ds, feature, LAYERS, settings=PassSettings(batch_size=a.batch_size, progress=False))

    def run_bare():
        bare_loop(model, images, feature, LAYERS, a.batch_size)

    run_bare()  # warm-up both
    run_scan()
    t_scan, t_bare = [], []
    for _ in range(a.reps):
        for fn, acc in ((run_bare, t_bare), (run_scan, t_scan)):
            t = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t)
    ratio = min(t_bare) / min(t_scan)
    print(f"scan {a.images / min(t_scan):.1f} img/s, bare forward+grad loop "
          f"{a.images / min(t_bare):.1f} img/s: ratio {ratio:.3f} (target >= 0.8)")

    mem = {}
    for n in a.memory_sizes:
        cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", str(n), "--size", str(a.size),
               "--batch-size", str(a.batch_size), "--threads", str(a.threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
        mem[n] = json.loads(out.strip().splitlines()[-1])
        print(f"{n} images: peak RSS while scanning {mem[n]['peak_rss_mib']:.0f} MiB (before: "
              f"{mem[n]['rss_before_scan_mib']:.0f} MiB; {mem[n]['seconds']:.0f} s)")

    details = {
        "feature": f"{FEATURE[0]} unit {FEATURE[1]} @ center",
        "layers": ", ".join(LAYERS),
        "images": a.images,
        "size": a.size,
        "batch_size": a.batch_size,
        "threads": a.threads,
        "scan_img_per_s": a.images / min(t_scan),
        "bare_img_per_s": a.images / min(t_bare),
        "scan_seconds": t_scan,
        "bare_seconds": t_bare,
    }
    for n, m in mem.items():
        details[f"peak_rss_mib_{n}_images"] = m["peak_rss_mib"]
        details[f"rss_before_scan_mib_{n}_images"] = m["rss_before_scan_mib"]
    if len(mem) >= 2:
        lo, hi = min(mem), max(mem)
        details["peak_rss_growth_mib"] = mem[hi]["peak_rss_mib"] - mem[lo]["peak_rss_mib"]
        print(f"peak RSS growth from {lo} to {hi} images: {details['peak_rss_growth_mib']:.0f} MiB")
    write_result("scan", "bare loop: forward to the feature + torch.autograd.grad wrt the attribution layers "
                 "(same batches, threads)", ratio, details, a.threads)


if __name__ == "__main__":
    main()
