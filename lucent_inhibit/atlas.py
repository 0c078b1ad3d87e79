"""Attribution atlas and activation atlas (Hamblin et al. 2024; Carter et al. 2019).

A global picture of the ways a dataset excites and inhibits one feature, built in six stages, one
function each, each returning a typed result with ``save`` / ``load``:

1. :func:`select_images` (:class:`Selection`): pick images from a :class:`~lucent_inhibit.scan.ScanResult`
   by criteria (top-k ``|S|_2``, top / bottom-k activation, top-k tension; their union).
2. :func:`collect_vectors` (:class:`AtlasPoints`): for every selected image take its attribution
   ``S_l = grad_{h_l} f * h_l`` (``kind="attribution"``) or its activation ``h_l``
   (``kind="activation"``: the activation atlas) at layer ``l``, cropped to the feature's receptive-field
   box, either summed over space to one C-vector per image (``mode="sum"``) or one C-vector per spatial
   position in the box (``mode="position"``).
3. :func:`project_layout` (:class:`AtlasLayout`): UMAP (cosine metric, optional PCA first) to 2-D,
   then the 1st..99th percentiles are mapped onto the unit square.
4. :func:`grid_cells` (:class:`AtlasGrid`): a grid over the unit square; every cell with at least
   ``min_points`` points gets the mean of its vectors.
5. :func:`render_icons` (:class:`AtlasIcons`): one icon per cell, all cells of a chunk in one batch of
   Lucent's ``render_vis`` with the spatial cosdot objective against the cell's averaged vector (its
   absolute value for attributions), then the feature's activation measured on every icon.
6. :func:`plot_atlas` (static PNG) and :func:`write_atlas_html` (one self-contained interactive page).

:func:`build_atlas` runs stages 2-5 and returns an :class:`Atlas` (which saves to one ``.npz``).

Icon targets. A cell's averaged vector ``v`` is a C-vector. It becomes a (C, H, W) target at layer
``l`` by broadcasting ``v`` over the same receptive-field box the vectors were taken from, zero
outside (``icon_target="box"``, the default), or by placing it at the box's centre position only
(``icon_target="center"``, the activation-atlas convention). The spatial cosdot objective then crops
both maps to that box. So an icon is rendered where the feature looks, and the feature (read at its
own position) is measured on exactly the rendered image, upsampled to the dataset's image size the
same way ``render_vis(fixed_image_size=...)`` feeds it to the model.
"""
from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .attribution import Feature, as_feature, attribute, capture, model_device, signed_totals
from .hooks import layer_table as _layer_table
from .models import preprocess_fn, unknown_layer_message
from .storage import load_npz, save_npz
from .objectives import cosdot, crop_box, spatial_cosdot

KINDS = ("attribution", "activation")
MODES = ("sum", "position")
ICON_TARGETS = ("box", "center", "positions")
FORMAT = "lucent-inhibit-atlas/1"

Box = Tuple[int, int, int, int]


# ------------------------------------------------------------------------------------------------
# storage helpers (np.savez_compressed + JSON meta as uint8; never pickle)
# ------------------------------------------------------------------------------------------------
def _write_npz(path: str, arrays: Dict[str, np.ndarray], meta: dict) -> None:
    with open(path, "wb") as f:  # exactly ``path`` (np.savez would append .npz to a bare name)
        save_npz(f, arrays, meta)


def _read_npz(path: str, expected: str) -> Tuple[Dict[str, np.ndarray], dict]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    arrays, meta = load_npz(path, "lucent-inhibit atlas")
    if meta.get("format") != FORMAT or meta.get("type") != expected:
        raise ValueError(
            f"{path!r} holds {meta.get('type') or meta.get('format') or 'something else'}, expected an atlas "
            f"{expected} ({FORMAT})"
        )
    return arrays, meta


def _prefixed(arrays: Dict[str, np.ndarray], prefix: str) -> Dict[str, np.ndarray]:
    return {prefix + k: v for k, v in arrays.items()}


def _unprefixed(arrays: Dict[str, np.ndarray], prefix: str) -> Dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


class _Stored:
    """save/load for the stage results: subclasses define ``_arrays()``, ``_meta()`` and ``_build()``."""

    def save(self, path: str) -> None:
        """Write one compressed ``.npz`` at exactly ``path`` (arrays plus JSON metadata; no pickle)."""
        meta = dict(self._meta(), format=FORMAT, type=type(self).__name__)
        _write_npz(path, self._arrays(), meta)

    @classmethod
    def load(cls, path: str):
        """Read a file written by :meth:`save` (``ValueError`` if it holds another result type)."""
        arrays, meta = _read_npz(path, cls.__name__)
        return cls._build(arrays, meta)


# ------------------------------------------------------------------------------------------------
# 1. selection
# ------------------------------------------------------------------------------------------------
@dataclass
class Selection(_Stored):
    """Stage 1: the images an atlas is built from.

    Attributes:
        indices: (n,) int64 sorted unique dataset indices.
        reasons: n strings naming the criteria that picked each image (e.g. ``"top_abs+top_tension"``).
        feature: the scanned :class:`~lucent_inhibit.Feature`.
        layer: the attribution layer the criteria were ranked at.
        dataset: identity string of the scanned dataset.
        criteria: the ``k`` of each criterion.
    """

    indices: np.ndarray
    reasons: List[str]
    feature: Feature
    layer: str
    dataset: str
    criteria: Dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def _arrays(self):
        return {"indices": np.asarray(self.indices, np.int64)}

    def _meta(self):
        return {"reasons": list(self.reasons), "feature": self.feature.to_dict(), "layer": self.layer,
                "dataset": self.dataset, "criteria": dict(self.criteria)}

    @classmethod
    def _build(cls, a, m):
        return cls(a["indices"], m["reasons"], Feature.from_dict(m["feature"]), m["layer"], m["dataset"], m["criteria"])


