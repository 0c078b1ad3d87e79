"""Objectives for Lucent's render loop (``lucent.optvis.render.render_vis``).

Every factory here returns a Lucent :class:`~lucent.optvis.objectives.Objective`: it composes with
Lucent's own objectives through ``+``, ``-`` and ``*``, takes ``batch=`` like Lucent's, and returns a
*loss* (the negative of the quantity it maximises), as Lucent's objectives do. Inside the render loop
the objective receives Lucent's hook ``T``: ``T(layer)`` is that layer's activation for the batch.

- :mod:`.cosdots`: the cosdot family (paper 004): :func:`cosdot_value`, :func:`cosdot`,
  :func:`spatial_cosdot`, :func:`feature_pair` (with :func:`pair_targets`, :func:`pair_values`), the plain
  :func:`feature` objective, :func:`crop_box` and :func:`layer_mask`; :func:`check_power` and
  :data:`MAX_POWER`, the accepted range of every cosine exponent;
- :mod:`.attribution`: objectives on ``S = grad_h f * h`` (Hamblin et al. 2024): :func:`tense`,
  :func:`signed_attribution_scores`, :func:`signed_parts`, :func:`signed_attribution`,
  :func:`attribution_mask`, and the accentuation seed regularizer :func:`seed_l2` (paper 003);
- :mod:`.views`: :class:`BatchView` and :func:`resolve_hook`, to evaluate any objective on part of a batch.
"""
from lucent.optvis.objectives import handle_batch, wrap_objective

from ...attribution.totals import signed_totals, tension
from ...core.features import Feature, as_feature
from ...core.validate import MAX_POWER
from .attribution import (TENSE_MODES, attribution_mask, seed_l2, signed_attribution, signed_attribution_scores,
                          signed_parts, tense)
from .cosdots import (as_target, check_power, cosdot, cosdot_value, crop_box, feature, feature_pair, layer_mask,
                      pair_targets, pair_values, spatial_cosdot)
from .views import BatchView, resolve_hook

__all__ = [
    "BatchView", "Feature", "MAX_POWER", "TENSE_MODES", "as_feature", "as_target", "attribution_mask", "check_power",
    "cosdot", "cosdot_value",
    "crop_box", "feature", "feature_pair", "handle_batch", "layer_mask", "pair_targets", "pair_values",
    "resolve_hook", "seed_l2", "signed_attribution", "signed_attribution_scores", "signed_parts", "signed_totals",
    "spatial_cosdot", "tense", "tension", "wrap_objective",
]
