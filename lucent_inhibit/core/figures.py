"""The shared matplotlib helpers of every figure of the library (the one place that picks the backend).

Figures are matplotlib, drawn with the non-interactive Agg backend unless the user (a notebook) already
chose one, written as PNG. Colour convention throughout the library: red = excitation / positive
activation, blue = inhibition / negative, on diverging maps centred at 0.

One convention for every figure: ``result.plot(path=None, ax=None, **style)`` and ``plot_X(result,
path=None, ax=None, ...)`` return the matplotlib Figure and write a PNG at ``path`` when given (then close
the figure they created: a loop that saves many holds none open; a closed Figure still saves and
displays). Without ``path`` the figure stays open for the caller: close it (``plt.close(fig)``) when
drawing many in a loop. ``ax`` draws a one-panel figure into the caller's axes (the caller's figure is
never closed); a multi-panel figure refuses an ``ax`` (:func:`no_ax`).

Figures are checked, not eyeballed: :func:`text_overlaps` and :func:`text_outside` measure every drawn
text box with matplotlib's renderer (tests/test_figure_layout.py holds every figure of the report to
them); :func:`place_labels` puts point labels where they collide with nothing.
"""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import numpy as np

#: resolution of the PNGs the figure functions write (dots per inch)
DPI = 110
#: Two text boxes may overlap, or a text leave the figure, by this many pixels (at the figure's dpi) before
#: :func:`text_overlaps` / :func:`text_outside` report it: glyph boxes include line spacing and move by about
#: a pixel with font hinting.
TEXT_TOLERANCE_PX = 1.5


def pyplot():
    """``matplotlib.pyplot``, with the Agg backend selected when nothing chose one yet (the command line, a
    script); a backend chosen before (a notebook kernel's inline backend, ``MPLBACKEND``) is kept."""
    import sys

    if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
        import matplotlib

        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Optional[str], dpi: int = DPI):
    """Write ``fig`` as a PNG at ``path`` (its folder created) when ``path`` is given; returns ``fig``."""
    if path is not None:
        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return fig


def close(fig) -> None:
    """Release a figure (after saving it)."""
    pyplot().close(fig)


def new_axes(ax, figsize: Tuple[float, float]):
    """``(fig, ax, own)`` of a one-panel figure function: a new figure of ``figsize`` inches with one axes when
    ``ax`` is None (``own`` True), else the caller's matplotlib Axes ``ax`` and its figure (``own`` False)."""
    if ax is None:
        fig, ax = pyplot().subplots(figsize=figsize)
        return fig, ax, True
    from matplotlib.axes import Axes

    if not isinstance(ax, Axes):
        from .validate import InputError

        raise InputError(f"ax must be a matplotlib Axes or None, got {type(ax).__name__}")
    return ax.get_figure(), ax, False


def no_ax(ax, name: str) -> None:
    """One-line ``ValueError`` naming the figure function ``name`` when an ``ax`` is given to a figure of
    several panels (it makes its own figure)."""
    if ax is not None:
        raise ValueError(f"{name} draws several panels into a figure of its own and takes no ax; pass ax=None")


def finish(fig, path=None, own: bool = True, dpi: int = DPI):
    """The end of every figure function: ``fig`` written as a PNG at ``path`` when given, then closed when
    the function created it (``own``); returns ``fig`` (a closed figure still saves and displays)."""
    save_figure(fig, path, dpi)
    if path is not None and own:
        close(fig)
    return fig


def mark_still(ax, detail: str = "", box=None) -> None:
    """Mark an image panel whose render did not move (:mod:`lucent_inhibit.core.motion`): a hatched overlay
    and "did not move" with ``detail`` (e.g. the numbers measured) in its middle. ``box``: ``(x0, y0, w, h)``
    in data units of a panel drawn into part of ``ax`` (then no text: it would not fit); None: all of ``ax``."""
    from matplotlib.patches import Rectangle

    where = dict(transform=ax.transAxes) if box is None else {}
    x0, y0, w, h = (0, 0, 1, 1) if box is None else box
    ax.add_patch(Rectangle((x0, y0), w, h, facecolor=(1, 1, 1, 0.35), edgecolor="0.15", hatch="////", lw=0,
                           zorder=5, **where))
    if box is None:
        ax.text(0.5, 0.5, "did not move" + (f"\n{detail}" if detail else ""), ha="center", va="center",
                fontsize=6.5, zorder=6, transform=ax.transAxes, wrap=False,
                bbox=dict(facecolor="white", alpha=0.9, edgecolor="none", pad=1.5))


