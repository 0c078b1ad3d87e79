"""Figures of the renders (matplotlib, PNG): accentuations (paper 003), +/- inversions and accentuations
(paper 000) and tense synthesis. Red = excitation, blue = inhibition.
"""
from __future__ import annotations

import numpy as np

from ..core.figures import pyplot

#: The rows of an inversion result, in order: the image, its excitatory and its inhibitory render.
ROWS = ("original", "excitatory", "inhibitory")


def plot_accentuation(result, path) -> str:
    """Figure: seeds (top row), accentuations (bottom row) and the objective / regularizer per step.
    Writes a PNG; returns ``path``."""
    plt = pyplot()

    b = result.images.shape[0]
    fig, axes = plt.subplots(2, b + 1, figsize=(2.6 * (b + 1), 5.2), squeeze=False)
    for i in range(b):
        for row, (images, name) in enumerate(((result.seed, "seed"), (result.images, "accentuated"))):
            axes[row, i].imshow(images[i].permute(1, 2, 0).clamp(0, 1).numpy())
            axes[row, i].set_axis_off()
            axes[row, i].set_title(f"{name} {i}", fontsize=8)
    ax = axes[0, -1]
    ax.plot(result.objective.numpy(), color="tab:red", label="objective")
    ax.set_xlabel("step")
    if result.regularizer.numel():
        ax.plot(result.regularizer.numpy(), color="tab:blue", label=f"seed L2 at {result.reg_layer}")
    ax.legend(fontsize=7)
    axes[1, -1].set_axis_off()
    fig.suptitle(f"feature accentuation, balance {result.balance:.3g}, lambda {result.reg_lambda:g}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


def plot_inversions(result, path) -> str:
    """Figure: columns original | excitatory | inhibitory; rows: the images, their excitation
    ``relu(S)`` overlay (red) and inhibition ``relu(-S)`` overlay (blue), all maps on one scale so
    intensities compare across columns; on a token layer the maps are the patch grid (each patch token
    drawn over its pixels, the class / register tokens left out). Writes a PNG; returns ``path``."""
    plt = pyplot()

    fig, axes = plt.subplots(3, 3, figsize=(8.4, 9.0))
    kind = "accentuation (image-seeded)" if result.seeded else "inversion (noise-seeded)"
    scale = float(result.maps.max()) or 1.0
    grid, (h, w) = result.feature.grid, tuple(result.maps.shape[-2:])
    patches = grid is not None and (grid.grid_h, grid.grid_w) == (h, w)
    for i, r in enumerate(ROWS):
        ax = axes[0, i]
        ax.imshow(result.images[i].permute(1, 2, 0).clamp(0, 1).numpy())
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(
            f"{r}\nf={float(result.activation[i]):.3g}  P={float(result.positive[i]):.3g}  N={float(result.negative[i]):.3g}",
            fontsize=8,
        )
        for k, (colour, title) in enumerate((((0.85, 0.1, 0.1), "excitation relu(S)"),
                                             ((0.1, 0.25, 0.9), "inhibition relu(-S)"))):
            overlay(axes[1 + k, i], result.images[i], result.maps[i, k], scale, colour, title, patches)
    where = f"{h}x{w} patch grid, class / register tokens left out" if patches else f"{h}x{w} map"
    fig.suptitle(f"+/- attribution {kind}\n{result.feature.name}, attribution at {result.layer} ({where})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


def plot_tense(result, path) -> str:
    """Figure: the synthesised image(s) and the P, N, tension and feature trajectories (first image).
    Writes a PNG; returns ``path``."""
    plt = pyplot()

    b = result.images.shape[0]
    fig, axes = plt.subplots(1, b + 1, figsize=(3.2 * (b + 1), 3.4))
    for i in range(b):
        axes[i].imshow(result.images[i].permute(1, 2, 0).clamp(0, 1).numpy())
        axes[i].set_xticks([])
        axes[i].set_yticks([])
        axes[i].set_title(
            f"f={float(result.activation[-1, i]):.3g} P={float(result.positive[-1, i]):.3g} N={float(result.negative[-1, i]):.3g}",
            fontsize=8,
        )
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
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


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
