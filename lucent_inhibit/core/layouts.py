"""Which axis of a layer's output holds channels: read from the model, never guessed from the rank alone.

The library reads every layer in one of three canonical layouts: maps (B, C, H, W), linear outputs (B, C) and
token layers (B, T, C). A map that the model computes channels-last, (B, H, W, C), is read through a permuted
view, so every method (features, attributions, scans, renders, atlases) sees (B, C, H, W): a timm Swin stage,
and any ``nn.Linear`` / ``nn.LayerNorm`` applied to a permuted map (ConvNeXt's MLP with ``conv_mlp=False``,
torchvision's Swin and ConvNeXt blocks). The evidence for a layer, strongest first:

1. growth: where the model takes a second input size, the axes of the output that grow with the image are
   space (the forward-order probe runs it once, :mod:`lucent_inhibit.core.probe`);
2. the module that computed the tensor: convolutions, batch / group / instance norm and pooling put channels
   first; ``nn.Linear``, ``nn.LayerNorm`` and attention put them last; a module that declares its
   ``output_fmt`` (timm) says so; a permute module moves its input's axes;
3. the data flow between modules: an elementwise module (activation, dropout, identity, drop path) keeps the
   layout of the tensor it was given, a container that returns a child's tensor has the child's layout, and a
   container that keeps its input's shape (a residual block) keeps its input's layout.

A map none of these determine is refused when it is read, with the candidates named (:class:`LayoutError`);
3-D outputs are token layers (B, T, C) unless the evidence makes them 1-D maps (B, C, L), which are refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from .validate import InputError

#: canonical layouts the library reads, and the channels-last map it reads through a permuted view
NCHW, NHWC, TOKENS, LINEAR = "NCHW", "NHWC", "NTC", "NC"
READABLE = (NCHW, NHWC, TOKENS, LINEAR)
UNDERSTOOD = "maps (B, C, H, W) or (B, H, W, C), linear outputs (B, C) and token layers (B, T, C)"

_FIRST = (nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LocalResponseNorm,
          nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
          nn.modules.pooling._AdaptiveMaxPoolNd, nn.Upsample, nn.PixelShuffle, nn.ZeroPad2d, nn.ReflectionPad2d)
_LAST = (nn.Linear, nn.LayerNorm, nn.MultiheadAttention, nn.Embedding, nn.Bilinear)


class LayoutError(InputError):
    """A layer whose channel axis the library cannot determine (or a layout it does not read)."""


@dataclass(frozen=True)
class Layout:
    """How a layer's output is laid out: ``name`` (one of :data:`READABLE`, ``"NCL"`` for a 1-D map, or
    ``"unknown"``) and ``why`` (the evidence, or what is missing)."""

    name: str
    why: str

    @property
    def readable(self) -> bool:
        return self.name in READABLE

    def canonical(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` in the library's layout: a channels-last map as the permuted view (B, C, H, W)."""
        return t.permute(0, 3, 1, 2) if self.name == NHWC and t.dim() == 4 else t

    def raw(self, t: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`canonical`: a canonical tensor in the layout the model computes."""
        return t.permute(0, 2, 3, 1) if self.name == NHWC and t.dim() == 4 else t

    def check(self, layer: str, shape: Sequence[int]) -> None:
        """:class:`LayoutError` naming the layer, its shape and what is missing when it cannot be read."""
        if self.readable:
            return
        shape = tuple(shape)
        if self.name == "NCL":
            raise LayoutError(f"layer {layer!r} is a 1-D map {shape} (channels, then length: {self.why}); the library "
                              f"reads {UNDERSTOOD}")
        candidates = ", ".join(f"axis {i} ({shape[i]} channels)" for i in range(1, len(shape)) if len(shape) == 4
                               and i in (1, 3))
        raise LayoutError(f"cannot tell which axis of layer {layer!r}'s output {shape} holds channels ({self.why})"
                          + (f"; candidates: {candidates}" if candidates else f"; the library reads {UNDERSTOOD}")
                          + ": pick a layer computed by a convolution, norm, linear layer or their activation")


class Record(NamedTuple):
    """One module call of a probe: its layer name, the module, its first tensor input and its output."""

    name: str
    module: nn.Module
    input: Optional[torch.Tensor]
    output: torch.Tensor


def _from_growth(before: Tuple[int, ...], after: Tuple[int, ...]) -> Optional[str]:
    """The layout told by the axes (batch aside) that grow with the input size, or None when none grows."""
    if len(before) != len(after) or before == after:
        return None
    grown = {i for i in range(1, len(before)) if before[i] != after[i]}
    if len(before) == 4:
        return {frozenset({2, 3}): NCHW, frozenset({1, 2}): NHWC}.get(frozenset(grown), "unknown")
    if len(before) == 3:
        return {frozenset({1}): TOKENS, frozenset({2}): "NCL"}.get(frozenset(grown), "unknown")
    return None


def declared_layout(module: nn.Module, dim: int) -> Optional[str]:
    """The layout the module's type (or its declared ``output_fmt``) gives an output of ``dim`` dimensions."""
    fmt = str(getattr(module, "output_fmt", "") or "").split(".")[-1].upper()
    if dim == 4 and fmt in (NCHW, NHWC):
        return fmt
    if dim == 3 and fmt in ("NLC", "NTC"):
        return TOKENS
    name = type(module).__name__
    if name.endswith("2d") and isinstance(module, nn.LayerNorm):  # timm's LayerNorm2d normalises channels first
        return NCHW if dim == 4 else None
    if isinstance(module, _FIRST):
        return {4: NCHW, 3: "NCL"}.get(dim)
    if isinstance(module, _LAST):
        return {4: NHWC, 3: TOKENS}.get(dim)
    return None


def _permuted(layout: Optional[str], module: nn.Module) -> Optional[str]:
    """The layout a permute module (torchvision's ``Permute``: a ``dims`` attribute) makes of ``layout``."""
    dims = tuple(getattr(module, "dims", ()) or ())
    if layout not in (NCHW, NHWC) or len(dims) != 4:
        return None
    moves = {(NCHW, (0, 2, 3, 1)): NHWC, (NHWC, (0, 3, 1, 2)): NCHW}
    return moves.get((layout, dims), layout if dims == (0, 1, 2, 3) else None)


def _elementwise(module: nn.Module) -> bool:
    """Modules that keep their input's layout: no parameters beyond a per-channel vector, no children."""
    if module._modules:
        return False
    return all(p.dim() <= 1 for p in module.parameters(recurse=False))


def _key(t: Optional[torch.Tensor]):
    """A tensor's identity in the data flow: its memory and view (a hook that hands on ``t.detach()`` keeps it)."""
    if t is None:
        return None
    return t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.storage_offset()


def infer(records: List[Record], image: torch.Tensor, grown: Optional[Dict[str, tuple]] = None) -> Dict[str, Layout]:
    """The layout of every recorded layer output (see the module docstring). ``records`` in call order (a
    container's call after its children's), ``image`` the probe's input (channels first), ``grown`` each
    layer's output shape at a second input size, where the model took one."""
    known: Dict[tuple, str] = {_key(image): NCHW}  # tensor -> layout, for the data flow between modules
    out: Dict[str, Layout] = {}
    for rec in records:
        layout = _decide(rec, known, (grown or {}).get(rec.name))
        out[rec.name] = layout
        if layout.name != "unknown":
            known.setdefault(_key(rec.output), layout.name)
    return out


def _decide(rec: Record, known: Dict[tuple, str], grown_shape) -> Layout:
    shape, dim = tuple(rec.output.shape), rec.output.dim()
    if dim == 2:
        return Layout(LINEAR, "a (B, C) output")
    if dim not in (3, 4):
        return Layout("unknown", f"a {dim}-D output")
    growth = _from_growth(shape, tuple(grown_shape)) if grown_shape is not None else None
    if growth not in (None, "unknown"):
        return Layout(growth, "the axes that grow with the input size")
    kind = type(rec.module).__name__
    evidence = [(declared_layout(rec.module, dim), f"computed by {kind}"),
                (known.get(_key(rec.output)), "the tensor of an earlier layer"),
                (_permuted(known.get(_key(rec.input)), rec.module), f"{kind} permutes its input")]
    if _elementwise(rec.module) and rec.input is not None and tuple(rec.input.shape) == shape:
        evidence.append((known.get(_key(rec.input)), f"{kind} keeps the layout of its input"))
    if rec.module._modules and rec.input is not None and tuple(rec.input.shape) == shape:
        evidence.append((known.get(_key(rec.input)), f"{kind} keeps its input's shape and layout"))
    for layout, why in evidence:
        if layout is not None:
            return Layout(layout, why)
    if dim == 3:
        return Layout(TOKENS, "a 3-D output: a token layer (B, T, C)")
    return Layout("unknown", f"{kind} gives no channel axis, its input's layout is not known and the model takes "
                  "one input size only")