def to_hwc(image) -> np.ndarray:
    """(3, H, W) / (H, W, 3) tensor or array in [0, 1] -> (H, W, 3) float array clipped to [0, 1]."""
    if hasattr(image, "detach"):
        a = image.detach().cpu().float().numpy()
    else:
        a = np.asarray(image, dtype=np.float32)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[2] != 3:
        a = a.transpose(1, 2, 0)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an image (3, H, W) or (H, W, 3), got shape {a.shape}")
    return np.clip(a, 0, 1)


def diverging_norm(values: np.ndarray):
    """A matplotlib norm centred at 0 and symmetric around it, spanning ``max |values|`` (1 when all are 0)."""
    from matplotlib.colors import TwoSlopeNorm

    values = np.asarray(values)
    lim = (float(np.max(np.abs(values))) if values.size else 0.0) or 1.0
    return TwoSlopeNorm(vmin=-lim, vcenter=0.0, vmax=lim)


# ------------------------------------------------------------------------------------------------
# text layout, measured with the renderer
# ------------------------------------------------------------------------------------------------
def drawn_texts(fig):
    """``(renderer, texts)``: ``fig`` drawn once, and every Text artist that drew something (visible, not
    blank): titles and suptitles, axis labels, the tick labels in view, annotations, legend texts, colour-bar
    labels, texts of offset boxes; in drawing order."""
    from matplotlib.text import Text

    drawn, draw = [], Text.draw

    def recording(self, renderer):
        if self.get_visible() and self.get_text().strip():
            drawn.append(self)
        return draw(self, renderer)

    recording._supports_rasterization = True
    Text.draw = recording
    try:
        canvas = fig.canvas
        if not hasattr(canvas, "get_renderer"):
            from matplotlib.backends.backend_agg import FigureCanvasAgg

            canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
    finally:
        Text.draw = draw
    texts = [t for t in dict.fromkeys(drawn) if np.all(np.isfinite(t.get_window_extent(renderer).extents))]
    return renderer, texts


def text_corners(text, renderer) -> np.ndarray:
    """(4, 2) corners of ``text``'s box in display pixels, turned with the text (a rotated label's box is a
    rotated rectangle, not its axis-aligned bound)."""
    box = text.get_window_extent(renderer)
    angle = float(text.get_rotation())
    if abs(angle / 90 - round(angle / 90)) < 1e-6:
        return np.array([[box.x0, box.y0], [box.x1, box.y0], [box.x1, box.y1], [box.x0, box.y1]])
    text.set_rotation(0)
    try:
        flat = text.get_window_extent(renderer)
    finally:
        text.set_rotation(angle)
    (cx, cy), a = box.corners().mean(0), np.deg2rad(angle)
    u, v = np.array([np.cos(a), np.sin(a)]) * flat.width / 2, np.array([-np.sin(a), np.cos(a)]) * flat.height / 2
    return np.array([[cx, cy] - u - v, [cx, cy] + u - v, [cx, cy] + u + v, [cx, cy] - u + v])


def overlap_depth(a: np.ndarray, b: np.ndarray) -> float:
    """How far (pixels) the convex quadrilaterals ``a`` and ``b`` (4, 2) reach into each other: the smallest
    overlap of their projections on the edge normals of both (separating axes); <= 0 when apart."""
    depth = np.inf
    for poly in (a, b):
        for k in range(2):
            edge = poly[k + 1] - poly[k]
            n = np.array([-edge[1], edge[0]]) / (np.hypot(*edge) or 1.0)
            pa, pb = a @ n, b @ n
            depth = min(depth, min(pa.max(), pb.max()) - max(pa.min(), pb.min()))
    return float(depth)


