"""Superposition toy models: when interference looks like inhibition (Hamblin et al. 2024, final section).

Two tiny networks of the form ``x -> hidden (Linear) -> relu -> out (Linear) -> out_relu`` whose Lucent
layer names are ``hidden``, ``relu``, ``out`` and ``out_relu``, so the same :func:`~lucent_inhibit.attribute`
that explains the vision models explains them (an output feature is ``Feature("out", unit=i)``, the
pre-ReLU output; attributions are taken at ``"relu"``, the hidden units):

- **absolute value** (``kind="abs"``): ``n`` sparse inputs, each non-zero with probability ``S`` and then
  uniform in [-1, 1]; targets ``|x_i|``. Each ``|x_i| = relu(x_i) + relu(-x_i)`` needs two ReLU units, so
  with ``2 n > m`` hidden units features must share units (superposition).
- **scaled XOR** (``kind="xor"``): ``n`` pairs of binary inputs (2 n inputs); a pair is active with
  probability ``S`` and its bits are then Bernoulli(``p``); target ``i`` is the XOR of pair ``i``.
- **exclusive absolute value** (``kind="exclusive"``): the absolute-value inputs with targets
  ``relu(|x_i| - sum_{j != i} |x_j|)``: output ``i`` must be *inhibited* by every other feature. Built by
  hand by :func:`inhibition_model` (``m = 2 n``, no superposition): its negative weights are there on
  purpose, a genuine inhibition mechanism.

The loss is the squared error weighted by importance ``decay ** i`` for output ``i``. :func:`train_toy`
trains several seeds and keeps the one with the lowest loss on a fixed evaluation set; :func:`analyze_toy`
attributes every output to the hidden units on inputs with exactly one and exactly two active features
and scores their tension; :func:`plot_superposition` shows that in the trained superposed model
two-feature inputs produce the MTI motif (large positive and negative attributions that cancel) through
interference alone, next to the hand-built model where the same motif is real inhibition.

Modules: :mod:`.model` (:class:`ToyConfig`, :class:`ToyModel`, its weight file :class:`ToySnapshot`),
:mod:`.data` (sparse data and probe inputs), :mod:`.training` (:func:`train_toy`, :class:`TrainResult`),
:mod:`.analysis` (:func:`analyze_toy`, :class:`ToyAnalysis`, :func:`inhibition_model`), :mod:`.control` (the
superposition finding's control: :func:`separated_model`, the task's exact solution without superposition, and
:func:`features_per_unit`), :mod:`.figures`
(:func:`plot_superposition`). Every result (:class:`ToySnapshot`, :class:`TrainResult`,
:class:`ToyAnalysis`) is a :class:`~lucent_inhibit.core.results.Result`: ``save(path)``, ``load(path)``,
``summary()``, ``plot(path)``; a saved model loads with :meth:`ToyModel.load` from either file kind.
"""
from __future__ import annotations

from .analysis import (ToyAnalysis, analyze_toy, inhibition_model, output_attributions, represented_features,
                       units_per_feature)
from .control import carried_features, features_per_unit, separated_model
from .data import abs_data, k_feature_inputs, sample, targets, xor_data
from .model import ATTRIBUTION_LAYER, FEATURE_LAYER, KINDS, ToyConfig, ToyModel, ToySnapshot, read_snapshot
from .superposition import plot_superposition
from .training import TrainResult, evaluate, train_toy, weighted_loss

# The names of the first release, still used by the command line, the demo report and the notebooks.
train = train_toy
analyze = analyze_toy

__all__ = [
    "ATTRIBUTION_LAYER", "FEATURE_LAYER", "KINDS", "ToyAnalysis", "ToyConfig", "ToyModel", "ToySnapshot",
    "TrainResult", "abs_data", "analyze", "analyze_toy", "carried_features", "evaluate", "features_per_unit", "inhibition_model", "k_feature_inputs",
    "output_attributions", "plot_superposition", "read_snapshot", "represented_features", "sample", "separated_model",
    "targets",
    "train", "train_toy", "units_per_feature", "weighted_loss", "xor_data",
]
