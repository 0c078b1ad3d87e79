"""The microscope pass (:func:`microscope`): for every unit of one or more feature layers, one census pass
(:func:`~lucent_inhibit.census.layer_census`: f, P and N of every unit on every image, resumable) and one
attribution of each unit on its maximally tense images split by channel of the attribution layer: which
channels inhibit it (``sum relu(-S_c)``) and which excite it (``sum relu(S_c)``), with ``S = grad f * h``
(Hamblin et al. 2024, section 2; the split of :func:`~lucent_inhibit.inhibitor_dictionary`).
"""
from __future__ import annotations

import logging
import os
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..attribution.passes import dataset_pass
from ..attribution.totals import MIN_PERCENTILE_IMAGES, percentile_ranks, top_indices
from ..census.run import layer_census
from ..core.layers import model_device
from ..core.probe import layer_layouts
from ..core.settings import MICROSCOPE_RENDER, PassSettings, RenderSettings, as_pass_settings
from ..core.validate import InputError, check_flag, check_int
from ..data.datasets import item_sources, load_batch
from .channels import unit_channels
from .inversions import mti_inversions
from .readings import CensusReadings
from .result import QUIET_BAND, Microscope
from .visuals import render_channels, shown_channels, top_images

log = logging.getLogger("lucent_inhibit")

#: units per layer above which :func:`microscope` refuses (``max_units``) unless raised
MAX_UNITS = 1024
#: side of the stored image thumbnails (pixels)
THUMB = 64


