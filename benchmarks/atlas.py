"""Atlas icons: one batched render call for all icons vs one render call per icon (same steps and size).

Peer: ``render_icons(..., batch_size=1)``, i.e. Lucent's ``render_vis`` once per icon, as the paper's atlas
scripts do. Both runs render the same cells of the same attribution atlas on the embedded EfficientNet-Lite0
with the same steps, icon size and objective, one run each. Also times the default CLI run end to end
(``lucent-inhibit atlas --out DIR``; skip with --no-e2e).

Usage: python benchmarks/atlas.py [--icons 16] [--steps 16] [--size 128] [--no-e2e]
Writes benchmarks/results/atlas.json.
"""
import argparse
import os
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import write_result  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from lucent_inhibit import Feature, efficientnet_lite0, sample_crops  # noqa: E402
from lucent_inhibit.atlas import AtlasGrid, collect_vectors, grid_cells, project_layout, render_icons  # noqa: E402
from lucent_inhibit.core.settings import RenderSettings  # noqa: E402


def first_cells(grid: AtlasGrid, k: int) -> AtlasGrid:
    """The grid restricted to its first ``k`` cells."""
    return AtlasGrid(grid.size, grid.min_points, grid.cells[:k], grid.count[:k], grid.vectors[:k], grid.net[:k],
                     grid.activation[:k], grid.members[: grid.offsets[k]], grid.offsets[: k + 1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--icons", type=int, default=16, help="icons rendered by both methods (default 16)")
    ap.add_argument("--steps", type=int, default=16, help="render steps per icon (default 16)")
    ap.add_argument("--size", type=int, default=128, help="image and icon side in pixels (default 128)")
    ap.add_argument("--no-e2e", action="store_true", help="skip timing the default CLI run")
    a = ap.parse_args()
    torch.manual_seed(0)
    model = efficientnet_lite0()
    feature = Feature("blocks_4_0_bn3_drop", unit=5)
    layer = "blocks_4_0_bn1_act"
    data = sample_crops(96, size=a.size, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        points = collect_vectors(model, data, feature, layer, mode="position")
        layout = project_layout(points)
        grid = grid_cells(points, layout, min_points=2)
    k = min(a.icons, len(grid))
    sub = first_cells(grid, k)
    render = RenderSettings(steps=a.steps)  # icon side and model size: the dataset's --size (the stage default)
    # warm-up (first-call costs: kornia/jit imports, allocator)
    render_icons(model, points, first_cells(sub, 1), RenderSettings(steps=2), batch_size=1)
    t = time.perf_counter()
    batched = render_icons(model, points, sub, render, batch_size=k)
    t_batched = time.perf_counter() - t
    t = time.perf_counter()
    single = render_icons(model, points, sub, render, batch_size=1)
    t_single = time.perf_counter() - t
    ratio = t_single / t_batched
    print(f"{k} icons, {a.steps} steps, {a.size} px: batched {t_batched:.1f} s, one render per icon {t_single:.1f} s, "
          f"ratio {ratio:.2f}x (target >= 3x)")
    print(f"  mean cosine to target: batched {batched.cosine.mean():.3f}, per icon {single.cosine.mean():.3f}")
    print(f"  median cosine {np.median(batched.cosine):.3f}, median RMS contrast of the receptive-field crops "
          f"{np.median(batched.contrast):.3f} (batched)")
    details = {
        "icons": k, "steps": a.steps, "image_size": a.size, "feature": feature.name, "layer": layer,
        "batched_s": round(t_batched, 2), "per_icon_s": round(t_single, 2),
        "cosine_batched": round(float(batched.cosine.mean()), 4), "cosine_per_icon": round(float(single.cosine.mean()), 4),
        "median_cosine_batched": round(float(np.median(batched.cosine)), 4),
        "median_contrast_batched": round(float(np.median(batched.contrast)), 4),
    }
    if not a.no_e2e:
        from lucent_inhibit.app.cli import main as cli_main

        with tempfile.TemporaryDirectory() as out:
            t = time.perf_counter()
            rc = cli_main(["atlas", "--out", out])
            details["default_cli_atlas_s"] = round(time.perf_counter() - t, 1)
            details["default_cli_rc"] = rc
        print(f"  default CLI run `lucent-inhibit atlas --out DIR`: {details['default_cli_atlas_s']} s (rc {rc})")
    write_result("atlas", "one render_vis call per icon (render_icons batch_size=1), same steps and size",
                 round(ratio, 3), details)


if __name__ == "__main__":
    main()
