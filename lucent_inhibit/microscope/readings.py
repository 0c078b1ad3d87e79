"""What the microscope reads off its census's forward passes (``on_batch`` of
:func:`~lucent_inhibit.layer_census`) instead of running the network over the images again:

- every image's mean activation per channel of the feature and attribution layers (the shown channels' top
  images, :func:`~lucent_inhibit.microscope.visuals.top_images`);
- the attribution layer's output on the images, up to :data:`KEEP_BYTES` (the recorded start of the passes
  replayed on the units' MTIs, :func:`~lucent_inhibit.attribution.interventions.replayed_prefix`).

A census resumed from a checkpoint, or one rank's shard under torchrun, passes only the batches it computed:
the callers compute what is missing, for those images only.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import torch

from ..attribution.interventions import channel_means, layer_outputs
from ..core.layouts import Layout

#: bytes of attribution-layer outputs kept from the census (about 1,300 images of EfficientNet-Lite0's
#: ``blocks_4_0_bn2_act`` at 224 px); images past it are recomputed for the replay
KEEP_BYTES = 512 * 2 ** 20


class CensusReadings:
    """The ``on_batch`` reader of one census whose attribution layer is ``attr``: ``means`` (layer -> {dataset
    index -> (C,) float64 mean activation per channel}) and ``outputs`` (dataset index -> ``attr``'s output on
    that image, in the model's own layout (``layout.raw``), on the CPU), the latter up to ``budget`` bytes."""

    def __init__(self, attr: str, layout: Optional[Layout], budget: int = KEEP_BYTES):
        self.attr, self.layout, self.budget, self.used = attr, layout, int(budget), 0
        self.means: Dict[str, Dict[int, np.ndarray]] = {}
        self.outputs: Dict[int, torch.Tensor] = {}

    def __call__(self, indices: np.ndarray, acts: Dict[str, torch.Tensor]) -> None:
        keys = [int(i) for i in indices]
        for layer, act in acts.items():
            rows = channel_means(act.float()).cpu().numpy().astype(np.float64)
            self.means.setdefault(layer, {}).update(zip(keys, rows))
        out = acts.get(self.attr)
        if out is None or self.used + out.numel() * out.element_size() > self.budget:
            return
        raw = (out if self.layout is None else self.layout.raw(out)).cpu()
        self.outputs.update(zip(keys, raw))
        self.used += out.numel() * out.element_size()


def recorded_outputs(model, x: torch.Tensor, indices: Sequence[int], layer: str, kept: Dict[int, torch.Tensor],
                     batch_size: int) -> torch.Tensor:
    """``layer``'s output (U, ...) on the model inputs ``x`` (U, ...) of the dataset images ``indices`` (U,), in
    the model's own layout and memory order (as the census or the model computed it): the ``kept`` ones
    (dataset index -> output) as they are, the others computed
    (:func:`~lucent_inhibit.attribution.interventions.layer_outputs`, for those images only)."""
    missing = [k for k, i in enumerate(indices) if int(i) not in kept]
    fresh = layer_outputs(model, x[missing], layer, batch_size) if missing else None
    if fresh is not None and len(missing) == len(indices):
        return fresh
    rows = [kept.get(int(i)) for i in indices]
    for k, row in zip(missing, [] if fresh is None else fresh):
        rows[k] = row
    return stack_as_computed(rows).to(x.device)


def stack_as_computed(rows: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.stack(rows)`` in the rows' own memory order (``torch.stack`` lays it out row-major): the rows of a
    map computed channels-last stay channels-last, which the convolutions after the layer run about 1.2x
    faster on."""
    order = sorted(range(rows[0].dim()), key=lambda d: -rows[0].stride(d))
    back = [0] + [1 + order.index(d) for d in range(rows[0].dim())]
    return torch.stack([r.permute(*order) for r in rows]).permute(*back)
