"""Forward passes with a layer's output replaced: what removing channels or elements means, shared by the
causal tests (:mod:`lucent_inhibit.causal`) and the microscope (:mod:`lucent_inhibit.microscope`).

:func:`forward_replaced` re-runs the model on images with one layer's output mapped by a function (in the
library's layout: maps (B, C, H, W) also where the model computes them channels-last, token layers (B, T, C))
and reads the feature; :func:`set_channels` is the map that sets some channels to a baseline, per image or
per block of images (one forward pass tries many removals).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch

from ..core.features import Feature, reading_feature
from ..core.hooks import capture
from ..core.layers import get_layer, model_device
from ..core.numerics import model_input
from ..core.preparation import preprocess_fn


def model_inputs(run, images: torch.Tensor) -> torch.Tensor:
    """``images`` (B, 3, H, W) in [0, 1] as the model of ``run`` (a dataset pass) takes them: on its device,
    preprocessed when the pass preprocesses."""
    x = images.to(model_device(run.model))
    return preprocess_fn(run.model)(x) if run.preprocess else x


def forward_replaced(run, images: Optional[torch.Tensor], feature: Feature, layer: str,
                     fn: Optional[Callable[[torch.Tensor], torch.Tensor]],
                     inputs: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B,) the feature on ``images`` (B, 3, H, W) in [0, 1] with ``layer``'s output replaced by
    ``fn(output)`` (None: unchanged), without gradients; the pass stops after the feature's layer. ``inputs``:
    the model's inputs (:func:`model_inputs` of the images) where the caller has them (``images`` unread)."""
    x = model_inputs(run, images) if inputs is None else inputs
    with torch.no_grad():
        acts = capture(run.model, x, [feature.layer], replace=None if fn is None else {layer: fn})
    return reading_feature(run.model, x, feature)(acts[feature.layer]).float().cpu()


def set_channels(output: torch.Tensor, channels: Sequence, base: torch.Tensor, block: Optional[int] = None,
                 copy: bool = True) -> torch.Tensor:
    """A copy of ``output`` (B, C, ...) or a token layer's (B, T, C) with channels set to ``base`` (a scalar,
    or shaped like one image's activation); ``copy=False`` writes into ``output`` itself (only for a tensor the
    caller owns, such as the rows a replayed layer gathers for the pass).

    ``block`` None: ``channels`` (a list of channel numbers) are set on every image. ``block`` b: image
    ``i`` loses channel ``channels[i // b]`` (an entry -1 removes nothing): ``len(channels) * b == B``, so
    one forward pass tries one removal per block of ``b`` images."""
    o = output.clone() if copy else output
    b = base.to(o.device, o.dtype).expand(o.shape[1:])
    axis = 2 if o.dim() == 3 else 1  # the channel axis: dim 1 of a map / linear layer, the last of tokens
    if block is None:
        ch = torch.as_tensor(np.asarray(channels, dtype=np.int64), device=o.device)
        if axis == 2:
            o[:, :, ch] = b[:, ch]
        else:
            o[:, ch] = b[ch]
        return o
    chs = [int(c) for c in channels]
    if len(chs) * int(block) != o.shape[0]:
        raise ValueError(f"set_channels: {len(chs)} removals x block {block} != batch {o.shape[0]}")
    for k, c in enumerate(chs):
        if c >= 0:
            rows = slice(k * block, (k + 1) * block)
            if axis == 2:
                o[rows, :, c] = b[:, c]
            else:
                o[rows, c] = b[c]
    return o


def channel_sums(h: torch.Tensor) -> torch.Tensor:
    """(B, C) each image's values summed per channel of ``h``: a map (B, C, H, W) over its positions, a token
    layer (B, T, C) over its tokens, a vector layer (B, C) as it is."""
    return h.sum(1) if h.dim() == 3 else h.flatten(2).sum(2) if h.dim() > 2 else h


def channel_means(h: torch.Tensor) -> torch.Tensor:
    """(B, C) each image's mean activation per channel of ``h``: a map (B, C, H, W) over its positions, a token
    layer (B, T, C) over its tokens, a vector layer (B, C) as it is."""
    return h.mean(1) if h.dim() == 3 else h.flatten(2).mean(2) if h.dim() > 2 else h


class PrefixReplay:
    """Inside :func:`replayed_prefix`: ``rows``, which recorded images the next forward pass holds, in its batch
    order (a (B,) index into the recorded batch; None: all of them, once); ``modules``, the Lucent names of the
    modules replayed."""

    def __init__(self, modules: Sequence[str]):
        self.rows: Optional[torch.Tensor] = None
        self.modules = list(modules)

    def output(self, recorded: torch.Tensor) -> torch.Tensor:
        """The rows of the pass from ``recorded`` (the layer's output on every recorded image): a new tensor
        when ``rows`` is set (gathered by advanced indexing, about 2x faster than ``index_select`` on CPU; a
        channels-last map stays channels-last, which the convolutions after it run about 1.2x faster on),
        ``recorded`` itself when not."""
        if self.rows is None:
            return recorded
        rows = self.rows.to(recorded.device)
        if recorded.dim() == 4 and recorded.is_contiguous(memory_format=torch.channels_last):
            return recorded.permute(0, 2, 3, 1)[rows].permute(0, 3, 1, 2)
        return recorded[rows]

    @property
    def active(self) -> bool:
        """Whether the passes skip anything (False: ``layer`` does not fit and the model runs as it is)."""
        return bool(self.modules)

    def placeholder(self, one: torch.Tensor) -> torch.Tensor:
        """``one``, a module's output on one image: what the code between the placeholders and the layer computes
        on (one image, not the pass's batch: its result is never read)."""
        return one


