"""Figures of the renders (matplotlib, PNG): accentuations (paper 003), +/- inversions and accentuations
(paper 000) and tense synthesis. Red = excitation, blue = inhibition.
"""
from __future__ import annotations

import numpy as np

from ..core.figures import finish, mark_still, no_ax, pyplot
from ..core.motion import short_motion

#: The rows of an inversion result, in order: the image, its excitatory and its inhibitory render.
ROWS = ("original", "excitatory", "inhibitory")


def _image_panel(ax, image, title: str, fontsize: float = 8) -> None:
    """An image (3, H, W) in [0, 1] without ticks, titled."""
    ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=fontsize)


def _mark_if_still(ax, result, i: int) -> None:
    """Hatch panel ``ax`` when image ``i`` of ``result`` did not move (its ``moved`` / ``motion`` fields)."""
    moved, motion = getattr(result, "moved", None), getattr(result, "motion", None)
    if moved is not None and i < len(moved) and not bool(moved[i]):
        mark_still(ax, short_motion(float(motion[i, 0]), float(motion[i, 1])) if motion is not None else "")


def plot_accentuation(result, path=None, ax=None):
    """Figure: seeds (top row) and accentuations (bottom row; a render that did not move hatched), and the
    objective (left axis) and seed regularizer (right axis, its own scale) per step. Returns the Figure, a
    PNG at ``path`` when given (several panels: no ``ax``)."""
    no_ax(ax, "plot_accentuation")
    b = result.images.shape[0]
    fig, axes = pyplot().subplots(2, b + 1, figsize=(2.6 * (b + 1) + 0.8, 5.4), squeeze=False)
    for i in range(b):
        _image_panel(axes[0, i], result.seed[i], f"seed {i}")
        _image_panel(axes[1, i], result.images[i], f"accentuated {i}")
        _mark_if_still(axes[1, i], result, i)
    ax = axes[0, -1]
    ax.plot(result.objective.numpy(), color="tab:red", label="objective")
    ax.set_xlabel("step", fontsize=8)
    ax.set_ylabel("objective", color="tab:red", fontsize=8)
    ax.tick_params(labelsize=7)
    if result.regularizer.numel():
        twin = ax.twinx()
        twin.plot(result.regularizer.numpy(), color="tab:blue")
        twin.set_ylabel(f"seed L2 at {result.reg_layer}", color="tab:blue", fontsize=8)
        twin.tick_params(labelsize=7)
    axes[1, -1].set_axis_off()
    fig.suptitle(f"feature accentuation, balance {result.balance:.3g}, lambda {result.reg_lambda:g}", fontsize=9)
    fig.tight_layout()
    return finish(fig, path, dpi=90)


def plot_inversions(result, path=None, ax=None):
    """Figure: columns original | excitatory | inhibitory; rows: the images, their excitation
    ``relu(S)`` overlay (red) and inhibition ``relu(-S)`` overlay (blue), all maps on one scale so
    intensities compare across columns; on a token layer the maps are the patch grid (each patch token
    drawn over its pixels, the class / register tokens left out). A render that did not move is hatched.
    Returns the Figure, a PNG at ``path`` when given (a grid of panels: no ``ax``)."""
    no_ax(ax, "plot_inversions")
    fig, axes = pyplot().subplots(3, 3, figsize=(8.4, 9.4))
    kind = "accentuation (image-seeded)" if result.seeded else "inversion (noise-seeded)"
    scale = float(result.maps.max()) or 1.0
    grid, (h, w) = result.feature.grid, tuple(result.maps.shape[-2:])
    patches = grid is not None and (grid.grid_h, grid.grid_w) == (h, w)
    for i, r in enumerate(ROWS):
        _image_panel(axes[0, i], result.images[i], f"{r}\nf={float(result.activation[i]):.3g}  "
                     f"P={float(result.positive[i]):.3g}  N={float(result.negative[i]):.3g}")
        _mark_if_still(axes[0, i], result, i)
        for k, (colour, title) in enumerate((((0.85, 0.1, 0.1), "excitation relu(S)"),
                                             ((0.1, 0.25, 0.9), "inhibition relu(-S)"))):
            overlay(axes[1 + k, i], result.images[i], result.maps[i, k], scale, colour, title, patches)
    where = f"{h}x{w} patch grid, class / register tokens left out" if patches else f"{h}x{w} map"
    fig.suptitle(f"+/- attribution {kind}\n{result.feature.name}, attribution at {result.layer} ({where})", fontsize=9)
    fig.tight_layout()
    return finish(fig, path, dpi=90)


def plot_tense(result, path=None, ax=None):
    """Figure: the synthesised image(s) (one that did not move hatched) and the P, N, tension and feature
    trajectories of the first image. Returns the Figure, a PNG at ``path`` when given (several panels: no
    ``ax``)."""
    no_ax(ax, "plot_tense")
    b = result.images.shape[0]
    fig, axes = pyplot().subplots(1, b + 1, figsize=(3.4 * (b + 1), 3.6))
    for i in range(b):
        _image_panel(axes[i], result.images[i], f"f={float(result.activation[-1, i]):.3g}\n"
                     f"P={float(result.positive[-1, i]):.3g} N={float(result.negative[-1, i]):.3g}")
        _mark_if_still(axes[i], result, i)
    ax = axes[-1]
    s = result.steps.numpy()
    if result.score != "custom":
        ax.plot(s, result.tension[:, 0].numpy(), color="0.6", lw=4, alpha=0.6, label=f"tension ({result.score})")
    ax.plot(s, result.positive[:, 0].numpy(), color="tab:red", label="P")
    ax.plot(s, result.negative[:, 0].numpy(), color="tab:blue", label="N")
    ax.plot(s, result.activation[:, 0].numpy(), color="tab:green", label="f")
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
    fig.suptitle(f"tense synthesis ({result.mode}): {result.feature.name}, attribution at {result.layer}", fontsize=9)
    fig.tight_layout()
    return finish(fig, path, dpi=90)


def overlay(ax, image, amap, scale, colour, title=None, patches: bool = False):
    """Grey image with one non-negative map (h, w) blended in ``colour``, intensity ``amap / scale``;
    upsampled bilinearly, or for a patch grid (``patches``) nearest, each patch token over its pixels."""
    import torch.nn.functional as F

    h, w = image.shape[1:]
    grey = image.mean(0, keepdim=True).permute(1, 2, 0).numpy() * 0.6 + 0.2
    how = dict(mode="nearest") if patches else dict(mode="bilinear", align_corners=False)
    up = F.interpolate(amap[None, None].float(), size=(h, w), **how)[0, 0]
    a = (up / scale).clamp(0, 1).numpy()[..., None] * 0.8
    ax.imshow(np.clip(grey * (1 - a) + np.asarray(colour) * a, 0, 1))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)