def resolve_layers(model: nn.Module, layers, attr_layer, size: int) -> Tuple[List[str], List[str]]:
    """``(feature layers, attribution layers)``: ``layers`` (a name, names, or None: the model's default
    feature layer, :func:`~lucent_inhibit.models.defaults.default_feature_layers`) and per layer its attribution
    layer: ``attr_layer`` (one name for all, one per layer, or None: each layer's default cut). Picks are
    logged on the ``lucent_inhibit`` logger (the command line prints them)."""
    from ..models.defaults import resolve_feature_layers

    names = [None] if layers is None else [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise InputError("layers is empty: give at least one feature layer (or None for the model's default)")
    attrs = list(attr_layer) if isinstance(attr_layer, (list, tuple)) else [attr_layer] * len(names)
    if len(attrs) != len(names):
        raise InputError(f"attr_layer names {len(attrs)} layers for {len(names)} feature layers: give one for all "
                         "or one per feature layer")
    pairs = [resolve_feature_layers(model, n, a, size) for n, a in zip(names, attrs)]
    if len({p[0] for p in pairs}) != len(pairs):
        raise InputError(f"a feature layer is given twice: {[p[0] for p in pairs]}")
    return [p[0] for p in pairs], [p[1] for p in pairs]


def check_units(model: nn.Module, x: torch.Tensor, layer: str, attr: str, units, max_units: int) -> List[int]:
    """The units of ``layer`` to show (default: all its channels), checked: inside the layer, at most
    ``max_units`` of them, and ``attr`` a cut before ``layer`` (every path into it passes through it)."""
    from ..core.hooks import output_shapes, separates

    act = output_shapes(model, x[:1], [layer])[layer]
    c = int(act.shape[-1] if act.dim() == 3 else act.shape[1])
    chosen = list(range(c)) if units is None else [int(u) for u in units]
    outside = [u for u in chosen if not 0 <= u < c]
    if outside:
        raise InputError(f"units {outside[:5]} are outside layer {layer!r}, which has {c} units (0..{c - 1})")
    if len(chosen) > max_units:
        raise InputError(f"layer {layer!r}: {len(chosen)} units is more than max_units={max_units}; pick some with "
                         f"units (e.g. 0-{min(c, max_units) - 1}) or raise max_units")
    if not separates(model, x[:1], attr, layer):
        raise InputError(f"attribution layer {attr!r} is not a cut before {layer!r}: some path into {layer!r} "
                         "bypasses it, so its P and N cannot account for f; pick a layer every path passes through")
    return list(dict.fromkeys(chosen))


def unit_tables(census, n_top: int, sources) -> dict:
    """Per unit of ``census`` (K units, n images): share, median tension, quiet-MTI fraction, the MEIs, MIIs
    and MTIs (``(K, 3, t)``, one per source image first when ``sources`` (n,) is given) and their f, P and N
    percentile ranks (``(K, 3, t, 3)``)."""
    f, p, n = census.activation, census.P(), census.N()
    pct = census.percentiles()  # (n, K, 2)
    fp = np.stack([percentile_ranks(f[:, j]) for j in range(f.shape[1])], 1)
    rows = {int(i): r for r, i in enumerate(census.indices)}
    tops, top_pct, quiet = [], [], []
    for j in range(f.shape[1]):
        fj = f[:, j].astype(np.float64)
        groups = [top_indices(census.indices, fj, n_top, True, None, sources),
                  top_indices(census.indices, fj, n_top, False, None, sources),
                  top_indices(census.indices, pct[:, j].min(1), n_top, True, pct[:, j].max(1), sources)]
        r = [[rows[int(i)] for i in g] for g in groups]
        tops.append(groups)
        top_pct.append([np.stack([fp[g, j], pct[g, j, 0], pct[g, j, 1]], 1) for g in r])
        quiet.append(float(np.mean((fp[r[2], j] >= QUIET_BAND[0]) & (fp[r[2], j] <= QUIET_BAND[1]))))
    return {"share": census.share(), "median_tension": np.median(pct.min(2), 0), "quiet": np.asarray(quiet),
            "tops": np.asarray(tops, np.int64), "top_percentiles": np.asarray(top_pct, np.float32),
            "activation": f, "pos": p, "neg": n, "completeness": census.completeness[:, 0]}


def thumbnails(dataset, ids: np.ndarray, side: int = THUMB) -> np.ndarray:
    """(u, 3, side, side) uint8 thumbnails of the dataset images ``ids`` (u,)."""
    out = []
    for start in range(0, ids.size, 64):
        imgs = load_batch(dataset, ids[start:start + 64]).float()
        small = F.interpolate(imgs, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
        out.append((small.clamp(0, 1) * 255).round().to(torch.uint8).numpy())
    return np.concatenate(out) if out else np.zeros((0, 3, side, side), np.uint8)


def check_render_inputs(settings: PassSettings, visualize: bool, inversions: int) -> None:
    """Renders (Lucent's ``render_vis``) feed the model through its input normalisation; passes with
    ``preprocess=False`` do not. An inversion starts from an MTI read as a [0, 1] image, so with
    ``preprocess=False`` it would explain another input than the census ranked: ``InputError``. The feature
    visualizations need no dataset image, but are only right for a model that expects normalised inputs: a warning."""
    if settings.preprocess:
        return
    if inversions:
        raise InputError(f"inversions={inversions} needs PassSettings(preprocess=True): the inversions read each MTI "
                         "as a [0, 1] image and render it through the model's input normalisation, which the census "
                         "with preprocess=False did not apply; pass inversions=0")
    if visualize:
        warnings.warn("the feature visualizations render through the model's input normalisation (Lucent's "
                      "render_vis), while the census read the images with preprocess=False: they are right only for "
                      "a model that expects normalised inputs", UserWarning, stacklevel=3)


def build_microscope(model: nn.Module, dataset, layers=None, units: Optional[Sequence[int]] = None, attr_layer=None,
                     n_top: int = 8, n_channels: int = 5, position="center", settings: Optional[PassSettings] = None,
                     checkpoint: Optional[str] = None, max_units: int = MAX_UNITS, distinct: bool = True,
                     visualize: bool = True, render: Optional[RenderSettings] = None, render_batch: int = 16,
                     n_channel_images: int = 3, inversions: int = 0) -> Microscope:
    """Every unit of one or more layers over ``dataset``: its excitation, inhibition and tension, its top
    images, the channels of its attribution layer that inhibit and excite it most on its MTIs with the change of
    f when each is removed there, and the feature visualization of every unit and listed channel.

    Args:
        model: a prepared model (:func:`lucent_inhibit.prepare`), run in eval mode (mode restored after).
        dataset: images (3, H, W) in [0, 1] of one shape, at least 10 (percentile tension).
        layers: feature layer name(s); None: the model's default feature layer (said on the log).
        units: the units shown of every layer (default: all its channels); one outside a layer raises.
        attr_layer: the attribution layer (one for all layers, or one per layer); None: each layer's default
            cut before it (:func:`~lucent_inhibit.models.defaults.resolve_feature_layers`). A layer that is not
            a cut before its feature layer raises.
        n_top: images per group (MEIs, MIIs, MTIs) and unit; the MTIs are also where the channels are split.
        n_channels: top inhibitory and excitatory channels kept per unit.
        position: where each unit is read (as for :func:`~lucent_inhibit.layer_census`).
        settings: the passes' :class:`~lucent_inhibit.core.settings.PassSettings` (None: the defaults).
        checkpoint: a folder for the censuses' and the renders' checkpoints: a rerun after an interruption
            resumes there.
        max_units: units per layer above which it refuses (a layer of thousands of units is a long pass).
        distinct: top images one per source image (the photo a bundled crop is cut from) while there are enough.
        visualize: render the feature visualization (Lucent's channel objective) of every unit and listed
            channel; False: none (``visuals`` empty).
        render: their :class:`~lucent_inhibit.RenderSettings` (None:
            :data:`~lucent_inhibit.core.settings.MICROSCOPE_RENDER`, 64 px, 96 steps).
        render_batch: channels of one layer rendered together, one batch item each (memory grows with it;
            16 renders the most channels per second on a 2-core CPU: 1.3x faster than 32, 1 or 2 threads).
        n_channel_images: dataset images shown per channel (largest mean activation over positions).
        inversions: the +/- attribution inversions of each unit's first ``inversions`` MTIs (0: none), one
            render per MTI with ``render``'s steps (:mod:`lucent_inhibit.microscope.inversions`).

    Returns:
        :class:`~lucent_inhibit.microscope.result.Microscope` over every unit of every layer.
    """
    settings = as_pass_settings(settings)
    n_top, n_channels = check_int("n_top", n_top, low=1), check_int("n_channels", n_channels, low=1)
    max_units, render_batch = check_int("max_units", max_units, low=1), check_int("render_batch", render_batch, low=1)
    n_channel_images, visualize = check_int("n_channel_images", n_channel_images, low=1), check_flag("visualize", visualize)
    inversions = check_int("inversions", inversions, low=0)
    check_render_inputs(settings, visualize, inversions)
    x = load_batch(dataset, [0]).to(model_device(model))
    feature_layers, attrs = resolve_layers(model, layers, attr_layer, int(x.shape[-1]))
    chosen = [check_units(model, x, l, a, units, max_units) for l, a in zip(feature_layers, attrs)]
    size = dataset_pass(model, dataset, attrs, [], settings).size
    if size < MIN_PERCENTILE_IMAGES:
        raise InputError(f"a microscope needs at least {MIN_PERCENTILE_IMAGES} images for percentile tension, got {size}")
    sources = item_sources(dataset, np.arange(size)) if check_flag("distinct", distinct) else None
    cat, feats, index, census, means = _unit_parts(model, x, dataset, feature_layers, attrs, chosen, min(n_top, size),
                                                   n_channels, position, settings, checkpoint, sources)
    shown = _shown(model, dataset, feature_layers, attrs, chosen, cat, index, settings, sources,
                   n_channel_images, visualize, render, render_batch, means,
                   None if checkpoint is None else os.path.join(os.fspath(checkpoint), "renders"))
    inv = mti_inversions(model, dataset, feats, [attrs[i] for i in index], cat["tops"][:, 2],
                         min(inversions, cat["tops"].shape[-1]), render or MICROSCOPE_RENDER, THUMB, settings.progress)
    ids = np.unique(np.concatenate([cat["tops"].ravel(), shown["shown_tops"].ravel()]))
    return Microscope(
        layers=feature_layers, attr_layers=attrs, features=feats, layer_index=index,
        indices=census.indices, items=census.items, image_ids=ids.astype(np.int64),
        thumbnails=thumbnails(dataset, ids), inversions=inv[0], inversion_separated=inv[1],
        dataset=census.dataset, dataset_size=census.dataset_size,
        info={"n_top": int(cat["tops"].shape[-1]), "n_channels": n_channels, "distinct": bool(distinct),
              "quiet_band": list(QUIET_BAND), "batch_size": settings.batch_size, "preprocess": settings.preprocess,
              "removal": "zero", "render": _render_info(render, visualize, render_batch)},
        **shown, **{k: v.astype(np.float32) if k in ("activation", "pos", "neg") else v for k, v in cat.items()})


def _shown(model, dataset, layers, attrs, chosen, cat, index, settings, sources, k, visualize, render, batch,
           means, folder) -> dict:
    """The shown channels (every unit, every listed channel) with their top images (``means``: the channel means
    read off the censuses) and visualizations."""
    listed = [np.concatenate([cat["inhibitors"][index == i], cat["exciters"][index == i]]) for i in range(len(attrs))]
    shown = shown_channels(layers, chosen, attrs, listed)
    visuals, moved = (render_channels(model, shown, render, batch, settings.progress, folder) if visualize
                      else (np.zeros((0, 3, 1, 1), np.uint8), np.zeros(0, bool)))
    return {"shown_layers": np.asarray([l for l, _ in shown]), "shown_units": np.asarray([c for _, c in shown], np.int64),
            "shown_tops": top_images(model, dataset, shown, k, settings, sources, means), "visuals": visuals,
            "visual_moved": moved}


def _render_info(render, visualize: bool, batch: int) -> Optional[str]:
    return f"{(render or MICROSCOPE_RENDER).describe()}, {batch} per render" if visualize else None


def _unit_parts(model, x, dataset, layers, attrs, chosen, n_top, n_channels, position, settings, checkpoint, sources):
    """One census per layer and the channel split of each unit: the per-unit arrays concatenated over the
    layers, the features, their layer index (K,), the last census (its image identities) and the channel means
    read off the censuses (layer -> {dataset index -> (C,)})."""
    parts, feats, index, means = [], [], [], {}
    for i, (layer, attr, us) in enumerate(zip(layers, attrs, chosen)):
        folder = None if checkpoint is None else os.path.join(os.fspath(checkpoint), f"layer-{i}")
        reader = CensusReadings(attr, layer_layouts(model, x).get(attr))
        census = layer_census(model, dataset, layer, [attr], units=us, position=position, settings=settings,
                              checkpoint=folder, on_batch=reader)
        table = unit_tables(census, n_top, sources)
        table.update(unit_channels(model, dataset, census.features, attr, table["tops"][:, 2], n_channels, settings,
                                   reader.outputs))
        for name, rows in reader.means.items():
            means.setdefault(name, {}).update(rows)
        del reader
        parts.append(table)
        feats += census.features
        index += [i] * len(census.features)
    cat = {k: np.concatenate([p[k] for p in parts], axis=1 if k in ("activation", "pos", "neg") else 0)
           for k in parts[0]}
    return cat, feats, np.asarray(index, np.int64), census, means


#: :func:`build_microscope` under the name of its subpackage (``lucent_inhibit.microscope.microscope``)
microscope = build_microscope
