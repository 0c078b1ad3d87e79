"""Layers and hooks: the one place that names layers, reads their tensors and cleans up after itself.

Layer names follow Lucent's convention (module paths joined with ``_``, as ``render_vis``'s hook names
them), so a name valid here is valid in ``lucent.optvis.objectives``. Every stage of the library reads
layer tensors through :func:`capture` (or, inside the render loop, through Lucent's hook while
:func:`~lucent_inhibit.core.layers.hooks_restored` cleans up), so one name always means one tensor:

- a module that runs more than once per forward pass (torchvision ResNet's ``relu``) has no single
  tensor: such names are refused with the list of usable neighbours (:func:`check_single_call`);
- :func:`capture` stops the forward pass right after the deepest layer it needs (:class:`StopForward`);
- every hook added is removed again, also when the forward pass raises.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .layers import (StopForward, check_layer_names, check_name, frozen_weights, layer_names,
                     layer_table)
from .layouts import Layout
from .probe import check_single_call, deepest, probed
from .validate import InputError


def output_shapes(model: nn.Module, x: torch.Tensor, names: Sequence[str]) -> Dict[str, torch.Tensor]:
    """``capture(model, x[:1], names)`` as shapes only: each layer's output on one image, as an empty
    ``meta`` tensor of its shape, read off the forward-order probe (no forward pass once it exists). Names
    the probe cannot answer (unknown, failing, non-tensor outputs, rows that are not the image) go through
    :func:`capture`, whose error says what is wrong."""
    names = layer_names(names)
    check_single_call(model, x, [n for n in names if n != "input"])
    shapes = dict(probed(model, x).shapes, input=tuple(x[:1].shape))
    if not all(n in shapes and shapes[n][:1] == (1,) for n in names):  # rows that are not the image: refused
        with torch.no_grad():
            return capture(model, x[:1], names)
    layouts = probed(model, x).layouts
    for n in names:
        if n in layouts:
            layouts[n].check(n, shapes[n])
    return {n: layouts[n].canonical(torch.empty(shapes[n], device="meta")) if n in layouts
            else torch.empty(shapes[n], device="meta") for n in names}


# ------------------------------------------------------------------------------------------------
# capture
# ------------------------------------------------------------------------------------------------
def capture(
    model: nn.Module,
    x: torch.Tensor,
    names: Sequence[str],
    stop_at: Optional[str] = None,
    replace: Optional[Dict[str, Callable[[torch.Tensor], torch.Tensor]]] = None,
    any_layout: bool = False,
) -> Dict[str, torch.Tensor]:
    """Run ``model(x)`` and return the outputs of the named Lucent layers, in the library's layouts.

    Args:
        x: the model input (already normalised); ``"input"`` in ``names`` returns ``x`` itself.
        names: layers to read; each must run exactly once per forward pass.
        stop_at: end the forward pass as soon as this layer's output exists (default: the deepest of
            ``names``); ``stop_at=False`` runs the whole model.
        replace: layer -> function mapping its output to a replacement (integrated gradients,
            disinhibition), applied before later layers see it (in the library's layout, like the outputs).
        any_layout: also return outputs whose channel axis is unknown, as the model computes them (for
            callers that read no channel, e.g. :func:`separates`); else they raise
            :class:`~lucent_inhibit.core.layouts.LayoutError`.

    Returns:
        layer -> tensor; a layer that runs after ``stop_at`` is absent. Maps are (B, C, H, W) also where the
        model computes them channels-last (a permuted view: :mod:`lucent_inhibit.core.layouts`).
    """
    names, replace = _capture_arguments(x, names, stop_at, replace)
    wanted = [n for n in dict.fromkeys(names + list(replace)) if n != "input"]
    if stop_at:
        wanted = list(dict.fromkeys(wanted + [stop_at]))
    table = layer_table(model)
    check_layer_names(model, wanted, table=table)
    check_single_call(model, x, wanted)
    if stop_at is None:
        stop_at = deepest(model, x, wanted)
    layouts = _read_layouts(model, x, names, any_layout)
    acts: Dict[str, torch.Tensor] = {"input": x} if "input" in names else {}
    handles = []  # its own hooks, removed by handle (a whole-model hooks_restored costs ~2 ms a pass)
    try:
        for n in wanted:
            handles.append(table[n].register_forward_hook(
                _reader(n, acts, replace.get(n), n == stop_at, x, layouts.get(n))))
        try:
            model(x)
        except StopForward:
            pass
        except RuntimeError as exc:
            _reraise_if_missing(exc, x, [n for n in wanted if n not in acts])
    finally:
        for h in handles:
            h.remove()
    return acts


def _read_layouts(model: nn.Module, x: torch.Tensor, names: Sequence[str], any_layout: bool) -> Dict[str, Layout]:
    """The layouts of the layers read (readable ones only with ``any_layout``); ``LayoutError`` for a name in
    ``names`` whose channel axis is unknown."""
    layouts = dict(probed(model, x).layouts) if x.dim() == 4 else {}
    for n in names:
        layout = layouts.get(n)
        if layout is not None and not layout.readable:
            if not any_layout:
                layout.check(n, probed(model, x).shapes[n])
            layouts.pop(n)
    return layouts


def _capture_arguments(x, names, stop_at, replace) -> Tuple[List[str], Dict[str, Callable]]:
    """``(names as a list, replace as a dict)``, else ``ValueError`` naming the bad argument."""
    if not torch.is_tensor(x) or x.dim() == 0:
        raise InputError(f"x must be a batch tensor (B, ...) (the model input), got {_what(x)}")
    if stop_at not in (None, False):
        check_name(stop_at, "stop_at")
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


def _reader(name: str, acts: dict, replace, stop: bool, x: torch.Tensor, layout: Optional[Layout]):
    def hook(module, inputs, output):
        if not torch.is_tensor(output):
            raise TypeError(f"layer {name!r} returns {type(output).__name__}, not a tensor; pick another layer")
        check_rows(name, output, x)
        view = output if layout is None else layout.canonical(output)  # (B, C, H, W) also when computed NHWC
        if replace is not None:
            view = replace(view)
        acts[name] = view
        if stop:
            raise StopForward
        # the rest of the network runs on a copy of the view, in the model's own layout: in-place ops after the
        # layer (ResNet's `out += identity`) must not change the tensor returned, and autograd flows through it
        back = view if layout is None else layout.raw(view)
        return back if replace is not None else back.clone()

    return hook


def check_rows(name: str, output: torch.Tensor, x: torch.Tensor) -> None:
    """``ValueError`` when a layer's rows are not the batch's images (windows, groups, another input size)."""
    if not output.dim() or output.shape[0] == x.shape[0]:
        return
    rows, batch, px = int(output.shape[0]), int(x.shape[0]), "x".join(map(str, x.shape[2:]))
    why = (f"it computes on {rows // batch} windows or groups of each image (e.g. a Swin block's window attention: "
           "read the block or stage around it) or reshapes a map defined at another input size (InceptionV1's "
           "logits: exactly 224 px)" if rows > batch and rows % batch == 0 else
           "this model's layer is defined at another input size (InceptionV1's logits: exactly 224 px)")
    raise ValueError(f"layer {name!r} returned {rows} rows for a batch of {batch} images at {px} px, so its rows are "
                     f"not the images: {why}")


def protect_outputs(model: nn.Module, names: Sequence[str]) -> None:
    """Make the rest of the network run on a copy of these layers' outputs, so that in-place operations
    after them (ResNet's ``out += identity``) do not change what a hook stored. Call inside
    :func:`~lucent_inhibit.core.layers.hooks_restored` (the render session does so from the second step on)."""
    table = layer_table(model)
    for n in names:
        table[n].register_forward_hook(lambda m, i, o: o.clone() if torch.is_tensor(o) else None)


def separates(model: nn.Module, x: torch.Tensor, layer: str, target: str) -> bool:
    """Whether ``layer`` is a cut between the input and ``target``: every path into ``target`` passes through it.

    Checked on the autograd graph, not on values: with ``x`` (B, 3, H, W) requiring grad, the parameters
    not, and ``layer``'s output detached, ``target``'s output must no longer depend on ``x`` (then it is a
    function of ``layer`` alone, as attribution at ``layer`` needs to add up to a feature of ``target``). A dead
    layer (nothing reads it), a side branch, or a residual branch however small (ConvNeXt's layer scale starts
    at 1e-6) is not a cut. Parameters' ``requires_grad`` flags are restored.
    """
    with frozen_weights(model), torch.enable_grad():
        out = capture(model, x.detach().requires_grad_(True), [target], replace={layer: torch.Tensor.detach},
                      any_layout=True)
    return not out[target].requires_grad

