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
from .layouts import LINEAR, NCHW, NHWC, TOKENS, Layout, LayoutError, Record, declared_layout, infer


class _Probe(NamedTuple):
    order: List[str]  # layer names in the order their modules run (once per call)
    shapes: Dict[str, Tuple[int, ...]]  # layer -> its (last) output's shape on one image, for tensor outputs
    layouts: Dict[str, Layout]  # layer -> the layout of its output (lucent_inhibit.core.layouts)
    channels_last: bool = False  # the model runs on this input in channels-last memory (no .view that refuses)


_PROBES: "weakref.WeakKeyDictionary[nn.Module, Dict[tuple, _Probe]]" = weakref.WeakKeyDictionary()
#: module -> (layout, calls per forward pass, the refusal message when it runs more than once), for every module
#: of a probed model: an objective inside Lucent's own ``render_vis`` sees modules, not the model.
MODULE_FACTS: "weakref.WeakKeyDictionary[nn.Module, Tuple[Layout, int, str]]" = weakref.WeakKeyDictionary()
#: Pixels added to each side of the probe's image for the second pass that tells space from channels.
GROWTH_PX = 32
#: What a model that cannot run on an input raises (the probe records it and lets the real call say so);
#: anything else (an interrupt, a timeout a signal handler raises) propagates.
MODEL_ERRORS = (RuntimeError, ValueError, TypeError, IndexError, KeyError, AttributeError, AssertionError,
                NotImplementedError, ZeroDivisionError)


def probed(model: nn.Module, x: torch.Tensor) -> _Probe:
    """The forward-order probe of ``model`` on ``x``'s shape: one no-grad pass on ``x[:1]`` (and one at a
    second size, for layouts), once per model and input shape."""
    key = tuple(x.shape[1:])
    cache = _PROBES.setdefault(model, {})
    if key not in cache:
        cache[key] = run_probe(model, x[:1].detach())
        _remember(model, cache[key])
    return cache[key]


def forward_order(model: nn.Module, x: torch.Tensor) -> List[str]:
    """Layer names in the order their modules run in one forward pass on ``x``'s shape (a name appears
    once per call). Measured once per model and input shape with one no-grad pass on ``x[:1]``."""
    return probed(model, x).order


def layer_layouts(model: nn.Module, x: torch.Tensor) -> Dict[str, Layout]:
    """Layer -> :class:`~lucent_inhibit.core.layouts.Layout` of its output on inputs of ``x``'s shape."""
    return probed(model, x).layouts


def _recorded(model: nn.Module, x: torch.Tensor) -> Tuple[List[str], List[Record]]:
    """One no-grad pass recording every module call (name, module, first tensor input, tensor output)."""
    order: List[str] = []
    records: List[Record] = []

    def seen(name, module, inputs, output):
        order.append(name)
        if torch.is_tensor(output):
            first = next((t for t in inputs if torch.is_tensor(t)), None)
            records.append(Record(name, module, first, output))

    with hooks_restored(model):
        for name, module in layer_table(model).items():
            module.register_forward_hook(lambda m, i, o, n=name: seen(n, m, i, o))
        try:
            with torch.no_grad():
                model(x)
        except MODEL_ERRORS as e:  # a model that cannot run on this input says so at the real call
            order.append(f"<forward failed: {type(e).__name__}>")
    return order, records


def run_probe(model: nn.Module, x: torch.Tensor) -> _Probe:
    """The probe of ``model`` on ``x`` (one image): forward order, output shapes and layouts (see
    :mod:`lucent_inhibit.core.layouts`; the second pass at :data:`GROWTH_PX` more pixels a side tells space
    from channels where the model takes that size)."""
    training = model.training
    model.eval()  # no batch-norm statistics change, no dropout
    try:
        order, records = _recorded(model, x)
        grown = None
        if x.dim() == 4:  # also after a failure: the layers before it are real
            bigger = x.new_zeros(x.shape[0], x.shape[1], x.shape[2] + GROWTH_PX, x.shape[3] + GROWTH_PX)
            _, again = _recorded(model, bigger)  # a model that takes one input size only gives no growth
            grown = {r.name: tuple(r.output.shape) for r in again}
        layouts = infer(records, x, grown)
        failed = bool(order) and order[-1].startswith("<forward failed")
        nhwc = x.dim() == 4 and not failed and _runs(model, x.contiguous(memory_format=torch.channels_last))
    finally:
        model.train(training)
    return _Probe(order, {r.name: tuple(r.output.shape) for r in records}, layouts, nhwc)


