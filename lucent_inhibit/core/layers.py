"""Layer names and hooks' bookkeeping: the one place that names a model's layers and cleans up after hooks.

Layer names follow Lucent's convention (module paths joined with ``_``, as ``render_vis``'s hook names
them), so a name valid here is valid in ``lucent.optvis.objectives``. :func:`hooks_restored` removes every
hook added inside its block (Lucent's ``render_vis`` never removes its own); :func:`frozen_weights` keeps
the parameters out of the autograd graph of a pass that needs activations' gradients only.
"""
from __future__ import annotations

import contextlib
import difflib
from typing import Dict, Iterator, List, Optional, Sequence

import torch
from torch import nn

from .validate import InputError

#: Hook dictionaries of ``nn.Module`` that :func:`hooks_restored` snapshots and restores.
HOOK_DICTS = (
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


class NotAModelError(InputError, TypeError):
    """A value passed where a model is expected that is not a ``torch.nn.Module`` (an ``InputError`` and a
    ``TypeError``)."""


def check_model(model, name: str = "model") -> nn.Module:
    """``model`` if it is a ``torch.nn.Module``, else :class:`NotAModelError` naming ``name``, the value's type
    and the value. Every public function that takes a model reaches it first (through :func:`layer_table` or
    :func:`model_device`), so a spec string or a state dict passed as the model is one clear line."""
    if not isinstance(model, nn.Module):
        hint = " (build it first, e.g. lucent_inhibit.load_model(spec))" if isinstance(model, str) else ""
        raise NotAModelError(f"{name} must be a torch.nn.Module, got {type(model).__name__} {model!r:.60}{hint}")
    return model


# ------------------------------------------------------------------------------------------------
# names
# ------------------------------------------------------------------------------------------------
def layer_table(model: nn.Module) -> Dict[str, nn.Module]:
    """Lucent layer name -> module, in registration order (as ``render_vis`` hooks them)."""
    table: Dict[str, nn.Module] = {}
    check_model(model)

    def walk(net, prefix):  # every pass reads the table: plain string prefixes, no recursion into leaves
        for name, child in net._modules.items():
            if child is None:
                continue
            full = prefix + name
            table[full] = child
            if child._modules:
                walk(child, full + "_")

    walk(model, "")
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


def check_name(name, what: str = "layer name") -> str:
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
    return [check_name(n, f"{what}[{i}]") for i, n in enumerate(list(names))]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The module that Lucent calls ``name``; an unknown name raises ``ValueError`` with close matches."""
    table = layer_table(model)
    if check_name(name) not in table:
        raise ValueError(unknown_layer_message(name, table))
    return table[name]


def check_layer_names(model: nn.Module, names: Sequence[str], allow: Sequence[str] = ("input",),
                      table: Optional[Dict[str, nn.Module]] = None) -> None:
    """``ValueError`` naming the first unknown layer (``allow`` lists pseudo-layers such as ``"input"``;
    ``table``: the model's :func:`layer_table` when the caller has it)."""
    table = layer_table(model) if table is None else table
    for n in names:
        if check_name(n) not in table and n not in allow:
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
    before = hook_keys(model)
    try:
        yield model
    finally:
        for m in model.modules():
            for d in HOOK_DICTS:
                hooks = m.__dict__.get(d)
                if hooks:
                    kept = before.get((m, d), ())
                    for key in [k for k in hooks if k not in kept]:
                        del hooks[key]


def hook_keys(model: nn.Module) -> Dict[tuple, frozenset]:
    """``(module, hook dict name) -> the keys it holds``, for the non-empty hook dicts of ``model``'s modules."""
    return {(m, d): frozenset(h) for m in model.modules() for d in HOOK_DICTS if (h := m.__dict__.get(d))}


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


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer; the CPU when it has neither)."""
    for p in check_model(model).parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")