def select_images(
    scan,
    feature=None,
    layer: Optional[str] = None,
    top_abs: int = 0,
    top_activation: int = 0,
    bottom_activation: int = 0,
    top_tension: int = 0,
    score="min",
    granularity: str = "element",
) -> Selection:
    """Stage 1: the union of several rankings of a scan (:class:`~lucent_inhibit.scan.ScanResult`).

    Args:
        scan: a ``ScanResult`` or the path of a saved one.
        feature: the feature the atlas explains; ``ValueError`` if the scan is of another feature.
            ``None`` takes the scan's feature.
        layer: the atlas's attribution layer; it must be one of the scan's layers (``|S|`` and tension
            are ranked there). ``None`` takes the scan's first layer.
        top_abs: the ``k`` images with the largest ``|S|_2`` at ``layer``.
        top_activation / bottom_activation: the ``k`` maximally exciting / inhibiting images.
        top_tension: the ``k`` maximally tense images (tension ``score`` of P and N, L1).
        score, granularity: tension score and attribution granularity of the rankings.

    Returns:
        :class:`Selection` (dataset indices sorted, with the criteria that picked each).
    """
    from .scan import ScanResult

    if isinstance(scan, (str, os.PathLike)):
        scan = ScanResult.load(os.fspath(scan))
    if feature is not None:
        feature = as_feature(feature)
        if feature != scan.feature:
            raise ValueError(
                f"the scan is of feature {scan.feature.name}, but the atlas explains {feature.name}; "
                "scan the same feature (or pass feature=None to use the scan's)"
            )
    feature = scan.feature
    if layer is None:
        layer = scan.layers[0]
    if layer not in scan.layers:
        raise ValueError(
            f"the scan has attributions at layers {scan.layers}, not at the atlas layer {layer!r}; scan that "
            "layer too or build the atlas at one of the scanned layers"
        )
    criteria = {"top_abs": top_abs, "top_activation": top_activation, "bottom_activation": bottom_activation,
                "top_tension": top_tension}
    for name, k in criteria.items():
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {k!r}")
    indices = scan.select(top_activation=top_activation, bottom_activation=bottom_activation, top_abs=top_abs,
                          top_tension=top_tension, layer=layer, score=score, granularity=granularity)
    picked = {
        "top_abs": scan.top_abs(top_abs, layer, granularity) if top_abs else [],
        "top_activation": scan.meis(top_activation) if top_activation else [],
        "bottom_activation": scan.miis(bottom_activation) if bottom_activation else [],
        "top_tension": scan.mtis(top_tension, score, layer, granularity) if top_tension else [],
    }
    sets = {k: set(int(i) for i in v) for k, v in picked.items()}
    reasons = ["+".join(k for k in criteria if int(i) in sets[k]) for i in indices]
    return Selection(np.asarray(indices, np.int64), reasons, feature, layer, scan.dataset,
                     {k: int(v) for k, v in criteria.items()})


# ------------------------------------------------------------------------------------------------
# 2. vectors
# ------------------------------------------------------------------------------------------------
@dataclass
class AtlasPoints(_Stored):
    """Stage 2: the vectors the atlas lays out, and what each selected image contributes.

    Points (M of them):
        vectors: (M, C) float32 attribution (or activation) vectors at ``layer``.
        point_image: (M,) int64 row of the point's image in the per-image arrays below.
        point_position: (M, 2) int64 (y, x) in the layer's map (position mode), or (-1, -1) (sum mode).
        net: (M,) float32 net attribution of the point (sum of its attribution vector; for the
            activation atlas the attribution at the same places).
        magnitude: (M,) float32 ``|S|_2`` of the point's attribution vector.
    Images (n of them, the selection):
        image_index: (n,) int64 dataset indices; labels: n strings (path / crop box).
        activation: (n,) float32 feature value ``f_v(x)``.
        P, N: (n,) float32 L1 excitatory / inhibitory totals over the whole attribution map at ``layer``.
        thumbnails: (n, t, t, 3) uint8.
    Settings: feature, layer, kind, mode, box ``(y0, y1, x0, x1)`` (the receptive-field crop in the
    layer's map; ``None`` for linear layers), map_shape ((C, H, W) or (C,)), image_size ``(H, W)``
    of the dataset images, dataset identity, attribution method.
    """

    vectors: np.ndarray
    point_image: np.ndarray
    point_position: np.ndarray
    net: np.ndarray
    magnitude: np.ndarray
    image_index: np.ndarray
    labels: List[str]
    activation: np.ndarray
    P: np.ndarray
    N: np.ndarray
    thumbnails: np.ndarray
    feature: Feature
    layer: str
    kind: str
    mode: str
    box: Optional[Box]
    map_shape: Tuple[int, ...]
    image_size: Tuple[int, int]
    dataset: str = ""
    method: str = "gradient_x_activation"

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def point_activation(self) -> np.ndarray:
        """(M,) feature activation of each point's image."""
        return self.activation[self.point_image]

    _ARRAYS = ("vectors", "point_image", "point_position", "net", "magnitude", "image_index", "activation", "P",
               "N", "thumbnails")

    def _arrays(self):
        return {k: np.asarray(getattr(self, k)) for k in self._ARRAYS}

    def _meta(self):
        return {"labels": list(self.labels), "feature": self.feature.to_dict(), "layer": self.layer,
                "kind": self.kind, "mode": self.mode, "box": None if self.box is None else list(self.box),
                "map_shape": list(self.map_shape), "image_size": list(self.image_size), "dataset": self.dataset,
                "method": self.method}

    @classmethod
    def _build(cls, a, m):
        return cls(**{k: a[k] for k in cls._ARRAYS}, labels=m["labels"], feature=Feature.from_dict(m["feature"]),
                   layer=m["layer"], kind=m["kind"], mode=m["mode"],
                   box=None if m["box"] is None else tuple(m["box"]), map_shape=tuple(m["map_shape"]),
                   image_size=tuple(m["image_size"]), dataset=m["dataset"], method=m["method"])


