"""Atlas vector collection: peak memory against the size of the vectors it returns (position mode).

For each n (default 2,000 and 8,000 selected 64-px images), one subprocess per run (each size twice) loads
the embedded EfficientNet-Lite0 (one torch thread), warms ``collect_vectors`` up on 64 images, then runs it
once on the n images in position mode (attribution vectors at ``blocks_4_0_bn1_act``, a 480 x 4 x 4 map,
for the feature ``blocks_4_0_bn3_drop`` unit 5; the default crop, batch size 64, thumbnails 48 px and
memory budget). The images are built lazily per index (bilinear-upsampled 8 x 8 noise), so the dataset
takes no memory. Peak RSS growth: the kernel's high-water mark ``VmHWM`` (reset through
``/proc/self/clear_refs`` just before the call; ``ru_maxrss`` where that is refused) minus ``VmRSS`` just
before the call. Ratios: growth / ``vectors.nbytes``, growth / all the result's arrays (vectors, per-point
arrays, thumbnails), and the growth from the smaller to the larger n against the vectors' growth.

Usage: python benchmarks/atlas_memory.py [--sizes 2000 8000] [--repeats 2] [--batch-size 64]
Writes benchmarks/results/atlas_memory.json.
"""
import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

FEATURE, LAYER, SIZE = ("blocks_4_0_bn3_drop", 5), "blocks_4_0_bn1_act", 64
sys.path.insert(0, HERE)
from _common import LazyImages, proc_status, reset_peak  # noqa: E402

from lucent_inhibit.core.settings import PassSettings


def child(n: int, batch_size: int) -> dict:
    """One measured run of ``collect_vectors`` on ``n`` images (in this process)."""
    import torch

    torch.set_num_threads(1)
    from lucent_inhibit import Feature, efficientnet_lite0
    from lucent_inhibit.atlas import collect_vectors

    model, feature = efficientnet_lite0(), Feature(*FEATURE)
    warnings.simplefilter("ignore")
    collect_vectors(model, LazyImages(64, SIZE), feature, LAYER, mode="position", settings=PassSettings(batch_size=batch_size))  # warm-up
    data = LazyImages(n, SIZE)
    gc.collect()
    before, reset = proc_status("VmRSS"), reset_peak()
    t = time.perf_counter()
    pts = collect_vectors(model, data, feature, LAYER, mode="position", settings=PassSettings(batch_size=batch_size))
    seconds = time.perf_counter() - t
    peak = proc_status("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    arrays = [pts.vectors, pts.point_image, pts.point_position, pts.net, pts.magnitude, pts.activation, pts.P,
              pts.N, pts.thumbnails, pts.image_index]
    return {"n": n, "points": len(pts), "box": list(pts.box), "map_shape": list(pts.map_shape),
            "rss_before": before, "peak": peak, "growth": peak - before, "vectors_bytes": int(pts.vectors.nbytes),
            "result_bytes": int(sum(a.nbytes for a in arrays)), "seconds": round(seconds, 1),
            "peak_source": "VmHWM" if reset else "ru_maxrss"}


def _run(n: int, batch_size: int) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", str(n), "--batch-size",
                          str(batch_size)], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if out.returncode:
        raise RuntimeError(f"the run on {n} images failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _mib(b) -> float:
    return round(b / 2 ** 20, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000], help="selected images per run")
    ap.add_argument("--repeats", type=int, default=2, help="runs per size (default 2)")
    ap.add_argument("--batch-size", type=int, default=64, help="images per pass (default 64)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child is not None:
        print(json.dumps(child(a.child, a.batch_size)))
        return
    runs = {n: [_run(n, a.batch_size) for _ in range(a.repeats)] for n in a.sizes}
    rows = {}
    for n, rs in runs.items():
        growth = max(r["growth"] for r in rs)  # the worse of the repeats
        r = rs[0]
        rows[n] = {"growth_mib": [_mib(x["growth"]) for x in rs], "vectors_mib": _mib(r["vectors_bytes"]),
                   "result_mib": _mib(r["result_bytes"]), "growth_over_vectors": round(growth / r["vectors_bytes"], 3),
                   "growth_over_result": round(growth / r["result_bytes"], 3), "points": r["points"], "box": r["box"],
                   "seconds": [x["seconds"] for x in rs], "peak_source": r["peak_source"]}
        print(f"n={n}: {r['points']} points, box {r['box']} of map {r['map_shape']}; peak RSS growth "
              f"{rows[n]['growth_mib']} MiB; vectors {rows[n]['vectors_mib']} MiB (ratio {rows[n]['growth_over_vectors']}), "
              f"all result arrays {rows[n]['result_mib']} MiB (ratio {rows[n]['growth_over_result']}); {rows[n]['seconds']} s")
    lo, hi = min(a.sizes), max(a.sizes)
    details = {"model": "embedded EfficientNet-Lite0", "feature": f"{FEATURE[0]}:{FEATURE[1]}", "layer": LAYER,
               "image_size": SIZE, "mode": "position", "kind": "attribution", "batch_size": a.batch_size,
               "sizes": {str(n): row for n, row in rows.items()}}
    ratio = rows[hi]["growth_over_vectors"]
    if hi > lo:
        d_growth = max(r["growth"] for r in runs[hi]) - min(r["growth"] for r in runs[lo])
        d_vec = runs[hi][0]["vectors_bytes"] - runs[lo][0]["vectors_bytes"]
        details["growth_increase_over_vectors_increase"] = round(d_growth / d_vec, 3)
        print(f"from n={lo} to n={hi}: peak growth rose {_mib(d_growth)} MiB, the vectors {_mib(d_vec)} MiB "
              f"(ratio {details['growth_increase_over_vectors_increase']}; target <= 1)")
    from _common import write_result

    write_result("atlas_memory", f"the size of the returned vectors (AtlasPoints.vectors.nbytes) at n={hi}", ratio,
                 details, threads=1)


if __name__ == "__main__":
    main()
