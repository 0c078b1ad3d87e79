"""Sparse toy data: absolute value and scaled XOR inputs, their targets, and k-feature probe inputs.

Every generator takes ``generator``: a ``torch.Generator``, or an integer seed (``None`` means 0; at most
``validate.MAX_SEED``), so the same call always returns the same batch and the global RNG is never touched.
Batch sizes and counts are integers in [1, ``validate.MAX_IMAGES``].
"""
from __future__ import annotations

from typing import Tuple

import torch

from ..core.validate import MAX_IMAGES, MAX_SEED, check_int
from .model import ToyConfig


def as_generator(seed_or_gen) -> torch.Generator:
    """``seed_or_gen`` if it is a ``torch.Generator``, else a new one seeded with it (an integer >= 0)."""
    if isinstance(seed_or_gen, torch.Generator):
        return seed_or_gen
    return torch.Generator().manual_seed(check_int("generator (seed)", seed_or_gen or 0, 0, MAX_SEED))


def abs_data(batch: int, n: int, S: float, generator=0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sparse inputs (batch, n): each feature non-zero with probability ``S``, then uniform in [-1, 1].

    Returns ``(x, |x|)``, both (batch, n).
    """
    config = ToyConfig("abs", n=n, m=1, S=S)
    batch = check_int("batch", batch, 1, MAX_IMAGES)
    g = as_generator(generator)
    active = torch.rand(batch, config.n, generator=g) < config.S
    x = (torch.rand(batch, config.n, generator=g) * 2 - 1) * active
    return x, x.abs()


def xor_data(batch: int, n: int, S: float, p: float = 0.5, generator=0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Binary inputs (batch, 2 n) in pairs; a pair is active with probability ``S`` and its two bits are
    then Bernoulli(``p``). Returns ``(x, y)`` with ``y`` (batch, n) the XOR of each pair."""
    config = ToyConfig("xor", n=n, m=1, S=S, p=p)
    batch = check_int("batch", batch, 1, MAX_IMAGES)
    g = as_generator(generator)
    bits = (torch.rand(batch, config.n, 2, generator=g) < config.p).float()
    active = (torch.rand(batch, config.n, 1, generator=g) < config.S).float()
    pairs = bits * active
    return pairs.reshape(batch, 2 * config.n), (pairs.sum(2) % 2)


def targets(config: ToyConfig, x: torch.Tensor) -> torch.Tensor:
    """The target (B, n) of ``config.kind`` for inputs ``x`` (B, n_inputs)."""
    if config.kind == "xor":
        return x.reshape(x.shape[0], config.n, 2).sum(2).remainder(2)
    a = x.abs()
    if config.kind == "abs":
        return a
    return (2 * a - a.sum(1, keepdim=True)).clamp(min=0)  # |x_i| - sum_{j != i} |x_j|


def sample(config: ToyConfig, batch: int, generator=0) -> Tuple[torch.Tensor, torch.Tensor]:
    """A training batch ``(x, y)`` for ``config``: x (batch, n_inputs), y (batch, n)."""
    if config.kind == "xor":
        return xor_data(batch, config.n, config.S, config.p, generator)
    x, _ = abs_data(batch, config.n, config.S, generator)
    return x, targets(config, x)


def k_feature_inputs(config: ToyConfig, k: int, count: int, generator=0) -> Tuple[torch.Tensor, torch.Tensor]:
    """``count`` inputs with exactly ``k`` active features (pairs, for xor), chosen uniformly.

    Active values are uniform in [-1, 1] with ``|x| >= 0.25`` (abs, exclusive) or a non-zero bit pattern
    (xor). Returns ``(x, active)``: x (count, n_inputs) and ``active`` (count, n) boolean.
    """
    k = check_int("k (active features)", k, low=1, high=config.n)
    count = check_int("count", count, 1, MAX_IMAGES)
    g = as_generator(generator)
    order = torch.rand(count, config.n, generator=g).argsort(1)
    active = torch.zeros(count, config.n, dtype=torch.bool)
    active.scatter_(1, order[:, :k], True)
    if config.kind == "xor":
        patterns = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
        idx = torch.randint(0, 3, (count, config.n), generator=g)
        pairs = patterns[idx] * active[..., None]
        return pairs.reshape(count, 2 * config.n), active
    mag = 0.25 + 0.75 * torch.rand(count, config.n, generator=g)
    sign = torch.where(torch.rand(count, config.n, generator=g) < 0.5, -1.0, 1.0)
    return mag * sign * active, active