def _item_image(dataset, i: int) -> torch.Tensor:
    item = dataset[int(i)]
    if isinstance(item, (tuple, list)):  # (image, label) datasets
        item = item[0]
    t = item if torch.is_tensor(item) else torch.as_tensor(np.asarray(item))
    if t.dim() != 3 or t.shape[0] != 3:
        raise ValueError(f"dataset item {int(i)} has shape {tuple(t.shape)}; expected an image (3, H, W) in [0, 1]")
    return t.float()


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> (B, H, W, 3) uint8."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _thumbnails(images: torch.Tensor, size: int) -> np.ndarray:
    if images.shape[-1] != size or images.shape[-2] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return _to_uint8(images)


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def collect_vectors(
    model: nn.Module,
    dataset,
    feature,
    layer: str,
    selection: Union[Selection, Sequence[int], None] = None,
    kind: str = "attribution",
    mode: str = "sum",
    crop: Optional[float] = 0.01,
    batch_size: int = 32,
    thumbnail_size: int = 48,
    method: str = "gradient_x_activation",
    progress: bool = False,
) -> AtlasPoints:
    """Stage 2: attribution (or activation) vectors at ``layer`` for the selected images.

    Args:
        model: a prepared model (:func:`lucent_inhibit.prepare`).
        dataset: a sequence of (3, H, W) images in [0, 1], all one shape (e.g. ``sample_crops``).
        feature: the :class:`~lucent_inhibit.Feature` explained (or ``(layer, unit)``).
        layer: the attribution layer ``l`` (before the feature; close to it, SPEC section 3).
        selection: a :class:`Selection` (its feature, layer and dataset must match), dataset indices,
            or ``None`` for the whole dataset.
        kind: ``"attribution"`` (``S_l``; the attribution atlas) or ``"activation"`` (``h_l``; the
            activation atlas).
        mode: ``"sum"``: one C-vector per image, summed over the receptive-field box (the activation atlas
            averages ``h_l`` over the box instead); ``"position"``: one C-vector per position in the box.
            Needs a (B, C, H, W) layer; linear layers only have ``"sum"``.
        crop: the receptive-field box is where the mean over the selected images of ``|S_l|`` summed over
            channels exceeds ``crop`` times its maximum; ``None`` takes the whole map.
        batch_size: images per forward/backward pass.
        thumbnail_size: side of the stored dataset thumbnails (pixels), for the interactive atlas.
        method: attribution method of :func:`~lucent_inhibit.attribute`.
        progress: tqdm bar over batches.

    Returns:
        :class:`AtlasPoints`. Points whose vector is all zero (no direction for UMAP's cosine metric)
        are dropped with a warning.
    """
    feature = as_feature(feature)
    _check_choice("kind", kind, KINDS)
    _check_choice("mode", mode, MODES)
    if crop is not None and not (0 <= float(crop) < 1):
        raise ValueError(f"crop must be a fraction in [0, 1) or None, got {crop!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    table = _layer_table(model)
    if layer not in table:
        raise ValueError(unknown_layer_message(layer, list(table)))
    from .data import dataset_identity, describe_item

    ident = dataset_identity(dataset)
    if isinstance(selection, Selection):
        if selection.feature != feature:
            raise ValueError(f"the selection is of feature {selection.feature.name}, but the atlas explains {feature.name}")
        if selection.layer != layer:
            raise ValueError(
                f"the selection was ranked by attribution at layer {selection.layer!r}, but the atlas is at "
                f"{layer!r}; select at the atlas layer"
            )
        if selection.dataset and selection.dataset != ident:
            raise ValueError(f"the selection comes from dataset {selection.dataset}, not {ident}")
        indices = np.asarray(selection.indices, np.int64)
    elif selection is None:
        indices = np.arange(len(dataset), dtype=np.int64)
    else:
        indices = np.asarray(selection, dtype=np.int64).reshape(-1)
    if indices.size == 0:
        raise ValueError("the selection is empty: no images to build an atlas from")
    bad = indices[(indices < 0) | (indices >= len(dataset))]
    if bad.size:
        raise ValueError(f"dataset indices {bad[:5].tolist()} out of range for a dataset of {len(dataset)} images")

    from tqdm.auto import tqdm

    scores, acts, fvals, thumbs, shape = [], [], [], [], None
    batches = [indices[s: s + batch_size] for s in range(0, indices.size, batch_size)]
    for idx in tqdm(batches, disable=not progress, desc="atlas vectors"):
        imgs = [_item_image(dataset, i) for i in idx]
        if shape is None:
            shape = tuple(imgs[0].shape)
        for i, t in zip(idx, imgs):
            if tuple(t.shape) != shape:
                raise ValueError(f"dataset item {int(i)} has shape {tuple(t.shape)}, but the first selected image has "
                                 f"{shape}: all atlas images must share one shape")
        x = torch.stack(imgs)
        att = attribute(model, x, feature, [layer], method=method)
        s = att.scores[layer].float().cpu()
        if mode == "position" and s.dim() != 4:
            raise ValueError(
                f"mode='position' needs a layer with spatial dimensions (B, C, H, W), but layer {layer!r} gives "
                f"{tuple(s.shape)}; use mode='sum'"
            )
        scores.append(s)
        fvals.append(att.activation.float().cpu())
        thumbs.append(_thumbnails(x, thumbnail_size))
        if kind == "activation" or len(scores) == 1:
            xin = preprocess_fn(model)(x.to(model_device(model)))
            with torch.no_grad():
                h = capture(model, xin, [layer], stop_at=layer)[layer].float().cpu()
            if kind == "activation":
                acts.append(h)
            elif float((h < 0).float().mean()) > 0.01:
                warnings.warn(
                    f"layer {layer!r} has negative activations ({float((h < 0).float().mean()):.0%} of values): the "
                    "icons render |S|, which only matches non-negative activations; prefer a post-activation layer "
                    "(e.g. a ReLU/ReLU6 output such as '..._bn1_act' or '..._bn2_act')"
                )
    S = torch.cat(scores)
    H_act = torch.cat(acts) if kind == "activation" else None
    fval = torch.cat(fvals).numpy()
    P, N = signed_totals(S, "element", "l1")
    n = S.shape[0]

    box: Optional[Box] = None
    if S.dim() == 4:
        if crop is None:
            box = (0, S.shape[2], 0, S.shape[3])
        else:
            box = crop_box(S.abs().sum(1).mean(0, keepdim=True), float(crop))
        y0, y1, x0, x1 = box
        Sb = S[:, :, y0:y1, x0:x1]
        Vb = Sb if H_act is None else H_act[:, :, y0:y1, x0:x1]
        if mode == "sum":
            vectors = Sb.sum((2, 3)) if kind == "attribution" else Vb.mean((2, 3))
            net = Sb.sum((1, 2, 3))
            mag = Sb.flatten(1).norm(dim=1)
            point_image = torch.arange(n)
            pos = torch.full((n, 2), -1, dtype=torch.long)
        else:
            h, w = y1 - y0, x1 - x0
            vectors = Vb.permute(0, 2, 3, 1).reshape(n * h * w, -1)
            Sp = Sb.permute(0, 2, 3, 1).reshape(n * h * w, -1)
            net, mag = Sp.sum(1), Sp.norm(dim=1)
            point_image = torch.arange(n).repeat_interleave(h * w)
            yy, xx = torch.meshgrid(torch.arange(y0, y1), torch.arange(x0, x1), indexing="ij")
            pos = torch.stack([yy.flatten(), xx.flatten()], 1).repeat(n, 1)
    else:
        vectors = S if kind == "attribution" else H_act
        net, mag = S.sum(1), S.norm(dim=1)
        point_image = torch.arange(n)
        pos = torch.full((n, 2), -1, dtype=torch.long)

    keep = vectors.norm(dim=1) > 0
    if not bool(keep.all()):
        dropped = int((~keep).sum())
        warnings.warn(f"dropped {dropped} of {keep.numel()} atlas points whose {kind} vector is all zero "
                      "(they have no direction for the cosine metric)")
        if not bool(keep.any()):
            raise ValueError(f"every {kind} vector at layer {layer!r} is zero for the selected images: nothing to lay out")
    return AtlasPoints(
        vectors=vectors[keep].numpy().astype(np.float32),
        point_image=point_image[keep].numpy().astype(np.int64),
        point_position=pos[keep].numpy().astype(np.int64),
        net=net[keep].numpy().astype(np.float32),
        magnitude=mag[keep].numpy().astype(np.float32),
        image_index=indices,
        labels=[describe_item(dataset, int(i)) for i in indices],
        activation=fval.astype(np.float32),
        P=P.numpy().astype(np.float32),
        N=N.numpy().astype(np.float32),
        thumbnails=np.concatenate(thumbs),
        feature=feature,
        layer=layer,
        kind=kind,
        mode=mode,
        box=box,
        map_shape=tuple(S.shape[1:]),
        image_size=(int(shape[1]), int(shape[2])),
        dataset=ident,
        method=method,
    )


# ------------------------------------------------------------------------------------------------
# 3. layout
# ------------------------------------------------------------------------------------------------
MIN_UMAP_POINTS = 5


@dataclass
class AtlasLayout(_Stored):
    """Stage 3: 2-D positions of the points.

    Attributes:
        xy: (M, 2) float32 in the unit square (the ``clip`` percentiles of ``raw`` mapped to 0 and 1,
            points beyond them clipped to the border); y points up.
        raw: (M, 2) float32 UMAP output.
        n_neighbors: the UMAP neighbourhood actually used (smaller than asked for when there are few points).
        params: min_dist, metric, pca, clip, seed.
    """

    xy: np.ndarray
    raw: np.ndarray
    n_neighbors: int
    params: dict = field(default_factory=dict)

    def _arrays(self):
        return {"xy": self.xy, "raw": self.raw}

    def _meta(self):
        return {"n_neighbors": int(self.n_neighbors), "params": self.params}

    @classmethod
    def _build(cls, a, m):
        return cls(a["xy"], a["raw"], m["n_neighbors"], m["params"])


def normalize_layout(raw: np.ndarray, clip: Tuple[float, float] = (1.0, 99.0)) -> np.ndarray:
    """Map the ``clip`` percentiles of each coordinate of ``raw`` (M, 2) to 0 and 1 and clip to [0, 1]."""
    lo_q, hi_q = clip
    if not (0 <= lo_q < hi_q <= 100):
        raise ValueError(f"clip must be two percentiles 0 <= low < high <= 100, got {clip!r}")
    lo = np.percentile(raw, lo_q, axis=0)
    hi = np.percentile(raw, hi_q, axis=0)
    span = hi - lo
    out = np.where(span > 0, (raw - lo) / np.where(span > 0, span, 1), 0.5)
    return np.clip(out, 0, 1).astype(np.float32)


def project_layout(
    points: Union[AtlasPoints, np.ndarray],
    n_neighbors: int = 10,
    min_dist: float = 0.1,
    pca: Optional[int] = None,
    clip: Tuple[float, float] = (1.0, 99.0),
    seed: int = 0,
) -> AtlasLayout:
    """Stage 3: UMAP (cosine metric) of the vectors, normalised to the unit square.

    Args:
        points: :class:`AtlasPoints` or an (M, C) array.
        n_neighbors: UMAP neighbourhood (the paper: 10). With ``M <= n_neighbors`` points it is lowered
            to ``M - 1`` with a warning; fewer than 5 points raise ``ValueError``.
        min_dist: UMAP's minimum distance (0.1).
        pca: reduce to this many principal components first (``None``: no PCA).
        clip: percentiles mapped to the square's borders (outliers beyond them sit on the border).
        seed: UMAP's random state (deterministic single-threaded run).
    """
    X = points.vectors if isinstance(points, AtlasPoints) else np.asarray(points, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"expected (M, C) vectors, got shape {X.shape}")
    m = X.shape[0]
    if m < MIN_UMAP_POINTS:
        raise ValueError(
            f"only {m} atlas points; UMAP needs at least {MIN_UMAP_POINTS}: select more images or use mode='position'"
        )
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, (int, np.integer)) or n_neighbors < 2:
        raise ValueError(f"n_neighbors must be an integer >= 2, got {n_neighbors!r}")
    used = int(n_neighbors)
    if used >= m:
        used = m - 1
        warnings.warn(
            f"only {m} atlas points, fewer than n_neighbors + 1 = {n_neighbors + 1}; using n_neighbors={used}. "
            "Select more images (or use mode='position') for a meaningful layout."
        )
    X = X.astype(np.float32)
    if pca is not None:
        if isinstance(pca, bool) or not isinstance(pca, (int, np.integer)) or pca < 2:
            raise ValueError(f"pca must be an integer >= 2 or None, got {pca!r}")
        k = min(int(pca), m, X.shape[1])
        if k < int(pca):
            warnings.warn(f"pca={pca} exceeds min(points, channels) = {k}; using {k} components")
        from sklearn.decomposition import PCA

        X = PCA(n_components=k, random_state=seed).fit_transform(X).astype(np.float32)
    import umap

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")
        warnings.filterwarnings("ignore", message=".*Spectral initialisation failed.*")
        warnings.filterwarnings("ignore", message=".*k >= N.*")
        reducer = umap.UMAP(n_neighbors=used, min_dist=float(min_dist), metric="cosine", random_state=int(seed),
                            n_jobs=1, init="spectral" if m > 2 * used + 2 else "random")
        raw = reducer.fit_transform(X).astype(np.float32)
    params = {"min_dist": float(min_dist), "metric": "cosine", "pca": pca, "clip": list(clip), "seed": int(seed),
              "n_neighbors_requested": int(n_neighbors)}
    return AtlasLayout(normalize_layout(raw, clip), raw, used, params)


