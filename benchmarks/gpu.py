"""The GPU path, checked: scan, census and microscope on CUDA equal the CPU on the same images, float16
autocast passes its agreement check, torchrun with NCCL at world size 1 runs, and throughput (images per
second) against the bare forward + backward loop (the physical limit of one feature's attribution).

On the embedded EfficientNet-Lite0, ``--units`` units of ``blocks_4_0_bn3_drop`` attributed at
``blocks_4_0_bn2_act``:

- equality: ``--cpu-images`` bundled crops through ``scan`` (one unit), ``layer_census`` and ``microscope``
  (the layer and ``blocks_4_0_bn2_act`` as the linked second layer) on the CPU and on CUDA; the largest
  deviation ``max |cuda - cpu| / max |cpu|`` of f, P and N must stay under ``--rtol``; the microscope's MTIs and
  top inhibitors agree (the fraction of units whose lists are equal is recorded);
- autocast: :func:`lucent_inhibit.attribution.precision.check_autocast` (float16 on CUDA) on one batch;
- torchrun: ``python -m torch.distributed.run --nproc_per_node 1 -m lucent_inhibit census --device cuda`` (NCCL
  for CUDA tensors) must exit 0;
- throughput on ``--images`` crops: the bare loop (per batch one forward and one backward of the feature's
  sum into the attribution layer, nothing kept), ``scan`` of one unit, ``layer_census`` and ``microscope`` of
  ``--units`` units; ratio = bare images/s / scan images/s (1.0 = no overhead).

Runs in about two minutes on one H100. Without CUDA it says so and exits 0, writing nothing.

Usage: python benchmarks/gpu.py [--units 64] [--images 512] [--cpu-images 32] [--size 224] [--batch-size 64]
       [--rtol 1e-3]
Writes benchmarks/results/gpu.json.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
from _common import write_result  # noqa: E402

LAYER, ATTR = "blocks_4_0_bn3_drop", "blocks_4_0_bn2_act"


def deviation(a, b) -> float:
    """``max |a - b| / max |b|`` (0 when both are zero)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t


