"""Stage 5 of the atlas: one icon per grid cell, rendered in batches and measured (Carter et al. 2019).

Icon targets (:mod:`.targets`). A cell's averaged vector ``v`` is a C-vector. It becomes a (C, H, W) target at layer
``l`` by broadcasting ``v`` over the receptive-field box the vectors were taken from, zero outside
(``icon_target="box"``, the default), by placing it at the box's centre position only
(``icon_target="center"``, the activation-atlas convention), or, in position mode, by averaging the
cell's points each at its own place (``"positions"``). Attribution vectors enter as their absolute value
(SPEC 2.6). Each icon maximises the spatial cosdot ``dot * |cos|^power`` (Hamblin et al. 2024, paper 004)
between the layer's activation and its target, all icons of a chunk in ONE call of Lucent's
``render_vis`` (through :func:`lucent_inhibit.core.rendering.run_render`, which leaves the model as it found
it). The feature, and the layer's activation for the cosine, are then read by
:func:`lucent_inhibit.core.hooks.capture` on exactly the stored icons, upsampled as the render loop fed them;
the layer through the same function :func:`~lucent_inhibit.atlas.collect_vectors` uses, so icons are
measured on the tensor the vectors were read from. On a vision transformer's token layer (B, T, C) the
targets are maps over the patch grid (:func:`lucent_inhibit.core.tokens.token_maps`; class and register tokens
carry no target) and the icon crop is measured: the targeted patches plus what attention mixes in
(:func:`icon_crop`, :mod:`.footprint`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..attribution.attribute import measure
from ..core.distributed import digest, map_chunks, rank0_seed
from ..core.layers import check_layer_names, model_device
from ..core.probe import check_single_call
from ..core.motion import Motion, motion_fields
from ..core.rendering import RenderRun, rng_restored, run_render
from ..core.results import Result
from ..core.settings import ICON_RENDER, RenderSettings, as_settings
from ..core.tokens import token_grid
from ..core.validate import MAX_POWER, check_choice, check_int, check_number
from ..synthesis.objectives import cosdot, crop_box, spatial_cosdot
from ..synthesis.param import build as build_param
from .footprint import tile_box, tile_info, token_crop
from .layout import AtlasGrid
from .spool import check_icon_memory
from .targets import ICON_TARGETS, TARGET_CROP, icon_targets, target_cosine, zoom_transform
from .vectors import AtlasPoints, Box, layer_grid, layer_map, read_layer, to_uint8

#: The parameterization of atlas icons when ``RenderSettings.param`` is None: Lucent's ``param.image``.
ICON_PARAM = "lucent"
#: The transforms of atlas icons when ``RenderSettings.transforms`` is None: none. The icon targets are maps
#: at fixed layer positions, so jitter, scaling and rotation (Lucent's standard transforms) move the
#: image against its target; measured on the demo's atlas they cost about 0.1 of the median cosine.
ICON_TRANSFORMS = ()


@dataclass
class AtlasIcons(Result):
    """Stage 5: one rendered icon per cell.

    Attributes:
        images: (K, h, w, 3) uint8 icons ((h, w): the render size, default the dataset's image size).
        activation: (K,) float32 the feature's value on each icon (upsampled to the size the model saw).
        cosine: (K,) float32 cosine between the icon's activation at the atlas layer and its target,
            as the spatial cosdot sees them (inside the target's crop box, :func:`target_cosine`): how
            well the render reached its target.
        params: render settings (steps, lr, size, model_size, param, seed, transforms), power,
            icon_target, batch_size, crop_size and the crop rule (:func:`icon_crop`).
        crop_box: (y0, y1, x0, x1) pixel box of the feature's receptive field in the icons
            (:func:`icon_crop`; how it was chosen: ``params["crop_rule"]``, ``params["crop_rule_text"]``,
            its size ``params["crop_box_size"]``), or None (a linear layer: the whole icon is shown).
        crop_size: side in pixels of the displayed crops (:meth:`crops`; 0: the icon's side).
        contrast: (K,) float32 RMS contrast of the displayed crops (:func:`rms_contrast`).
        moved: (K,) bool, whether each icon's render moved (:mod:`lucent_inhibit.core.motion`; None: not
            measured); motion: (K, 2) float32 its ``[RMS image change, objective gain]``.
    """

    images: np.ndarray
    activation: np.ndarray
    cosine: np.ndarray
    params: dict = field(default_factory=dict)
    crop_box: Optional[Box] = None
    crop_size: int = 0
    contrast: Optional[np.ndarray] = None
    moved: Optional[torch.Tensor] = None
    motion: Optional[torch.Tensor] = None

    def __post_init__(self):
        self.crop_box = None if self.crop_box is None else tuple(int(v) for v in self.crop_box)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def crops(self, size: Optional[int] = None) -> np.ndarray:
        """(K, s, s, 3) uint8: every icon cut to ``crop_box`` (the feature's receptive field, see
        :func:`receptive_field_box`) and resized (bilinear, antialiased) to ``size`` pixels (None:
        ``crop_size``, or the icon's side). Without a box, the whole icons."""
        side = check_int("crop size", size or self.crop_size or self.images.shape[1], low=1)
        check_icon_memory(len(self), tuple(self.images.shape[1:3]), side)
        x = torch.from_numpy(np.ascontiguousarray(self.images)).permute(0, 3, 1, 2).float() / 255
        if self.crop_box is not None:
            y0, y1, x0, x1 = self.crop_box
            x = x[:, :, y0:y1, x0:x1]
        if tuple(x.shape[2:]) != (side, side):
            x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
        return to_uint8(x)

    def summary(self) -> dict:
        contrast = float(np.median(self.contrast)) if self.contrast is not None and len(self) else float("nan")
        return {"type": self.kind(), "icons": len(self), "mean_activation": float(self.activation.mean()),
                "mean_cosine": float(self.cosine.mean()), "median_cosine": float(np.median(self.cosine)),
                "median_contrast": contrast, "crop_box": self.crop_box, **self.params}

    def plot(self, path=None, ax=None, **style):
        """The icons in a row-major montage, each titled with its activation and cosine;
        returns the Figure (a PNG at ``path`` when given)."""
        from .figures import plot_icons

        return plot_icons(self, path, ax, **style)


def receptive_field_box(points: AtlasPoints, icon_hw: Tuple[int, int]) -> Optional[Box]:
    """The feature's receptive field at the atlas layer as a pixel box ``(y0, y1, x0, x1)`` of an icon of
    ``icon_hw`` (H, W) pixels; None for a linear layer.

    How the box is chosen: :func:`collect_vectors` crops the layer's map to the box ``points.box`` where the
    selected images' mean ``|S_l|`` exceeds ``crop`` times its maximum (the positions through which the
    feature reads the layer); each of the layer's ``h x w`` positions covers one stride-sized tile of the
    image (``H / h`` by ``W / w`` pixels), so the pixel box is the union of the tiles of the box's
    positions, scaled to the icon: rows ``floor(y0 * H / h)`` to ``ceil(y1 * H / h)``, columns alike. It is
    the region the icon targets occupy; the displayed crop (:meth:`AtlasIcons.crops`) shows exactly it.
    This is the rule of convolutional layers; on a token layer :func:`icon_crop` adds what attention mixes in.
    """
    if points.box is None or len(points.map_shape) != 3:
        return None
    return tile_box(points.box, points.map_shape[1:3], icon_hw)


def _is_token_layer(model: nn.Module, layer: str, model_hw: Tuple[int, int]) -> bool:
    return read_layer(model, torch.zeros(1, 3, *model_hw), layer).dim() == 3


def icon_crop(model: nn.Module, points: AtlasPoints, icons: np.ndarray, targets: torch.Tensor,
              model_hw: Tuple[int, int], batch_size: int = 64) -> Tuple[Optional[Box], dict]:
    """The pixel box ``(y0, y1, x0, x1)`` the icons (K, H, W, 3) are shown cut to, and how it was chosen.

    A convolutional layer: :func:`receptive_field_box` (the layer box's stride tiles,
    :data:`~lucent_inhibit.atlas.footprint.TILE_RULE`). A token layer (B, T, C): the tiles of the patches
    the ``targets`` (K, C, grid_h, grid_w) occupy plus what attention mixes in, measured as the icons'
    input-gradient footprint (:func:`~lucent_inhibit.atlas.footprint.token_crop`, ``TOKEN_RULE``). A
    linear layer: None (the whole icon). Returns ``(box, info)``, ``info`` holding ``crop_rule``,
    ``crop_rule_text`` and ``crop_box_size`` ([h, w] pixels), plus the token rule's parts.
    """
    icon_hw = tuple(int(v) for v in icons.shape[1:3])
    if len(points.map_shape) != 3 or not _is_token_layer(model, points.layer, model_hw):
        box = receptive_field_box(points, icon_hw)
        info = tile_info() if box is not None else {"crop_rule": "whole", "crop_rule_text": "the whole icon (a layer "
                                                    "without spatial positions)"}
    else:
        patches = crop_box(targets.abs().sum(0), TARGET_CROP)
        grid = layer_grid(model, points.feature, model_hw)
        box, info = token_crop(model, points.layer, icons, targets, model_hw, grid, patches, batch_size)
    size = list(icon_hw) if box is None else [box[1] - box[0], box[3] - box[2]]
    return box, {**info, "crop_box_size": size}


def rms_contrast(crops: np.ndarray) -> np.ndarray:
    """(K,) float32 RMS contrast of (K, h, w, 3) uint8 images: the standard deviation over pixels of the
    luminance ``0.299 R + 0.587 G + 0.114 B`` in [0, 1] (Peli 1990)."""
    lum = np.asarray(crops, np.float32) / 255 @ np.asarray([0.299, 0.587, 0.114], np.float32)
    return lum.reshape(lum.shape[0], -1).std(1).astype(np.float32)


def _icon_objective(layer: str, targets: torch.Tensor, power: float, grid=None):
    if targets.dim() == 4:
        return spatial_cosdot(layer, targets, power=power, crop=TARGET_CROP, grid=grid)
    obj = None
    for k in range(targets.shape[0]):
        o = cosdot(layer, targets[k], power=power, batch=k)
        obj = o if obj is None else obj + o
    return obj


def icon_settings(render, image_size: Tuple[int, int]) -> RenderSettings:
    """The render settings of atlas icons: ``render`` (None: :data:`~lucent_inhibit.core.settings.ICON_RENDER`,
    48 steps at lr 0.1) with the stage defaults
    filled in where it leaves them None: the parameterised image and the image the model sees are the
    dataset's image size ``(H, W)`` (the size the targets were computed at), ``param`` is ``"lucent"``
    (Lucent's ``param.image``) and ``transforms`` is :data:`ICON_TRANSFORMS` (none; pass Lucent's
    ``standard_transforms`` explicitly for the usual robustness transforms)."""
    s = ICON_RENDER if render is None else as_settings(render)
    hw = tuple(int(v) for v in image_size)
    return s.replace(size=s.size if s.size is not None else hw,
                     model_size=s.model_size if s.model_size is not None else hw,
                     param=s.param if s.param is not None else ICON_PARAM,
                     transforms=s.transforms if s.transforms is not None else list(ICON_TRANSFORMS))


def _devices(model: nn.Module):
    dev = model_device(model)
    return [dev.index or 0] if dev.type == "cuda" else []


def render_batch(model: nn.Module, layer: str, targets: torch.Tensor, image_size: Tuple[int, int],
                 render: Optional[RenderSettings] = None, power: float = 4.0, labels=None) -> RenderRun:
    """Render one image per target in ONE call of Lucent's ``render_vis`` (:func:`~lucent_inhibit.core.rendering.run_render`).

    Args:
        targets: (B, C, H, W) maps at ``layer`` (or (B, C) directions for a linear layer).
        image_size: (H, W) of the dataset images the targets were computed at (see :func:`icon_settings`).
        render: :class:`~lucent_inhibit.RenderSettings`; ``seed`` seeds the image initialisation too.
        power: cosine exponent of the spatial cosdot.
        labels: names of the icons in the warning about renders that did not move (default "image i").

    Returns:
        The :class:`~lucent_inhibit.core.rendering.RenderRun`: ``images`` (B, 3, h, w) in [0, 1],
        (h, w) = ``render.hw(image_size)``, and ``motion``, how far each moved.
    """
    settings = icon_settings(render, image_size)
    with rng_restored(settings.seed, _devices(model)):
        param_f = build_param(settings.param, settings.hw(image_size), batch=int(targets.shape[0]),
                              device=model_device(model))
    grid = token_grid(model, settings.model_hw(settings.hw(image_size)))
    return run_render(model, _icon_objective(layer, targets, power, grid), param_f, settings, "atlas icons",
                      labels=labels)


def _icon_inputs(icons_uint8: np.ndarray, model_hw: Tuple[int, int]) -> torch.Tensor:
    """Stored icons -> the (K, 3, H, W) model input the render loop fed (bilinear, align_corners=True,
    as Lucent's ``Upsample``)."""
    x = torch.from_numpy(icons_uint8).permute(0, 3, 1, 2).float() / 255
    if tuple(x.shape[2:]) != tuple(model_hw):
        x = F.interpolate(x, size=tuple(model_hw), mode="bilinear", align_corners=True)
    return x.clamp(0, 1)


def measure_icons(model: nn.Module, points: AtlasPoints, icons: np.ndarray, targets: torch.Tensor,
                  model_hw: Tuple[int, int], batch_size: int = 64):
    """``(activation, cosine)``, each (K,) float32, of icons (K, h, w, 3) uint8 upsampled to ``model_hw``:
    the feature's value, and the cosine of the atlas layer's activation to its target as the render's
    spatial cosdot sees it (inside the target's crop box, :func:`target_cosine`). The layer is read by :func:`~lucent_inhibit.atlas.vectors.read_layer`, as
    :func:`collect_vectors` reads it: a capture that stops right after the layer, so no later in-place
    operation (ResNet's ``ReLU(inplace=True)`` after a batch norm) changes the tensor read."""
    x = _icon_inputs(icons, model_hw)
    acts, coss = [], []
    for a in range(0, x.shape[0], batch_size):
        xb = x[a: a + batch_size]
        acts.append(measure(model, xb, points.feature).float().cpu())
        h = layer_map(model, points.feature, points.layer, xb, read_layer(model, xb, points.layer))
        coss.append(target_cosine(h, targets[a: a + batch_size]))
    return torch.cat(acts).numpy().astype(np.float32), torch.cat(coss).numpy().astype(np.float32)


def _check_icon_inputs(model, points: AtlasPoints, grid: AtlasGrid, settings: RenderSettings) -> Tuple[int, int]:
    """Refuse what cannot render before any render: empty grid, other channels, unknown or reused
    layers, a model size the spatial targets were not computed at. Returns the model's (H, W)."""
    if len(grid) == 0:
        raise ValueError("the grid has no occupied cell: nothing to render")
    if grid.vectors.shape[1] != points.vectors.shape[1]:
        raise ValueError(f"grid vectors have {grid.vectors.shape[1]} channels, the points {points.vectors.shape[1]}")
    names = [points.layer, points.feature.layer]
    check_layer_names(model, names, allow=())
    model_hw = settings.model_hw(settings.hw(points.image_size))
    if len(points.map_shape) == 3 and tuple(model_hw) != tuple(points.image_size):
        raise ValueError(
            f"render.model_size {tuple(model_hw)} differs from the atlas images' size {tuple(points.image_size)}: "
            "the icon targets are maps at the layer for images of that size; leave model_size=None"
        )
    check_single_call(model, torch.zeros(1, 3, *model_hw, device=model_device(model)), names)
    return model_hw


def _describe_transforms(render, settings: RenderSettings) -> str:
    given = as_settings(render).transforms
    if given is None:
        return "icon default (none)" if not ICON_TRANSFORMS else "icon default"
    return "none" if len(settings.transforms) == 0 else "custom"


def _render_icons(model, points: AtlasPoints, targets: torch.Tensor, settings: RenderSettings, batch_size: int,
                  power: float) -> Tuple[np.ndarray, Motion]:
    """(K, h, w, 3) uint8 icons and how far each moved, ``batch_size`` targets per :func:`render_batch` call, chunk ``c`` seeded
    ``settings.seed + c``; under ``torchrun`` each rank renders its share of the chunks
    (:func:`~lucent_inhibit.core.distributed.map_chunks`) and every rank gets all of them."""
    from tqdm.auto import tqdm

    settings = settings.replace(seed=rank0_seed(settings.seed))  # under torchrun: rank 0's seed on every rank
    starts = list(range(0, targets.shape[0], batch_size))
    bar = tqdm(total=len(starts), disable=not settings.progress, desc="atlas icons")

    def one(c: int) -> dict:
        chunk = settings.replace(seed=None if settings.seed is None else settings.seed + c, progress=False)
        part = targets[starts[c]: starts[c] + batch_size]
        run = render_batch(model, points.layer, part, points.image_size, chunk, power,
                           [f"icon {starts[c] + i}" for i in range(part.shape[0])])
        bar.update(1)
        return {"images": run.images.permute(0, 2, 3, 1).numpy().astype(np.float32),
                "motion": run.motion.table().numpy()}

    try:
        said = lambda: {"icons": points.layer, "targets": digest(targets), "model": digest(model),  # noqa: E731
                        "power": power, "batch_size": batch_size, "settings": settings.describe()}
        parts = map_chunks(len(starts), one, said)
    finally:
        bar.close()
    motion = torch.from_numpy(np.concatenate([p["motion"] for p in parts]))
    icons = to_uint8(torch.from_numpy(np.concatenate([p["images"] for p in parts])).permute(0, 3, 1, 2))
    return icons, Motion(motion[:, 0], motion[:, 1])


def render_icons(
    model: nn.Module,
    points: AtlasPoints,
    grid: AtlasGrid,
    render: Optional[RenderSettings] = None,
    batch_size: int = 64,
    power: float = 4.0,
    icon_target: str = "box",
    crop_size: int = 128,
    zoom_crops: int = 0,
) -> AtlasIcons:
    """Stage 5: render an icon for every cell, ``batch_size`` cells per ``render_vis`` call, and measure the
    feature's activation on each.

    Args:
        model: the model the points were collected on.
        points, grid: stages 2 and 4.
        render: :class:`~lucent_inhibit.RenderSettings` (None: ``RenderSettings()``, 128 steps); where it
            leaves them None, the icon side and the size the model sees are the dataset's image size and
            ``param`` is ``"lucent"`` (see :func:`icon_settings`). Chunk ``c`` is seeded ``seed + c``;
            ``render.progress`` shows a bar over chunks. Under ``torchrun`` each rank renders its share of
            the chunks (:func:`~lucent_inhibit.core.distributed.map_chunks`) and every rank returns all icons
            (``seed=None``: rank 0 draws the seed).
        batch_size: icons per render call.
        power: cosine exponent of the spatial cosdot (finite, >= 0).
        icon_target: ``"box"``, ``"center"`` or ``"positions"`` (see :func:`icon_targets`).
        crop_size: side in pixels of the displayed icons: each icon's receptive-field crop
            (:func:`icon_crop`: the layer box's tiles, or on a token layer the targeted patches plus their
            measured attention footprint) resized up (:meth:`AtlasIcons.crops`); their RMS contrast is stored.
        zoom_crops: random zooms per step about the target's position, each a batch row (MaCo's many crops,
            Fel et al. 2023; :func:`~lucent_inhibit.atlas.targets.zoom_transform`), after ``render``'s transforms;
            0: none. Needs ``icon_target="center"``. Each step costs about ``zoom_crops`` times as much.

    The atlas layer and the feature layer must each run once per forward pass (else ``ValueError``
    listing usable names), so the render, the cosine and the vectors all see the same tensor.
    """
    batch_size = check_int("batch_size", batch_size, low=1)
    crop_size = check_int("crop_size", crop_size, low=8)
    power = check_number("power", power, 0, MAX_POWER)
    check_choice("icon_target", icon_target, ICON_TARGETS)
    zoom_crops = check_int("zoom_crops", zoom_crops, low=0)
    settings = icon_settings(render, points.image_size)
    zoom = zoom_transform(points, icon_target, zoom_crops)
    settings = settings.replace(transforms=list(settings.transforms) + zoom) if zoom else settings
    check_icon_memory(len(grid), settings.hw(points.image_size), crop_size)  # before any render
    model_hw = _check_icon_inputs(model, points, grid, settings)
    targets = icon_targets(points, grid.vectors, icon_target, grid=grid)
    icons, motion = _render_icons(model, points, targets, settings, batch_size, power)
    activation, cosine = measure_icons(model, points, icons, targets, model_hw, batch_size)
    box, crop_info = icon_crop(model, points, icons, targets, model_hw, batch_size)
    params = {"steps": settings.steps, "lr": float(settings.lr), "size": list(settings.hw(points.image_size)),
              "model_size": list(model_hw), "param": getattr(settings.param, "__name__", settings.param),
              "seed": settings.seed, "transforms": _describe_transforms(render, settings), "power": power,
              "icon_target": icon_target, "batch_size": batch_size, "crop_size": crop_size, "zoom_crops": zoom_crops,
              **crop_info}
    result = AtlasIcons(icons, activation, cosine, params, box, int(crop_size), None, *motion_fields(motion))
    result.contrast = rms_contrast(result.crops())
    return result
