"""The microscope as a static site: ``index.html`` (every unit in one sortable, filterable table, a jump box),
``units/<layer>/<unit>.html`` (one page per unit: its MTIs, MEIs and MIIs with their f, P and N percentile
ranks, its P-against-N scatter, its top inhibitory and excitatory channels, each linked to that channel's page
when the attribution layer is also a layer of the microscope), ``images/<i>.png`` (each dataset image
shown, once, as a thumbnail every page refers to) and ``visuals/<layer>/<channel>.png`` (each shown channel's
feature visualization, once). Pages are filled from the package-data templates
``index.html`` and ``unit.html``; a Content-Security-Policy forbids any network access, so the site works
from ``file://`` with nothing fetched; texts are escaped.
"""
from __future__ import annotations

import html
import json
import os
import re
from functools import lru_cache
from importlib import resources

import numpy as np

from ..core.io import atomic_write
from .result import GROUPS


@lru_cache(maxsize=2)
def template(name: str) -> str:
    """The page template ``name`` (``index.html`` or ``unit.html``) of this package."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _safe(name: str) -> str:
    """A layer name as one path component (Lucent names are ``[A-Za-z0-9_]``; anything else becomes ``-``)."""
    return re.sub(r"[^A-Za-z0-9_.]", "-", str(name)).lstrip(".") or "-"


def unit_path(layer: str, unit: int) -> str:
    """The page of a unit, relative to the site's root."""
    return f"units/{_safe(layer)}/{int(unit)}.html"


def _script_json(obj) -> str:
    s = json.dumps(obj, ensure_ascii=True, allow_nan=False)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _write_text(path: str, text: str) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)


def visual_path(layer: str, channel: int) -> str:
    """The feature visualization of a channel, relative to the site's root."""
    return f"visuals/{_safe(layer)}/{int(channel)}.png"


def _images(scope, root: str) -> None:
    from PIL import Image

    def save(pixels, path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0))).save(path, optimize=True)

    for i, thumb in zip(scope.image_ids, scope.thumbnails):
        save(thumb, os.path.join(root, "images", f"{int(i)}.png"))
    for layer, c, pixels in zip(scope.shown_layers, scope.shown_units, scope.visuals):
        save(pixels, os.path.join(root, visual_path(layer, c)))
    for j, f in enumerate(scope.features):
        for i in range(scope.inversions.shape[1]):
            for s, name in enumerate(("exc", "inh")):
                save(scope.inversions[j, i, s], os.path.join(root, inversion_path(f.layer, f.unit, i, name)))


def inversion_path(layer: str, unit: int, i: int, sign: str) -> str:
    """The ``sign`` (``exc`` or ``inh``) inversion of a unit's ``i``-th MTI, relative to the site's root."""
    return f"inversions/{_safe(layer)}/{int(unit)}-{int(i)}-{sign}.png"


def _inversions(scope, j: int) -> str:
    """The unit page's section of +/- inversions of its first MTIs (empty when none were made)."""
    f, k = scope.features[j], scope.inversions.shape[1]
    if not k:
        return ""
    cells = []
    for i in range(k):
        m = int(scope.tops[j, 2, i])
        verdict = "separated" if scope.inversion_separated[j, i] else "not separated"
        imgs = "".join(f'<img src="../../{inversion_path(f.layer, f.unit, i, s)}" alt="{name} inversion of image {m}" '
                       f'title="{name}">' for s, name in (("exc", "excitatory"), ("inh", "inhibitory")))
        cells.append(f'<figure class="inversion"><img src="../../images/{m}.png" alt="image {m}" title="MTI">{imgs}'
                     f"<figcaption>#{m}: MTI, excitatory, inhibitory ({verdict})</figcaption></figure>")
    return ("<h2>+/- inversions of the top MTIs</h2><div class=\"images\" id=\"inversions\">" + "".join(cells) + "</div>")


def _visual_img(scope, layer: str, channel: int, up: str, cls: str = "visual") -> str:
    """An ``<img>`` of the channel's feature visualization (``up``: the path back to the root), or a dash."""
    v = scope.shown(layer, channel)
    if v is None or not len(scope.visuals):
        return "&ndash;"
    still = "" if scope.visual_moved[v] else " still"
    note = "" if scope.visual_moved[v] else " (did not move: noise, not the channel)"
    alt = html.escape(f"feature visualization of {layer} {int(channel)}{note}")
    return f'<img class="{cls}{still}" src="{up}{visual_path(layer, channel)}" alt="{alt}" title="{alt}">'


def _index_row(scope, j: int) -> str:
    r, e = scope.unit_row(j), html.escape
    inh = f"{r['inhibitors'][0]} ({r['inhibitor_share'][0]:.2f})" if r["inhibitors"] else ""
    mti, share = r["mtis"][0], r["share"] if np.isfinite(r["share"]) else -1.0  # -1: no attribution (sorts last)
    shown = f"{share:.3f}" if share >= 0 else "none"
    return (f'<tr id="row-{e(_safe(r["layer"]))}-{r["unit"]}" data-layer="{e(r["layer"])}" data-unit="{r["unit"]}" '
            f'data-share="{share:.6f}" data-tension="{r["median_tension"]:.3f}" data-quiet="{r["quiet"]:.4f}" '
            f'data-inhibitor="{e(inh)}"><td>{e(r["layer"])}</td><td class="num"><a class="unit-link" '
            f'href="{e(unit_path(r["layer"], r["unit"]))}">{r["unit"]}</a></td><td class="num">{shown}'
            f'<span class="bar" style="width:{60 * max(share, 0):.0f}px"></span></td>'
            f'<td class="num">{r["median_tension"]:.1f}</td><td class="num">{r["quiet"]:.2f}</td><td>{e(inh)}</td>'
            f'<td><img src="images/{int(mti)}.png" alt="image {int(mti)}" title="image {int(mti)}"></td>'
            f'<td>{_visual_img(scope, r["layer"], r["unit"], "")}</td></tr>')


