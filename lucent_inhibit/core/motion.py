"""Renders that did not move, named: measured once per render by the render engine
(:func:`lucent_inhibit.core.rendering.run_render`), carried into every result that holds renders and marked
in their figures (:func:`lucent_inhibit.core.figures.mark_still`).

A render moved when both of its measures clear their floor:

- its image change: the RMS over pixels and channels of ``final - start``, both images in [0, 1] (the
  start is the parameterisation's image before the first step: noise, or the seed image);
- its objective's gain: ``(last - first) / scale`` of the objective's per-step values, ``scale`` the largest
  ``|value|`` of the run (so the gain is at most 2 and unitless); one value for all images of a render whose
  objective is one sum over the batch, per image where the objective records each image's part
  (``"objective/<i>"`` in the render's history).

A render whose objective has no gradient (a channel silent everywhere on the start image: Adam's update is
then exactly 0) keeps its start image: change 0, gain 0. A render that ends flat grey from Lucent's near-grey
start noise changes little (RMS about 0.03) and its objective does not rise: the gain names it. The floors
sit far under what renders that do move reach: Lucent's ``channel`` objective on units 0-5 of
``blocks_4_0_bn3_drop`` and of ``blocks_4_0_bn2_act`` of the embedded EfficientNet-Lite0 (64 px, 32 steps,
Lucent's image parameterisation and transforms) moved by RMS 0.071-0.127 with gains 0.38-0.95.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

#: Floor of the image change: RMS of (final - start) over pixels and channels, in [0, 1] pixel units.
MIN_IMAGE_CHANGE = 0.005
#: Floor of the objective's gain: (last - first objective value) / the largest |objective value| of the run.
MIN_OBJECTIVE_GAIN = 0.01


class StillRenderWarning(UserWarning):
    """A render's image or objective barely changed over the optimisation (see :mod:`lucent_inhibit.core.motion`)."""


@dataclass
class Motion:
    """How far each image of one render moved.

    Attributes:
        change: (B,) float32 RMS of (final - start) image, [0, 1] pixel units.
        gain: (B,) float32 the objective's (last - first) / max |value| (the render's one objective for every
            image, or each image's own part when the history records it).
    """

    change: torch.Tensor
    gain: torch.Tensor

    @property
    def moved(self) -> torch.Tensor:
        """(B,) bool: both measures at or above their floors (:data:`MIN_IMAGE_CHANGE`, :data:`MIN_OBJECTIVE_GAIN`)."""
        return (self.change >= MIN_IMAGE_CHANGE) & (self.gain >= MIN_OBJECTIVE_GAIN)

    def table(self) -> torch.Tensor:
        """(B, 2) float32 ``[change, gain]`` per image, as results store it (``motion`` fields)."""
        return torch.stack([self.change, self.gain], 1).float()

    def take(self, index) -> "Motion":
        """The images ``index`` (a slice, index tensor or list) of this render."""
        return Motion(self.change[index], self.gain[index])


def relative_gain(values: Sequence[float]) -> float:
    """``(last - first) / max |value|`` of an objective's per-step values (0 for fewer than two values or an
    objective that stayed 0)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2 or not np.all(np.isfinite(v)):
        return 0.0
    scale = float(np.abs(v).max())
    return float((v[-1] - v[0]) / scale) if scale > 0 else 0.0


def measure_motion(start: torch.Tensor, final: torch.Tensor, history: Dict[str, List[float]]) -> Motion:
    """:class:`Motion` of a render from its start and final images (B, 3, H, W) in [0, 1] and its per-step
    history (``"objective"``, and ``"objective/<i>"`` for image ``i`` where recorded)."""
    diff = (final.detach().float().cpu() - start.detach().float().cpu().to(final.dtype))
    change = diff.pow(2).flatten(1).mean(1).sqrt()
    overall = relative_gain(history.get("objective", []))
    gain = torch.tensor([relative_gain(history[f"objective/{i}"]) if f"objective/{i}" in history else overall
                         for i in range(change.shape[0])], dtype=torch.float32)
    return Motion(change.float(), gain)


def describe_motion(change: float, gain: float) -> str:
    """``"change 0.0003 (floor 0.005), gain 0.000 (floor 0.01)"``: one image's measures against the floors."""
    return (f"RMS change {change:.2g} (floor {MIN_IMAGE_CHANGE:g}), objective gain {gain:.2g} "
            f"(floor {MIN_OBJECTIVE_GAIN:g})")


def short_motion(change: float, gain: float) -> str:
    """``"change 0.0003, gain 0"``: the measures, short enough for a figure panel."""
    return f"change {change:.2g}\ngain {gain:.2g}"


def warn_still(what: str, motion: Motion, labels: Optional[Sequence[str]] = None) -> None:
    """One :class:`StillRenderWarning` naming every image of the render ``what`` that did not move (``labels``
    name the images, default ``"image i"``), with its measures."""
    still = torch.nonzero(~motion.moved).flatten().tolist()
    if not still:
        return
    names = list(labels) if labels is not None else [f"image {i}" for i in range(motion.change.shape[0])]
    shown = "; ".join(f"{names[i]}: {describe_motion(float(motion.change[i]), float(motion.gain[i]))}"
                      for i in still[:8])
    more = f"; and {len(still) - 8} more" if len(still) > 8 else ""
    warnings.warn(f"{what}: {len(still)} of {len(names)} render(s) did not move: {shown}{more}",
                  StillRenderWarning, stacklevel=3)


def motion_fields(motion: Optional[Motion]):
    """``(moved (B,) bool, motion (B, 2) float32)`` of a result, or ``(None, None)`` without a measurement."""
    if motion is None:
        return None, None
    return motion.moved.clone(), motion.table()


def still_reason(change: float, gain: float) -> str:
    """Why a render counts as not moved, in a few words for a figure panel, with its numbers: a flat render
    (its image kept its start: no gradient reached it) or an objective that did not rise."""
    if change < MIN_IMAGE_CHANGE:
        return f"flat render: no gradient\nreached the image\n(RMS change {change:.2g})"
    return f"objective did not rise\n(gain {gain:.2g})"
