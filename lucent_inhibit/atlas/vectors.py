"""Stage 2 of the atlas: the vectors it lays out (Hamblin et al. 2024, section 4; Carter et al. 2019).

For every selected image, :func:`collect_vectors` takes its attribution ``S_l = grad_{h_l} f * h_l``
(``kind="attribution"``: the attribution atlas) or its activation ``h_l`` (``kind="activation"``: the
activation atlas of Carter et al. 2019) at layer ``l``, cropped to the feature's receptive-field box,
either summed over space to one C-vector per image (``mode="sum"``) or one C-vector per spatial position
in the box (``mode="position"``). On a vision transformer's token layer (B, T, C) the positions are the
patch tokens on their patch grid (:func:`lucent_inhibit.core.tokens.token_maps`: channels = the last dimension,
a (C, grid_h, grid_w) map per image); the class and register tokens are excluded from the points (they
have no place on the grid), though the per-image totals ``P`` and ``N`` cover every token. Every layer tensor is read through :func:`lucent_inhibit.core.hooks.capture`
(inside :func:`~lucent_inhibit.attribute` for ``S_l``), so a layer whose module runs more than once per
forward pass is refused with the names of usable neighbours.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..attribution.attribute import METHODS, attribute
from ..attribution.totals import signed_totals
from ..core.checkpoints import checkpointed, chunk_images, split_chunks
from ..core.features import Feature, as_feature
from ..core.hooks import capture
from ..core.layers import check_layer_names, model_device
from ..core.preparation import preprocess_fn
from ..core.results import Result
from ..core.settings import PassSettings, as_pass_settings
from ..core.tokens import UNDERSTOOD_SHAPES, TokenGrid, token_grid, token_maps
from ..core.validate import InputError, check_choice, check_int, check_number
from ..data.batching import iter_batches
from ..data.datasets import dataset_digest, dataset_identity, describe_item
from .selection import Selection
from .collector import Box, PointCollector
from .spool import MAP_BUDGET

KINDS = ("attribution", "activation")
#: Selected images per checkpoint of the vectors' pass (rounded up to whole batches); their maps are held
#: in memory at once (64 images of a 112 x 14 x 14 map: 5 MB).
CHECKPOINT_IMAGES = 64
MODES = ("sum", "position")



@dataclass
class AtlasPoints(Result):
    """Stage 2: the vectors the atlas lays out, and what each selected image contributes.

    Points (M of them):
        vectors: (M, C) float32 attribution (or activation) vectors at ``layer``.
        point_image: (M,) int64 row of the point's image in the per-image arrays below.
        point_position: (M, 2) int64 (y, x) in the layer's map (position mode; the patch grid for a
            token layer), or (-1, -1) (sum mode).
        net: (M,) float32 net attribution of the point (sum of its attribution vector; for the
            activation atlas the attribution at the same places).
        magnitude: (M,) float32 ``|S|_2`` of the point's attribution vector.
    Images (n of them, the selection):
        image_index: (n,) int64 dataset indices; labels: n strings (path / crop box).
        activation: (n,) float32 feature value ``f_v(x)``.
        P, N: (n,) float32 L1 excitatory / inhibitory totals over the whole attribution map at ``layer``
            (every token of a token layer, class and register tokens included).
        thumbnails: (n, t, t, 3) uint8.
    Settings: feature, layer, vector_kind (``"attribution"`` or ``"activation"``; the name ``kind`` is
    the result type's tag), mode, box ``(y0, y1, x0, x1)`` (the receptive-field crop in the layer's map;
    ``None`` for linear layers), map_shape ((C, H, W), (C, grid_h, grid_w) for a token layer, or (C,)), image_size ``(H, W)`` of the dataset
    images (pixels), dataset identity, attribution method.
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
    vector_kind: str
    mode: str
    box: Optional[Box]
    map_shape: Tuple[int, ...]
    image_size: Tuple[int, int]
    dataset: str = ""
    method: str = "gradient_x_activation"

    def __post_init__(self):
        self.box = None if self.box is None else tuple(int(v) for v in self.box)
        self.map_shape = tuple(int(v) for v in self.map_shape)
        self.image_size = tuple(int(v) for v in self.image_size)
        self.labels = [str(v) for v in self.labels]

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def point_activation(self) -> np.ndarray:
        """(M,) feature activation of each point's image."""
        return self.activation[self.point_image]

    def summary(self) -> dict:
        return {"type": self.kind(), "points": len(self), "images": int(self.image_index.shape[0]),
                "feature": self.feature.name, "layer": self.layer, "vector_kind": self.vector_kind,
                "mode": self.mode, "box": self.box, "map_shape": list(self.map_shape),
                "mean_activation": float(self.activation.mean()), "mean_P": float(self.P.mean()),
                "mean_N": float(self.N.mean())}

    def plot(self, path=None, ax=None, **style):
        """Net attribution against ``|S|_2`` per point, coloured by its image's activation;
        returns the Figure (a PNG at ``path`` when given)."""
        from .figures import plot_points

        return plot_points(self, path, ax, **style)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> (B, H, W, 3) uint8."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _thumbnails(images: torch.Tensor, size: int) -> np.ndarray:
    if images.shape[-1] != size or images.shape[-2] != size:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return to_uint8(images)