def index_html(scope, title: str) -> str:
    """The index page: every unit in one table (sortable by a click on a column's header, filterable), and a
    jump-to-unit box."""
    summary = (f"{len(scope)} units of {', '.join(scope.layers)} (attributed at {', '.join(scope.attr_layers)}) over "
               f"{scope.indices.size} images of {scope.dataset}. Share of inhibition: N/(P+N) over all images; "
               "median tension: the median over images of the smaller of P's and N's percentile ranks; quiet MTIs: "
               "the fraction of a unit's maximally tense images on which f is near its median (middle half of its "
               "values). Click a column's header to sort, a unit to open its page.")
    units = [{"layer": f.layer, "unit": int(f.unit), "href": unit_path(f.layer, f.unit)} for f in scope.features]
    rows = "\n".join(_index_row(scope, j) for j in range(len(scope)))
    return template("index.html") % {"title": html.escape(title), "summary": html.escape(summary), "rows": rows,
                                     "units": _script_json(units)}


def _figures(scope, j: int, group: str) -> str:
    idx, pct = scope.group(j, group)
    return "".join(f'<figure><img src="../../images/{int(i)}.png" alt="image {int(i)}"><figcaption>#{int(i)}<br>'
                   f"f {p[0]:.0f} P {p[1]:.0f} N {p[2]:.0f}</figcaption></figure>" for i, p in zip(idx, pct))


def _channel_rows(scope, j: int, channels, shares, effects, cls: str) -> str:
    attr, out = scope.attr_layer(j), []
    for c, s, d in zip(channels, shares, effects):
        target = scope.find(attr, int(c))
        label = f"{html.escape(attr)} {int(c)}"
        cell = (f'<a class="{cls}" href="../../{html.escape(unit_path(attr, int(c)))}">{label}</a>'
                if target is not None else label)
        v = scope.shown(attr, int(c))
        tops = "".join(f'<img src="../../images/{int(i)}.png" alt="image {int(i)}" title="image {int(i)}">'
                       for i in (scope.shown_tops[v] if v is not None else ()))
        out.append(f'<tr><td>{cell}</td><td class="num">{float(s):.3f}</td><td class="num">{float(d):+.3g}</td>'
                   f'<td>{_visual_img(scope, attr, int(c), "../../")}</td><td class="tops">{tops}</td></tr>')
    return "".join(out)


def unit_html(scope, j: int) -> str:
    """The page of column ``j`` (see the module docstring)."""
    r, f = scope.unit_row(j), scope.features[j]
    same = [k for k in range(len(scope)) if scope.layer_index[k] == scope.layer_index[j]]
    at = same.index(j)
    nav = "".join(f' | <a id="{name}" href="../../{html.escape(unit_path(scope.features[k].layer, scope.features[k].unit))}">'
                  f"{name} unit</a>" for name, k in (("previous", same[at - 1] if at else None),
                                                    ("next", same[at + 1] if at + 1 < len(same) else None))
                  if k is not None)
    numbers = (f"share of inhibition N/(P+N) <b>{r['share']:.3f}</b>; median tension {r['median_tension']:.1f}; "
               f"quiet MTIs {r['quiet']:.2f}; completeness r(f, P-N) {float(scope.completeness[j]):.3f}; attributed at "
               f"{html.escape(r['attr_layer'])}. Captions: dataset index and the percentile ranks of f, P and N. "
               "Channels: their share of the MTIs' N (or P), the mean change of f on the MTIs when the channel alone "
               "is set to zero (positive: it held the unit down), its feature visualization and its top images.")
    fill = {"title": html.escape(f.name), "neighbours": nav, "numbers": numbers, "attr": html.escape(r["attr_layer"]),
            "scatter": f"{int(f.unit)}.png",
            "visual": _visual_img(scope, f.layer, f.unit, "../../", "unit-visual"), "inversions": _inversions(scope, j),
            "inhibitors": _channel_rows(scope, j, scope.inhibitors[j], scope.inhibitor_share[j],
                                        scope.inhibitor_effect[j], "inhibitor"),
            "exciters": _channel_rows(scope, j, scope.exciters[j], scope.exciter_share[j], scope.exciter_effect[j],
                                      "exciter")}
    fill.update({g: _figures(scope, j, g) for g in GROUPS})
    return template("unit.html") % fill


def write_microscope_site(scope, folder: str, title: str = "Inhibition microscope", progress: bool = False) -> str:
    """Write the static site of ``scope`` (a :class:`~lucent_inhibit.microscope.Microscope`) into ``folder``:
    ``index.html``, ``units/<layer>/<unit>.html`` with ``<unit>.png`` (its P-against-N scatter) and
    ``images/<i>.png`` (64 px thumbnails, one per image shown anywhere) and ``visuals/`` (one feature
    visualization per shown channel). Returns the index's path."""
    from tqdm.auto import tqdm

    from ..core.figures import pyplot
    from .figures import plot_unit

    os.makedirs(folder, exist_ok=True)
    _images(scope, folder)
    for j in tqdm(range(len(scope)), desc="microscope pages", disable=not progress):
        f = scope.features[j]
        page = os.path.join(folder, unit_path(f.layer, f.unit))
        os.makedirs(os.path.dirname(page), exist_ok=True)
        _write_text(page, unit_html(scope, j))
        fig = plot_unit(scope, j, page[:-len(".html")] + ".png")
        pyplot().close(fig)
    index = os.path.join(folder, "index.html")
    _write_text(index, index_html(scope, title))
    return index
