"""Figures (matplotlib, Agg backend, PNG). A flat module: one function per figure.

Colour convention throughout: red = excitation / positive activation, blue = inhibition / negative,
on diverging maps centred at 0.

Scan figures (:mod:`lucent_inhibit.scanning.result`):

- :func:`plot_scan_scatter`: P against N, one dot per image, coloured by activation, MTIs highlighted;
- :func:`plot_image_grid`: MEIs / MIIs / MTIs with activation, P and N under each image;
- :func:`plot_signed_overlay` / :func:`plot_scan_overlay`: one image with its positive and negative
  attribution maps upsampled onto it, side by side;
- :func:`save_scan_figures`: all of the above for one scan, written to a folder.

Completeness figure (:mod:`lucent_inhibit.attribution.completeness`): :func:`plot_completeness`, Pearson r between
a feature and its total attribution against layer depth (Hamblin et al. 2024, Figure 3).
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..core.figures import diverging_norm, pyplot, save_figure, to_hwc
from ..core.results import expect_result
from ..core.validate import MAX_IMAGES, InputError, check_choice, check_int, check_number


def _scan(result):
    return expect_result(result, "ScanResult", "lucent_inhibit.scan or load_result")


def _scan_index(result, name: str, value) -> int:
    """``value`` as a dataset index that ``result`` scanned, else ``ValueError`` naming ``name``."""
    index = check_int(name, value, 0)
    if not np.any(result.indices == index):
        raise InputError(f"{name} must be a dataset index of the scan ({len(result)} images), got {index}")
    return index


def _indices(result, name: str, values) -> List[int]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise InputError(f"{name} must be a sequence of dataset indices, got {values!r:.60}")
    return [_scan_index(result, f"{name}[{j}]", i) for j, i in enumerate(values)]


def _dataset_image(dataset, index: int) -> np.ndarray:
    from ..data.datasets import dataset_item

    return to_hwc(dataset_item(dataset, index))




def _density_contours(ax, x: np.ndarray, y: np.ndarray, levels: int = 5, max_points: int = 3000, grid: int = 60):
    """Gaussian kernel density of the points, drawn as grey contour lines (subsampled for speed)."""
    if x.size < 5:
        return
    rng = np.random.default_rng(0)
    if x.size > max_points:
        keep = rng.choice(x.size, max_points, replace=False)
        x, y = x[keep], y[keep]
    sx, sy = x.std() or 1.0, y.std() or 1.0
    bw = x.size ** (-1.0 / 6.0)  # Scott's rule in 2-D
    gx, gy = np.linspace(x.min(), x.max(), grid), np.linspace(y.min(), y.max(), grid)
    kx = np.exp(-0.5 * ((gx[:, None] - x[None]) / (bw * sx)) ** 2)  # (grid, n)
    ky = np.exp(-0.5 * ((gy[:, None] - y[None]) / (bw * sy)) ** 2)
    dens = ky @ kx.T  # (grid_y, grid_x)
    if dens.max() <= 0:
        return
    ax.contour(gx, gy, dens / dens.max(), levels=np.linspace(0.1, 0.9, levels), colors="0.35", linewidths=0.7)


def _percentiles(result, layer, granularity: str = "element", norm: str = "l1") -> Optional[np.ndarray]:
    from .stats import percentiles_or_none

    return percentiles_or_none(result, layer, granularity, norm)


def plot_scan_scatter(
    result,
    layer: Optional[str] = None,
    highlight="mtis",
    k: int = 10,
    score="percentile",
    granularity: str = "element",
    norm: str = "l1",
    contours: bool = False,
    ax=None,
    path: Optional[str] = None,
    title: Optional[str] = None,
    scale: str = "raw",
):
    """The MTI selection scatter: P (x) against N (y) at ``layer``, one dot per image.

    Dots are coloured by the feature's activation on a diverging map centred at 0 (red positive, blue
    negative). ``highlight``: ``"mtis"`` (the top-``k`` MTIs by ``score``, the default), an array of
    dataset indices, or None; highlighted images get a black ring and their index. ``contours`` adds
    density contours of all points. ``scale``: ``"raw"`` (the totals) or ``"percentile"`` (their
    percentile ranks in the scan, 0-100, on which the default tension score is the smaller coordinate).
    Returns the matplotlib Figure (saved to ``path`` as PNG if given).
    """
    plt = pyplot()
    result, k = _scan(result), check_int("k", k, 1, MAX_IMAGES)
    if check_choice("scale", scale, ("raw", "percentile")) == "percentile":
        p, n = result.percentiles(layer, granularity, norm).T
    else:
        p, n = result.P(layer, granularity, norm), result.N(layer, granularity, norm)
    act = result.activation
    if isinstance(highlight, str):
        if highlight != "mtis":
            raise ValueError(f"highlight must be 'mtis', an array of dataset indices or None, got {highlight!r}")
        small = _percentiles(result, layer, granularity, norm) is None  # too few images for percentile ranks
        highlight = result.mtis(k, "min" if small and score == "percentile" else score, layer, granularity, norm)
    elif highlight is not None:
        highlight = _indices(result, "highlight", highlight)
    fig, ax = plt.subplots(figsize=(6.4, 5.4)) if ax is None else (ax.figure, ax)
    order = np.argsort(np.abs(act))  # strongest activations drawn last
    sc = ax.scatter(p[order], n[order], c=act[order], cmap="RdBu_r", norm=diverging_norm(act), s=14,
                    edgecolors="none", alpha=0.9)
    fig.colorbar(sc, ax=ax, label="activation $f_v(x)$")
    if contours:
        _density_contours(ax, p.astype(np.float64), n.astype(np.float64))
    if highlight is not None and len(highlight):
        rows = np.array([result.row(i) for i in highlight])
        ax.scatter(p[rows], n[rows], s=70, facecolors="none", edgecolors="k", linewidths=1.3,
                   label=f"selected ({len(rows)})")
        for r_, i in zip(rows, highlight):
            ax.annotate(str(int(i)), (p[r_], n[r_]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.legend(loc="upper left", fontsize=8)
    hi = float(max(p.max(initial=0), n.max(initial=0))) * 1.05 or 1.0
    ax.plot([0, hi], [0, hi], color="0.6", lw=0.8, ls="--")
    name = layer or result.layers[0]
    unit = ("percentile rank in the scan, " if scale == "percentile" else "") + ("sum" if norm == "l1" else "L2")
    ax.set_xlabel(f"P: excitatory attribution ({unit}, {granularity}) at {name}")
    ax.set_ylabel(f"N: inhibitory attribution ({unit}, {granularity}) at {name}")
    ax.set_title(title or f"{result.feature.name}: {len(result)} images")
    return save_figure(fig, path)


def plot_image_grid(
    result,
    dataset,
    indices: Sequence[int],
    layer: Optional[str] = None,
    ncols: int = 5,
    title: Optional[str] = None,
    path: Optional[str] = None,
    granularity: str = "element",
    norm: str = "l1",
):
    """A grid of dataset images with ``f``, ``P`` and ``N`` (at ``layer``) written under each, with P's and
    N's percentile ranks among the scanned images (``P=12.3 (p95)``; omitted for scans under 10 images).

    ``indices``: dataset indices (e.g. ``result.meis(10)``), shown in the given order. ``dataset`` must be
    the scanned dataset (its identity is checked when it has one). Returns the Figure.
    """
    plt = pyplot()
    result = _scan(result)
    indices = _indices(result, "indices", indices)
    if not indices:
        raise ValueError("indices is empty: nothing to show")
    ident = getattr(dataset, "identity", None)
    if ident is not None and result.dataset and ident != result.dataset:
        raise ValueError(f"dataset {ident!r} is not the scanned dataset {result.dataset!r}")
    ncols = min(check_int("ncols", ncols, 1, MAX_IMAGES), len(indices))
    nrows = -(-len(indices) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.1 * ncols, 2.45 * nrows), squeeze=False)
    p, n = result.P(layer, granularity, norm), result.N(layer, granularity, norm)
    pct = _percentiles(result, layer, granularity, norm)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, indices):
        r = result.row(i)
        ax.imshow(_dataset_image(dataset, i))
        ax.set_title(f"#{i}", fontsize=8)
        rank = ("", "") if pct is None else (f" (p{pct[r, 0]:.0f})", f" (p{pct[r, 1]:.0f})")
        ax.text(0.5, -0.04, f"f={result.activation[r]:.3g}\nP={p[r]:.3g}{rank[0]}  N={n[r]:.3g}{rank[1]}",
                transform=ax.transAxes, ha="center", va="top", fontsize=7.5)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def _upsample(m: np.ndarray, hw) -> np.ndarray:
    t = torch.as_tensor(np.asarray(m, dtype=np.float32))[None, None]
    return F.interpolate(t, size=tuple(hw), mode="bilinear", align_corners=False)[0, 0].numpy()


def plot_signed_overlay(
    image,
    positive: np.ndarray,
    negative: np.ndarray,
    title: Optional[str] = None,
    path: Optional[str] = None,
    alpha: float = 0.75,
):
    """One image with its positive (red) and negative (blue) attribution maps upsampled onto it.

    Args:
        image: (3, H, W) or (H, W, 3) in [0, 1].
        positive / negative: (h, w) non-negative maps (e.g. relu(S) and relu(-S) summed over channels).
            Both are scaled by the larger of their two maxima, so their intensities compare.
        alpha: opacity of the strongest attribution, in [0, 1].

    Three panels side by side: the image, excitation in red, inhibition in blue. Returns the Figure.
    """
    plt = pyplot()
    img, alpha = to_hwc(image), check_number("alpha", alpha, 0, 1)
    pos, neg = np.asarray(positive, np.float32), np.asarray(negative, np.float32)
    if pos.ndim != 2 or pos.shape != neg.shape:
        raise ValueError(f"positive and negative must be (h, w) maps of one shape, got {pos.shape} and {neg.shape}")
    if (pos < 0).any() or (neg < 0).any():
        raise ValueError("positive and negative maps must be non-negative (relu(S) and relu(-S))")
    scale = float(max(pos.max(), neg.max())) or 1.0
    hw = img.shape[:2]
    grey = img.mean(2, keepdims=True) * 0.6 + 0.2
    fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.5))
    axes[0].imshow(img)
    axes[0].set_title("image", fontsize=9)
    for ax, m, colour, label in ((axes[1], pos, (0.85, 0.1, 0.1), "excitation relu(S)"),
                                 (axes[2], neg, (0.1, 0.25, 0.9), "inhibition relu(-S)")):
        w = np.clip(_upsample(m / scale, hw), 0, 1)[..., None] * alpha
        ax.imshow(np.clip(grey * (1 - w) + np.array(colour) * w, 0, 1))
        ax.set_title(f"{label}: sum {m.sum():.3g}", fontsize=9)
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_scan_overlay(result, dataset, index: int, layer: Optional[str] = None, path: Optional[str] = None):
    """:func:`plot_signed_overlay` for dataset image ``index`` with the maps stored by the scan."""
    index = _scan_index(_scan(result), "index", index)
    try:
        pos, neg = result.maps(index, layer)
    except KeyError as exc:  # no maps stored for that layer
        raise InputError(exc.args[0]) from None
    r = result.row(index)
    name = layer or result.layers[0]
    title = (f"#{int(index)} {result.items[r]}: f={result.activation[r]:.3g}, P={result.P(name)[r]:.3g}, "
             f"N={result.N(name)[r]:.3g} at {name}")
    return plot_signed_overlay(_dataset_image(dataset, index), pos, neg, title=title, path=path)


def save_scan_figures(
    result, dataset, out: str, k: int = 10, layer: Optional[str] = None, score="percentile", contours: bool = True
) -> Dict[str, str]:
    """Write the scan's figures as PNGs into ``out``: scatter (raw totals, and percentile ranks as
    ``scatter_percentile`` when the scan has at least 10 images), MEI / MII / MTI grids (captions with P and N
    and their percentiles), overlays of the top MTIs. ``score="percentile"`` falls back to ``"min"`` for a
    scan too small for percentile ranks.

    Returns name -> path of each file written.
    """
    plt = pyplot()
    result = _scan(result)
    k = min(check_int("k", k, 1, MAX_IMAGES), len(result))
    os.makedirs(out, exist_ok=True)
    files = {}

    def keep(name, fig):
        files[name] = os.path.join(out, f"{name}.png")
        plt.close(save_figure(fig, files[name]))

    pct = _percentiles(result, layer)
    score = "min" if pct is None and score == "percentile" else score
    mtis = result.mtis(k, score, layer)
    keep("scatter", plot_scan_scatter(result, layer, highlight=mtis, score=score, contours=contours))
    if pct is not None:
        keep("scatter_percentile", plot_scan_scatter(result, layer, highlight=mtis, score=score, scale="percentile"))
    keep("meis", plot_image_grid(result, dataset, result.meis(k), layer, title=f"MEIs of {result.feature.name}"))
    keep("miis", plot_image_grid(result, dataset, result.miis(k), layer, title=f"MIIs of {result.feature.name}"))
    keep("mtis", plot_image_grid(result, dataset, mtis, layer, title=f"MTIs ({_score_name(score)}) of {result.feature.name}"))
    name = layer or result.layers[0]
    if name in result.pos_maps:
        for rank, i in enumerate(mtis[: min(3, len(mtis))]):
            keep(f"overlay_mti{rank}", plot_scan_overlay(result, dataset, int(i), layer))
    return files


def _score_name(score) -> str:
    return "min of P and N percentile ranks" if score == "percentile" else f"{getattr(score, '__name__', score)}(P, N)"