def selection_indices(selection, feature: Feature, layer: str, dataset) -> np.ndarray:
    """Dataset indices of ``selection`` (a :class:`Selection` checked against ``feature``, ``layer`` and the
    dataset's identity, a sequence of indices, or ``None`` for all), validated against ``len(dataset)``."""
    if isinstance(selection, Selection):
        if selection.feature != feature:
            raise ValueError(f"the selection is of feature {selection.feature.name}, but the atlas explains {feature.name}")
        if selection.layer != layer:
            raise ValueError(
                f"the selection was ranked by attribution at layer {selection.layer!r}, but the atlas is at "
                f"{layer!r}; select at the atlas layer"
            )
        ident = dataset_identity(dataset)
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
    return indices


def read_layer(model: nn.Module, images: torch.Tensor, layer: str, preprocess: bool = True) -> torch.Tensor:
    """The activation (B, C, H, W) or (B, C) of ``layer`` on images (B, 3, H, W) in [0, 1] (normalised for the
    model when ``preprocess``), read by :func:`~lucent_inhibit.core.hooks.capture` (no gradients, float32 on
    the CPU)."""
    x = images.to(model_device(model))
    x = preprocess_fn(model)(x) if preprocess else x
    with torch.no_grad():
        return capture(model, x, [layer])[layer].float().cpu()


def _warn_negative(h: torch.Tensor, layer: str) -> None:
    frac = float((h < 0).float().mean())
    if frac > 0.01:
        warnings.warn(
            f"layer {layer!r} has negative activations ({frac:.0%} of values): the icons render |S|, which only "
            "matches non-negative activations; prefer a post-activation layer (e.g. a ReLU/ReLU6 output such as "
            "'..._bn1_act' or '..._bn2_act')"
        )


def _first_pass(model, dataset, feature, layer, indices, kind, mode, settings, method, images, collector,
                checkpoint=None, identity=None):
    """Attribute every selected image, chunk by chunk (saved to and resumed from ``checkpoint``): per-image
    arrays into ``images`` (activation, P, N, thumbnails), the maps into ``collector``; no chunk's arrays
    outlive it. Returns the image (H, W)."""
    from tqdm.auto import tqdm

    chunks = split_chunks(indices, chunk_images(settings.batch_size, CHECKPOINT_IMAGES))
    state = {"start": 0, "hw": None}
    size = images["thumbnails"].shape[1]

    def consume(c, arrays):
        rows = slice(state["start"], state["start"] + len(arrays["activation"]))
        for k in images:
            images[k][rows] = arrays[k]
        collector.add(rows.start, torch.from_numpy(arrays["s"]), torch.from_numpy(arrays["h"]) if "h" in arrays else None)
        state["start"], state["hw"] = rows.stop, tuple(int(v) for v in arrays["hw"][0])

    with tqdm(total=int(indices.size), disable=not settings.progress, desc="atlas vectors", unit="img") as bar:
        compute = lambda c, idx: _chunk_maps(model, dataset, feature, layer, idx, kind, mode, settings, method,  # noqa: E731
                                             size, c == 0, bar)
        checkpointed(checkpoint, "atlas vectors", identity or {}, chunks, compute,
                     skipped=lambda idx: bar.update(len(idx)), consume=consume)
    return state["hw"]


