"""Microscope cost: its build against the census of the same units and images, its batched feature
visualizations against one Lucent ``render_vis`` call per unit, and its disk use per image and per unit.

On the real embedded EfficientNet-Lite0, ``--units`` units of ``blocks_4_0_bn3_drop`` attributed at
``blocks_4_0_bn2_act`` over ``--images`` bundled crops of ``--size`` px:

- build: ``build_microscope(visualize=False)`` (census, the units' channel split and removals on their MTIs,
  top images of every shown channel) against ``layer_census`` of the same units and images alone (peer);
  ratio = build / census (target <= 1.5). The two are interleaved, each timed ``--reps`` times, fastest kept.
- renders: the feature visualizations of ``--vis-units`` units rendered in batches of the library's default
  ``render_batch`` (:func:`lucent_inhibit.microscope.visuals.render_channels`) against one plain
  ``lucent.optvis.render.render_vis`` call per unit (peer: Lucent's ``param.image`` of the same size, the same
  steps, learning rate, ``fixed_image_size`` and Lucent's standard transforms); ratio = peer / batched
  (target >= 5). Each once (the peer takes units times longer). Two more timings split the ratio into its
  causes: the same ``render_vis`` calls with float subnormals flushed (the CPU setting the library's renders
  run under, :mod:`lucent_inhibit.core.numerics`), and one library render per unit (batch 1: the gain of
  batching alone).
- disk: the site written from a microscope with visualizations; bytes of images/ per image shown, and of units/
  plus visuals/ per unit.

Usage: python benchmarks/microscope.py [--units 64] [--images 256] [--size 96] [--vis-units 32 (0: no renders)]
       [--steps 96] [--no-site]
       [--threads 1] [--reps 2]
Writes benchmarks/results/microscope.json.
"""
import argparse
import inspect
import os
import shutil
import sys
import tempfile
import warnings

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from _common import timed, write_result  # noqa: E402

LAYER, ATTR = "blocks_4_0_bn3_drop", "blocks_4_0_bn2_act"



def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def plain_lucent_renders(model, units, settings, flushed=False):
    """One ``render_vis`` per unit: Lucent's channel objective, param.image, its standard transforms
    (``flushed``: with float subnormals flushed to zero, as the library's renders run)."""
    import contextlib

    from lucent.optvis import objectives, param, render

    from lucent_inhibit.core.layers import hooks_restored
    from lucent_inhibit.core.numerics import subnormals_flushed

    with subnormals_flushed() if flushed else contextlib.nullcontext():
        for u in units:  # render_vis leaves its hooks on every module: removed after each call, or they pile up
            with hooks_restored(model):
                render.render_vis(model, objectives.channel(LAYER, u), param_f=lambda: param.image(settings.size),
                                  optimizer=lambda p: torch.optim.Adam(p, lr=settings.lr),
                                  thresholds=(settings.steps,), progress=False, show_image=False,
                                  fixed_image_size=settings.model_size)


