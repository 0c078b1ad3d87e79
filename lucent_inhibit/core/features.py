"""Features (Hamblin et al. 2024, section 2) and validation of image batches.

A :class:`Feature` is a scalar function ``f_v(x)`` of an image read off one layer: a unit (channel) or a
direction over the layer's channels, at a position. Three layer layouts are understood: maps (B, C, H, W)
(position: the centre, ``(y, x)`` or the spatial mean), linear layers (B, C) (no position) and the token
layers (B, T, C) of vision transformers (position: the class token ``"cls"``, a token index ``("token", i)``
or ``i``, a patch ``(y, x)`` of the patch grid, the centre patch or the mean over patch tokens; see
:mod:`lucent_inhibit.core.tokens`). :func:`check_images` validates the (B, 3, H, W) float batches in [0, 1] that
every stage takes.
"""
from __future__ import annotations

import json
import math
import warnings
from typing import Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from .tokens import UNDERSTOOD_SHAPES, TokenGrid, infer_grid, token_grid
from .validate import InputError, check_flag, check_int, check_values

Position = Union[str, Tuple[int, int], Tuple[str, int]]
#: Positions that are names (the others are pairs).
NAMED_POSITIONS = ("center", "mean", "cls")


class Feature:
    """A scalar feature ``f_v(x)`` read off one layer.

    Args:
        layer: Lucent layer name (e.g. ``"blocks_4_0_bn3_drop"``, ``"classifier"``, ``"blocks_6"``).
        unit: channel index; exactly one of ``unit`` and ``direction``.
        direction: vector over the layer's channels (length C); the feature is ``v . h``.
        position: ``"center"`` (the neuron at ``(H // 2, W // 2)``; on a token layer the centre patch),
            ``(y, x)`` (a map position, or a patch of a token layer's grid), ``"mean"`` (spatial mean; on a
            token layer the mean over patch tokens), and on token layers only ``"cls"`` (the class token) or
            a token index ``("token", i)`` (an int ``i`` is the same). Linear layers (B, C) have no position;
            leave it at ``"center"``.
        grid: the model's token layout (:func:`lucent_inhibit.core.tokens.token_grid`) for token layers; None
            infers it from the token count (a square patch grid, :func:`lucent_inhibit.core.tokens.infer_grid`).

    Calling the feature on a layer activation of shape (B, C, H, W), (B, C) or (B, T, C) returns shape (B,).
    """

    def __init__(
        self,
        layer: str,
        unit: Optional[int] = None,
        direction=None,
        position: Position = "center",
        grid: Optional[TokenGrid] = None,
    ):
        if not isinstance(layer, str) or not layer:
            raise ValueError(f"layer must be a non-empty Lucent layer name, got {layer!r}")
        if (unit is None) == (direction is None):
            raise ValueError(
                f"Feature needs exactly one of unit (a channel index) and direction (a vector over channels); "
                f"got unit={unit!r} and direction={'None' if direction is None else 'a vector'}"
            )
        if unit is not None:
            unit = check_int("unit", unit, 0)
        if direction is not None:
            direction = check_direction(direction)
        if grid is not None and not isinstance(grid, TokenGrid):
            raise InputError(f"grid must be a lucent_inhibit.core.tokens.TokenGrid or None, got {type(grid).__name__}")
        self.layer, self.unit, self.direction, self.position = layer, unit, direction, check_position(position)
        self.grid = grid

    # -- identity -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        what = f"unit {self.unit}" if self.unit is not None else f"direction[{self.direction.numel()}]"
        return f"{self.layer} {what} @ {position_name(self.position)}"

    def __repr__(self) -> str:
        return f"Feature({self.name})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Feature) and self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def to_dict(self) -> dict:
        d = {
            "layer": self.layer,
            "unit": self.unit,
            "direction": None if self.direction is None else [float(v) for v in self.direction],
            "position": self.position if isinstance(self.position, str) else list(self.position),
        }
        if self.grid is not None:
            d["grid"] = [self.grid.prefix, self.grid.grid_h, self.grid.grid_w, self.grid.class_token]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Feature":
        pos = d.get("position", "center")
        grid = d.get("grid")
        return cls(d["layer"], d.get("unit"), d.get("direction"), pos if isinstance(pos, str) else tuple(pos),
                   grid=None if grid is None else TokenGrid(int(grid[0]), int(grid[1]), int(grid[2]), bool(grid[3])))

    def with_grid(self, grid: Optional[TokenGrid]) -> "Feature":
        """This feature with the model's token layout (``grid``), e.g. ``tokens.token_grid(model)``."""
        return Feature(self.layer, self.unit, self.direction, self.position, grid=grid)

    # -- evaluation -----------------------------------------------------------------------------
    def check(self, act: torch.Tensor) -> None:
        """Raise ``ValueError`` if this feature cannot be read off an activation of ``act``'s shape."""
        if act.dim() not in (2, 3, 4):
            raise InputError(f"layer {self.layer!r} has activations of shape {tuple(act.shape)}; a feature needs "
                             f"{UNDERSTOOD_SHAPES}")
        c = act.shape[-1] if act.dim() == 3 else act.shape[1]
        if self.unit is not None and self.unit >= c:
            raise InputError(f"unit {self.unit} out of range for layer {self.layer!r} with {c} channels (0..{c - 1})")
        if self.direction is not None and self.direction.numel() != c:
            raise InputError(f"direction has length {self.direction.numel()}, but layer {self.layer!r} has {c} channels")
        if act.dim() == 3:
            self.token_index(act)
            return
        if self.position == "cls" or _is_token(self.position):
            raise InputError(f"position {position_name(self.position)} names a token, but layer {self.layer!r} has "
                             f"shape {tuple(act.shape)}, not a token layer (B, T, C)")
        if act.dim() == 2 and not isinstance(self.position, str):
            raise InputError(f"position {self.position} given, but layer {self.layer!r} is linear (shape "
                             f"{tuple(act.shape)}) and has no spatial positions")
        if act.dim() == 4 and not isinstance(self.position, str):
            y, x = self.position
            h, w = act.shape[2:]
            if not (0 <= y < h and 0 <= x < w):
                raise InputError(f"position {self.position} is outside layer {self.layer!r}'s {h}x{w} map "
                                 f"(expected 0 <= y < {h}, 0 <= x < {w})")

    def spatial_index(self, act: torch.Tensor) -> Optional[Tuple[int, int]]:
        """The (y, x) this feature reads in a (B, C, H, W) map, or None for 'mean', linear and token layers."""
        if act.dim() != 4 or self.position == "mean":
            return None
        if self.position == "center":
            return act.shape[2] // 2, act.shape[3] // 2
        return self.position

    def token_grid(self, act: torch.Tensor) -> TokenGrid:
        """The token layout of a (B, T, C) activation: the feature's grid adapted to T, or inferred from T."""
        t = int(act.shape[1])
        return infer_grid(t, self.layer) if self.grid is None else self.grid.for_tokens(t, self.layer)

    def token_index(self, act: torch.Tensor) -> Union[int, slice]:
        """The token this feature reads in a (B, T, C) activation (a slice of the patch tokens for 'mean')."""
        return self.token_grid(act).index(self.position, self.layer)

    def vector(self, act: torch.Tensor) -> torch.Tensor:
        """(B, C): the layer's channels at this feature's position (the input of the unit or direction)."""
        self.check(act)
        if act.dim() == 3:
            i = self.token_index(act)
            return act[:, i].mean(1) if isinstance(i, slice) else act[:, i]
        if act.dim() == 4:
            yx = self.spatial_index(act)
            return act.mean(dim=(2, 3)) if yx is None else act[:, :, yx[0], yx[1]]
        return act

    def __call__(self, act: torch.Tensor) -> torch.Tensor:
        vec = self.vector(act)
        if self.unit is not None:
            return vec[:, self.unit]
        return vec @ self.direction.to(vec.device, vec.dtype)


