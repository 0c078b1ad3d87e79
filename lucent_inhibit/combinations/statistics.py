"""Dataset statistics of a layer for picking feature pairs (Hamblin, Alvarez & Konkle, paper 004; SPEC 2.7).

:func:`pair_statistics` measures every unit of one layer at one position over a dataset and correlates
the units; :class:`PairStatistics` picks the most correlated, most anti-correlated and least correlated
pairs. :func:`measure_pair` reads a pair's values off images exactly as the render loop's model saw
them (same resize), and :func:`pair_cloud` gives the dataset's grey cloud of the combination figure.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..core.features import Feature, Position, as_feature, check_images
from ..core.hooks import capture
from ..core.layers import check_layer_names, model_device
from ..core.preparation import preprocess_fn
from ..core.results import Result
from ..core.settings import PassSettings, as_pass_settings
from ..core.tokens import TokenGrid, token_grid
from ..core.validate import check_choice, check_int
from ..data.batching import iter_batches

Size = Union[int, Tuple[int, int]]


# ------------------------------------------------------------------------------------------------
# measuring like the render loop
# ------------------------------------------------------------------------------------------------
def to_model_size(images: torch.Tensor, size: Optional[Size]) -> torch.Tensor:
    """Resize (B, 3, H, W) images to ``size`` (side or (H, W)) as ``render_vis`` does; None keeps them.

    The resampling is Lucent's (bilinear, ``align_corners=True``); it commutes with the per-channel affine
    normalisation, so resizing before or after normalising gives the same model input.
    """
    if size is None:
        return images
    hw = (int(size), int(size)) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    if tuple(images.shape[-2:]) == hw:
        return images
    return F.interpolate(images, size=hw, mode="bilinear", align_corners=True)


def measure_pair(
    model: nn.Module,
    images: torch.Tensor,
    feature_a: Feature,
    feature_b: Feature,
    size: Optional[Size] = None,
    batch_size: int = 64,
    preprocess: bool = True,
) -> torch.Tensor:
    """Both features' values (B, 2), raw (unscaled) units, on images (B, 3, H, W) in [0, 1].

    ``size``: resize the images (bilinear, as ``render_vis``) to ``size`` (a side or (H, W)) before the
    model; ``None`` keeps them as they are. One no-grad forward pass per ``batch_size`` images, stopped
    after the deeper of the two layers.
    """
    fa, fb = as_feature(feature_a), as_feature(feature_b)
    images = check_images(images, preprocess)
    batch_size = check_int("batch_size", batch_size, low=1)
    device = model_device(model)
    norm = preprocess_fn(model)
    out = []
    with torch.no_grad():
        for _, x in iter_batches(images, batch_size):
            x = to_model_size(x.to(device), size)
            acts = capture(model, norm(x) if preprocess else x, [fa.layer, fb.layer])
            out.append(torch.stack([fa(acts[fa.layer]), fb(acts[fb.layer])], dim=1).cpu())
    return torch.cat(out)


def _as_dataset(dataset, minimum: int = 1):
    """A (N, 3, H, W) tensor or a non-empty sequence of images / (image, label) items, else ValueError."""
    if torch.is_tensor(dataset) and dataset.dim() == 3:
        dataset = dataset[None]
    ok = torch.is_tensor(dataset) or (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__"))
    if not ok or len(dataset) < minimum:
        got = f"{len(dataset)} images" if ok else type(dataset).__name__
        raise ValueError(
            f"dataset must be a (N, 3, H, W) tensor or a sequence of (3, H, W) images in [0, 1] with at least "
            f"{minimum} image(s), got {got}"
        )
    return dataset


def pair_cloud(model: nn.Module, dataset, feature_a: Feature, feature_b: Feature,
               settings: Optional[PassSettings] = None) -> torch.Tensor:
    """Dataset activations of a pair for the grey cloud of the combination figure: (N, 2), raw units.

    ``dataset``: (N, 3, H, W) tensor or sequence of (3, H, W) images in [0, 1], at the size the render's
    model saw (``CombinationResult.render_size``) so positions mean the same neurons. ``settings``: the
    pass's :class:`~lucent_inhibit.core.settings.PassSettings` (images per pass, progress bar).
    """
    settings = as_pass_settings(settings)
    dataset = _as_dataset(dataset)
    batches = iter_batches(dataset, settings.batch_size)
    parts = [measure_pair(model, b, feature_a, feature_b, batch_size=settings.batch_size)
             for _, b in tqdm(batches, disable=not settings.progress, desc="pair cloud")]
    return torch.cat(parts)


# ------------------------------------------------------------------------------------------------
# statistics of a layer
# ------------------------------------------------------------------------------------------------
PAIR_CHOICES = ("correlated", "anticorrelated", "zero")


@dataclass
class PairStatistics(Result):
    """Activations of every unit of one layer over a dataset, at one position, and their correlations.

    Attributes:
        layer: Lucent layer name.
        position: where each unit is read, as in :class:`Feature`: ``"center"``, ``"mean"`` or ``(y, x)`` on a
            map; on a token layer (B, T, C) also ``"cls"`` and ``("token", i)`` (``(y, x)`` a patch of the grid,
            ``"mean"`` the mean over patch tokens, prefix tokens excluded).
        activations: (N, C) unit values for the N images, raw units.
        correlation: (C, C) Pearson correlations; NaN for units that are constant over the dataset.
        dataset: description of the dataset (e.g. ``SampleCrops(n=256, size=224, ...)``).
        image_size: side of the dataset images the model saw, in pixels.
        token_layout: for a token layer, the model's layout at that image size as ``(prefix, grid_h, grid_w,
            class_token)`` (:func:`lucent_inhibit.core.tokens.token_grid`); every :meth:`feature` carries it, so the
            scales and sweeps read the same token. None for maps, linear layers and layouts left to inference.
    """

    layer: str
    position: Position
    activations: torch.Tensor
    correlation: torch.Tensor
    dataset: str = ""
    image_size: int = 0
    token_layout: Optional[Tuple[int, int, int, bool]] = None

    def __post_init__(self):
        if isinstance(self.position, list):  # JSON gives lists back
            self.position = tuple(self.position)
        if self.token_layout is not None:
            prefix, grid_h, grid_w, class_token = self.token_layout
            self.token_layout = (int(prefix), int(grid_h), int(grid_w), bool(class_token))

    @property
    def grid(self) -> Optional[TokenGrid]:
        """The model's :class:`~lucent_inhibit.core.tokens.TokenGrid` of a token layer (None: not recorded)."""
        return None if self.token_layout is None else TokenGrid(*self.token_layout)

    @property
    def n_units(self) -> int:
        return self.activations.shape[1]

    def _unit(self, unit) -> int:
        u = check_int("unit", unit, low=0)
        if u >= self.n_units:
            raise ValueError(f"unit {u} out of range for layer {self.layer!r} with {self.n_units} units "
                             f"(0..{self.n_units - 1})")
        return u

    def feature(self, unit: int) -> Feature:
        """The :class:`Feature` of ``unit`` at this layer and position (with the model's token layout on a
        token layer): the feature the statistics read, for the scales and the sweep."""
        return Feature(self.layer, unit=self._unit(unit), position=self.position, grid=self.grid)

    def values(self, unit_a: int, unit_b: int) -> torch.Tensor:
        """Dataset activations (N, 2) of two units: the grey cloud of the combination figure."""
        return self.activations[:, [self._unit(unit_a), self._unit(unit_b)]]

    def excited_units(self) -> torch.Tensor:
        """(C,) bool: units that at least one dataset image drives above zero (the others have no positive
        axis for a combination plot)."""
        return (self.activations > 0).any(0)

    def _ranked(self, key: torch.Tensor, k: int, descending: bool, excited: bool) -> List[Tuple[int, int, float]]:
        c = self.n_units
        iu = torch.triu_indices(c, c, offset=1)
        r = self.correlation[iu[0], iu[1]]
        kv = key[iu[0], iu[1]]
        ok = torch.isfinite(r)
        if not bool(ok.any()):
            raise ValueError(f"layer {self.layer!r} has no pair of non-constant units over the dataset")
        if excited:
            up = self.excited_units()
            ok = ok & up[iu[0]] & up[iu[1]]
            if not bool(ok.any()):
                raise ValueError(f"layer {self.layer!r} has {int(up.sum())} unit(s) that any of the "
                                 f"{self.activations.shape[0]} images drives above zero: no pair to plot")
        kv = torch.where(ok, kv, torch.tensor(-math.inf if descending else math.inf, dtype=kv.dtype))
        order = torch.argsort(kv, descending=descending)[: check_int("k", k, low=1)]
        return [(int(iu[0, o]), int(iu[1, o]), float(r[o])) for o in order if bool(ok[o])]

    def most_correlated(self, k: int = 1, excited: bool = False) -> List[Tuple[int, int, float]]:
        """The ``k`` pairs ``(unit_a, unit_b, r)`` with the highest correlation, best first; ``excited``: only
        pairs of :meth:`excited_units`."""
        return self._ranked(self.correlation, k, descending=True, excited=excited)

    def most_anticorrelated(self, k: int = 1, excited: bool = False) -> List[Tuple[int, int, float]]:
        """The ``k`` pairs ``(unit_a, unit_b, r)`` with the lowest (most negative) correlation (``excited`` as
        in :meth:`most_correlated`)."""
        return self._ranked(self.correlation, k, descending=False, excited=excited)

    def least_correlated(self, k: int = 1, excited: bool = False) -> List[Tuple[int, int, float]]:
        """The ``k`` pairs ``(unit_a, unit_b, r)`` with the correlation closest to zero (``excited`` as in
        :meth:`most_correlated`)."""
        return self._ranked(self.correlation.abs(), k, descending=False, excited=excited)

    def pick(self, which: str) -> Tuple[int, int, float]:
        """One pair by name: ``"correlated"``, ``"anticorrelated"`` or ``"zero"``."""
        check_choice("which", which, PAIR_CHOICES)
        table = {"correlated": self.most_correlated, "anticorrelated": self.most_anticorrelated,
                 "zero": self.least_correlated}
        return table[which](1)[0]

    def summary(self) -> Dict[str, Any]:
        """Layer, position, dataset size and the three picked pairs ``[unit_a, unit_b, r]``."""
        out: Dict[str, Any] = {"type": self.kind(), "layer": self.layer, "position": self.position,
                               "n_images": int(self.activations.shape[0]), "n_units": self.n_units,
                               "image_size": self.image_size, "dataset": self.dataset}
        if self.token_layout is not None:
            out["token_layout"] = list(self.token_layout)
        off_diagonal = ~torch.eye(self.n_units, dtype=torch.bool)
        if bool(torch.isfinite(self.correlation[off_diagonal]).any()):
            out.update({which: list(self.pick(which)) for which in PAIR_CHOICES})
        return out

    def plot(self, path=None, ax=None, **style):
        """The (C, C) correlation matrix; returns the Figure (a PNG at ``path`` when given)."""
        from .figures import plot_pair_statistics

        return plot_pair_statistics(self, path, ax, **style)


