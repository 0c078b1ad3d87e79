"""Layers and hooks: the one place that names layers, reads their tensors and cleans up after itself.

Layer names follow Lucent's convention (module paths joined with ``_``, as ``render_vis``'s hook names
them), so a name valid here is valid in ``lucent.optvis.objectives``. Every stage of the library reads
layer tensors through :func:`capture` (or, inside the render loop, through Lucent's hook while
:func:`hooks_restored` cleans up), so one name always means one tensor:

- a module that runs more than once per forward pass (torchvision ResNet's ``relu``) has no single
  tensor: such names are refused with the list of usable neighbours (:func:`check_single_call`);
- :func:`capture` stops the forward pass right after the deepest layer it needs (:class:`StopForward`);
- every hook added is removed again, also when the forward pass raises.
"""
from __future__ import annotations

import contextlib
import difflib
import weakref
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from .validate import InputError

#: Hook dictionaries of ``nn.Module`` that :func:`hooks_restored` snapshots and restores.
_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks_with_kwargs",
)


class StopForward(Exception):
    """Raised by a hook to end a forward pass early (the library's only early-stop mechanism)."""


class AmbiguousLayerError(ValueError):
    """A layer name whose module runs more than once per forward pass (so it names several tensors)."""


# ------------------------------------------------------------------------------------------------
# names
# ------------------------------------------------------------------------------------------------
def layer_table(model: nn.Module) -> Dict[str, nn.Module]:
    """Lucent layer name -> module, in registration order (as ``render_vis`` hooks them)."""
    table: Dict[str, nn.Module] = {}

    def walk(net, prefix):
        for name, child in net._modules.items():
            if child is None:
                continue
            table["_".join(prefix + [name])] = child
            walk(child, prefix + [name])

    walk(model, [])
    return table


def layers(model: nn.Module) -> List[str]:
    """All Lucent layer names of ``model`` in registration order."""
    return list(layer_table(model))


def unknown_layer_message(name: str, valid: Sequence[str]) -> str:
    valid = list(valid)
    close = difflib.get_close_matches(str(name), valid, n=5, cutoff=0.5)
    hint = f" Closest valid names: {', '.join(close)}." if close else ""
    return (
        f"Unknown layer {name!r}: the model has no module of that Lucent name "
        f"({len(valid)} layers; list them with lucent_inhibit.layers(model)).{hint}"
    )


def _check_name(name, what: str = "layer name") -> str:
    """``name`` if it is a string, else ``ValueError`` (``validate.InputError``) naming what it is."""
    if not isinstance(name, str):
        raise InputError(f"{what} must be a string (a Lucent layer name), got {name!r:.60}")
    return name


def layer_names(names, what: str = "names") -> List[str]:
    """``names`` (one layer name or an iterable of them) as a list of strings, else ``ValueError``."""
    if isinstance(names, str):
        return [names]
    if isinstance(names, bytes) or not hasattr(names, "__iter__"):
        raise InputError(f"{what} must be a layer name or a list of layer names, got {names!r:.60}")
    return [_check_name(n, f"{what}[{i}]") for i, n in enumerate(list(names))]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The module that Lucent calls ``name``; an unknown name raises ``ValueError`` with close matches."""
    table = layer_table(model)
    if _check_name(name) not in table:
        raise ValueError(unknown_layer_message(name, table))
    return table[name]


def check_layer_names(model: nn.Module, names: Sequence[str], allow: Sequence[str] = ("input",)) -> None:
    """``ValueError`` naming the first unknown layer (``allow`` lists pseudo-layers such as ``"input"``)."""
    table = layer_table(model)
    for n in names:
        if _check_name(n) not in table and n not in allow:
            raise ValueError(unknown_layer_message(n, list(allow) + list(table)))


# ------------------------------------------------------------------------------------------------
# hook bookkeeping
# ------------------------------------------------------------------------------------------------
def hook_count(model: nn.Module) -> int:
    """Number of forward (pre-)hooks on all modules of ``model`` (tests compare it before and after)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@contextlib.contextmanager
def hooks_restored(model: nn.Module) -> Iterator[nn.Module]:
    """Remove, on exit (also on error), every hook added to any module of ``model`` inside the block.

    Lucent's ``render_vis`` never removes the forward hooks it registers on every module; every render
    of the library runs inside this block.
    """
    before = _hook_keys(model)
    try:
        yield model
    finally:
        for m in model.modules():
            for d in _HOOK_DICTS:
                hooks = m.__dict__.get(d)
                if hooks:
                    kept = before.get((m, d), ())
                    for key in [k for k in hooks if k not in kept]:
                        del hooks[key]


