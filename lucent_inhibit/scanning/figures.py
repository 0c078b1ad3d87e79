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
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..core.figures import diverging_norm, finish, new_axes, no_ax, place_labels, pyplot, to_hwc
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


def fit_zero_line(activation: np.ndarray, p: np.ndarray, n: np.ndarray) -> Tuple[float, float]:
    """``(a, b)`` of the least-squares fit ``f ~ a + b (P - N)`` over the images (each (M,)): the fitted
    ``f = 0`` lies on the line ``N = P + a / b`` of the P-vs-N plane (P = N only without a bias ``a``);
    ``(nan, nan)`` for fewer than two images or a constant ``P - N``."""
    e = np.asarray(p, np.float64) - np.asarray(n, np.float64)
    f = np.asarray(activation, np.float64)
    if e.size < 2 or not np.ptp(e) > 0:
        return float("nan"), float("nan")
    b, a = np.polyfit(e, f, 1)
    return float(a), float(b)


def _reference_lines(ax, result, p, n, scale: str) -> None:
    """The labelled diagonal and, on the raw totals, the line where the fit ``f ~ a + b (P - N)`` gives
    ``f = 0``; both axes then span the points' common range, so the diagonal stays the diagonal."""
    both = np.concatenate([p, n]).astype(np.float64)
    lo, hi = (0.0, 100.0) if scale == "percentile" else (float(both.min(initial=0)), float(both.max(initial=1)))
    pad = 0.05 * ((hi - lo) or 1.0)
    lo, hi = lo - pad, hi + pad
    ax.plot([lo, hi], [lo, hi], color="0.6", lw=0.8, ls="--",
            label="equal percentile ranks" if scale == "percentile" else "P = N")
    if scale == "raw":
        a, b = fit_zero_line(result.activation, p, n)
        if np.isfinite(a) and np.isfinite(b) and b != 0:
            ax.plot([lo, hi], [lo + a / b, hi + a / b], color="k", lw=1.1,
                    label=f"fitted f = 0: N = P {a / b:+.3g}\n(least squares f = {a:.3g} + {b:.3g} (P - N))")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)


def _axis_label(which: str, unit: str, granularity: str, name: str) -> str:
    """A two-line axis label: ``which`` at the layer, then the units (wrapped to fit beside a 5-inch axes)."""
    import textwrap

    return "\n".join(textwrap.wrap(f"{which} at {name}", 44) + textwrap.wrap(f"({unit}, {granularity})", 44))


def plot_scan_scatter(
    result,
    path=None,
    ax=None,
    layer: Optional[str] = None,
    highlight="mtis",
    k: int = 10,
    score="percentile",
    granularity: str = "element",
    norm: str = "l1",
    contours: bool = False,
    title: Optional[str] = None,
    scale: str = "raw",
):
    """The MTI selection scatter: P (x) against N (y) at ``layer``, one dot per image.

    Dots are coloured by the feature's activation on a diverging map centred at 0 (red positive, blue
    negative). ``highlight``: ``"mtis"`` (the top-``k`` MTIs by ``score``, the default), an array of
    dataset indices, or None; highlighted images get a black ring and their index (placed where it
    collides with no other text; indices that find no room are left out). ``contours`` adds density
    contours of all points. ``scale``: ``"raw"`` (the totals; the line where the fit ``f ~ a + b (P - N)``
    over the scan gives ``f = 0`` is drawn and labelled, beside the dashed ``P = N``) or ``"percentile"``
    (their percentile ranks in the scan, 0-100, on which the default tension score is the smaller
    coordinate). Returns the Figure, a PNG at ``path`` when given; ``ax``: draw into that Axes.
    """
    result, k = _scan(result), check_int("k", k, 1, MAX_IMAGES)
    if check_choice("scale", scale, ("raw", "percentile")) == "percentile":
        p, n = result.percentiles(layer, granularity, norm).T
    else:
        p, n = result.P(layer, granularity, norm), result.N(layer, granularity, norm)
    highlight = _highlighted(result, highlight, k, score, layer, granularity, norm)
    fig, ax, own = new_axes(ax, (6.4, 6.2))
    act = result.activation
    order = np.argsort(np.abs(act))  # strongest activations drawn last
    sc = ax.scatter(p[order], n[order], c=act[order], cmap="RdBu_r", norm=diverging_norm(act), s=14,
                    edgecolors="none", alpha=0.9)
    fig.colorbar(sc, ax=ax, label="activation $f_v(x)$")
    if contours:
        _density_contours(ax, p.astype(np.float64), n.astype(np.float64))
    _reference_lines(ax, result, p, n, scale)
    rows = np.array([result.row(i) for i in highlight], dtype=np.int64) if highlight is not None else np.zeros(0, int)
    if rows.size:
        ax.scatter(p[rows], n[rows], s=70, facecolors="none", edgecolors="k", linewidths=1.3,
                   label=f"selected ({len(rows)})")
    name = layer or result.layers[0]
    unit = ("percentile rank in the scan, " if scale == "percentile" else "") + ("sum" if norm == "l1" else "L2")
    ax.set_xlabel(_axis_label("P: excitatory attribution", unit, granularity, name), fontsize=9)
    ax.set_ylabel(_axis_label("N: inhibitory attribution", unit, granularity, name), fontsize=9)
    ax.set_title(title or f"{result.feature.name}: {len(result)} images", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, ncol=2)
    if own:
        fig.tight_layout()
    if rows.size:
        place_labels(ax, np.stack([p[rows], n[rows]], 1), [str(int(i)) for i in highlight])
    return finish(fig, path, own)