def _record_prefix(model, x: torch.Tensor, layer: str):
    """One no-grad pass on ``x`` that stops after ``layer``: per module (by Lucent name) its first call's
    ``(start, end)`` ticks and output, its number of calls, and the tick at which ``layer`` started."""
    from ..core.layers import StopForward, hooks_restored, layer_table

    spans, outputs, calls, clock = {}, {}, {}, [0]
    target = get_layer(model, layer)

    def pre(name, module):
        clock[0] += 1
        calls[id(module)] = calls.get(id(module), 0) + 1
        spans.setdefault(name, [clock[0], -1])

    def post(name, module, out):
        clock[0] += 1
        if spans[name][1] < 0:
            spans[name][1], outputs[name] = clock[0], out
        if module is target:
            raise StopForward

    table = layer_table(model)
    with hooks_restored(model), torch.no_grad():
        for name, module in table.items():
            module.register_forward_pre_hook(lambda m, i, n=name: pre(n, m))
            module.register_forward_hook(lambda m, i, o, n=name: post(n, m, o))
        try:
            model(x)
        except StopForward:
            pass
    start = spans[next(n for n, m in table.items() if m is target)][0]
    return table, spans, outputs, calls, start


def _prefix_modules(model, x: torch.Tensor, layer: str) -> Tuple[Optional[str], Dict[str, torch.Tensor]]:
    """``(layer's module name, prefix)``: prefix, the outermost modules that run wholly before ``layer`` starts,
    each once per pass with one tensor output: Lucent name -> that output on the first image of ``x``. ``(None,
    {})`` when ``layer`` itself does not fit (called twice before its end, or not one tensor)."""
    table, spans, outputs, calls, start = _record_prefix(model, x[:1], layer)

    def fits(n):
        out = outputs.get(n)
        return (calls.get(id(table[n])) == 1 and isinstance(out, torch.Tensor) and out.dim() >= 1
                and out.shape[0] == 1)

    name = next(n for n in spans if table[n] is get_layer(model, layer))
    if not fits(name):
        return None, {}
    fit = {n: outputs[n] for n, (s, e) in spans.items() if 0 <= e < start and fits(n)}
    inner = {n for n in fit for o in fit if o != n and spans[o][0] < spans[n][0] and spans[n][1] < spans[o][1]}
    return name, {n: out for n, out in fit.items() if n not in inner}


def layer_outputs(model, x: torch.Tensor, layer: str, batch_size: int) -> torch.Tensor:
    """``layer``'s output on ``x`` (the model's input, (U, ...)) as the model computes it (its own layout), in
    no-grad passes of ``batch_size`` images that stop at ``layer``. Images go in channels-last memory, as in the
    attribution passes (:func:`~lucent_inhibit.attribution.attribute.feature_graph`): the outputs read off a
    census and those computed here then differ only by float rounding (about 1e-7 relative)."""
    from ..core.layers import StopForward, hooks_restored

    parts = []
    x = model_input(model, x)

    def keep(m, i, o):
        parts.append(o.detach())
        raise StopForward

    with hooks_restored(model), torch.no_grad():
        get_layer(model, layer).register_forward_hook(keep)
        for start in range(0, len(x), batch_size):
            try:
                model(x[start:start + batch_size])
            except StopForward:
                pass
    return torch.cat(parts)


@contextlib.contextmanager
def replayed_prefix(model, x: torch.Tensor, layer: str, batch_size: int = 16,
                    recorded: Optional[torch.Tensor] = None) -> Iterator[PrefixReplay]:
    """Forward passes in the block skip the network before ``layer``: ``layer``'s module returns its output
    recorded on ``x`` (U, ...), rows ``replay.rows`` of it (set before each pass: the pass's input must be
    ``x[rows]``; when ``replay.active`` its values are not read, only its batch size), and the outermost modules
    that run wholly before it return, without computing, a placeholder: their output on ``x[0]``, one row, so
    that code between them and ``layer`` inside an enclosing module (a normalisation before an activation) costs
    one image.

    The layers after ``layer`` compute as usual, so passes that replace ``layer``'s output (removals) or
    differentiate from it (attribution) cost only the span from ``layer`` to the feature; the network before it
    runs once, on ``x`` (in passes of ``batch_size``), or not at all when ``recorded`` gives ``layer``'s output on
    ``x`` (U, ...) in the model's own layout (read off an earlier pass over the same images). Valid where
    ``layer`` is a cut before the feature (nothing before it reaches the feature but through it: the placeholders
    are only seen by code before ``layer``) and the modules are deterministic (eval mode). A model where ``layer``
    does not fit (called twice, no single tensor output) runs as it is; callers check one result against ordinary
    passes (the microscope does, on its first unit): code before ``layer`` that needs the batch's size fails
    there."""
    from ..core.layers import layer_table

    name, prefix = _prefix_modules(model, x, layer)
    if name is not None and recorded is None:
        recorded = layer_outputs(model, x, layer, batch_size)
    stubs = {} if name is None else {name: recorded, **prefix}
    table = layer_table(model)
    replay = PrefixReplay(list(stubs))
    saved = {n: table[n].__dict__.get("forward") for n in stubs}
    for n, out in stubs.items():
        table[n].forward = ((lambda *a, _o=out, **k: replay.output(_o)) if n == name
                            else (lambda *a, _o=out, **k: replay.placeholder(_o)))
    try:
        yield replay
    finally:
        for n, old in saved.items():
            if old is None:
                table[n].__dict__.pop("forward", None)
            else:
                table[n].forward = old