def _hook_keys(model: nn.Module) -> Dict[tuple, frozenset]:
    """``(module, hook dict name) -> the keys it holds``, for the non-empty hook dicts of ``model``'s modules."""
    return {(m, d): frozenset(h) for m in model.modules() for d in _HOOK_DICTS if (h := m.__dict__.get(d))}


# ------------------------------------------------------------------------------------------------
# forward order and call counts (one probe per model and input shape)
# ------------------------------------------------------------------------------------------------
class _Probe(NamedTuple):
    order: List[str]  # layer names in the order their modules run (once per call)
    shapes: Dict[str, Tuple[int, ...]]  # layer -> its (last) output's shape on one image, for tensor outputs


_PROBES: "weakref.WeakKeyDictionary[nn.Module, Dict[tuple, _Probe]]" = weakref.WeakKeyDictionary()


def _probed(model: nn.Module, x: torch.Tensor) -> _Probe:
    """The forward-order probe of ``model`` on ``x``'s shape: one no-grad pass on ``x[:1]``, once per model
    and input shape."""
    key = tuple(x.shape[1:])
    cache = _PROBES.setdefault(model, {})
    if key not in cache:
        cache[key] = _probe(model, x[:1].detach())
    return cache[key]


def forward_order(model: nn.Module, x: torch.Tensor) -> List[str]:
    """Layer names in the order their modules run in one forward pass on ``x``'s shape (a name appears
    once per call). Measured once per model and input shape with one no-grad pass on ``x[:1]``."""
    return _probed(model, x).order


def output_shapes(model: nn.Module, x: torch.Tensor, names: Sequence[str]) -> Dict[str, torch.Tensor]:
    """``capture(model, x[:1], names)`` as shapes only: each layer's output on one image, as an empty
    ``meta`` tensor of its shape, read off the forward-order probe (no forward pass once it exists). Names
    the probe cannot answer (unknown, failing, non-tensor outputs, rows that are not the image) go through
    :func:`capture`, whose error says what is wrong."""
    names = layer_names(names)
    check_single_call(model, x, [n for n in names if n != "input"])
    shapes = dict(_probed(model, x).shapes, input=tuple(x[:1].shape))
    if not all(n in shapes and shapes[n][:1] == (1,) for n in names):  # rows that are not the image: refused
        with torch.no_grad():
            return capture(model, x[:1], names)
    return {n: torch.empty(shapes[n], device="meta") for n in names}


def _probe(model: nn.Module, x: torch.Tensor) -> _Probe:
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


# ------------------------------------------------------------------------------------------------
# capture
# ------------------------------------------------------------------------------------------------
def capture(
    model: nn.Module,
    x: torch.Tensor,
    names: Sequence[str],
    stop_at: Optional[str] = None,
    replace: Optional[Dict[str, Callable[[torch.Tensor], torch.Tensor]]] = None,
) -> Dict[str, torch.Tensor]:
    """Run ``model(x)`` and return the outputs of the named Lucent layers.

    Args:
        x: the model input (already normalised); ``"input"`` in ``names`` returns ``x`` itself.
        names: layers to read; each must run exactly once per forward pass.
        stop_at: end the forward pass as soon as this layer's output exists (default: the deepest of
            ``names``); ``stop_at=False`` runs the whole model.
        replace: layer -> function mapping its output to a replacement (integrated gradients,
            disinhibition), applied before later layers see it.

    Returns:
        layer -> tensor; a layer that runs after ``stop_at`` is absent.
    """
    names, replace = _capture_arguments(x, names, stop_at, replace)
    wanted = [n for n in dict.fromkeys(names + list(replace)) if n != "input"]
    if stop_at:
        wanted = list(dict.fromkeys(wanted + [stop_at]))
    check_layer_names(model, wanted)
    check_single_call(model, x, wanted)
    if stop_at is None:
        stop_at = deepest(model, x, wanted)
    table = layer_table(model)
    acts: Dict[str, torch.Tensor] = {"input": x} if "input" in names else {}
    with hooks_restored(model):
        for n in wanted:
            table[n].register_forward_hook(_reader(n, acts, replace.get(n), n == stop_at, x))
        try:
            model(x)
        except StopForward:
            pass
        except RuntimeError as exc:
            _reraise_if_missing(exc, x, [n for n in wanted if n not in acts])
    return acts