def correlation_matrix(activations: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlations (C, C) of the columns of ``activations`` (N, C); NaN rows/columns for
    columns whose standard deviation is below ``eps`` times the largest one (constant units)."""
    a = torch.as_tensor(activations, dtype=torch.float64)
    if a.dim() != 2 or a.shape[0] < 2:
        raise ValueError(f"activations must be (N, C) with N >= 2, got shape {tuple(a.shape)}")
    a = a - a.mean(0)
    sd = a.pow(2).mean(0).sqrt()
    dead = sd <= eps * max(float(sd.max()), 1e-30)
    z = a / torch.where(dead, torch.ones_like(sd), sd)
    r = (z.T @ z) / a.shape[0]
    r = r.clamp(-1, 1)
    r[dead, :] = float("nan")
    r[:, dead] = float("nan")
    return r.float()


def _unit_values(act: torch.Tensor, probe: Feature) -> torch.Tensor:
    """(B, C) every unit of an activation at ``probe``'s position, read exactly as :class:`Feature` reads it:
    a map (B, C, H, W) at its (y, x) or its spatial mean, a linear layer (B, C) as it is, a token layer
    (B, T, C) at the token the position names (``"cls"``, ``("token", i)``, a patch (y, x), ``"center"``) or the
    mean over its patch tokens (``"mean"``, prefix tokens excluded). :class:`InputError` for a position the
    layer does not have."""
    return probe.vector(act).float().cpu()


def _grid_record(grid: Optional[TokenGrid]) -> Optional[Tuple[int, int, int, bool]]:
    """A token layout as the JSON record ``(prefix, grid_h, grid_w, class_token)`` (None stays None)."""
    return None if grid is None else (grid.prefix, grid.grid_h, grid.grid_w, grid.class_token)


def pair_statistics(
    model: nn.Module,
    dataset,
    layer: str,
    position: Position = "center",
    settings: Optional[PassSettings] = None,
) -> PairStatistics:
    """Measure every unit of ``layer`` at ``position`` over ``dataset`` and correlate them.

    Args:
        model: a prepared model.
        dataset: (N, 3, H, W) tensor or sequence of (3, H, W) images (or (image, label) items) in [0, 1],
            N >= 2; fed at their own size, so use the size the renders' model sees (e.g. 224).
        layer: Lucent layer name with (B, C, H, W), (B, C) or token-layer (B, T, C) activations.
        position: as in :class:`Feature`: ``"center"``, ``"mean"`` or ``(y, x)``; on a token layer also
            ``"cls"`` or ``("token", i)``, read with the model's token layout
            (:func:`lucent_inhibit.core.tokens.token_grid` at the images' size). A position the layer does not
            have (a token or patch beyond it, ``"cls"`` without a class token, a token on a map) raises
            :class:`~lucent_inhibit.core.validate.InputError` naming it, at the first batch.
        settings: the pass's :class:`~lucent_inhibit.core.settings.PassSettings` (images per forward pass,
            each stopped after ``layer``; the model's input normalisation; a progress bar over the batches).

    Returns:
        :class:`PairStatistics` with activations (N, C) and correlation (C, C) (C: the layer's channels, the
        last dimension of a token layer).
    """
    check_layer_names(model, [layer], allow=())
    settings = as_pass_settings(settings)
    batch_size, progress = settings.batch_size, settings.progress
    dataset = _as_dataset(dataset, minimum=2)
    probe = Feature(layer, unit=0, position=position)
    norm = preprocess_fn(model) if settings.preprocess else (lambda x: x)
    device = model_device(model)
    rows, size, grid = [], 0, None
    batches = iter_batches(dataset, batch_size)
    with torch.no_grad():
        for _, batch in tqdm(batches, total=math.ceil(len(dataset) / batch_size), disable=not progress,
                             desc=f"pair statistics {layer}"):
            batch = check_images(batch)
            if not rows:  # the model's token layout at the images' size (None: no tokens)
                grid = token_grid(model, batch.shape[-2:])
                probe = probe.with_grid(grid)
            size = batch.shape[-1]
            act = capture(model, norm(batch.to(device)), [layer])[layer]
            rows.append(_unit_values(act, probe))
    acts = torch.cat(rows)
    desc = getattr(dataset, "identity", None) or f"{type(dataset).__name__} of {len(dataset)} images"
    token_layout = _grid_record(grid) if act.dim() == 3 else None
    return PairStatistics(layer, probe.position, acts, correlation_matrix(acts), str(desc), int(size), token_layout)
