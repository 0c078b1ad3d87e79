"""A model's natural blocks and their re-initialisation, for the model-parameter randomization test
(Adebayo et al. 2018, "Sanity checks for saliency maps"; paper 002, section 6.3).

A *natural block* is what the module tree groups: starting at the model, containers (``nn.Sequential``,
``nn.ModuleList``, ``nn.ModuleDict``) and parameter-free modules whose parameterised children are all
containers (a timm ConvNeXt stage) are opened; every other module with parameters is a block (timm
EfficientNet's ``conv_stem``, ``bn1``, ``blocks_4_0``, ...; a torchvision ResNet's ``layer1_0``; a ViT's
``blocks_3``). The model's own parameters (a ViT's ``pos_embed``, ``cls_token``) are the block ``""``.

:func:`forward_spans` times one forward pass (when each module's call starts and ends), so a block can be split
at an attribution layer inside it, and :func:`reinitialize` re-initialises modules, seeded: each leaf module's
own ``reset_parameters()`` (a convolution's, a linear layer's, a batch norm's with its running statistics),
other parameters redrawn from a normal distribution with their own mean and standard deviation.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn

from ..core.layers import StopForward, get_layer, hooks_restored, layer_table

CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _own_parameters(module: nn.Module) -> List[nn.Parameter]:
    return list(module.parameters(recurse=False))


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _opened(module: nn.Module) -> bool:
    """Whether the block search looks inside ``module`` (a container, or a parameter-free module whose
    parameterised children are all containers)."""
    if isinstance(module, CONTAINERS):
        return True
    held = [c for c in module.children() if _has_parameters(c)]
    return not _own_parameters(module) and bool(held) and all(isinstance(c, CONTAINERS) for c in held)


def natural_blocks(model: nn.Module) -> List[str]:
    """Lucent names of the model's natural blocks (see the module docstring), in registration order; ``""``
    (the model itself) first when the model holds parameters of its own."""
    found: List[str] = [""] if _own_parameters(model) else []

    def walk(net: nn.Module, prefix: List[str]) -> None:
        for name, child in net.named_children():
            path = prefix + [name]
            if _opened(child):
                walk(child, path)
            elif _has_parameters(child):
                found.append("_".join(path))

    walk(model, [])
    return found


def parameter_modules(model: nn.Module, block: str) -> List[str]:
    """Lucent names of the modules inside ``block`` (itself included; ``""``: the model's own parameters
    only) that hold parameters of their own."""
    if block == "":
        return [""] if _own_parameters(model) else []
    root = get_layer(model, block)
    names = [block] if _own_parameters(root) else []
    return names + [f"{block}_{n.replace('.', '_')}" for n, m in root.named_modules() if n and _own_parameters(m)]


def forward_spans(model: nn.Module, x: torch.Tensor, stop_after: Optional[str] = None) -> Dict[str, Tuple[int, int]]:
    """Lucent layer name -> ``(start, end)`` ticks of its module's first call in one no-grad forward pass on
    ``x`` (a counter advanced at every call's start and end); modules that do not run are absent. ``stop_after``:
    end the pass once that layer has run (the layers after it, e.g. a head that takes one input size, are absent;
    the modules holding it, still open then, end at the stop: after every module that ran)."""
    ticks: Dict[str, List[int]] = {}
    clock = [0]

    def tick(name: str, which: int) -> None:
        clock[0] += 1
        span = ticks.setdefault(name, [-1, -1])
        if span[which] < 0:
            span[which] = clock[0]
        if which == 1 and name == stop_after:
            raise StopForward

    with hooks_restored(model):
        for name, module in layer_table(model).items():
            module.register_forward_pre_hook(lambda m, i, n=name: tick(n, 0))
            module.register_forward_hook(lambda m, i, o, n=name: tick(n, 1))
        with torch.no_grad():
            try:
                model(x)
            except StopForward:
                clock[0] += 1
                for span in ticks.values():
                    if span[0] >= 0 and span[1] < 0:
                        span[1] = clock[0]
    return {n: (s, e) for n, (s, e) in ticks.items() if s >= 0 and e >= 0}


def _redraw(p: torch.Tensor) -> None:
    """``p`` redrawn from a normal of its own mean and standard deviation (a constant where it has one value)."""
    mean = float(p.mean())
    std = float(p.std()) if p.numel() > 1 else 0.0
    p.copy_(torch.randn_like(p) * std + mean)


def reinitialize(model: nn.Module, names: Iterable[str], seed: int) -> Dict[str, str]:
    """Re-initialise the own parameters of the modules ``names`` (Lucent names; ``""`` the model) in place,
    seeded by ``seed`` (an integer, 0 to 2**64 - 1; torch's global generators are left as they were). A module without parameterised
    children that has ``reset_parameters()`` calls it; any other's parameters are redrawn from a normal with
    their mean and standard deviation. Returns name -> ``"reset_parameters"`` or ``"redrawn"``."""
    done: Dict[str, str] = {}
    modules = [(n, model if n == "" else get_layer(model, n)) for n in names]
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(int(seed))
        for name, module in modules:
            leaf = not any(_has_parameters(c) for c in module.children())
            if name != "" and leaf and callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
                done[name] = "reset_parameters"
            else:
                for p in _own_parameters(module):
                    _redraw(p)
                done[name] = "redrawn"
    return done


__all__ = ["CONTAINERS", "forward_spans", "natural_blocks", "parameter_modules", "reinitialize"]