def site_bytes(build, vis, render):
    """(site bytes, bytes per image shown, bytes per unit, images shown) of the site of a microscope built
    with visualizations (``vis`` empty: without)."""
    from lucent_inhibit.microscope import write_microscope_site

    small = build(visualize=bool(vis), render=render)
    site = tempfile.mkdtemp(prefix="microscope-bench-")
    try:
        write_microscope_site(small, site)
        per_image = folder_bytes(os.path.join(site, "images")) / max(small.image_ids.size, 1)
        per_unit = (folder_bytes(os.path.join(site, "units")) + folder_bytes(os.path.join(site, "visuals"))) / len(small)
        return folder_bytes(site), per_image, per_unit, int(small.image_ids.size)
    finally:
        shutil.rmtree(site, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, default in (("units", 64), ("images", 256), ("size", 96), ("vis-units", 32), ("steps", 96),
                          ("threads", 1), ("reps", 2)):
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--no-site", action="store_true", help="skip the site (its disk use is not measured)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    warnings.simplefilter("ignore")

    from lucent_inhibit import efficientnet_lite0, layer_census, sample_crops
    from lucent_inhibit.core.settings import MICROSCOPE_RENDER, PassSettings
    from lucent_inhibit.microscope import build_microscope
    from lucent_inhibit.microscope.visuals import render_channels

    model = efficientnet_lite0()
    images = torch.stack(list(sample_crops(a.images, size=a.size, seed=0)))
    units, settings = list(range(a.units)), PassSettings(progress=False)
    census = lambda: layer_census(model, images, LAYER, [ATTR], units=units, settings=settings)  # noqa: E731
    build = lambda **kw: build_microscope(model, images, LAYER, units, ATTR, settings=settings, **kw)  # noqa: E731
    census()  # warm-up
    t_census, t_build = [], []
    for _ in range(a.reps):
        t_census.append(timed(census)[0])
        t_build.append(timed(lambda: build(visualize=False))[0])
        print(f"census {t_census[-1]:.2f} s, build without renders {t_build[-1]:.2f} s", flush=True)
    render = MICROSCOPE_RENDER.replace(steps=a.steps)
    vis = list(range(a.vis_units))
    batch = inspect.signature(build_microscope).parameters["render_batch"].default  # the library's default
    t_batched = t_plain = t_flushed = t_single = float("nan")
    if vis:  # --vis-units 0: the build only
        t_batched, _ = timed(lambda: render_channels(model, [(LAYER, u) for u in vis], render, batch=batch))
        print(f"{a.vis_units} visualizations in batched renders of {batch}: {t_batched:.1f} s", flush=True)
        t_plain, _ = timed(lambda: plain_lucent_renders(model, vis, render))
        print(f"one render_vis per unit: {t_plain:.1f} s", flush=True)
        t_flushed, _ = timed(lambda: plain_lucent_renders(model, vis, render, flushed=True))
        print(f"one render_vis per unit, subnormals flushed: {t_flushed:.1f} s", flush=True)
        t_single, _ = timed(lambda: [render_channels(model, [(LAYER, u)], render, batch=1) for u in vis])
        print(f"one library render per unit (batch 1): {t_single:.1f} s", flush=True)
    total, per_image, per_unit, shown = site_bytes(build, vis, render) if not a.no_site else (float("nan"),) * 4
    ratio, render_ratio = min(t_build) / min(t_census), t_plain / t_batched
    details = {"units": a.units, "images": a.images, "size": a.size, "threads": a.threads, "layer": LAYER,
               "attribution_layer": ATTR, "census_s": min(t_census), "build_s": min(t_build),
               "census_s_runs": t_census, "build_s_runs": t_build, "build_vs_census_ratio": ratio,
               "vis_units": a.vis_units, "render_batch": batch, "render": render.describe(), "batched_render_s": t_batched,
               "plain_render_vis_s": t_plain, "render_speedup": render_ratio,
               "plain_render_vis_flushed_s": t_flushed, "speedup_vs_flushed_render_vis": t_flushed / t_batched,
               "library_render_per_unit_s": t_single, "speedup_of_batching_alone": t_single / t_batched,
               "site_bytes": total,
               "bytes_per_image": per_image, "bytes_per_unit": per_unit, "images_shown": shown}
    print(f"microscope of {a.units} units over {a.images} images at {a.size} px: build {min(t_build):.2f} s, census "
          f"{min(t_census):.2f} s ({ratio:.2f}x); {a.vis_units} visualizations batched {t_batched:.1f} s, one "
          f"render_vis per unit {t_plain:.1f} s ({render_ratio:.1f}x faster); site {total / 1e6:.1f} MB, "
          f"{per_image / 1e3:.1f} kB per image, {per_unit / 1e3:.1f} kB per unit")
    write_result("microscope", "layer_census of the same units and images (build); one render_vis per unit (renders)",
                 ratio, details, a.threads)


if __name__ == "__main__":
    main()