# ------------------------------------------------------------------------------------------------
# 4. grid
# ------------------------------------------------------------------------------------------------
@dataclass
class AtlasGrid(_Stored):
    """Stage 4: the occupied cells of a ``size`` x ``size`` grid over the unit square.

    Cells (K of them, with at least ``min_points`` points):
        cells: (K, 2) int64 (column, row) with row 0 at the bottom (y up).
        count: (K,) int64 points in the cell.
        vectors: (K, C) float32 mean vector of the cell's points.
        net: (K,) float32 mean net attribution of the cell's points (for the attribution atlas the sum
            of ``vectors``): > 0 excitatory, < 0 inhibitory.
        activation: (K,) float32 mean feature activation of the cell's points' images.
        members: point ids of all cells, concatenated; cell k owns ``members[offsets[k]:offsets[k + 1]]``.
    """

    size: int
    min_points: int
    cells: np.ndarray
    count: np.ndarray
    vectors: np.ndarray
    net: np.ndarray
    activation: np.ndarray
    members: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return int(self.cells.shape[0])

    def points_of(self, k: int) -> np.ndarray:
        """Point ids of cell ``k``."""
        return self.members[self.offsets[k]: self.offsets[k + 1]]

    _ARRAYS = ("cells", "count", "vectors", "net", "activation", "members", "offsets")

    def _arrays(self):
        return {k: getattr(self, k) for k in self._ARRAYS}

    def _meta(self):
        return {"size": int(self.size), "min_points": int(self.min_points)}

    @classmethod
    def _build(cls, a, m):
        return cls(m["size"], m["min_points"], **{k: a[k] for k in cls._ARRAYS})


def auto_grid_size(n_points: int, min_points: int = 3, max_size: int = 30) -> int:
    """A grid side for ``n_points``: about ``2 * min_points`` points per occupied cell if they were spread
    evenly, between 2 and ``max_size`` (the paper's 30)."""
    return int(np.clip(round(math.sqrt(n_points / (2.0 * max(1, min_points)))), 2, max_size))