def text_overlaps(fig, tolerance: float = TEXT_TOLERANCE_PX, drawn=None) -> List[Tuple[object, object]]:
    """Pairs ``(text_a, text_b)`` of drawn texts of ``fig`` (:func:`drawn_texts`) whose boxes overlap by more
    than ``tolerance`` pixels (rotated boxes compared as rotated rectangles). ``drawn``: a
    :func:`drawn_texts` result to reuse."""
    renderer, texts = drawn or drawn_texts(fig)
    if len(texts) < 2:
        return []
    ext = np.array([t.get_window_extent(renderer).extents for t in texts])  # (n, 4) x0, y0, x1, y1
    wide = (np.minimum(ext[:, None, 2], ext[None, :, 2]) - np.maximum(ext[:, None, 0], ext[None, :, 0]) > tolerance) \
        & (np.minimum(ext[:, None, 3], ext[None, :, 3]) - np.maximum(ext[:, None, 1], ext[None, :, 1]) > tolerance)
    corners = {}
    out = []
    for i, j in zip(*np.nonzero(np.triu(wide, 1))):
        for k in (i, j):
            if k not in corners:
                corners[k] = text_corners(texts[k], renderer)
        if overlap_depth(corners[i], corners[j]) > tolerance:
            out.append((texts[i], texts[j]))
    return out


def text_outside(fig, tolerance: float = TEXT_TOLERANCE_PX, drawn=None) -> List[object]:
    """Drawn texts of ``fig`` whose box reaches more than ``tolerance`` pixels beyond the figure's edges."""
    renderer, texts = drawn or drawn_texts(fig)
    w, h = fig.bbox.width, fig.bbox.height
    out = []
    for t in texts:
        x0, y0, x1, y1 = t.get_window_extent(renderer).extents
        if x0 < -tolerance or y0 < -tolerance or x1 > w + tolerance or y1 > h + tolerance:
            out.append(t)
    return out


def describe_text(text, renderer=None) -> str:
    """``'label' at (x0, y0)-(x1, y1) px``: one text artist, for messages."""
    x0, y0, x1, y1 = text.get_window_extent(renderer).extents
    return f"{text.get_text()[:48]!r} at ({x0:.0f}, {y0:.0f})-({x1:.0f}, {y1:.0f}) px"


def layout_problems(fig, tolerance: float = TEXT_TOLERANCE_PX) -> List[str]:
    """One line per text overlap and per text outside ``fig`` (empty: the texts are laid out); one draw."""
    drawn = drawn_texts(fig)
    renderer = drawn[0]
    lines = [f"overlap: {describe_text(a, renderer)} and {describe_text(b, renderer)}"
             for a, b in text_overlaps(fig, tolerance, drawn)]
    w, h = fig.bbox.width, fig.bbox.height
    return lines + [f"outside the {w:.0f}x{h:.0f} px figure: {describe_text(t, renderer)}"
                    for t in text_outside(fig, tolerance, drawn)]


#: Where :func:`place_labels` tries a label around its point: (dx, dy) in points, and the alignment there.
LABEL_OFFSETS = ((3, 3, "left", "bottom"), (-3, 3, "right", "bottom"), (3, -3, "left", "top"),
                 (-3, -3, "right", "top"), (0, 5, "center", "bottom"), (0, -5, "center", "top"),
                 (5, 0, "left", "center"), (-5, 0, "right", "center"))


def place_labels(ax, xy: np.ndarray, labels: Sequence[str], fontsize: float = 7, offsets=LABEL_OFFSETS,
                 **text_kw) -> int:
    """Label the points ``xy`` (N, 2; data units of ``ax``) with ``labels``, in the given order (most
    important first): each at the first place of ``offsets`` (``(dx, dy)`` points, ``ha``, ``va``) where its
    box stays inside ``ax`` and overlaps no text already drawn in the figure nor a label placed before; a
    label with no free place is left out. ``text_kw``: more Text properties (e.g. ``rotation=90``).
    Measures in pixels: call it once the figure's layout is final. Returns the labels placed."""
    fig = ax.get_figure()
    renderer, texts = drawn_texts(fig)
    taken = [t.get_window_extent(renderer).extents for t in texts]
    inside = ax.get_window_extent(renderer).extents
    placed = 0
    for (x, y), label in zip(np.asarray(xy, dtype=float), labels):
        for dx, dy, ha, va in offsets:
            t = ax.annotate(str(label), (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                            fontsize=fontsize, **text_kw)
            box = t.get_window_extent(renderer).extents
            within = box[0] >= inside[0] and box[1] >= inside[1] and box[2] <= inside[2] and box[3] <= inside[3]
            if within and not any(_boxes_meet(box, other) for other in taken):
                taken.append(box)
                placed += 1
                break
            t.remove()
    return placed


def _boxes_meet(a, b, gap: float = 1.0) -> bool:
    """Whether axis-aligned boxes ``(x0, y0, x1, y1)`` come within ``gap`` pixels of each other."""
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap
