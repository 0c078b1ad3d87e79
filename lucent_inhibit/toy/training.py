"""Training toy models: importance-weighted squared error, Adam with a cosine schedule, several seeds.

The loss is ``sum_i decay**i (pred_i - y_i)^2`` averaged over the batch (Elhage et al. 2022, "Toy Models
of Superposition"). :func:`train_toy` trains one model per seed, discards seeds whose loss becomes NaN or
infinite (with a warning naming the seed, the step and the learning rate; :class:`NonFiniteLoss` when every
seed diverges) and keeps the one with the lowest loss on a fixed evaluation set.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch

from ..core.rendering import NonFiniteLoss
from ..core.results import Result
from ..core.validate import MAX_IMAGES, MAX_SEED, MAX_STEPS, check_int, check_number
from .data import sample
from .model import ToyConfig, ToyModel, ToySnapshot


def weighted_loss(pred: torch.Tensor, y: torch.Tensor, importance: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``sum_i importance_i (pred_i - y_i)^2``; pred, y (B, n), importance (n,)."""
    return ((pred - y) ** 2 * importance).sum(1).mean()


@dataclass
class TrainResult(Result):
    """Result of :func:`train_toy`: the best model and what every seed reached.

    Attributes:
        model: the best :class:`ToyModel` (lowest evaluation loss), in eval mode (stored as a
            :class:`ToySnapshot`).
        seeds: the seeds that trained to a finite loss; ``losses`` (same length): each one's evaluation loss.
        best_seed: the seed of ``model``.
        loss: ``model``'s importance-weighted loss on the evaluation set.
        zero_loss: the loss of the trivial all-zero predictor on the same set.
        steps, batch_size, lr: training settings.
        diverged: the discarded seeds, ``[{"seed": s, "step": k}]`` (the loss was not finite at step k,
            counted from 1; ``k = steps + 1`` for a non-finite evaluation loss).
    """

    model: ToyModel
    seeds: List[int]
    losses: List[float]
    best_seed: int
    loss: float
    zero_loss: float
    steps: int
    batch_size: int
    lr: float
    diverged: List[dict] = field(default_factory=list)

    def _encode(self):
        return Result._encode(dataclasses.replace(self, model=self.model.snapshot()))

    @classmethod
    def _decode(cls, arrays, fields):
        held = super()._decode(arrays, fields)  # its model field holds the ToySnapshot
        if not isinstance(held.model, ToySnapshot):
            raise TypeError(f"the model field holds a {type(held.model).__name__}, expected a ToySnapshot")
        held.model = held.model.to_model()
        return held

    def summary(self) -> dict:
        return {
            "config": self.model.config.to_dict(),
            "seeds": self.seeds,
            "losses": self.losses,
            "best_seed": self.best_seed,
            "loss": self.loss,
            "zero_loss": self.zero_loss,
            "loss_ratio": self.loss / self.zero_loss if self.zero_loss > 0 else float("nan"),
            "steps": self.steps,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "diverged": self.diverged,
        }

    def plot(self, path=None, ax=None, **style):
        """Evaluation loss per seed against the all-zero predictor, and the best model's weights;
        returns the Figure (a PNG at ``path`` when given)."""
        from .figures import plot_training

        return plot_training(self, path, ax, **style)


def evaluate(model: ToyModel, batch: int = 100_000, generator=12345) -> Tuple[float, float]:
    """``(loss, zero_loss)``: the model's importance-weighted loss on ``batch`` fresh samples and that of
    the all-zero predictor on the same samples."""
    if not isinstance(model, ToyModel):
        raise TypeError(f"model must be a ToyModel, got {type(model).__name__}")
    config = model.config
    x, y = sample(config, batch, generator)
    imp = config.importance
    with torch.no_grad():
        loss = float(weighted_loss(model(x), y, imp))
    return loss, float(weighted_loss(torch.zeros_like(y), y, imp))


