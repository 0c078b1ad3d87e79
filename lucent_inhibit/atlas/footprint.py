"""The pixel box an atlas icon is shown cut to: the feature's receptive field at the atlas layer.

Convolutional layers (Carter et al. 2019; Hamblin et al. 2024, section 4). Each position of an ``h x w``
map covers one stride tile of the image (``H / h`` by ``W / w`` pixels); the crop is the union of the tiles
of the layer box the vectors were cut to (:func:`tile_box`, rule :data:`TILE_RULE`).

Token layers of vision transformers (Dosovitskiy et al. 2021; Touvron et al. 2021). A patch token owns one
``patch x patch`` tile, but after a block of self-attention it reads every patch the attention mixes in, so
its tile alone understates what an icon's target depends on, and how much more depends on the trained
attention. The crop on a token layer is therefore measured on the rendered icons (rule
:data:`TOKEN_RULE`), as the bounding box of two parts:

1. the patch itself: the tiles of the patches the icon targets occupy (the receptive-field box for
   ``icon_target="box"``, its centre patch for ``"center"``, the cells' points for ``"positions"``);
2. what attention mixes in: the input-gradient footprint of the targets, per patch,
   ``F(p) = mean_k mean_{(y, x) in tile p} sum_c |d phi_k / d x_k[c, y, x]|`` with
   ``phi_k = <token_maps(h_l(x_k)), T_k>``, the dot product of icon ``k``'s patch tokens with its target
   (the quantity the icon's spatial cosdot raises), on the icons ``x_k`` as the model sees them,
   thresholded like the layer crop of :func:`~lucent_inhibit.atlas.collect_vectors`: the bounding box of
   the patches where ``F`` exceeds :data:`FOOTPRINT_CROP` times its maximum. Pooling the gradient over each
   patch's tile keeps the rule on the patch grid (a single pixel's gradient varies with the patch
   embedding's weights).

Patches that do not mix (a patch embedding, attention that passes nothing between tokens) have ``F = 0``
outside their tiles: the crop is the patch alone. Attention that mixes everything strongly spreads ``F``
over the image: the crop is the whole icon. In between the threshold decides: in a random-initialised timm
ViT-Ti/16 the attention is near uniform, but its blocks add little to the residual stream, so at
``blocks_6`` every other patch reaches only about 0.15% of the ``F`` of a targeted token's own patch
(measured on random icons, one centre patch targeted): the crop is that patch alone.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.hooks import capture
from ..core.layers import model_device
from ..core.preparation import preprocess_fn
from ..core.tokens import TokenGrid, token_maps
from ..synthesis.objectives import crop_box
from .vectors import Box

#: Fraction of its maximum the input-gradient footprint must exceed to be inside the crop (the default
#: ``crop`` of :func:`~lucent_inhibit.atlas.collect_vectors`, which thresholds the layer's mean ``|S|``).
FOOTPRINT_CROP = 0.01
TILE_RULE = "layer tiles (each map position's stride tile, over the layer's receptive-field box)"
TOKEN_RULE = (f"patch + attention footprint (the tiles of the targeted patches and of the patches where the "
              f"icons' mean |d<tokens, target>/d pixels| exceeds {FOOTPRINT_CROP:g} of its max)")


def tile_box(box: Box, map_hw: Sequence[int], icon_hw: Sequence[int]) -> Box:
    """The pixel box ``(y0, y1, x0, x1)`` of an icon of ``icon_hw`` (H, W) pixels covered by the tiles of the
    positions ``box`` of an ``map_hw`` (h, w) map (patch grid): rows ``floor(y0 * H / h)`` to
    ``ceil(y1 * H / h)``, columns alike."""
    (h, w), (H, W) = map_hw, icon_hw
    y0, y1, x0, x1 = box
    return (int(math.floor(y0 * H / h)), int(math.ceil(y1 * H / h)), int(math.floor(x0 * W / w)),
            int(math.ceil(x1 * W / w)))


def union_box(a: Box, b: Box) -> Box:
    """The bounding box of two boxes ``(y0, y1, x0, x1)``."""
    return min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])


def gradient_footprint(model: nn.Module, layer: str, icons: np.ndarray, targets: torch.Tensor,
                       model_hw: Sequence[int], grid: Optional[TokenGrid], batch_size: int = 64) -> torch.Tensor:
    """(grid_h, grid_w) float32 on the CPU: ``F(p) = mean_k mean_{(y, x) in tile p} sum_c |d phi_k / d x_k[c, y, x]|``.

    Args:
        icons: (K, H, W, 3) uint8 icons, upsampled to ``model_hw`` (bilinear, ``align_corners=True``, as the
            render loop fed them); the gradient is taken at the model's input pixels ``x_k``.
        targets: (K, C, grid_h, grid_w) icon targets on the patch grid of token layer ``layer``.
        grid: the model's token layout (None: inferred from T).
        batch_size: icons per forward/backward pass.

    ``phi_k = sum over channels and patches of token_maps(h_l(x_k)) * T_k``; the gradient is taken with
    respect to the pixels only (no parameter gradient is stored). Batch elements do not interact in an
    eval-mode model, so one backward of the chunk's sum gives every icon's own gradient. The pixel map is
    averaged over each patch's tile (``adaptive_avg_pool2d`` onto the grid: exact tiles for a patch grid that
    divides the image).
    """
    x_all = torch.from_numpy(np.ascontiguousarray(icons)).permute(0, 3, 1, 2).float() / 255
    device, prep = model_device(model), preprocess_fn(model)
    total = torch.zeros(tuple(model_hw), dtype=torch.float32)
    for a in range(0, x_all.shape[0], batch_size):
        x = x_all[a: a + batch_size]
        if tuple(x.shape[2:]) != tuple(model_hw):
            x = F.interpolate(x, size=tuple(model_hw), mode="bilinear", align_corners=True)
        x = x.to(device).requires_grad_(True)
        with torch.enable_grad():
            h = token_maps(capture(model, prep(x), [layer])[layer], grid, layer)
            phi = (h * targets[a: a + batch_size].to(h.device, h.dtype)).sum()
            (g,) = torch.autograd.grad(phi, x)
        total += g.detach().abs().sum(1).sum(0).float().cpu()
        del h, phi, g
    pooled = F.adaptive_avg_pool2d(total[None, None], tuple(targets.shape[2:]))[0, 0]
    return pooled / max(1, x_all.shape[0])


def token_crop(model: nn.Module, layer: str, icons: np.ndarray, targets: torch.Tensor, model_hw: Sequence[int],
               grid: Optional[TokenGrid], patch_box: Box, batch_size: int = 64) -> Tuple[Box, dict]:
    """The icon crop on a token layer by :data:`TOKEN_RULE`: ``(box, info)``.

    Args:
        icons, targets, model_hw, grid, batch_size: as :func:`gradient_footprint`.
        patch_box: ``(y0, y1, x0, x1)`` on the patch grid of the patches the targets occupy.

    Returns:
        ``box``: pixel box of the icons, the tiles (:func:`tile_box`) of the bounding box of ``patch_box``
        and the footprint's patches (where ``F > FOOTPRINT_CROP * max F``; ``patch_box`` alone when ``F`` is
        all zero). ``info``: ``crop_rule``, ``crop_rule_text`` (the rule in words), ``patch_box`` and
        ``footprint_box`` (patch grid, the latter None without gradient), ``crop_patches`` (the crop's box
        on the patch grid) and ``footprint_crop``.
    """
    fp = gradient_footprint(model, layer, icons, targets, model_hw, grid, batch_size)
    fbox = crop_box(fp[None], FOOTPRINT_CROP) if float(fp.max()) > 0 else None
    patches = tuple(int(v) for v in patch_box) if fbox is None else union_box(patch_box, fbox)
    box = tile_box(patches, tuple(targets.shape[2:]), tuple(icons.shape[1:3]))
    text = TOKEN_RULE if fbox is not None else TOKEN_RULE + "; no input gradient reached the icons: the patches alone"
    return box, {"crop_rule": "token_footprint", "crop_rule_text": text, "patch_box": list(patch_box),
                 "footprint_box": None if fbox is None else list(fbox), "crop_patches": list(patches),
                 "footprint_crop": FOOTPRINT_CROP}


def tile_info() -> dict:
    """The ``info`` of :data:`TILE_RULE` (convolutional and linear layers), keys as :func:`token_crop`'s."""
    return {"crop_rule": "tiles", "crop_rule_text": TILE_RULE}