def _capture_arguments(x, names, stop_at, replace) -> Tuple[List[str], Dict[str, Callable]]:
    """``(names as a list, replace as a dict)``, else ``ValueError`` naming the bad argument."""
    if not torch.is_tensor(x) or x.dim() == 0:
        raise InputError(f"x must be a batch tensor (B, ...) (the model input), got {_what(x)}")
    if stop_at not in (None, False):
        _check_name(stop_at, "stop_at")
    replace = {} if replace is None else replace
    if not isinstance(replace, dict) or not all(callable(f) for f in replace.values()):
        raise InputError(f"replace must map layer names to functions tensor -> tensor, got {replace!r:.60}")
    return layer_names(names), replace


def _what(x) -> str:
    return "a 0-d tensor" if torch.is_tensor(x) else type(x).__name__


def _reraise_if_missing(exc: RuntimeError, x: torch.Tensor, missing: List[str]) -> None:
    """A forward pass that failed before the needed layers: one clear error naming them and the input size
    (InceptionV1's late layers collapse to negative sizes below 224 px); after them it does not matter."""
    if not missing:
        return
    raise ValueError(
        f"the model failed on a {'x'.join(map(str, x.shape[2:]))} input before computing {missing} "
        f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); use larger images (InceptionV1's late "
        "layers need 224 px)"
    ) from None


def _reader(name: str, acts: dict, replace, stop: bool, x: torch.Tensor):
    def hook(module, inputs, output):
        if not torch.is_tensor(output):
            raise TypeError(f"layer {name!r} returns {type(output).__name__}, not a tensor; pick another layer")
        if output.dim() and output.shape[0] != x.shape[0]:
            raise ValueError(  # e.g. InceptionV1's logits above 224 px: a fixed 7x7 pool, then reshape(-1, 1024)
                f"layer {name!r} returned {output.shape[0]} rows for a batch of {x.shape[0]} images at "
                f"{'x'.join(map(str, x.shape[2:]))} px, so its rows are not the images; this model's layer is "
                "defined at another input size (InceptionV1's logits: exactly 224 px)")
        if replace is not None:
            output = replace(output)
        acts[name] = output
        if stop:
            raise StopForward
        # the rest of the network runs on a copy: in-place ops after the layer (ResNet's `out += identity`)
        # must not change the tensor returned (autograd still flows through the copy)
        return output if replace is not None else output.clone()

    return hook


def protect_outputs(model: nn.Module, names: Sequence[str]) -> None:
    """Make the rest of the network run on a copy of these layers' outputs, so that in-place operations
    after them (ResNet's ``out += identity``) do not change what a hook stored. Call inside
    :func:`hooks_restored` (the render session does so from the second step on)."""
    table = layer_table(model)
    for n in names:
        table[n].register_forward_hook(lambda m, i, o: o.clone() if torch.is_tensor(o) else None)


def layers_before(model: nn.Module, x: torch.Tensor, layer: str) -> List[str]:
    """Single-call layers that run before ``layer`` in the forward pass, in order."""
    order = forward_order(model, x)
    counts = call_counts(model, x)
    if layer not in order:
        raise ValueError(f"layer {layer!r} does not run in the forward pass on inputs of shape {tuple(x.shape[1:])}")
    return [n for n in order[: order.index(layer)] if counts[n] == 1]


@contextlib.contextmanager
def frozen_weights(model: nn.Module):
    """The model's parameters with ``requires_grad`` off inside the block, restored on exit (also on error).

    Layer attributions need gradients with respect to activations only; a graph that also records the
    weights' gradients costs the forward pass about 40% more on the embedded model.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield model
    finally:
        for p, g in flags:
            p.requires_grad_(g)


def separates(model: nn.Module, x: torch.Tensor, layer: str, target: str) -> bool:
    """Whether ``layer`` is a cut between the input and ``target``: every path into ``target`` passes through it.

    Checked on the autograd graph, not on values: with ``x`` (B, 3, H, W) requiring grad, the parameters
    not, and ``layer``'s output detached, ``target``'s output must no longer depend on ``x`` (then it is a
    function of ``layer`` alone, as attribution at ``layer`` needs to add up to a feature of ``target``). A dead
    layer (nothing reads it), a side branch, or a residual branch however small (ConvNeXt's layer scale starts
    at 1e-6) is not a cut. Parameters' ``requires_grad`` flags are restored.
    """
    with frozen_weights(model), torch.enable_grad():
        out = capture(model, x.detach().requires_grad_(True), [target], replace={layer: torch.Tensor.detach})
    return not out[target].requires_grad


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")
