"""Reduced-precision dataset passes (``torch.autocast``) that are checked against float32 before they run.

Autocast runs convolutions and matrix products in float16 (CUDA) or bfloat16 (CPU), which is faster on
accelerators with tensor cores but changes every number a little; how much depends on the model and the
layer. A scan or census with ``autocast`` first attributes one batch both ways (:func:`check_autocast`) and
goes on only when the feature ``f`` and the totals ``P`` and ``N`` at every attribution layer agree with
float32 within :data:`AUTOCAST_TOLERANCE` of float32's scale; the deviation is said and recorded in the
result's ``info``. Otherwise :class:`AutocastTooInexact` stops the run before any image is scanned.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Dict, Sequence

import torch
from torch import nn

from ..core.validate import InputError, check_number

#: Reduced dtype per device type.
AUTOCAST_DTYPES = {"cuda": torch.float16, "cpu": torch.bfloat16}
#: Largest deviation allowed: ``max |low - fp32| / max |fp32|`` over the check batch, for f and for P and N
#: at every layer (bfloat16 keeps 8 significant bits, about 0.4% per rounding; a few percent accumulate
#: over a deep network, more where large numbers cancel).
AUTOCAST_TOLERANCE = 0.02


class AutocastTooInexact(InputError):
    """Autocast moves f, P or N by more than the tolerance on the check batch: the run stays in float32."""


@dataclass
class PrecisionCheck:
    """How far one batch's attribution under autocast is from float32.

    Attributes:
        dtype: the reduced dtype's name (``"bfloat16"``, ``"float16"``).
        deviation: ``{"f": d, "P@layer": d, "N@layer": d, ...}``, each ``max |low - fp32| / max |fp32|``
            over the batch (0 when float32's values are all 0 and so are autocast's).
        tolerance: the bar each deviation must stay under.
        images: images in the check batch.
    """

    dtype: str
    deviation: Dict[str, float] = field(default_factory=dict)
    tolerance: float = AUTOCAST_TOLERANCE
    images: int = 0

    @property
    def worst(self) -> str:
        return max(self.deviation, key=self.deviation.get)

    @property
    def ok(self) -> bool:
        return all(d <= self.tolerance for d in self.deviation.values())

    def describe(self) -> str:
        return (f"autocast {self.dtype}: largest deviation from float32 on {self.images} images {self.deviation[self.worst]:.2%}"
                f" ({self.worst}), tolerance {self.tolerance:.0%}")

    def to_dict(self) -> dict:
        return {"dtype": self.dtype, "deviation": dict(self.deviation), "tolerance": self.tolerance,
                "images": self.images}


def autocast_dtype(device) -> torch.dtype:
    """The reduced dtype autocast uses on ``device`` (a torch device or its type name)."""
    kind = torch.device(device).type
    if kind not in AUTOCAST_DTYPES:
        raise InputError(f"autocast on device type {kind!r} is not supported; expected one of {sorted(AUTOCAST_DTYPES)}")
    return AUTOCAST_DTYPES[kind]


def autocast(device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on ``device``'s type with :func:`autocast_dtype`."""
    kind = torch.device(device).type
    return torch.autocast(device_type=kind, dtype=autocast_dtype(kind))


def active_precision(device) -> str:
    """``"float32"``, or ``"autocast bfloat16"`` / ``"autocast float16"`` when autocast is on for ``device``'s
    type here (what a scan or census records in its ``info`` and compares on resume)."""
    kind = torch.device(device).type
    if torch.is_autocast_enabled(kind):
        return f"autocast {str(torch.get_autocast_dtype(kind)).replace('torch.', '')}"
    return "float32"


def _deviation(low: torch.Tensor, ref: torch.Tensor) -> float:
    low, ref = low.detach().double().cpu(), ref.detach().double().cpu()
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    diff = float((low - ref).abs().max()) if ref.numel() else 0.0
    if not torch.isfinite(low).all():
        return float("inf")
    return diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


def check_autocast(model: nn.Module, images: torch.Tensor, feature, layers: Sequence[str],
                   tolerance: float = AUTOCAST_TOLERANCE) -> PrecisionCheck:
    """Attribute ``feature`` at ``layers`` on ``images`` (B, 3, H, W) in [0, 1] in float32 and under autocast
    on the model's device, and return how far apart f, P and N are (:class:`PrecisionCheck`)."""
    from ..core.layers import model_device
    from .attribute import as_layers, attribute

    tolerance = check_number("tolerance", tolerance, 0, 1)
    layers = as_layers(layers)
    device = model_device(model)
    ref = attribute(model, images, feature, layers)
    with autocast(device):
        low = attribute(model, images, feature, layers)
    deviation = {"f": _deviation(low.activation, ref.activation)}
    for l in layers:
        deviation[f"P@{l}"] = _deviation(low.positive(l), ref.positive(l))
        deviation[f"N@{l}"] = _deviation(low.negative(l), ref.negative(l))
    return PrecisionCheck(str(autocast_dtype(device)).replace("torch.", ""), deviation, tolerance, int(len(images)))


def checked_autocast(model: nn.Module, images: torch.Tensor, feature, layers: Sequence[str],
                     tolerance: float = AUTOCAST_TOLERANCE) -> PrecisionCheck:
    """:func:`check_autocast`, raising :class:`AutocastTooInexact` (naming the worst quantity and the bar)
    when a deviation exceeds ``tolerance``."""
    check = check_autocast(model, images, feature, layers, tolerance)
    if not check.ok:
        raise AutocastTooInexact(f"{check.describe()}: autocast would change the results by more than the tolerance; "
                                 "run in float32 (drop --autocast)")
    return check