def train_toy(
    config: ToyConfig = ToyConfig(),
    steps: int = 3000,
    seeds: Sequence[int] = tuple(range(5)),
    batch_size: int = 1024,
    lr: float = 3e-3,
    eval_batch: int = 100_000,
    progress: bool = True,
) -> TrainResult:
    """Train one model per seed with Adam (cosine-decayed learning rate) and keep the best.

    Args:
        config: the model's hyper-parameters.
        steps: optimisation steps per seed (fresh batch each step), 1 to ``validate.MAX_STEPS``.
        seeds: seeds to try (initialisation and data), 0 to ``validate.MAX_SEED``; the best by evaluation loss
            is kept.
        batch_size: samples per step, 1 to ``validate.MAX_IMAGES``.
        lr: peak Adam learning rate, finite and > 0.
        eval_batch: samples in the fixed evaluation set (the same for every seed), 1 to ``validate.MAX_IMAGES``.
        progress: show a progress bar.

    Returns:
        :class:`TrainResult`. A seed whose loss becomes NaN or infinite is discarded with a
        ``RuntimeWarning`` naming the seed, the step and ``lr``; :class:`NonFiniteLoss` when all diverge.
    """
    from tqdm.auto import tqdm

    if not isinstance(config, ToyConfig):
        raise TypeError(f"config must be a ToyConfig, got {type(config).__name__}")
    steps = check_int("steps", steps, 1, MAX_STEPS)
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise TypeError(f"seeds must be a sequence of integer seeds (e.g. range(5)), got {seeds!r}")
    seeds = [check_int(f"seeds[{i}]", s, 0, MAX_SEED) for i, s in enumerate(seeds)]
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed")
    batch_size = check_int("batch_size", batch_size, 1, MAX_IMAGES)
    lr = check_number("lr", lr, low=0, low_open=True)
    eval_batch = check_int("eval_batch", eval_batch, 1, MAX_IMAGES)
    bar = tqdm(total=steps * len(seeds), desc=f"toy {config.kind} n={config.n} m={config.m}", disable=not progress)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the matrices are tiny: extra threads only add overhead (restored below)
    try:
        return _train(config, steps, seeds, batch_size, lr, eval_batch, bar)
    finally:
        torch.set_num_threads(threads)
        bar.close()


def _train(config, steps, seeds, batch_size, lr, eval_batch, bar) -> TrainResult:
    best, kept, losses, diverged = None, [], [], []
    zero_loss = None
    for seed in seeds:
        model, bad_step = _train_seed(config, seed, steps, batch_size, lr, bar)
        if bad_step is None:
            ev, zero_loss = evaluate(model, eval_batch)
            bad_step = None if math.isfinite(ev) else steps + 1
        if bad_step is not None:
            warnings.warn(f"toy training seed {seed} diverged (non-finite loss at {_where(bad_step, steps)}, "
                          f"lr={lr}): seed discarded; a smaller lr avoids it", RuntimeWarning, stacklevel=3)
            diverged.append({"seed": seed, "step": bad_step})
            continue
        kept.append(seed)
        losses.append(ev)
        if best is None or ev < best[1]:
            best = (model, ev, seed)
    if best is None:
        which = ", ".join(f"seed {d['seed']} at {_where(d['step'], steps)}" for d in diverged)
        raise NonFiniteLoss(f"toy training diverged for every seed with lr={lr} ({which}): the loss "
                            f"became NaN or infinite; use a smaller lr (default 3e-3)")
    return TrainResult(best[0], kept, losses, best[2], best[1], zero_loss, steps, batch_size, lr, diverged)


def _where(step: int, steps: int) -> str:
    return "the evaluation" if step > steps else f"step {step} of {steps}"


def _train_seed(config, seed, steps, batch_size, lr, bar) -> Tuple[ToyModel, Optional[int]]:
    """Train one seed; returns the model (eval mode) and the 1-based step whose loss was not finite
    (``None`` when every step was finite; training stops there)."""
    imp = config.importance
    model = ToyModel(config, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.05)
    g = torch.Generator().manual_seed(1_000_003 * (seed + 1))
    done = 0
    for step in range(steps):
        x, y = sample(config, batch_size, g)
        loss = weighted_loss(model(x), y, imp)
        if not bool(torch.isfinite(loss)):
            bar.update(steps - done)
            return model.eval(), step + 1
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            bar.update(step + 1 - done)
            done = step + 1
    return model.eval(), None