def _highlighted(result, highlight, k, score, layer, granularity, norm):
    """The dataset indices the scatter rings: the top-``k`` MTIs for ``"mtis"``, the given ones, or None."""
    if isinstance(highlight, str):
        if highlight != "mtis":
            raise ValueError(f"highlight must be 'mtis', an array of dataset indices or None, got {highlight!r}")
        small = _percentiles(result, layer, granularity, norm) is None  # too few images for percentile ranks
        return result.mtis(k, "min" if small and score == "percentile" else score, layer, granularity, norm)
    return None if highlight is None else _indices(result, "highlight", highlight)


def plot_image_grid(
    result,
    path=None,
    ax=None,
    *,
    dataset,
    indices: Sequence[int],
    layer: Optional[str] = None,
    ncols: int = 5,
    title: Optional[str] = None,
    granularity: str = "element",
    norm: str = "l1",
):
    """A grid of dataset images with ``f``, ``P`` and ``N`` (at ``layer``) written under each (one line each),
    with P's and N's percentile ranks among the scanned images (``P=12.3 (p95)``; omitted for scans under 10
    images).

    ``indices``: dataset indices (e.g. ``result.meis(10)``), shown in the given order. ``dataset`` must be
    the scanned dataset (its identity is checked when it has one). Returns the Figure (a PNG at ``path`` when
    given); a grid of panels: no ``ax``.
    """
    no_ax(ax, "plot_image_grid")
    result = _scan(result)
    indices = _indices(result, "indices", indices)
    if not indices:
        raise ValueError("indices is empty: nothing to show")
    ident = getattr(dataset, "identity", None)
    if ident is not None and result.dataset and ident != result.dataset:
        raise ValueError(f"dataset {ident!r} is not the scanned dataset {result.dataset!r}")
    ncols = min(check_int("ncols", ncols, 1, MAX_IMAGES), len(indices))
    nrows = -(-len(indices) // ncols)
    fig, axes = pyplot().subplots(nrows, ncols, figsize=(2.1 * ncols, 2.9 * nrows + (0.4 if title else 0)),
                                  squeeze=False)
    p, n = result.P(layer, granularity, norm), result.N(layer, granularity, norm)
    pct = _percentiles(result, layer, granularity, norm)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, indices):
        r = result.row(i)
        ax.axis("on")
        ax.imshow(_dataset_image(dataset, i))
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_title(f"#{i}", fontsize=8)
        rank = ("", "") if pct is None else (f" (p{pct[r, 0]:.0f})", f" (p{pct[r, 1]:.0f})")
        ax.set_xlabel(f"f={result.activation[r]:.3g}\nP={p[r]:.3g}{rank[0]}\nN={n[r]:.3g}{rank[1]}", fontsize=7.5,
                      labelpad=2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return finish(fig, path)


def _upsample(m: np.ndarray, hw) -> np.ndarray:
    t = torch.as_tensor(np.asarray(m, dtype=np.float32))[None, None]
    return F.interpolate(t, size=tuple(hw), mode="bilinear", align_corners=False)[0, 0].numpy()


def plot_signed_overlay(
    image,
    path=None,
    ax=None,
    *,
    positive: np.ndarray,
    negative: np.ndarray,
    title: Optional[str] = None,
    alpha: float = 0.75,
):
    """One image with its positive (red) and negative (blue) attribution maps upsampled onto it.

    Args:
        image: (3, H, W) or (H, W, 3) in [0, 1].
        positive / negative: (h, w) non-negative maps (e.g. relu(S) and relu(-S) summed over channels).
            Both are scaled by the larger of their two maxima, so their intensities compare.
        alpha: opacity of the strongest attribution, in [0, 1].

    Three panels side by side (no ``ax``): the image, excitation in red, inhibition in blue. Returns the
    Figure, a PNG at ``path`` when given.
    """
    no_ax(ax, "plot_signed_overlay")
    img, alpha = to_hwc(image), check_number("alpha", alpha, 0, 1)
    pos, neg = np.asarray(positive, np.float32), np.asarray(negative, np.float32)
    if pos.ndim != 2 or pos.shape != neg.shape:
        raise ValueError(f"positive and negative must be (h, w) maps of one shape, got {pos.shape} and {neg.shape}")
    if (pos < 0).any() or (neg < 0).any():
        raise ValueError("positive and negative maps must be non-negative (relu(S) and relu(-S))")
    scale = float(max(pos.max(), neg.max())) or 1.0
    hw = img.shape[:2]
    grey = img.mean(2, keepdims=True) * 0.6 + 0.2
    fig, axes = pyplot().subplots(1, 3, figsize=(9.6, 3.7))
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
        import textwrap

        fig.suptitle("\n".join(textwrap.wrap(title, 110)), fontsize=10)
    fig.tight_layout()
    return finish(fig, path)


def plot_scan_overlay(result, path=None, ax=None, *, dataset, index: int, layer: Optional[str] = None):
    """:func:`plot_signed_overlay` for dataset image ``index`` with the maps stored by the scan (three panels:
    no ``ax``); returns the Figure, a PNG at ``path`` when given."""
    no_ax(ax, "plot_scan_overlay")
    index = _scan_index(_scan(result), "index", index)
    try:
        pos, neg = result.maps(index, layer)
    except KeyError as exc:  # no maps stored for that layer
        raise InputError(exc.args[0]) from None
    r = result.row(index)
    name = layer or result.layers[0]
    title = (f"#{int(index)} {result.items[r]}: f={result.activation[r]:.3g}, P={result.P(name)[r]:.3g}, "
             f"N={result.N(name)[r]:.3g} at {name}")
    return plot_signed_overlay(_dataset_image(dataset, index), path, positive=pos, negative=neg, title=title)


def save_scan_figures(
    result, out, *, dataset, k: int = 10, layer: Optional[str] = None, score="percentile", contours: bool = True,
    distinct: bool = True,
) -> Dict[str, str]:
    """Write the scan's figures as PNGs into the folder ``out``: scatter (raw totals, and percentile ranks as
    ``scatter_percentile`` when the scan has at least 10 images), MEI / MII / MTI grids of ``dataset`` (the
    scanned images; captions with P and N and their percentiles), overlays of the top MTIs.
    ``score="percentile"`` falls back to ``"min"`` for a scan too small for percentile ranks. Each figure is
    closed once written. ``distinct``: the grids show at most one crop per source image while there are
    enough (:meth:`~lucent_inhibit.scanning.result.ScanResult.meis`); ``False``: every crop, by rank.

    Returns name -> path of each file written.
    """
    result = _scan(result)
    k = min(check_int("k", k, 1, MAX_IMAGES), len(result))
    out = os.fspath(out)
    os.makedirs(out, exist_ok=True)
    files = {name: os.path.join(out, f"{name}.png") for name in ("scatter", "meis", "miis", "mtis")}
    pct = _percentiles(result, layer)
    score = "min" if pct is None and score == "percentile" else score
    mtis = result.mtis(k, score, layer, distinct=distinct)
    plot_scan_scatter(result, files["scatter"], layer=layer, highlight=mtis, score=score, contours=contours)
    if pct is not None:
        files["scatter_percentile"] = os.path.join(out, "scatter_percentile.png")
        plot_scan_scatter(result, files["scatter_percentile"], layer=layer, highlight=mtis, score=score,
                          scale="percentile")
    who = result.feature.name
    for name, idx, what in (("meis", result.meis(k, distinct), "MEIs"), ("miis", result.miis(k, distinct), "MIIs"),
                            ("mtis", mtis, f"MTIs ({_score_name(score)})")):
        plot_image_grid(result, files[name], dataset=dataset, indices=idx, layer=layer, title=f"{what} of {who}")
    name = layer or result.layers[0]
    if name in result.pos_maps:
        for rank, i in enumerate(mtis[: min(3, len(mtis))]):
            files[f"overlay_mti{rank}"] = os.path.join(out, f"overlay_mti{rank}.png")
            plot_scan_overlay(result, files[f"overlay_mti{rank}"], dataset=dataset, index=int(i), layer=layer)
    return files


def _score_name(score) -> str:
    return "min of P and N percentile ranks" if score == "percentile" else f"{getattr(score, '__name__', score)}(P, N)"