def _is_token(position) -> bool:
    return isinstance(position, tuple) and len(position) == 2 and position[0] == "token"


def position_name(position: Position) -> str:
    """``center``, ``mean``, ``cls``, ``token 5`` or ``(y,x)``: a position as written in feature names."""
    if isinstance(position, str):
        return position
    if _is_token(position):
        return f"token {position[1]}"
    return f"({position[0]},{position[1]})"


def check_position(position, name: str = "position") -> Position:
    """``"center"``, ``"mean"``, ``"cls"``, a token ``("token", i)`` (or ``i``) or ``(y, x)`` (integers >= 0,
    fractions refused); :class:`InputError` otherwise. An int ``i`` is returned as ``("token", i)``."""
    def bad():
        return InputError(f"{name} must be 'center', 'mean' or (y, x), got {position!r}; token layers (B, T, C) "
                          "also take 'cls' (the class token) and ('token', i) (a token index)")

    if isinstance(position, str):
        if position not in NAMED_POSITIONS:
            raise bad()
        return position
    if isinstance(position, (int, np.integer)) and not isinstance(position, (bool, np.bool_)):
        return "token", check_int(f"{name} token index", position, 0)
    if not isinstance(position, (tuple, list)) or len(position) != 2:
        raise bad()
    if isinstance(position[0], str):
        if position[0] != "token":
            raise bad()
        return "token", check_int(f"{name} token index", position[1], 0)
    return check_int(f"{name} y", position[0], 0), check_int(f"{name} x", position[1], 0)


