"""Feature visualizations of channels: Lucent's ``channel`` objective for every layout (:func:`layer_channel`:
a map's channel averaged over positions, a token layer's last dim averaged over tokens) and many channels of one
layer rendered together, one batch item each, in one :func:`~lucent_inhibit.core.rendering.run_render` call
(:func:`visualize_channels`; Olah et al. 2017, "Feature Visualization", the channel objective). Used by the
inhibitor dictionary and the microscope.
"""
from __future__ import annotations

from typing import Optional

from lucent.optvis.objectives import wrap_objective
from torch import nn

from ..core.rendering import Parts, RenderRun, rng_restored, run_render
from ..core.settings import RenderSettings, as_settings
from .objectives.views import layer_tensor


@wrap_objective()
def layer_channel(layer: str, n_channel: int, batch=None):
    """Lucent's ``channel`` objective (minus the channel's mean activation) that also reads a token layer
    (B, T, C): there the channel is the last dim, averaged over every token."""

    def inner(T):
        h = layer_tensor(T, layer) if batch is None else layer_tensor(T, layer)[batch:batch + 1]
        return -(h[..., n_channel] if h.dim() == 3 else h[:, n_channel]).mean()

    return inner


def visualize_channels(model: nn.Module, layer: str, channels, render: Optional[RenderSettings],
                       what: Optional[str] = None) -> RenderRun:
    """Renders of :func:`layer_channel` (Lucent's ``channel(layer, c)``), one batch item per channel, in one
    :func:`~lucent_inhibit.core.rendering.run_render` call (``param`` None -> Lucent's ``param.image``; size
    default 96 px): ``images`` (m, 3, H, W) in [0, 1], and ``motion`` per channel (its image's change and its
    own objective's gain, each channel's mean activation recorded per step as ``"objective/<i>"``). ``what`` names
    the render in messages (default: "channels of <layer>")."""
    from .param import build

    settings = as_settings(render)
    parts = [layer_channel(layer, int(c), batch=i) for i, c in enumerate(channels)]

    def objective(T):
        losses = [part(T) for part in parts]
        total = sum(losses[1:], losses[0])
        return total, {"objective": -total.detach(), **{f"objective/{i}": -v.detach() for i, v in enumerate(losses)}}

    with rng_restored(settings.seed):  # the starting noise too is the seed's (reproducible, resumable)
        params = build(settings.param or "lucent", settings.hw(96), batch=len(channels))
    return run_render(model, Parts(objective), params, settings, what or f"channels of {layer}",
                      labels=[f"channel {int(c)}" for c in channels])
