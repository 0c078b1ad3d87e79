"""What one forward pass tells about a model, measured once per model and input shape: the order its
modules run in, how often each runs (a module run twice names two tensors), and each layer's output shape.
The probe is one no-grad pass on one image, cached per model (weakly) and input shape.
"""
from __future__ import annotations

import weakref
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from .layers import AmbiguousLayerError, hooks_restored, layer_table


class _Probe(NamedTuple):
    order: List[str]  # layer names in the order their modules run (once per call)
    shapes: Dict[str, Tuple[int, ...]]  # layer -> its (last) output's shape on one image, for tensor outputs


_PROBES: "weakref.WeakKeyDictionary[nn.Module, Dict[tuple, _Probe]]" = weakref.WeakKeyDictionary()


def probed(model: nn.Module, x: torch.Tensor) -> _Probe:
    """The forward-order probe of ``model`` on ``x``'s shape: one no-grad pass on ``x[:1]``, once per model
    and input shape."""
    key = tuple(x.shape[1:])
    cache = _PROBES.setdefault(model, {})
    if key not in cache:
        cache[key] = run_probe(model, x[:1].detach())
    return cache[key]


def forward_order(model: nn.Module, x: torch.Tensor) -> List[str]:
    """Layer names in the order their modules run in one forward pass on ``x``'s shape (a name appears
    once per call). Measured once per model and input shape with one no-grad pass on ``x[:1]``."""
    return probed(model, x).order


def run_probe(model: nn.Module, x: torch.Tensor) -> _Probe:
    order: List[str] = []
    shapes: Dict[str, Tuple[int, ...]] = {}

    def seen(name, output):
        order.append(name)
        if torch.is_tensor(output):
            shapes[name] = tuple(output.shape)

    training = model.training
    model.eval()  # no batch-norm statistics change, no dropout
    with hooks_restored(model):
        for name, module in layer_table(model).items():
            module.register_forward_hook(lambda m, i, o, n=name: seen(n, o))
        try:
            with torch.no_grad():
                model(x)
        except Exception as e:  # a model that cannot run on this input says so at the real call
            order.append(f"<forward failed: {type(e).__name__}>")
    model.train(training)
    return _Probe(order, shapes)


def call_counts(model: nn.Module, x: torch.Tensor) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for n in forward_order(model, x):
        counts[n] = counts.get(n, 0) + 1
    return counts


def check_single_call(model: nn.Module, x: torch.Tensor, names: Sequence[str]) -> None:
    """Refuse layer names whose module runs more than once per forward pass, listing usable names."""
    counts = call_counts(model, x)
    for n in names:
        if counts.get(n, 0) > 1:
            order = forward_order(model, x)
            first = order.index(n)
            last = len(order) - 1 - order[::-1].index(n)
            near = [m for m in order[max(0, first - 3): last + 4] if counts.get(m) == 1 and m != n]
            raise AmbiguousLayerError(
                f"layer {n!r} runs {counts[n]} times per forward pass (its module is reused), so the name "
                f"means {counts[n]} different tensors; pick a layer that runs once, e.g. "
                f"{', '.join(dict.fromkeys(near)) or 'its parent block'}"
            )


def deepest(model: nn.Module, x: torch.Tensor, names: Sequence[str]) -> Optional[str]:
    """Of ``names``, the one whose module runs last in the forward pass (None if none runs)."""
    order = forward_order(model, x)
    pos = {n: i for i, n in enumerate(order)}
    known = [n for n in names if n in pos]
    return max(known, key=lambda n: pos[n]) if known else None


def layers_before(model: nn.Module, x: torch.Tensor, layer: str) -> List[str]:
    """Single-call layers that run before ``layer`` in the forward pass, in order."""
    order = forward_order(model, x)
    counts = call_counts(model, x)
    if layer not in order:
        raise ValueError(f"layer {layer!r} does not run in the forward pass on inputs of shape {tuple(x.shape[1:])}")
    return [n for n in order[: order.index(layer)] if counts[n] == 1]