def bare_loop(model, images, batch_size):
    """Per batch: forward (graph from the attribution layer on), one backward of the feature layer's channel 0
    at the centre into the attribution layer's output; nothing else. The floor of any attribution pass."""
    from lucent_inhibit.core.hooks import capture
    from lucent_inhibit.core.layers import frozen_weights
    from lucent_inhibit.core.preparation import preprocess_fn

    norm = preprocess_fn(model)
    for start in range(0, len(images), batch_size):
        x = norm(images[start:start + batch_size].cuda())
        with frozen_weights(model), torch.enable_grad():
            acts = capture(model, x.requires_grad_(True), [ATTR, LAYER])
            h = acts[LAYER]
            f = h[:, 0, h.shape[2] // 2, h.shape[3] // 2].sum()
            torch.autograd.grad(f, acts[ATTR])


def equality(model, images, units, args, settings) -> dict:
    """Deviations of the CUDA scan, census and microscope from the CPU's on ``images``."""
    import lucent_inhibit as li
    from lucent_inhibit.microscope import microscope

    out = {}
    feature = li.Feature(LAYER, unit=int(units[0]))
    runs = {}
    for device in ("cpu", "cuda"):
        m = model.to(device)
        runs[device] = (li.scan(m, images, feature, [ATTR], settings=settings),
                        li.layer_census(m, images, LAYER, [ATTR], units=units, settings=settings),
                        microscope(m, images, [LAYER, ATTR], units=units[:16], attr_layer=[ATTR, None], n_top=4,
                                   settings=settings, visualize=False))
    (s0, c0, m0), (s1, c1, m1) = runs["cpu"], runs["cuda"]
    out["scan"] = {"f": deviation(s1.activation, s0.activation), "P": deviation(s1.P(), s0.P()),
                   "N": deviation(s1.N(), s0.N())}
    out["census"] = {"f": deviation(c1.activation, c0.activation), "P": deviation(c1.pos, c0.pos),
                     "N": deviation(c1.neg, c0.neg)}
    out["microscope"] = {"f": deviation(m1.activation, m0.activation), "P": deviation(m1.pos, m0.pos),
                         "N": deviation(m1.neg, m0.neg),
                         "mtis_equal": float(np.mean([np.array_equal(a, b) for a, b in zip(m1.tops[:, 2], m0.tops[:, 2])])),
                         "top_inhibitor_equal": float(np.mean(m1.inhibitors[:, 0] == m0.inhibitors[:, 0])),
                         "removal_effect": deviation(m1.inhibitor_effect, m0.inhibitor_effect)}
    worst = max(v for part in out.values() for k, v in part.items() if k in ("f", "P", "N"))
    out["worst"], out["passed"] = worst, bool(worst <= args.rtol)
    model.cuda()
    return out


def throughput(model, images, units, args, settings) -> dict:
    import lucent_inhibit as li
    from lucent_inhibit.microscope import microscope

    n, feature = len(images), li.Feature(LAYER, unit=int(units[0]))
    bare_loop(model, images[:args.batch_size], args.batch_size)  # warm-up (cuDNN autotuning, allocations)
    _, t_bare = timed(lambda: bare_loop(model, images, args.batch_size))
    _, t_scan = timed(lambda: li.scan(model, images, feature, [ATTR], settings=settings))
    _, t_census = timed(lambda: li.layer_census(model, images, LAYER, [ATTR], units=units, settings=settings))
    _, t_micro = timed(lambda: microscope(model, images, LAYER, units=units, attr_layer=ATTR, settings=settings,
                                          visualize=False))
    vis = [(LAYER, int(u)) for u in units[:32]]
    from lucent_inhibit.microscope.visuals import render_channels

    _, t_render = timed(lambda: render_channels(model, vis, None, batch=len(vis)))
    return {"visualizations": len(vis), "batched_render_s": t_render,"images": n, "units": len(units), "bare_ips": n / t_bare, "scan_ips": n / t_scan,
            "census_ips": n / t_census, "census_unit_images_per_s": n * len(units) / t_census,
            "microscope_ips": n / t_micro, "microscope_over_census": t_micro / t_census,
            "seconds": {"bare": t_bare, "scan": t_scan, "census": t_census, "microscope": t_micro}}


def torchrun_world_1(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "-m", "lucent_inhibit", "census",
               "--out", os.path.join(tmp, "out"), "--device", "cuda", "--units", *map(str, range(8)), "--n-images",
               "32", "--size", str(args.size), "--no-figures"]
        t = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
        return {"returncode": done.returncode, "seconds": time.perf_counter() - t,
                "stderr_tail": done.stderr[-800:] if done.returncode else ""}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--units", type=int, default=64)
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--cpu-images", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rtol", type=float, default=1e-3)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device here (torch.cuda.is_available() is False); it checks the GPU path "
              "and has nothing to measure on this machine: run it where a GPU is lent. Nothing written.")
        return 0
    from lucent_inhibit.attribution.precision import check_autocast
    from lucent_inhibit.core.settings import PassSettings
    from lucent_inhibit.data.bundled import sample_crops
    from lucent_inhibit.models.embedded import efficientnet_lite0

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = efficientnet_lite0().eval().cuda()
    settings = PassSettings(batch_size=args.batch_size, progress=False)
    units = list(range(args.units))
    small = torch.stack([sample_crops(args.cpu_images, size=args.size, seed=0)[i] for i in range(args.cpu_images)])
    t0 = time.perf_counter()
    details = {"device": torch.cuda.get_device_name(0), "size": args.size, "rtol": args.rtol,
               "equality": equality(model, small, units, args, settings)}
    check = check_autocast(model, small[:16].cuda(), _feature(units[0]), [ATTR])
    details["autocast"] = {"dtype": check.dtype, "deviation": check.deviation, "ok": bool(check.ok),
                           "tolerance": check.tolerance}
    details["torchrun_nccl_world_1"] = torchrun_world_1(args)
    data = sample_crops(args.images, size=args.size, seed=0)
    images = torch.stack([data[i] for i in range(len(data))])
    details["throughput"] = tp = throughput(model, images, units, args, settings)
    details["total_seconds"] = time.perf_counter() - t0
    ok = details["equality"]["passed"] and details["autocast"]["ok"] and details["torchrun_nccl_world_1"]["returncode"] == 0
    details["passed"] = bool(ok)
    write_result("gpu", "bare forward + backward loop (images/s) over scan images/s", tp["bare_ips"] / tp["scan_ips"],
                 details)
    print({k: details[k] for k in ("equality", "autocast", "passed")}, tp)
    return 0 if ok else 1


def _feature(unit):
    import lucent_inhibit as li

    return li.Feature(LAYER, unit=int(unit))


if __name__ == "__main__":
    sys.exit(main())