def _chunk_maps(model, dataset, feature, layer, indices, kind, mode, settings, method, size, first, bar) -> dict:
    """One chunk of selected images (dataset ``indices``, (n,)): ``{"activation", "P", "N": (n,), "thumbnails":
    (n, size, size, 3) uint8, "s": the layer's attribution maps (n, C[, H, W]), "h": its activation maps (kind
    "activation" only), "hw": (n, 2) image sizes}``, batch by batch; no batch tensor outlives its batch."""
    out: dict = {k: [] for k in ("activation", "P", "N", "thumbnails", "s", "h", "hw")}
    for b, (_, x) in enumerate(iter_batches(dataset, settings.batch_size, indices)):
        x = x.float()
        att = attribute(model, x, feature, [layer], method=method, preprocess=settings.preprocess)
        full = att.scores[layer].float().cpu()
        s = layer_map(model, feature, layer, x, full)
        if mode == "position" and s.dim() != 4:
            raise ValueError(
                f"mode='position' needs a layer with spatial dimensions (B, C, H, W), but layer {layer!r} gives "
                f"{tuple(s.shape)}; use mode='sum'"
            )
        if kind == "activation" or (first and b == 0):
            h = layer_map(model, feature, layer, x, read_layer(model, x, layer, settings.preprocess))
            if kind == "activation":
                out["h"].append(h.numpy())
            else:
                _warn_negative(h, layer)
        P, N = signed_totals(full, "element", "l1")
        out["activation"].append(att.activation.float().cpu().numpy())
        out["P"].append(P.numpy())
        out["N"].append(N.numpy())
        out["thumbnails"].append(_thumbnails(x, size))
        out["s"].append(s.numpy())
        out["hw"].append(np.tile(np.asarray(x.shape[2:], np.int64), (x.shape[0], 1)))
        bar.update(x.shape[0])
        del att, s, full, P, N
    return {k: np.concatenate(v) for k, v in out.items() if v}


def layer_grid(model: nn.Module, feature: Feature, input_hw) -> Optional[TokenGrid]:
    """The token layout the atlas reads a token layer (B, T, C) with, for inputs of ``input_hw`` (H, W) pixels:
    the model's (:func:`~lucent_inhibit.core.tokens.token_grid`), else the feature's, else None (inferred from T)."""
    grid = token_grid(model, tuple(int(v) for v in input_hw))
    return feature.grid if grid is None else grid


