"""The control of the superposition finding: the same task with enough hidden units to need no superposition.

Hamblin et al. 2024 (final section) argue that interference in superposition produces the MTI motif (large
excitation and inhibition that cancel) with no inhibition mechanism. A reviewer needs the other half of the
argument: the same inputs through a model of the same task whose hidden units are *not* shared must not show
the motif. Absolute value and XOR each have an exact solution with two ReLU units per feature
(``|x| = relu(x) + relu(-x)``; for bits ``a xor b = relu(a - b) + relu(b - a)``), so ``m = 2 n`` is enough
and :func:`separated_model` builds that solution (zero loss, each hidden unit carrying one feature).

The control is built rather than trained: at the papers' sparsity (S = 0.01) two features are rarely active
together, so sharing a unit costs almost no loss and trained models keep sharing units even with four times
the units the task needs (measured with :func:`features_per_unit` on ``abs``, n = 6: m = 12 and m = 24 trained
models still carry 2 to 3 features on most units). A trained wide model is therefore not a model without
superposition; the exact solution is.
"""
from __future__ import annotations

import torch

from .model import MAX_WIDTH, ToyConfig, ToyModel

#: A hidden unit carries feature ``i`` when its contribution to output ``i`` on an input with feature ``i`` alone
#: active is more than this fraction of the summed |contributions| to that output (see :func:`features_per_unit`).
CARRY_FRACTION = 0.1


def separated_model(config: ToyConfig) -> ToyModel:
    """The exact no-superposition solution of ``config``'s task with ``m = 2 n`` hidden units: units ``2i`` and
    ``2i + 1`` compute ``relu(x_i)`` and ``relu(-x_i)`` (abs) or ``relu(a_i - b_i)`` and ``relu(b_i - a_i)`` of
    pair ``i = (a_i, b_i)`` (xor), and output ``i`` adds its own two units only. ``ValueError`` for the
    ``"exclusive"`` kind, whose targets need inhibition between features (:func:`inhibition_model`)."""
    if not isinstance(config, ToyConfig):
        raise TypeError(f"config must be a ToyConfig, got {type(config).__name__}")
    if config.kind not in ("abs", "xor"):
        raise ValueError(f"separated_model builds the no-superposition solution of 'abs' or 'xor', got kind "
                         f"{config.kind!r} (its targets need inhibition between features)")
    if 2 * config.n > MAX_WIDTH:
        raise ValueError(f"separated_model needs m = 2 n <= {MAX_WIDTH} hidden units, got n={config.n}")
    n = config.n
    wide = ToyConfig(config.kind, n=n, m=2 * n, S=config.S, decay=config.decay, p=config.p)
    model = ToyModel(wide, seed=0)
    w1 = torch.zeros(2 * n, wide.n_inputs)
    w2 = torch.zeros(n, 2 * n)
    for i in range(n):
        a, b = (i, i) if config.kind == "abs" else (2 * i, 2 * i + 1)
        if config.kind == "abs":
            w1[2 * i, a], w1[2 * i + 1, a] = 1.0, -1.0
        else:
            w1[2 * i, a], w1[2 * i, b], w1[2 * i + 1, a], w1[2 * i + 1, b] = 1.0, -1.0, -1.0, 1.0
        w2[i, 2 * i: 2 * i + 2] = 1.0
    with torch.no_grad():
        model.hidden.weight.copy_(w1)
        model.hidden.bias.zero_()
        model.out.weight.copy_(w2)
        model.out.bias.zero_()
    return model.eval()


def _one_feature_inputs(config: ToyConfig) -> torch.Tensor:
    """(n, 2, n_inputs): the two inputs with feature ``i`` alone active (abs: ``x_i = +1, -1``; xor: pair ``i``
    = 10 and 01)."""
    x = torch.zeros(config.n, 2, config.n_inputs)
    for i in range(config.n):
        if config.kind == "xor":
            x[i, 0, 2 * i], x[i, 1, 2 * i + 1] = 1.0, 1.0
        else:
            x[i, 0, i], x[i, 1, i] = 1.0, -1.0
    return x


def carried_features(model: ToyModel, fraction: float = CARRY_FRACTION) -> torch.Tensor:
    """(n, m) boolean: does hidden unit ``u`` carry feature ``i``, i.e. contribute more than ``fraction`` of the
    summed |contributions| to output ``i`` on one of the inputs with feature ``i`` alone active?"""
    if not isinstance(model, ToyModel):
        raise TypeError(f"model must be a ToyModel, got {type(model).__name__}")
    x = _one_feature_inputs(model.config)
    with torch.no_grad():
        hidden = model.relu(model.hidden(x))  # (n, 2, m)
        w_out = model.out.weight  # (n, m)
        contrib = (hidden * w_out[:, None, :]).abs()  # output i's contributions on its own inputs
    share = contrib / contrib.sum(-1, keepdim=True).clamp_min(1e-12)
    return (share > fraction).any(1)


def features_per_unit(model: ToyModel, fraction: float = CARRY_FRACTION) -> torch.Tensor:
    """(m,) how many features each hidden unit carries (:func:`carried_features`): a model is free of
    superposition when no unit carries more than one."""
    return carried_features(model, fraction).sum(0)
