"""The shared matplotlib helpers of every figure of the library (the one place that picks the backend).

Figures are matplotlib, drawn with the non-interactive Agg backend unless the user (a notebook) already
chose one, written as PNG. Colour convention throughout the library: red = excitation / positive
activation, blue = inhibition / negative, on diverging maps centred at 0.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

#: resolution of the PNGs the figure functions write (dots per inch)
DPI = 110


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