def _runs(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether one no-grad pass of ``model`` on ``x`` ends without error (e.g. a ``.view`` that needs NCHW
    memory refuses a channels-last input)."""
    try:
        with hooks_restored(model), torch.no_grad():
            model(x)
    except MODEL_ERRORS:
        return False
    return True


def _remember(model: nn.Module, probe: _Probe) -> None:
    """Record every probed module's layout and call count in :data:`MODULE_FACTS`."""
    counts: Dict[str, int] = {}
    for n in probe.order:
        counts[n] = counts.get(n, 0) + 1
    for name, module in layer_table(model).items():
        if name in probe.layouts:
            MODULE_FACTS[module] = (probe.layouts[name], counts.get(name, 0), _reused_message(probe.order, counts, name))


def call_counts(model: nn.Module, x: torch.Tensor) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for n in forward_order(model, x):
        counts[n] = counts.get(n, 0) + 1
    return counts


def check_single_call(model: nn.Module, x: torch.Tensor, names: Sequence[str]) -> None:
    """Refuse layer names whose module runs more than once per forward pass, listing usable names."""
    probe = probed(model, x)
    counts = call_counts(model, x)
    for n in names:
        if counts.get(n, 0) > 1:
            raise AmbiguousLayerError(_reused_message(probe.order, counts, n))


def _reused_message(order: List[str], counts: Dict[str, int], n: str) -> str:
    """Why layer ``n`` is refused when its module runs more than once per forward pass ("" when it runs once)."""
    if counts.get(n, 0) <= 1:
        return ""
    first = order.index(n)
    last = len(order) - 1 - order[::-1].index(n)
    near = [m for m in order[max(0, first - 3): last + 4] if counts.get(m) == 1 and m != n]
    return (f"layer {n!r} runs {counts[n]} times per forward pass (its module is reused), so the name means "
            f"{counts[n]} different tensors; pick a layer that runs once, e.g. "
            f"{', '.join(dict.fromkeys(near)) or 'its parent block'}")


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


# ------------------------------------------------------------------------------------------------
# inside Lucent's own render_vis: its hook knows modules, not the model
# ------------------------------------------------------------------------------------------------
def _lucent_features(root, depth: int = 6) -> Optional[dict]:
    """The ``{layer: ModuleHook}`` table inside Lucent's ``hook_model`` hook function, looked up through the
    closures of the functions that wrap it (Lucent's ``handle_batch``); None for other hooks."""
    code, cells = getattr(root, "__code__", None), getattr(root, "__closure__", None) or ()
    if code is None or depth == 0:
        return None
    free = dict(zip(code.co_freevars, (c.cell_contents for c in cells)))
    table = free.get("features")
    if isinstance(table, dict) and all(hasattr(h, "features") for h in table.values()):
        return table
    for value in free.values():
        if callable(value) and getattr(value, "__closure__", None):
            found = _lucent_features(value, depth - 1)
            if found is not None:
                return found
    return None


def hook_layout(root, layer: str, tensor: torch.Tensor) -> Layout:
    """The layout of ``layer``'s tensor as Lucent's hook ``root`` holds it (the model's own layout): what the
    probe of the model recorded for its module (``prepare`` probes every model it prepares; a module run more
    than once per pass raises :class:`AmbiguousLayerError`, as :func:`check_single_call` does); for a model
    never probed, the module's declared layout, or channels first when no module of the pass computed a
    channels-last map; else :class:`~lucent_inhibit.core.layouts.LayoutError` saying to prepare the model. A hook
    that is not Lucent's (a caller's own ``T``) is taken to give tensors in the library's layouts."""
    table = _lucent_features(root)
    if table is None:  # not Lucent's hook: a caller's own T gives tensors in the library's layouts
        return Layout(NCHW if tensor.dim() == 4 else LINEAR if tensor.dim() == 2 else TOKENS, "given by the caller")
    module = getattr(table.get(layer), "module", None)
    facts = MODULE_FACTS.get(module) if module is not None else None
    if facts is not None:
        layout, calls, message = facts
        if calls > 1:
            raise AmbiguousLayerError(message)
        layout.check(layer, tuple(tensor.shape))
        return layout
    if tensor.dim() != 4:
        return Layout(LINEAR if tensor.dim() == 2 else TOKENS, "the tensor's rank on a model never probed")
    declared = declared_layout(module, 4) if module is not None else None
    if declared is not None:
        return Layout(declared, f"computed by {type(module).__name__}")
    last = [n for n, h in table.items() if torch.is_tensor(h.features) and h.features.dim() == 4
            and declared_layout(h.module, 4) == NHWC]
    if not last:
        return Layout(NCHW, "no module of this pass computes a channels-last map")
    raise LayoutError(f"layer {layer!r}: this model computes channels-last maps ({last[0]}, ...) and has not been "
                      "probed, so the library cannot tell which axis of this layer holds channels; call "
                      "lucent_inhibit.prepare(model) before render_vis")
