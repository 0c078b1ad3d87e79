"""Layer census throughput: against one-feature scans of the same units, and against its physical limit.

On the real embedded EfficientNet-Lite0, ``--units`` units of ``blocks_4_0_bn3_drop`` (at the centre) are
attributed at ``blocks_4_0_bn2_act`` (the stage's default attribution layer) over the same pre-loaded images:

- ``layer_census`` of the units (one forward pass per batch, the backward in chunks of ``--chunk-size``);
- peer 1, one ``scan`` per unit (``keep_maps=False``: the census keeps no maps either);
  ratio = scans time / census time (target >= 8);
- peer 2, the physical limit: per batch one forward pass to the feature layer (weights frozen, the graph
  starting at the attribution layer) and the backward of every unit the way the census runs it (one
  ``torch.autograd.grad`` per unit on CPU, ``is_grads_batched`` chunks on CUDA), with no gradient x
  activation, no totals and nothing kept; limit ratio = limit time / census time (1.0 = no overhead;
  target >= 0.8).

Also the census with the other backward (``is_grads_batched`` where the census chose the per-unit loop, the
reason the loop is the CPU default). The census and the limit are interleaved and each timed ``--reps`` times, the scans once (they take units
times longer); the fastest of each is compared. Also checks the census equals the scans.

Usage: python benchmarks/census.py [--units 64] [--images 64] [--size 64] [--batch-size 16] [--chunk-size 16]
       [--threads 1] [--reps 3]
Writes benchmarks/results/census.json.
"""
import argparse
import os
import sys
import warnings

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from _common import timed, write_result  # noqa: E402

LAYER, ATTR = "blocks_4_0_bn3_drop", "blocks_4_0_bn2_act"


def physical_limit(model, images, units, batch_size, chunk, batched):
    """Forward to the feature layer (graph from the attribution layer) + the units' backward, nothing else."""
    from lucent_inhibit.core.layers import StopForward, frozen_weights, hooks_restored, layer_table
    from lucent_inhibit.core.preparation import preprocess_fn

    table, norm = layer_table(model), preprocess_fn(model)
    for start in range(0, len(images), batch_size):
        x, acts = norm(images[start:start + batch_size]).contiguous(memory_format=torch.channels_last), {}  # as the census

        def leaf(m, i, o):
            acts["a"] = o.detach().requires_grad_(True)
            return acts["a"]

        def stop(m, i, o):
            acts["f"] = o
            raise StopForward

        with frozen_weights(model), torch.enable_grad(), hooks_restored(model):
            table[ATTR].register_forward_hook(leaf)
            table[LAYER].register_forward_hook(stop)
            try:
                model(x)
            except StopForward:
                pass
        h = acts["f"]
        f = h[:, units, h.shape[2] // 2, h.shape[3] // 2].T  # (K, B)
        for s in range(0, len(units), chunk):
            rows = f[s:s + chunk]
            if batched:
                eye = torch.eye(len(rows))[:, :, None].expand(-1, -1, rows.shape[1])
                torch.autograd.grad(rows, [acts["a"]], eye, retain_graph=True, is_grads_batched=True)
            else:
                for r in rows:
                    torch.autograd.grad(r.sum(), [acts["a"]], retain_graph=True)



def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, default in (("units", 64), ("images", 64), ("size", 64), ("batch-size", 16), ("chunk-size", 16),
                          ("threads", 1), ("reps", 3)):
        ap.add_argument(f"--{name}", type=int, default=default)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    warnings.simplefilter("ignore")

    from lucent_inhibit import Feature, PassSettings, efficientnet_lite0, layer_census, sample_crops, scan

    model = efficientnet_lite0()
    images = torch.stack(list(sample_crops(a.images, size=a.size, seed=0)))
    units = list(range(a.units))
    common = dict(settings=PassSettings(batch_size=a.batch_size, progress=False))

    def census(backward="auto"):
        return layer_census(model, images, LAYER, [ATTR], units=units, chunk_size=a.chunk_size, backward=backward,
                            **common)

    census()  # warm-up (forward-order probe)
    t_census, t_limit, t_other = [], [], []
    for _ in range(a.reps):
        t, result = timed(census)
        t_census.append(t)
        other = "loop" if result.info["backward"] == "batched" else "batched"
        t_other.append(timed(lambda: census(other))[0])
        batched = result.info["backward"] == "batched"
        t_limit.append(timed(lambda: physical_limit(model, images, units, a.batch_size, a.chunk_size, batched))[0])
    t_scans, scans = timed(lambda: [scan(model, images, Feature(LAYER, unit=u), [ATTR], keep_maps=False, **common)
                                    for u in units])
    worst = max(float(np.abs(result.P()[:, j] - s.P()).max() / max(s.P().max(), 1e-30)) for j, s in enumerate(scans))
    ratio, limit_ratio = t_scans / min(t_census), min(t_limit) / min(t_census)
    details = {"units": a.units, "images": a.images, "size": a.size, "batch_size": a.batch_size,
               "chunk_size": a.chunk_size, "threads": a.threads, "backward": result.info["backward"],
               "layer": LAYER, "attribution_layer": ATTR, "census_s": min(t_census), "limit_s": min(t_limit),
               "scans_s": t_scans, "census_s_runs": t_census, "limit_s_runs": t_limit,
               f"census_{other}_backward_s": min(t_other),
               "vs_scans_ratio": ratio, "vs_limit_ratio": limit_ratio, "max_rel_P_diff_vs_scans": worst}
    print(f"census of {a.units} units, {a.images} images at {a.size} px: census {min(t_census):.2f} s, "
          f"{a.units} scans {t_scans:.2f} s ({ratio:.1f}x), physical limit {min(t_limit):.2f} s "
          f"(limit / census {limit_ratio:.2f}); with the {other} backward {min(t_other):.2f} s; max rel. P diff vs "
          f"scans {worst:.1e}", flush=True)
    write_result("census", f"{a.units} one-feature scans of the same units and images (keep_maps=False); "
                 "details: vs_limit_ratio, the physical limit (forward + the units' backward, no bookkeeping)",
                 ratio, details, a.threads)


if __name__ == "__main__":
    main()
