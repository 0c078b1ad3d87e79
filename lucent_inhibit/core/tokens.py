"""Token layers of vision transformers: the patch grid and the prefix tokens.

A vision transformer (Dosovitskiy et al. 2021, ViT; Touvron et al. 2021, DeiT; Darcet et al. 2024, register
tokens) turns a (B, 3, H, W) image into (B, T, C) token activations: ``prefix`` tokens first (the class
token, then any register tokens, as timm orders them) followed by the ``grid_h x grid_w`` patch tokens in
row-major order, ``T = prefix + grid_h * grid_w``. Layers before the prefix tokens are added (timm's
``patch_embed``) hold the patch tokens only (``T = grid_h * grid_w``).

:func:`token_grid` reads a model's grid and prefix (timm's ``num_prefix_tokens``, ``has_class_token`` and
``patch_embed.grid_size`` / ``patch_size``); :func:`infer_grid` guesses it from ``T`` alone (a square grid
behind at most :data:`MAX_PREFIX` prefix tokens) for a :class:`~lucent_inhibit.core.features.Feature` that was
not given the model's grid. A position on a token layer is the class token ``"cls"``, a token index
``("token", i)``, a patch ``(y, x)`` of the grid, ``"center"`` (the patch at ``(grid_h // 2, grid_w // 2)``)
or ``"mean"`` (the mean over the patch tokens, prefix tokens excluded).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .validate import InputError, check_int

#: Most prefix (class + register) tokens :func:`infer_grid` assumes in front of a square patch grid.
MAX_PREFIX = 16
#: The activation layouts a feature can be read off.
UNDERSTOOD_SHAPES = "(B, C, H, W) (a map), (B, C) (a linear layer) or (B, T, C) (a token layer)"


@dataclass(frozen=True)
class TokenGrid:
    """The token layout of a transformer's token layers (B, T, C).

    Attributes:
        prefix: tokens before the patches (class token + register tokens), >= 0.
        grid_h, grid_w: the patch grid (rows, columns), each >= 1.
        class_token: whether token 0 is a class token (timm's ``has_class_token``).
    """

    prefix: int
    grid_h: int
    grid_w: int
    class_token: bool = True

    def __post_init__(self):
        check_int("token grid prefix", self.prefix, 0)
        check_int("token grid grid_h", self.grid_h, 1)
        check_int("token grid grid_w", self.grid_w, 1)
        if self.class_token and self.prefix < 1:
            raise InputError("a token grid with a class token needs prefix >= 1, got prefix 0")

    @property
    def patches(self) -> int:
        return self.grid_h * self.grid_w

    @property
    def tokens(self) -> int:
        return self.prefix + self.patches

    def describe(self) -> str:
        what = ("1 class token" if self.class_token else "") + (
            f"{' + ' if self.class_token else ''}{self.prefix - int(self.class_token)} register tokens"
            if self.prefix > int(self.class_token) else "")
        return f"{self.tokens} tokens = {what or 'no prefix tokens'} + {self.grid_h}x{self.grid_w} patches"

    def for_tokens(self, t: int, layer: str = "layer") -> "TokenGrid":
        """The layout of a token layer with ``t`` tokens: this grid; its patch tokens only (a layer before
        the prefix tokens are added, e.g. timm's ``patch_embed``); or, for hierarchical transformers that
        merge patches stage by stage (Wang et al. 2021, PVT; Chu et al. 2021, Twins), this grid downsampled
        by a power of two (``ceil(grid_h / k) x ceil(grid_w / k)`` patches, with or without this grid's
        prefix). :class:`InputError` naming the layouts tried otherwise."""
        if t == self.tokens:
            return self
        if t == self.patches:
            return TokenGrid(0, self.grid_h, self.grid_w, class_token=False)
        k = 2
        while k <= max(self.grid_h, self.grid_w):
            gh, gw = -(-self.grid_h // k), -(-self.grid_w // k)
            if t == gh * gw:
                return TokenGrid(0, gh, gw, class_token=False)
            if self.prefix and t == self.prefix + gh * gw:
                return TokenGrid(self.prefix, gh, gw, class_token=self.class_token)
            k *= 2
        raise InputError(f"{layer!r} has {t} tokens, but the model's token layers have {self.describe()} "
                         f"(or {self.patches} patch tokens alone, or that grid merged by 2, 4, 8...)")

    def index(self, position, layer: str = "layer") -> Union[int, slice]:
        """The token index ``position`` names (a slice over the patch tokens for ``"mean"``)."""
        if position == "mean":
            return slice(self.prefix, self.tokens)
        if position == "center":
            return self.prefix + (self.grid_h // 2) * self.grid_w + self.grid_w // 2
        if position == "cls":
            if not self.class_token:
                raise InputError(f"position 'cls': {layer!r} has no class token ({self.describe()}); "
                                 "use a patch (y, x), ('token', i) or 'mean'")
            return 0
        if isinstance(position, tuple) and position[0] == "token":
            i = position[1]
            if i >= self.tokens:
                raise InputError(f"position ('token', {i}): {layer!r} has no token {i}; it has {self.describe()} "
                                 f"(tokens 0..{self.tokens - 1})")
            return i
        y, x = position
        if not (y < self.grid_h and x < self.grid_w):
            raise InputError(f"patch position {position} is outside {layer!r}'s {self.grid_h}x{self.grid_w} patch grid "
                             f"(expected 0 <= y < {self.grid_h}, 0 <= x < {self.grid_w})")
        return self.prefix + y * self.grid_w + x


def infer_grid(t: int, layer: str = "layer") -> TokenGrid:
    """The layout of ``t`` tokens when the model's is not known: the largest square grid ``g x g <= t``
    behind ``t - g * g`` prefix tokens (at most :data:`MAX_PREFIX`; the first one taken as a class token).

    Right for the square grids of timm's ViT / DeiT (197 = 1 + 14x14, 201 = 5 + 14x14, 196 = 14x14); a
    non-square grid needs the model's grid (:func:`token_grid`, ``Feature(..., grid=...)``).
    """
    t = check_int(f"{layer!r} token count", t, 1)
    g = math.isqrt(t)
    prefix = t - g * g
    if prefix > MAX_PREFIX:
        raise InputError(f"{layer!r} has {t} tokens, which is no square patch grid behind at most {MAX_PREFIX} "
                         "prefix tokens; give the model's grid: Feature(..., grid=lucent_inhibit.core.tokens.token_grid(model))")
    return TokenGrid(prefix, g, g, class_token=prefix > 0)


def token_grid(model: nn.Module, input_hw: Optional[Sequence[int]] = None) -> Optional[TokenGrid]:
    """The token layout of a timm-style vision transformer, or None for a model without patch tokens.

    Args:
        model: a model with ``patch_embed`` (timm ``PatchEmbed``) and ``num_prefix_tokens``.
        input_hw: the model input's (H, W) in pixels, for models that take several sizes (timm's
            ``dynamic_img_size``): the grid is ``ceil`` (with ``dynamic_img_pad``) or ``floor`` of H and W
            over the patch size. None: the model's configured ``patch_embed.grid_size``.
    """
    embed = getattr(model, "patch_embed", None)
    if embed is None or not hasattr(embed, "grid_size"):
        return None
    prefix = int(getattr(model, "num_prefix_tokens", 1 if getattr(model, "cls_token", None) is not None else 0))
    has_cls = bool(getattr(model, "has_class_token", getattr(model, "cls_token", None) is not None))
    gh, gw = (int(v) for v in embed.grid_size)
    if input_hw is not None:
        ph, pw = _pair(embed.patch_size)
        pad = bool(getattr(embed, "dynamic_img_pad", False))
        h, w = (int(v) for v in input_hw)
        gh, gw = (-(-h // ph), -(-w // pw)) if pad else (h // ph, w // pw)
    return TokenGrid(prefix, gh, gw, class_token=has_cls and prefix > 0)


def required_input_size(model: nn.Module) -> Optional[Tuple[int, int]]:
    """The one (H, W) a model's input must have (timm's patch embedding with ``strict_img_size``), or None
    when it takes other sizes (convolutional nets, timm's ``dynamic_img_size``)."""
    embed = getattr(model, "patch_embed", None)
    if embed is None or not getattr(embed, "strict_img_size", False) or getattr(model, "dynamic_img_size", False):
        return None
    return _pair(embed.img_size)


def check_input_size(model: nn.Module, hw: Sequence[int]) -> None:
    """:class:`InputError` naming the size when ``model`` takes one input size only
    (:func:`required_input_size`) and ``hw`` (the images' (H, W) in pixels) is not it."""
    need = required_input_size(model)
    if need is not None and tuple(int(v) for v in hw) != need:
        raise InputError(f"images of {int(hw[0])}x{int(hw[1])} px: {type(model).__name__} takes {need[0]}x{need[1]} px "
                         "inputs only (a patch embedding with a strict image size); resize the images (e.g. "
                         f"ImageFolder(root, size={need[0]}), CLI --size {need[0]})")


def patch_maps(values: torch.Tensor, grid: Optional[TokenGrid] = None) -> torch.Tensor:
    """Per-token values (B, T) as maps over the patch grid (B, grid_h, grid_w); prefix tokens left out.

    ``grid`` is the model's (:func:`token_grid`), adapted to ``T``; None infers it (:func:`infer_grid`).
    """
    t = int(values.shape[1])
    grid = infer_grid(t) if grid is None else grid.for_tokens(t)
    return values[:, grid.prefix:].reshape(values.shape[0], grid.grid_h, grid.grid_w)


def _pair(v) -> Tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[-1])
    return int(v), int(v)


def token_maps(act: torch.Tensor, grid: Optional[TokenGrid] = None, layer: str = "layer") -> torch.Tensor:
    """A token layer's activations (or attributions) (B, T, C) as channel maps over the patch grid
    (B, C, grid_h, grid_w): channels are the last dimension, positions the patch tokens in row-major order;
    the prefix (class, register) tokens are left out.

    ``grid`` is the model's (:func:`token_grid`), adapted to ``T``; None infers it (:func:`infer_grid`).
    :class:`InputError` naming the shape for anything but a (B, T, C) tensor.
    """
    if not torch.is_tensor(act) or act.dim() != 3:
        shape = tuple(act.shape) if torch.is_tensor(act) else type(act).__name__
        raise InputError(f"{layer!r}: token maps need a token layer (B, T, C), got {shape}")
    t = int(act.shape[1])
    grid = infer_grid(t, layer) if grid is None else grid.for_tokens(t, layer)
    b, c = act.shape[0], act.shape[2]
    return act[:, grid.prefix:].transpose(1, 2).reshape(b, c, grid.grid_h, grid.grid_w)