def check_direction(direction) -> torch.Tensor:
    """A direction over a layer's channels as a float32 vector (C,): real, finite, non-empty, with at most one
    axis longer than 1 ((C,), (1, C) and (C, 1) are the same vector); :class:`InputError` otherwise."""
    if isinstance(direction, (str, bytes)):
        raise InputError(f"direction must be a vector of numbers over the layer's channels, got {direction!r}")
    if not torch.is_tensor(direction):
        try:
            direction = np.asarray(direction)
        except (TypeError, ValueError):
            raise InputError("direction must be a vector of numbers over the layer's channels") from None
    check_values("direction", direction)
    v = direction.detach().cpu().float() if torch.is_tensor(direction) else torch.from_numpy(direction.astype(np.float32))
    if v.numel() == 0 or sum(int(d) > 1 for d in v.shape) > 1:
        raise InputError(f"direction must be a non-empty vector (C,) over the layer's channels, got shape {tuple(v.shape)}")
    return v.flatten()


def as_feature(feature) -> Feature:
    """Accept a :class:`Feature`, a dict from :meth:`Feature.to_dict`, or ``(layer, unit)``."""
    if isinstance(feature, Feature):
        return feature
    if isinstance(feature, dict):
        return Feature.from_dict(feature)
    if isinstance(feature, (tuple, list)) and len(feature) == 2:
        return Feature(feature[0], unit=feature[1])
    raise TypeError(f"expected a Feature, a dict or (layer, unit), got {type(feature).__name__}")


# ------------------------------------------------------------------------------------------------
# input validation
# ------------------------------------------------------------------------------------------------
def check_images(images, preprocess: bool = True) -> torch.Tensor:
    """Validate an image batch: (B, 3, H, W) (or one (3, H, W) image) float, in [0, 1] when preprocessing.

    Returns the batch as float32 (B, 3, H, W). Other float dtypes (float64, float16, bfloat16) are
    converted to float32 with a warning; integer, bool and complex tensors are refused (``ValueError``),
    as are empty batches or images, and NaN / infinite values.
    """
    if not torch.is_tensor(images):
        raise TypeError(f"images must be a torch.Tensor of shape (B, 3, H, W), got {type(images).__name__}")
    check_flag("preprocess", preprocess)
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W) or (3, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (B = 0)")
    if images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"images must be at least 1x1 pixels, got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
    if images.dtype != torch.float32:  # float64 / float16 / bfloat16: the models compute in float32
        warnings.warn(f"images are {images.dtype}; converted to torch.float32, the dtype the models compute in",
                      UserWarning, stacklevel=3)
        images = images.float()
    lo, hi = float(images.min()), float(images.max())  # both NaN when any value is (torch propagates NaN)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("images contain NaN or infinite values")
    if preprocess:
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(
                f"images must be in [0, 1] (the library applies the model's normalisation), got range "
                f"[{lo:.3g}, {hi:.3g}]; pass preprocess=False for already-normalised inputs"
            )
    return images


def check_vectors(inputs) -> torch.Tensor:
    """Validate a batch of input vectors (B, D) for non-image models (e.g. :mod:`lucent_inhibit.toy`).

    Used by :func:`attribute` and :func:`measure` for 2-D inputs when ``preprocess=False``.
    """
    if not torch.is_tensor(inputs) or inputs.dim() != 2:
        what = tuple(inputs.shape) if torch.is_tensor(inputs) else type(inputs).__name__
        raise TypeError(f"inputs must be a torch.Tensor of shape (B, D), got {what}")
    if inputs.shape[0] == 0 or inputs.shape[1] == 0:
        raise ValueError(f"inputs must be a non-empty batch of vectors (B, D), got shape {tuple(inputs.shape)}")
    if not inputs.is_floating_point():
        raise ValueError(f"inputs must be floating point, got dtype {inputs.dtype}")
    if not torch.isfinite(inputs).all():
        raise ValueError("inputs contain NaN or infinite values")
    return inputs


def reading_feature(model: nn.Module, x: torch.Tensor, feature: Feature) -> Feature:
    """``feature`` as it is read off the model's activations for inputs ``x`` (B, 3, H, W): with the model's
    token layout (:func:`lucent_inhibit.core.tokens.token_grid`) when it has one and the feature was given none, so
    a token position never rests on a guess from the token count (a non-square grid, register tokens
    without a class token); the feature itself otherwise."""
    if feature.grid is not None or x.dim() != 4:
        return feature
    grid = token_grid(model, tuple(x.shape[2:]))
    return feature if grid is None else feature.with_grid(grid)