def grid_cells(points: AtlasPoints, layout: AtlasLayout, size: Optional[int] = None, min_points: int = 3) -> AtlasGrid:
    """Stage 4: average the vectors of the points in every grid cell with at least ``min_points`` points.

    Args:
        points, layout: stages 2 and 3 (same number of points).
        size: grid side (cells per axis); ``None`` picks :func:`auto_grid_size` (30 for large data,
            smaller for small data).
        min_points: cells with fewer points are left empty.
    """
    xy = np.asarray(layout.xy)
    if xy.shape[0] != len(points):
        raise ValueError(f"layout has {xy.shape[0]} points but the atlas points are {len(points)}; use the layout "
                         "projected from these points")
    if isinstance(min_points, bool) or not isinstance(min_points, (int, np.integer)) or min_points < 1:
        raise ValueError(f"min_points must be a positive integer, got {min_points!r}")
    if size is None:
        size = auto_grid_size(len(points), int(min_points))
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"grid size must be a positive integer, got {size!r}")
    size, min_points = int(size), int(min_points)
    ij = np.clip(np.floor(xy * size).astype(np.int64), 0, size - 1)
    flat = ij[:, 1] * size + ij[:, 0]
    counts = np.bincount(flat, minlength=size * size)
    occupied = np.nonzero(counts >= min_points)[0]
    if occupied.size == 0:
        raise ValueError(
            f"no cell of the {size}x{size} grid holds at least min_points={min_points} of the {len(points)} points "
            f"(the densest holds {int(counts.max())}); use a smaller grid size or a lower min_points, or select more images"
        )
    order = np.argsort(flat, kind="stable")
    starts = np.searchsorted(flat[order], occupied, side="left")
    members, offsets = [], [0]
    vec, net, act = [], [], []
    pact = points.point_activation
    for c, s in zip(occupied, starts):
        ids = order[s: s + counts[c]]
        members.append(ids)
        offsets.append(offsets[-1] + ids.size)
        vec.append(points.vectors[ids].mean(0))
        net.append(points.net[ids].mean())
        act.append(pact[ids].mean())
    cells = np.stack([occupied % size, occupied // size], 1).astype(np.int64)
    return AtlasGrid(size, min_points, cells, counts[occupied].astype(np.int64), np.stack(vec).astype(np.float32),
                     np.asarray(net, np.float32), np.asarray(act, np.float32), np.concatenate(members).astype(np.int64),
                     np.asarray(offsets, np.int64))


# ------------------------------------------------------------------------------------------------
# 5. icons
# ------------------------------------------------------------------------------------------------
@dataclass
class AtlasIcons(_Stored):
    """Stage 5: one rendered icon per cell.

    Attributes:
        images: (K, s, s, 3) uint8 icons (s = ``icon_size``).
        activation: (K,) float32 the feature's value on each icon (upsampled to the dataset's image size).
        cosine: (K,) float32 cosine between the icon's activation at the atlas layer and its target,
            inside the target's box: how well the render reached its target.
        params: steps, icon_size, power, icon_target, batch_size, lr, seed, render image size.
    """

    images: np.ndarray
    activation: np.ndarray
    cosine: np.ndarray
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def _arrays(self):
        return {"images": self.images, "activation": self.activation, "cosine": self.cosine}

    def _meta(self):
        return {"params": self.params}

    @classmethod
    def _build(cls, a, m):
        return cls(a["images"], a["activation"], a["cosine"], m["params"])


def icon_targets(points: AtlasPoints, vectors: np.ndarray, icon_target: str = "box",
                 grid: Optional["AtlasGrid"] = None) -> torch.Tensor:
    """Render targets for averaged vectors (K, C): (K, C, H, W) maps at the atlas layer, or (K, C) for a
    linear layer. Attribution vectors enter as their absolute value (SPEC 2.6); activation vectors as they are.

    ``icon_target="box"`` broadcasts each vector over the receptive-field box (zero outside);
    ``"center"`` puts it at the box's centre position only; ``"positions"`` (position mode; needs ``grid``)
    averages the cell's points each at its own (y, x), so a channel that excites the feature at one
    position and inhibits it at another keeps its place (``vectors`` is then unused).
    """
    _check_choice("icon_target", icon_target, ICON_TARGETS)
    if icon_target == "positions":
        if grid is None or points.mode != "position" or len(points.map_shape) == 1:
            raise ValueError("icon_target='positions' needs position-mode points on a spatial layer and the grid")
        c, h, w = points.map_shape
        t = torch.zeros(len(grid), c, h, w)
        v = torch.as_tensor(np.asarray(points.vectors, np.float32))
        if points.kind == "attribution":
            v = v.abs()
        pos = torch.as_tensor(np.asarray(points.point_position, np.int64))
        for k in range(len(grid)):
            ids = torch.as_tensor(grid.points_of(k), dtype=torch.long)
            t[k].index_put_((torch.arange(c)[:, None], pos[ids, 0][None], pos[ids, 1][None]), v[ids].T, accumulate=True)
            t[k] /= ids.numel()
        return t
    v = torch.as_tensor(np.asarray(vectors, np.float32))
    if points.kind == "attribution":
        v = v.abs()
    if len(points.map_shape) == 1:
        return v
    c, h, w = points.map_shape
    y0, y1, x0, x1 = points.box
    t = torch.zeros(v.shape[0], c, h, w)
    if icon_target == "box":
        t[:, :, y0:y1, x0:x1] = v[:, :, None, None]
    else:
        t[:, :, (y0 + y1 - 1) // 2, (x0 + x1 - 1) // 2] = v
    return t


class _StopAfter(nn.Module):
    """A view of ``model`` that shares its children (so Lucent's layer names are unchanged) and stops the
    forward pass once ``layer`` has run: the render loop then skips the rest of the network."""

    class _Stop(Exception):
        pass

    def __init__(self, model: nn.Module, layer: str):
        super().__init__()
        self.__dict__["_wrapped"] = model
        self.__dict__["_modules"] = model._modules
        self.__dict__["_stop_module"] = _layer_table(model)[layer]

    def _get_name(self):
        return self._wrapped._get_name()

    def forward(self, x):
        def stop(module, inputs, output):
            raise _StopAfter._Stop

        handle = self._stop_module.register_forward_hook(stop)
        try:
            self._wrapped(x)
        except _StopAfter._Stop:
            pass
        finally:
            handle.remove()
        return None


@contextlib.contextmanager
def _render_session(model: nn.Module):
    """Freeze the weights (no weight gradients during rendering) and remove the forward hooks Lucent's
    ``render_vis`` leaves on every module, restoring the model as it was."""
    before = {m: set(m._forward_hooks) for m in model.modules()}
    grads = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in grads:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, g in grads:
            p.requires_grad_(g)
        for m, keys in before.items():
            for k in [k for k in m._forward_hooks if k not in keys]:
                del m._forward_hooks[k]


def _icon_objective(layer: str, targets: torch.Tensor, power: float):
    if targets.dim() == 4:
        return spatial_cosdot(layer, targets, power=power, crop=1e-6)
    obj = None
    for k in range(targets.shape[0]):
        o = cosdot(layer, targets[k], power=power, batch=k)
        obj = o if obj is None else obj + o
    return obj


def render_batch(
    model: nn.Module,
    layer: str,
    targets: torch.Tensor,
    image_size: Tuple[int, int],
    steps: int = 64,
    icon_size: Optional[int] = None,
    power: float = 2.0,
    lr: float = 0.05,
    transforms=None,
    seed: int = 0,
) -> np.ndarray:
    """Render one image per target in ONE call of Lucent's ``render_vis``.

    Args:
        targets: (B, C, H, W) maps at ``layer`` (or (B, C) directions for a linear layer).
        image_size: (H, W) the model sees (``fixed_image_size``): the size the targets were computed at.
        steps: optimisation steps; icon_size: side of the parameterised image (default: ``image_size[0]``).
        power: cosine exponent of the spatial cosdot; lr: Adam learning rate; transforms: Lucent transforms
            (default: ``transform.standard_transforms``); seed: seeds the random image initialisation.

    Returns:
        (B, s, s, 3) float32 images in [0, 1].
    """
    from lucent.optvis import param, render

    b = targets.shape[0]
    s = int(icon_size or image_size[0])
    size = tuple(int(v) for v in image_size)
    with _render_session(model), torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        out = render.render_vis(
            _StopAfter(model, layer),
            _icon_objective(layer, targets, power),
            param_f=lambda: param.image(s, batch=b),
            optimizer=lambda params: torch.optim.Adam(params, lr=lr),
            transforms=transforms,
            thresholds=(int(steps),),
            progress=False,
            show_image=False,
            fixed_image_size=size if size[0] != size[1] else size[0],
        )
    return np.asarray(out[-1], dtype=np.float32)


def _icon_inputs(icons_uint8: np.ndarray, image_size: Tuple[int, int]) -> torch.Tensor:
    """Stored icons -> the (K, 3, H, W) model input the render loop fed (bilinear, align_corners=True)."""
    x = torch.from_numpy(icons_uint8).permute(0, 3, 1, 2).float() / 255
    if tuple(x.shape[2:]) != tuple(image_size):
        x = F.interpolate(x, size=tuple(image_size), mode="bilinear", align_corners=True)
    return x.clamp(0, 1)


def render_icons(
    model: nn.Module,
    points: AtlasPoints,
    grid: AtlasGrid,
    steps: int = 64,
    icon_size: Optional[int] = None,
    batch_size: int = 64,
    power: float = 2.0,
    lr: float = 0.05,
    icon_target: str = "box",
    transforms=None,
    seed: int = 0,
    progress: bool = False,
) -> AtlasIcons:
    """Stage 5: render an icon for every cell, ``batch_size`` cells per ``render_vis`` call, and measure the
    feature's activation on each.

    Each icon maximises the spatial cosdot (``dot * |cos|^power``) between the atlas layer's activation
    and the cell's target (see :func:`icon_targets`). The model sees images of the dataset's size
    (``render_vis(fixed_image_size=...)``); ``icon_size`` is the side of the parameterised image
    (default: the dataset's image side). The feature is measured on each stored (uint8) icon upsampled
    the same way.
    """
    from .attribution import measure

    for name, v in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if len(grid) == 0:
        raise ValueError("the grid has no occupied cell: nothing to render")
    if grid.vectors.shape[1] != points.vectors.shape[1]:
        raise ValueError(f"grid vectors have {grid.vectors.shape[1]} channels, the points {points.vectors.shape[1]}")
    targets = icon_targets(points, grid.vectors, icon_target, grid=grid)
    image_size = tuple(points.image_size)
    s = int(icon_size or image_size[0])
    from tqdm.auto import tqdm

    chunks = [range(a, min(a + batch_size, len(grid))) for a in range(0, len(grid), batch_size)]
    images = []
    for c, rows in enumerate(tqdm(chunks, disable=not progress, desc="atlas icons")):
        t = targets[rows.start: rows.stop]
        images.append(render_batch(model, points.layer, t, image_size, steps, s, power, lr, transforms, seed + c))
    icons = _to_uint8(torch.from_numpy(np.concatenate(images)).permute(0, 3, 1, 2))
    x = _icon_inputs(icons, image_size)
    acts, coss = [], []
    for a in range(0, x.shape[0], batch_size):
        xb = x[a: a + batch_size]
        acts.append(measure(model, xb, points.feature).float().cpu())
        with torch.no_grad():
            h = capture(model, preprocess_fn(model)(xb.to(model_device(model))), [points.layer], stop_at=points.layer)
        h = h[points.layer].float().cpu()
        t = targets[a: a + batch_size]
        if h.dim() == 4:
            y0, y1, x0, x1 = _center_box(points.box) if icon_target == "center" else points.box
            h, t = h[:, :, y0:y1, x0:x1], t[:, :, y0:y1, x0:x1]
        coss.append(F.cosine_similarity(h.flatten(1), t.flatten(1), dim=1))
    params = {"steps": int(steps), "icon_size": s, "batch_size": int(batch_size), "power": float(power),
              "lr": float(lr), "icon_target": icon_target, "seed": int(seed), "image_size": list(image_size),
              "transforms": "standard" if transforms is None else "custom"}
    return AtlasIcons(icons, torch.cat(acts).numpy().astype(np.float32), torch.cat(coss).numpy().astype(np.float32),
                      params)


def _center_box(box: Box) -> Box:
    y0, y1, x0, x1 = box
    cy, cx = (y0 + y1 - 1) // 2, (x0 + x1 - 1) // 2
    return cy, cy + 1, cx, cx + 1


# ------------------------------------------------------------------------------------------------
# the whole atlas
# ------------------------------------------------------------------------------------------------
@dataclass
class Atlas:
    """An attribution (or activation) atlas: stages 2-5 together. ``save`` writes one ``.npz``."""

    points: AtlasPoints
    layout: AtlasLayout
    grid: AtlasGrid
    icons: AtlasIcons

    @property
    def kind(self) -> str:
        return self.points.kind

    def activation_by_sign(self) -> dict:
        """Mean feature activation of the icons of net-positive and of net-negative cells.

        Returns ``{"positive_mean", "negative_mean", "n_positive", "n_negative"}`` (means are NaN when a
        side has no cell). The attribution atlas's claim: ``negative_mean < positive_mean``.
        """
        pos, neg = self.grid.net > 0, self.grid.net < 0
        a = self.icons.activation
        return {
            "positive_mean": float(a[pos].mean()) if pos.any() else float("nan"),
            "negative_mean": float(a[neg].mean()) if neg.any() else float("nan"),
            "n_positive": int(pos.sum()),
            "n_negative": int(neg.sum()),
        }

    def cell_images(self, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """Rows (into the per-image arrays of ``points``) of the images with points in cell ``k``, and how
        many of the cell's points each contributes."""
        rows, counts = np.unique(self.points.point_image[self.grid.points_of(k)], return_counts=True)
        return rows, counts

    def save(self, path: str) -> None:
        arrays, meta = {}, {"format": FORMAT, "type": "Atlas"}
        for name in ("points", "layout", "grid", "icons"):
            part = getattr(self, name)
            arrays.update(_prefixed(part._arrays(), name + "/"))
            meta[name] = part._meta()
        _write_npz(path, arrays, meta)

    @classmethod
    def load(cls, path: str) -> "Atlas":
        arrays, meta = _read_npz(path, "Atlas")
        parts = {}
        for name, kind in (("points", AtlasPoints), ("layout", AtlasLayout), ("grid", AtlasGrid), ("icons", AtlasIcons)):
            parts[name] = kind._build(_unprefixed(arrays, name + "/"), meta[name])
        return cls(**parts)


def build_atlas(
    model: nn.Module,
    dataset,
    feature,
    layer: str,
    selection: Union[Selection, Sequence[int], None] = None,
    kind: str = "attribution",
    mode: str = "sum",
    crop: Optional[float] = 0.01,
    n_neighbors: int = 10,
    min_dist: float = 0.1,
    pca: Optional[int] = None,
    grid_size: Optional[int] = None,
    min_points: int = 3,
    steps: int = 64,
    icon_size: Optional[int] = None,
    batch_size: int = 64,
    power: float = 2.0,
    icon_target: str = "box",
    transforms=None,
    seed: int = 0,
    progress: bool = False,
) -> Atlas:
    """Stages 2-5 with their defaults: :func:`collect_vectors`, :func:`project_layout`, :func:`grid_cells`,
    :func:`render_icons` (see each for the arguments). ``kind="activation"`` builds the activation atlas."""
    points = collect_vectors(model, dataset, feature, layer, selection, kind, mode, crop, batch_size, progress=progress)
    layout = project_layout(points, n_neighbors, min_dist, pca, seed=seed)
    grid = grid_cells(points, layout, grid_size, min_points)
    icons = render_icons(model, points, grid, steps, icon_size, batch_size, power, icon_target=icon_target,
                         transforms=transforms, seed=seed, progress=progress)
    return Atlas(points, layout, grid, icons)


# ------------------------------------------------------------------------------------------------
# 6. static figure
# ------------------------------------------------------------------------------------------------
def _symmetric_limit(values: np.ndarray) -> float:
    m = float(np.max(np.abs(values))) if values.size else 0.0
    return m if m > 0 else 1.0


def plot_atlas(atlas: Atlas, path: Optional[str] = None, title: Optional[str] = None, tint: float = 0.25, dpi: int = 120):
    """Stage 6: the atlas figure.

    Left: every icon at its cell, bordered and tinted (``tint`` = overlay opacity) by the cell's net
    attribution on a diverging scale centred at 0 (red excitatory, blue inhibitory). Right: the point
    map, each point coloured by its image's feature activation (diverging, centred at 0) and sized by
    its ``|S|_2``. Returns the matplotlib Figure; writes a PNG when ``path`` is given.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    g, p, ic = atlas.grid, atlas.points, atlas.icons
    cmap = plt.get_cmap("RdBu_r")
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(14, 6.6), gridspec_kw={"width_ratios": [1, 1]})
    lim = _symmetric_limit(g.net)
    norm = Normalize(-lim, lim)
    step = 1.0 / g.size
    for k in range(len(g)):
        cx, cy = g.cells[k]
        x0, y0 = cx * step, cy * step
        ax.imshow(ic.images[k], extent=(x0, x0 + step, y0, y0 + step), interpolation="bilinear", zorder=1)
        col = cmap(norm(g.net[k]))
        ax.add_patch(Rectangle((x0, y0), step, step, facecolor=col, alpha=tint, edgecolor="none", zorder=2))
        ax.add_patch(Rectangle((x0, y0), step, step, facecolor="none", edgecolor=col, linewidth=2.0, zorder=3))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_facecolor("#f4f4f4")
    word = "attribution" if p.kind == "attribution" else "activation"
    ax.set_title(f"{word} atlas: {len(g)} icons ({g.size}x{g.size} grid, >= {g.min_points} points per cell)")
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, fraction=0.046, pad=0.02, label="cell net attribution (red excites, blue inhibits)")

    act = p.point_activation
    alim = _symmetric_limit(act)
    mag = p.magnitude / (p.magnitude.max() if p.magnitude.max() > 0 else 1)
    sc = ax2.scatter(atlas.layout.xy[:, 0], atlas.layout.xy[:, 1], c=act, cmap=cmap, vmin=-alim, vmax=alim,
                     s=4 + 60 * mag, alpha=0.75, edgecolors="k", linewidths=0.2)
    for k in range(len(g)):
        cx, cy = g.cells[k]
        ax2.add_patch(Rectangle((cx * step, cy * step), step, step, fill=False, edgecolor="0.7", linewidth=0.4))
    ax2.set_xlim(0, 1)
    ax2.set_ylim(0, 1)
    ax2.set_aspect("equal")
    ax2.set_title(f"{len(p)} points ({p.mode} mode), colour: feature activation, size: |S|")
    fig.colorbar(sc, ax=ax2, fraction=0.046, pad=0.02, label="feature activation of the point's image")
    summ = atlas.activation_by_sign()
    fig.suptitle(title or (
        f"{p.feature.name}, {word} at {p.layer}; icon activation: net+ cells {summ['positive_mean']:.3g} "
        f"(n={summ['n_positive']}), net- cells {summ['negative_mean']:.3g} (n={summ['n_negative']})"), fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


# ------------------------------------------------------------------------------------------------
# 6b. interactive page
# ------------------------------------------------------------------------------------------------
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


_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>%(title)s</title>
<style>
body { font-family: sans-serif; margin: 12px; color: #222; }
h1 { font-size: 17px; margin: 0 0 4px 0; }
#summary { font-size: 13px; color: #444; margin-bottom: 8px; }
#main { display: flex; gap: 14px; align-items: flex-start; }
#viewport { position: relative; width: 680px; height: 680px; overflow: hidden; border: 1px solid #999;
  background: #f4f4f4; cursor: grab; touch-action: none; }
#viewport.dragging { cursor: grabbing; }
#canvas { position: absolute; left: 0; top: 0; width: 680px; height: 680px; transform-origin: 0 0; }
.cell { position: absolute; box-sizing: border-box; border: 3px solid; image-rendering: auto; }
.cell:hover, .cell.active { outline: 2px solid #000; z-index: 2; }
#controls { position: absolute; right: 6px; top: 6px; z-index: 5; }
#controls button { width: 30px; height: 26px; margin-left: 2px; }
#details { width: 520px; max-height: 760px; overflow-y: auto; font-size: 13px; }
#details .images { display: flex; flex-wrap: wrap; gap: 6px; }
#details figure { margin: 0; width: 120px; }
#details figure img { width: 120px; height: 120px; image-rendering: pixelated; display: block; }
#details figcaption { font-size: 11px; word-break: break-all; }
.legend { display: inline-block; width: 12px; height: 12px; vertical-align: middle; }
</style>
</head>
<body>
<h1>%(title)s</h1>
<div id="summary">%(summary)s<br>
<span class="legend" style="background:rgb(178,24,43)"></span> excitatory cell (net attribution &gt; 0)
<span class="legend" style="background:rgb(33,102,172)"></span> inhibitory cell (net &lt; 0).
Drag to pan, wheel or +/- to zoom; hover a cell to see its dataset images, click to keep them.</div>
<div id="main">
<div id="viewport"><div id="controls"><button id="zoom-in" title="zoom in">+</button><button id="zoom-out" title="zoom out">&minus;</button><button id="zoom-reset" title="reset view">&#8634;</button></div><div id="canvas"></div></div>
<div id="details"><p>Hover or click a cell.</p></div>
</div>
<script type="application/json" id="atlas-data">%(data)s</script>
<script>
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("atlas-data").textContent);
  var SIDE = 680, view = { x: 0, y: 0, s: 1 };
  var viewport = document.getElementById("viewport"), canvas = document.getElementById("canvas");
  var details = document.getElementById("details"), pinned = null, dragged = false, drag = null;
  var step = SIDE / data.grid;
  function fmt(v) { return (v === null || v === undefined) ? "n/a" : Number(v).toPrecision(3); }
  function apply() { canvas.style.transform = "translate(" + view.x + "px," + view.y + "px) scale(" + view.s + ")"; }
  function el(tag, cls, text) { var e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; }
  function show(k) {
    var c = data.cells[k];
    details.textContent = "";
    details.appendChild(el("h2", null, "cell (" + c.col + ", " + c.row + "): " + c.count + " points from " + c.images.length + " images"));
    details.appendChild(el("p", null, "net attribution " + fmt(c.net) + " (" + (c.net > 0 ? "excitatory" : c.net < 0 ? "inhibitory" : "neutral") +
      "); feature activation on the icon " + fmt(c.icon_activation) + "; mean activation of its images " + fmt(c.activation)));
    var icon = el("img"); icon.src = c.icon; icon.alt = "icon of cell " + k; icon.width = 160; icon.height = 160; details.appendChild(icon);
    var box = el("div", "images"); box.id = "cell-images";
    c.images.forEach(function (pair) {
      var im = data.images[pair[0]], fig = el("figure", "dataset-image"), img = el("img");
      img.src = im.thumb; img.alt = im.label; fig.appendChild(img);
      fig.appendChild(el("figcaption", null, im.label + " | f=" + fmt(im.activation) + " P=" + fmt(im.P) + " N=" + fmt(im.N) +
        (pair[1] > 1 ? " (" + pair[1] + " points)" : "")));
      box.appendChild(fig);
    });
    details.appendChild(box);
  }
  data.cells.forEach(function (c, k) {
    var img = el("img", "cell"); img.id = "cell-" + k; img.src = c.icon; img.alt = "cell " + k;
    img.style.left = (c.col * step) + "px"; img.style.top = ((data.grid - 1 - c.row) * step) + "px";
    img.style.width = step + "px"; img.style.height = step + "px"; img.style.borderColor = c.color;
    img.draggable = false;
    img.addEventListener("mouseenter", function () { if (pinned === null) show(k); });
    img.addEventListener("click", function () {
      if (dragged) return;
      if (pinned !== null) document.getElementById("cell-" + pinned).classList.remove("active");
      pinned = k; img.classList.add("active"); show(k);
    });
    canvas.appendChild(img);
  });
  function zoomAt(f, cx, cy) {
    var s = Math.min(40, Math.max(0.5, view.s * f)); f = s / view.s;
    view.x = cx - (cx - view.x) * f; view.y = cy - (cy - view.y) * f; view.s = s; apply();
  }
  viewport.addEventListener("wheel", function (e) {
    e.preventDefault(); var r = viewport.getBoundingClientRect();
    zoomAt(e.deltaY < 0 ? 1.2 : 1 / 1.2, e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });
  viewport.addEventListener("pointerdown", function (e) {
    if (e.target.tagName === "BUTTON") return;
    drag = { x: e.clientX, y: e.clientY, vx: view.x, vy: view.y }; dragged = false;
  });
  window.addEventListener("pointermove", function (e) {
    if (!drag) return;
    var dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) { dragged = true; viewport.classList.add("dragging"); }
    if (dragged) { view.x = drag.vx + dx; view.y = drag.vy + dy; apply(); }
  });
  window.addEventListener("pointerup", function () { drag = null; viewport.classList.remove("dragging"); setTimeout(function () { dragged = false; }, 0); });
  document.getElementById("zoom-in").addEventListener("click", function () { zoomAt(1.25, SIDE / 2, SIDE / 2); });
  document.getElementById("zoom-out").addEventListener("click", function () { zoomAt(0.8, SIDE / 2, SIDE / 2); });
  document.getElementById("zoom-reset").addEventListener("click", function () { view = { x: 0, y: 0, s: 1 }; apply(); });
  apply();
  document.body.setAttribute("data-ready", "1");
})();
</script>
</body>
</html>
"""


def atlas_html(atlas: Atlas, title: Optional[str] = None) -> str:
    """The interactive atlas as one self-contained HTML string (see :func:`write_atlas_html`)."""
    g, p, ic = atlas.grid, atlas.points, atlas.icons
    lim = _symmetric_limit(g.net)
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
            "color": _rgb(g.net[k], lim), "icon": _png_data_uri(ic.images[k]),
            "images": [[remap[int(rows[j])], int(counts[j])] for j in order],
        })
    data = {"grid": int(g.size), "cells": cells, "images": images}
    word = "Attribution" if p.kind == "attribution" else "Activation"
    title = title or f"{word} atlas of {p.feature.name} at {p.layer}"
    s = atlas.activation_by_sign()
    summary = (
        f"{len(g)} icons on a {g.size}x{g.size} grid from {len(p)} points ({p.mode} mode) of {len(p.image_index)} "
        f"images of {p.dataset}. Feature activation on icons: net-positive cells {s['positive_mean']:.4g} "
        f"(n={s['n_positive']}), net-negative cells {s['negative_mean']:.4g} (n={s['n_negative']})."
    )
    return _HTML % {"title": html.escape(title), "summary": html.escape(summary), "data": _script_json(data)}


def write_atlas_html(atlas: Atlas, path: str, title: Optional[str] = None) -> str:
    """Write the interactive atlas: one self-contained HTML file (icons and dataset thumbnails embedded
    as base64 PNG; a Content-Security-Policy forbids any network access) with pan (drag) and zoom (wheel,
    buttons). Hovering a cell lists the dataset images whose points fell into it with their activation,
    P and N; clicking pins them. Labels and file names are escaped. Returns ``path``."""
    text = atlas_html(atlas, title)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path
