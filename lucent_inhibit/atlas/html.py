"""Stage 6b of the atlas: one self-contained interactive page (pan, zoom, the images behind each cell).

The page's HTML, CSS and JavaScript live in the package-data file ``template.html`` (read with
:mod:`importlib.resources`); this module fills in the title, the summary line and the data: icons and
dataset thumbnails as base64 PNG, numbers as JSON escaped for a ``<script>`` element. A
Content-Security-Policy forbids any network access; labels and file names are escaped.
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
from functools import lru_cache
from importlib import resources
from typing import Optional

import numpy as np

from .figures import FRAMES, frame_values, symmetric_limit


@lru_cache(maxsize=1)
def template() -> str:
    """The page template (``%(title)s``, ``%(summary)s`` and ``%(data)s`` are filled in)."""
    return resources.files(__package__).joinpath("template.html").read_text(encoding="utf-8")


def _png_data_uri(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _script_json(obj) -> str:
    """JSON safe inside a <script> element: no '<', '>' or '&' survive (so no '</script>' or '<!--')."""
    s = json.dumps(obj, ensure_ascii=True, allow_nan=False)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _finite(x: float) -> Optional[float]:
    x = float(x)
    return x if math.isfinite(x) else None


def _rgb(net: float, lim: float) -> str:
    import matplotlib

    r, g, b, _ = matplotlib.colormaps["RdBu_r"](0.5 + 0.5 * float(np.clip(net / lim, -1, 1)))
    return f"rgb({int(r * 255)},{int(g * 255)},{int(b * 255)})"


def _frame_colours(atlas) -> dict:
    """Frame colour of every cell for each choice of :data:`FRAMES` (each on its own scale centred at 0)."""
    out = {}
    for frame in FRAMES:
        values, _ = frame_values(atlas, frame)
        lim = symmetric_limit(values)
        out[frame] = [_rgb(v, lim) for v in values]
    return out


def _page_data(atlas, frame: str = "activation", icon_size: int = 128) -> dict:
    """The JSON the page script reads: grid side, the frame choice, cells (with their icons, receptive-field
    crops at ``icon_size`` pixels, and their images) and the images they list."""
    g, p, ic = atlas.grid, atlas.points, atlas.icons
    colours, crops = _frame_colours(atlas), ic.crops(icon_size)
    used_rows = np.unique(p.point_image[g.members]) if len(g) else np.zeros(0, np.int64)
    remap = {int(r): j for j, r in enumerate(used_rows)}
    images = [
        {"label": str(p.labels[r]), "index": int(p.image_index[r]), "activation": _finite(p.activation[r]),
         "P": _finite(p.P[r]), "N": _finite(p.N[r]), "thumb": _png_data_uri(p.thumbnails[r])}
        for r in used_rows
    ]
    cells = []
    for k in range(len(g)):
        rows, counts = atlas.cell_images(k)
        order = np.argsort(-p.activation[rows], kind="stable")
        cells.append({
            "col": int(g.cells[k, 0]), "row": int(g.cells[k, 1]), "count": int(g.count[k]), "net": _finite(g.net[k]),
            "activation": _finite(g.activation[k]), "icon_activation": _finite(ic.activation[k]),
            "cosine": _finite(ic.cosine[k]), "colors": {f: colours[f][k] for f in FRAMES},
            "icon": _png_data_uri(crops[k]), "full": _png_data_uri(ic.images[k]),
            "images": [[remap[int(rows[j])], int(counts[j])] for j in order],
        })
    return {"grid": int(g.size), "frame": frame, "cells": cells, "images": images}


def atlas_html(atlas, title: Optional[str] = None, frame: str = "activation", icon_size: int = 128) -> str:
    """The interactive atlas as one self-contained HTML string (see :func:`write_atlas_html`)."""
    from ..core.validate import check_choice, check_int

    check_choice("frame", frame, FRAMES)
    icon_size = check_int("icon_size", icon_size, low=8)
    g, p = atlas.grid, atlas.points
    word = "Attribution" if p.vector_kind == "attribution" else "Activation"
    title = title or f"{word} atlas of {p.feature.name} at {p.layer}"
    s = atlas.activation_by_sign()
    summary = (
        f"{len(g)} icons on a {g.size}x{g.size} grid from {len(p)} points ({p.mode} mode) of {len(p.image_index)} "
        f"images of {p.dataset}. Feature activation on icons: net-positive cells {s['positive_mean']:.4g} "
        f"(n={s['n_positive']}), net-negative cells {s['negative_mean']:.4g} (n={s['n_negative']})."
    )
    data = _script_json(_page_data(atlas, frame, icon_size))
    fill = {"title": html.escape(title), "summary": html.escape(summary), "data": data}
    return template() % fill


def write_atlas_html(atlas, path: str, title: Optional[str] = None, frame: str = "activation",
                     icon_size: int = 128) -> str:
    """Write the interactive atlas: one self-contained HTML file (icons and dataset thumbnails embedded
    as base64 PNG; a Content-Security-Policy forbids any network access) with pan (drag) and zoom (wheel,
    buttons). The mosaic shows each icon's receptive-field crop (:meth:`AtlasIcons.crops`, ``icon_size``
    pixels) framed by ``frame`` (``"activation"``: the feature measured on the icon; ``"net"``: the cell's
    net attribution; a switch on the page changes it). Hovering a cell shows its icon large (the crop and
    the whole icon) beside the dataset images whose points fell into it, with their activation, P and N;
    clicking pins them. Labels and file names are escaped. Returns ``path``."""
    text = atlas_html(atlas, title, frame, icon_size)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path