def layer_map(model: nn.Module, feature: Feature, layer: str, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A layer tensor ``t`` of images ``x`` (B, 3, H, W) as the atlas reads it: a map (B, C, H, W) or linear
    (B, C) as is; a token layer (B, T, C) as its patch tokens on the patch grid (B, C, grid_h, grid_w)
    (:func:`layer_grid`, :func:`~lucent_inhibit.core.tokens.token_maps`). :class:`InputError` for other shapes."""
    if t.dim() not in (2, 3, 4):
        raise InputError(f"layer {layer!r} gives tensors of shape {tuple(t.shape)}; atlas vectors need {UNDERSTOOD_SHAPES}")
    if t.dim() != 3:
        return t
    return token_maps(t, layer_grid(model, feature, x.shape[2:]), layer)


def check_crop(crop, name: str = "crop") -> Optional[float]:
    """``crop`` as a float fraction in [0, 1), or None; ``ValueError`` naming ``name`` otherwise."""
    if crop is None:
        return None
    crop = check_number(name, crop, low=0)
    if crop >= 1:
        raise ValueError(f"{name} must be a fraction in [0, 1) or None, got {crop!r}")
    return crop


def collect_vectors(
    model: nn.Module,
    dataset,
    feature,
    layer: str,
    selection: Union[Selection, Sequence[int], None] = None,
    kind: str = "attribution",
    mode: str = "sum",
    crop: Optional[float] = 0.01,
    thumbnail_size: int = 48,
    method: str = "gradient_x_activation",
    memory_budget: int = MAP_BUDGET,
    settings: Optional[PassSettings] = None,
    checkpoint: Optional[str] = None,
) -> AtlasPoints:
    """Stage 2: attribution (or activation) vectors at ``layer`` for the selected images.

    Args:
        model: a prepared model (:func:`lucent_inhibit.prepare`).
        dataset: a tensor (N, 3, H, W) or a sequence of (3, H, W) images (or (image, label) items) in
            [0, 1], all one shape (e.g. ``sample_crops``).
        feature: the :class:`~lucent_inhibit.Feature` explained (or ``(layer, unit)``).
        layer: the attribution layer ``l`` (before the feature; close to it, SPEC section 3). It must
            run once per forward pass (``AmbiguousLayerError``, a ``ValueError``, lists usable names).
        selection: a :class:`Selection` (its feature, layer and dataset must match), dataset indices,
            or ``None`` for the whole dataset.
        kind: ``"attribution"`` (``S_l``; the attribution atlas) or ``"activation"`` (``h_l``; the
            activation atlas).
        mode: ``"sum"``: one C-vector per image, summed over the receptive-field box (the activation atlas
            averages ``h_l`` over the box instead); ``"position"``: one C-vector per position in the box.
            Needs a (B, C, H, W) or token layer (B, T, C): one vector per patch token in the box, the
            class/register tokens excluded; linear layers only have ``"sum"``.
        crop: the receptive-field box is where the mean over the selected images of ``|S_l|`` summed over
            channels exceeds ``crop`` times its maximum; ``None`` takes the whole map.
        thumbnail_size: side of the stored dataset thumbnails (pixels), for the interactive atlas.
        method: attribution method of :func:`~lucent_inhibit.attribute`.
        memory_budget: bytes of whole layer maps kept in memory until the box is known (the maps of every
            selected image are needed for it); larger selections write them to a temporary file in
            ``TMPDIR`` (deleted when done) and read them back batch by batch. Only the box-cut points are
            kept, in preallocated arrays: the peak memory is the points, the per-image arrays
            (thumbnails) and one batch, plus at most ``memory_budget``.
        settings: the pass's :class:`~lucent_inhibit.core.settings.PassSettings` (images per forward /
            backward pass, input normalisation, a progress bar over the batches); None: the defaults.
        checkpoint: a folder where the per-image arrays and maps are saved every :data:`CHECKPOINT_IMAGES`
            images (:func:`lucent_inhibit.core.checkpoints.checkpointed`): a rerun with the same arguments after
            an interruption (SIGKILL included) resumes there and returns what an uninterrupted run returns.

    Returns:
        :class:`AtlasPoints`. Points whose vector is all zero (no direction for UMAP's cosine metric)
        are dropped with a warning.
    """
    feature = as_feature(feature)
    check_choice("kind", kind, KINDS)
    check_choice("mode", mode, MODES)
    check_choice("method", method, METHODS)
    crop = check_crop(crop)
    settings = as_pass_settings(settings)
    thumbnail_size = check_int("thumbnail_size", thumbnail_size, low=1)
    check_layer_names(model, [layer, feature.layer], allow=())
    indices = selection_indices(selection, feature, layer, dataset)
    memory_budget = check_int("memory_budget", memory_budget, low=0)
    n = int(indices.size)
    images = {"activation": np.empty(n, np.float32), "P": np.empty(n, np.float32), "N": np.empty(n, np.float32),
              "thumbnails": np.empty((n, thumbnail_size, thumbnail_size, 3), np.uint8)}
    collector = PointCollector(n, kind, mode, crop, memory_budget)
    try:
        identity = {"feature": feature.to_dict(), "layer": layer, "kind": kind, "mode": mode, "method": method,
                    "thumbnail_size": thumbnail_size, "indices": indices.tolist(), "dataset": dataset_identity(dataset),
                    "images": dataset_digest(dataset),
                    "batch_size": settings.batch_size, "preprocess": settings.preprocess}
        hw = _first_pass(model, dataset, feature, layer, indices, kind, mode, settings, method, images, collector,
                         checkpoint, identity)
        box, (vectors, net, mag, point_image, pos) = collector.finish(settings.batch_size, layer)
    finally:
        collector.store.close()
    return AtlasPoints(
        vectors=vectors, point_image=point_image, point_position=pos, net=net, magnitude=mag,
        image_index=indices, labels=[describe_item(dataset, int(i)) for i in indices], **images,
        feature=feature, layer=layer, vector_kind=kind, mode=mode, box=box, map_shape=collector.map_shape,
        image_size=hw, dataset=dataset_identity(dataset), method=method,
    )
