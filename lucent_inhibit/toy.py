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

The loss is the squared error weighted by importance ``decay ** i`` for output ``i``. :func:`train`
trains several seeds and keeps the one with the lowest loss on a fixed evaluation set; :func:`analyze`
attributes every output to the hidden units on inputs with exactly one and exactly two active features
and scores their tension; :func:`plot_superposition` shows that in the trained superposed model
two-feature inputs produce the MTI motif (large positive and negative attributions that cancel) through
interference alone, next to the hand-built model where the same motif is real inhibition.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .storage import load_npz, save_npz
from .attribution import Feature, attribute, signed_totals, tension as tension_score

log = logging.getLogger(__name__)

KINDS = ("abs", "xor", "exclusive")
FEATURE_LAYER = "out"
ATTRIBUTION_LAYER = "relu"
_FORMAT = "lucent_inhibit.toy/1"


# ------------------------------------------------------------------------------------------------
# hyper-parameters
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ToyConfig:
    """Hyper-parameters of a toy model.

    Args:
        kind: ``"abs"``, ``"xor"`` or ``"exclusive"`` (see the module docstring).
        n: number of features (outputs); inputs are ``n`` (abs, exclusive) or ``2 n`` (xor).
        m: number of hidden ReLU units.
        S: probability that a feature (a pair, for xor) is active, in (0, 1].
        decay: importance of output ``i`` is ``decay ** i``, in (0, 1].
        p: for xor, probability that a bit of an active pair is 1, in (0, 1).
    """

    kind: str = "abs"
    n: int = 6
    m: int = 8
    S: float = 0.01
    decay: float = 0.9
    p: float = 0.5

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("n", "m"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
            object.__setattr__(self, name, int(v))
        if not isinstance(self.S, (int, float, np.floating)) or not (0 < float(self.S) <= 1):
            raise ValueError(f"S (feature activation probability) must be in (0, 1], got {self.S!r}")
        if not isinstance(self.decay, (int, float, np.floating)) or not (0 < float(self.decay) <= 1):
            raise ValueError(f"decay (importance decay) must be in (0, 1], got {self.decay!r}")
        if not isinstance(self.p, (int, float, np.floating)) or not (0 < float(self.p) < 1):
            raise ValueError(f"p (probability of a 1 bit in an active xor pair) must be in (0, 1), got {self.p!r}")
        object.__setattr__(self, "S", float(self.S))
        object.__setattr__(self, "decay", float(self.decay))
        object.__setattr__(self, "p", float(self.p))

    @property
    def n_inputs(self) -> int:
        return 2 * self.n if self.kind == "xor" else self.n

    @property
    def importance(self) -> torch.Tensor:
        """(n,) importance weights ``decay ** i``."""
        return self.decay ** torch.arange(self.n, dtype=torch.float32)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ToyConfig":
        known = {k: d[k] for k in ("kind", "n", "m", "S", "decay", "p") if k in d}
        return cls(**known)


# ------------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------------
class ToyModel(nn.Module):
    """``out_relu(out(relu(hidden(x))))``: (B, n_inputs) -> (B, n), with Lucent layer names
    ``hidden`` (B, m), ``relu`` (B, m), ``out`` (B, n, pre-activation) and ``out_relu`` (B, n)."""

    def __init__(self, config: ToyConfig, seed: Optional[int] = None):
        super().__init__()
        if not isinstance(config, ToyConfig):
            raise TypeError(f"config must be a ToyConfig, got {type(config).__name__}")
        self.config = config
        with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the global RNG
            if seed is not None:
                torch.manual_seed(int(seed))
            self.hidden = nn.Linear(config.n_inputs, config.m)
            self.relu = nn.ReLU()
            self.out = nn.Linear(config.m, config.n)
            self.out_relu = nn.ReLU()
        with torch.no_grad():
            # zero biases and non-negative output weights at the start: with sparse inputs a negative
            # output pre-activation would leave the output ReLU (and the feature) dead from step 0
            self.hidden.bias.zero_()
            self.out.bias.zero_()
            self.out.weight.abs_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_relu(self.out(self.relu(self.hidden(x))))

    def features(self) -> List[Feature]:
        """One :class:`Feature` per output unit, on the pre-ReLU output layer ``out``."""
        return [Feature(FEATURE_LAYER, unit=i) for i in range(self.config.n)]

    # -- save / load ----------------------------------------------------------------------------
    def save(self, path: str, extra: Optional[dict] = None) -> None:
        """Weights and hyper-parameters in one ``.npz`` (arrays + JSON meta; no pickle)."""
        arrays = {f"param:{k}": v.detach().cpu().numpy() for k, v in self.state_dict().items()}
        meta = {"format": _FORMAT, "config": self.config.to_dict(), "extra": extra or {}}
        save_npz(path, arrays, meta)

    @classmethod
    def load(cls, path: str, expect: Optional[ToyConfig] = None, **expected) -> "ToyModel":
        """Load a model saved with :meth:`save`.

        ``expect`` (a :class:`ToyConfig`) or keyword hyper-parameters (``n=6, m=8, kind="abs"``, ...)
        name what the caller needs; a file whose saved hyper-parameters differ raises ``ValueError``
        listing every mismatch.
        """
        config, state, _ = _read(path)
        wanted = dict(expect.to_dict()) if expect is not None else {}
        for k, v in expected.items():
            if k not in ToyConfig.__dataclass_fields__:
                raise ValueError(f"unknown hyper-parameter {k!r}; expected some of {list(ToyConfig.__dataclass_fields__)}")
            wanted[k] = v
        _check_compatible(config, wanted, path)
        model = cls(config)
        model.load_state_dict(state)
        return model.eval()

    def load_weights(self, path: str) -> "ToyModel":
        """Load saved weights into this model; the file's hyper-parameters must equal ``self.config``."""
        config, state, _ = _read(path)
        _check_compatible(config, self.config.to_dict(), path)
        self.load_state_dict(state)
        return self


def _read(path):
    z, meta = load_npz(path, "saved toy model")
    if meta.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a saved toy model (format {meta.get('format')!r}, expected {_FORMAT!r})")
    state = {k[len("param:"):]: torch.from_numpy(z[k].copy()) for k in z if k.startswith("param:")}
    config = ToyConfig.from_dict(meta["config"])
    shapes = {
        "hidden.weight": (config.m, config.n_inputs),
        "hidden.bias": (config.m,),
        "out.weight": (config.n, config.m),
        "out.bias": (config.n,),
    }
    for k, shape in shapes.items():
        if k not in state or tuple(state[k].shape) != shape:
            got = tuple(state[k].shape) if k in state else "missing"
            raise ValueError(
                f"{path}: saved weight {k!r} has shape {got}, incompatible with its hyper-parameters {config} "
                f"(expected {shape})"
            )
    return config, state, meta.get("extra", {})


def _check_compatible(config: ToyConfig, wanted: dict, path) -> None:
    saved = config.to_dict()
    bad = [f"{k}: saved {saved[k]!r}, expected {v!r}" for k, v in wanted.items() if saved[k] != v]
    if bad:
        raise ValueError(f"incompatible hyper-parameters in {path}: " + "; ".join(bad))


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
def _gen(seed_or_gen) -> torch.Generator:
    if isinstance(seed_or_gen, torch.Generator):
        return seed_or_gen
    return torch.Generator().manual_seed(int(seed_or_gen or 0))


def _check_batch(batch):
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")


def abs_data(batch: int, n: int, S: float, generator=0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sparse inputs (batch, n): each feature non-zero with probability ``S``, then uniform in [-1, 1].

    Returns ``(x, |x|)``.
    """
    config = ToyConfig("abs", n=n, m=1, S=S)
    _check_batch(batch)
    g = _gen(generator)
    active = torch.rand(batch, config.n, generator=g) < config.S
    x = (torch.rand(batch, config.n, generator=g) * 2 - 1) * active
    return x, x.abs()


def xor_data(batch: int, n: int, S: float, p: float = 0.5, generator=0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Binary inputs (batch, 2 n) in pairs; a pair is active with probability ``S`` and its two bits are
    then Bernoulli(``p``). Returns ``(x, y)`` with ``y`` (batch, n) the XOR of each pair."""
    config = ToyConfig("xor", n=n, m=1, S=S, p=p)
    _check_batch(batch)
    g = _gen(generator)
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
    """A training batch ``(x, y)`` for ``config``."""
    if config.kind == "xor":
        return xor_data(batch, config.n, config.S, config.p, generator)
    x, _ = abs_data(batch, config.n, config.S, generator)
    return x, targets(config, x)


def k_feature_inputs(config: ToyConfig, k: int, count: int, generator=0) -> Tuple[torch.Tensor, torch.Tensor]:
    """``count`` inputs with exactly ``k`` active features (pairs, for xor), chosen uniformly.

    Active values are uniform in [-1, 1] with ``|x| >= 0.25`` (abs, exclusive) or a non-zero bit pattern
    (xor). Returns ``(x, active)`` with ``active`` (count, n) boolean.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not (1 <= k <= config.n):
        raise ValueError(f"k (active features) must be an integer in [1, n={config.n}], got {k!r}")
    _check_batch(count)
    g = _gen(generator)
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


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------
def weighted_loss(pred: torch.Tensor, y: torch.Tensor, importance: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``sum_i importance_i (pred_i - y_i)^2``."""
    return ((pred - y) ** 2 * importance).sum(1).mean()


@dataclass
class TrainResult:
    """Result of :func:`train`: the best model and what every seed reached.

    Attributes:
        model: the best :class:`ToyModel` (lowest evaluation loss), in eval mode.
        seeds: the seeds tried; ``losses`` (same length): each one's evaluation loss.
        best_seed: the seed of ``model``.
        loss: ``model``'s importance-weighted loss on the evaluation set.
        zero_loss: the loss of the trivial all-zero predictor on the same set.
        steps, batch_size, lr: training settings.
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
        }

    def save(self, path: str) -> None:
        """Save the best model with the training summary (load it with :meth:`ToyModel.load`)."""
        self.model.save(path, extra={"train": self.summary()})


def evaluate(model: ToyModel, batch: int = 100_000, generator=12345) -> Tuple[float, float]:
    """``(loss, zero_loss)``: the model's importance-weighted loss on ``batch`` fresh samples and that of
    the all-zero predictor on the same samples."""
    config = model.config
    x, y = sample(config, batch, generator)
    imp = config.importance
    with torch.no_grad():
        loss = float(weighted_loss(model(x), y, imp))
    return loss, float(weighted_loss(torch.zeros_like(y), y, imp))


def train(
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
        steps: optimisation steps per seed (fresh batch each step).
        seeds: seeds to try (initialisation and data); the best by evaluation loss is kept.
        batch_size: samples per step.
        lr: peak Adam learning rate.
        eval_batch: samples in the fixed evaluation set (the same for every seed).

    Returns:
        :class:`TrainResult`.
    """
    from tqdm.auto import tqdm

    if not isinstance(config, ToyConfig):
        raise TypeError(f"config must be a ToyConfig, got {type(config).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    _check_batch(batch_size)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the matrices are tiny: extra threads only add overhead (restored below)
    try:
        return _train(config, int(steps), seeds, int(batch_size), float(lr), int(eval_batch), progress, tqdm)
    finally:
        torch.set_num_threads(threads)


def _train(config, steps, seeds, batch_size, lr, eval_batch, progress, tqdm) -> TrainResult:
    imp = config.importance
    best, losses, zero_loss = None, [], None
    bar = tqdm(total=steps * len(seeds), desc=f"toy {config.kind} n={config.n} m={config.m}", disable=not progress)
    for seed in seeds:
        model = ToyModel(config, seed=seed)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.05)
        g = torch.Generator().manual_seed(1_000_003 * (seed + 1))
        for step in range(steps):
            x, y = sample(config, batch_size, g)
            loss = weighted_loss(model(x), y, imp)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if (step + 1) % 100 == 0 or step + 1 == steps:
                bar.update(100 if (step + 1) % 100 == 0 else (step + 1) % 100)
        model.eval()
        ev, zero_loss = evaluate(model, eval_batch)
        losses.append(ev)
        log.info("toy seed %d: loss %.5g (all-zero predictor %.5g)", seed, ev, zero_loss)
        if best is None or ev < best[1]:
            best = (model, ev, seed)
    bar.close()
    return TrainResult(best[0], seeds, losses, best[2], best[1], zero_loss, steps, batch_size, lr)


# ------------------------------------------------------------------------------------------------
# hand-built genuine inhibition
# ------------------------------------------------------------------------------------------------
def inhibition_model(n: int = 6, decay: float = 0.9, S: float = 0.01) -> ToyModel:
    """A hand-built ``kind="exclusive"`` model with ``m = 2 n`` that computes
    ``y_i = relu(|x_i| - sum_{j != i} |x_j|)`` exactly.

    Hidden units ``2i`` and ``2i + 1`` are ``relu(x_i)`` and ``relu(-x_i)`` (one feature per unit, no
    superposition); output ``i`` adds its own two units and subtracts every other feature's units. The
    negative weights implement inhibition on purpose: with two features active, output ``i`` receives a
    large positive and a large negative attribution that cancel, the MTI motif from a real mechanism.
    """
    config = ToyConfig("exclusive", n=n, m=2 * n, S=S, decay=decay)
    model = ToyModel(config)
    with torch.no_grad():
        w1 = torch.zeros(2 * n, n)
        for i in range(n):
            w1[2 * i, i], w1[2 * i + 1, i] = 1.0, -1.0
        w2 = -torch.ones(n, 2 * n)
        for i in range(n):
            w2[i, 2 * i : 2 * i + 2] = 1.0
        model.hidden.weight.copy_(w1)
        model.hidden.bias.zero_()
        model.out.weight.copy_(w2)
        model.out.bias.zero_()
    return model.eval()


# ------------------------------------------------------------------------------------------------
# analysis
# ------------------------------------------------------------------------------------------------
def output_attributions(model: ToyModel, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Attribute every output (pre-ReLU, layer ``out``) to the hidden units (layer ``relu``).

    Uses :func:`lucent_inhibit.attribute` (gradient x activation, ``preprocess=False``) once per output.

    Args:
        x: (B, n_inputs) inputs.

    Returns:
        ``(scores, activation)``: scores (B, n, m), ``scores[b, i, u]`` = contribution of hidden unit ``u``
        to output ``i``; activation (B, n), the pre-ReLU outputs (``= scores.sum(-1) + out.bias``).
    """
    if not torch.is_tensor(x) or x.dim() != 2 or x.shape[1] != model.config.n_inputs:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"x must have shape (B, {model.config.n_inputs}) for this model, got {shape}")
    scores, acts = [], []
    for f in model.features():
        a = attribute(model, x, f, ATTRIBUTION_LAYER, preprocess=False)
        scores.append(a.scores[ATTRIBUTION_LAYER])
        acts.append(a.activation)
    return torch.stack(scores, 1), torch.stack(acts, 1)


def represented_features(model: ToyModel, threshold: float = 0.5) -> torch.Tensor:
    """(n,) boolean: is feature ``i`` represented, i.e. does output ``i`` reach ``threshold`` times its
    target when feature ``i`` alone is active?

    abs: for ``x_i = +1`` and ``x_i = -1`` (both signs, as ``|x|`` needs two units) output ``i`` >= 0.5.
    xor: for pair ``i`` = 01 and 10, output >= 0.5, and for 11 (target 0), output < 0.5.
    exclusive: as abs.
    """
    c = model.config
    ok = torch.ones(c.n, dtype=torch.bool)
    with torch.no_grad():
        for i in range(c.n):
            if c.kind == "xor":
                x = torch.zeros(3, 2 * c.n)
                x[0, 2 * i + 1] = 1
                x[1, 2 * i] = 1
                x[2, 2 * i : 2 * i + 2] = 1
                y = model(x)[:, i]
                ok[i] = bool((y[:2] >= threshold).all() and y[2] < 1 - threshold)
            else:
                x = torch.zeros(2, c.n)
                x[0, i], x[1, i] = 1.0, -1.0
                ok[i] = bool((model(x)[:, i] >= threshold).all())
    return ok


def units_per_feature(model: ToyModel, rel: float = 0.1) -> torch.Tensor:
    """(n,) number of hidden units that carry feature ``i`` (|hidden weight| above ``rel`` times the
    largest and a non-negligible output weight to output ``i``)."""
    c = model.config
    w1 = model.hidden.weight.detach().abs()
    if c.kind == "xor":
        w1 = w1.reshape(c.m, c.n, 2).amax(2)
    w2 = model.out.weight.detach().abs().T  # (m, n)
    used = (w1 > rel * w1.max()) & (w2 > rel * w2.max())
    return used.sum(0)


@dataclass
class ToyAnalysis:
    """Attribution of each output to the hidden units on one- and two-feature inputs.

    Attributes:
        config: the model's :class:`ToyConfig` (as a dict).
        inputs_one, inputs_two: (B1, n_inputs), (B2, n_inputs) inputs with one / two active features.
        active_one, active_two: (B1, n), (B2, n) which features are active.
        scores_one, scores_two: (B, n, m) hidden-unit contributions to each output.
        act_one, act_two: (B, n) pre-ReLU outputs.
        P_one, N_one, P_two, N_two: (B, n) excitatory / inhibitory totals (L1, element-wise).
        tension_one, tension_two: (B, n) tension ``score(P, N)`` per input and output.
        score: the tension score used (``"min"`` by default).
        represented: (n,) which features the model represents (:func:`represented_features`).
    """

    config: dict
    inputs_one: torch.Tensor
    inputs_two: torch.Tensor
    active_one: torch.Tensor
    active_two: torch.Tensor
    scores_one: torch.Tensor
    scores_two: torch.Tensor
    act_one: torch.Tensor
    act_two: torch.Tensor
    P_one: torch.Tensor
    N_one: torch.Tensor
    P_two: torch.Tensor
    N_two: torch.Tensor
    tension_one: torch.Tensor
    tension_two: torch.Tensor
    represented: torch.Tensor
    score: str = "min"

    _ARRAYS = (
        "inputs_one", "inputs_two", "active_one", "active_two", "scores_one", "scores_two", "act_one",
        "act_two", "P_one", "N_one", "P_two", "N_two", "tension_one", "tension_two", "represented",
    )

    @property
    def tension_per_output_one(self) -> torch.Tensor:
        """(n,) mean tension of each output over the one-feature inputs."""
        return self.tension_one.mean(0)

    @property
    def tension_per_output_two(self) -> torch.Tensor:
        """(n,) mean tension of each output over the two-feature inputs."""
        return self.tension_two.mean(0)

    @property
    def mean_tension_one(self) -> float:
        return float(self.tension_one.mean())

    @property
    def mean_tension_two(self) -> float:
        return float(self.tension_two.mean())

    def most_tense(self) -> Tuple[int, int]:
        """``(b, i)``: the two-feature input and output with the highest tension."""
        t = self.tension_two
        b, i = divmod(int(t.argmax()), t.shape[1])
        return b, i

    def summary(self) -> dict:
        return {
            "config": self.config,
            "score": self.score,
            "n_inputs_one": int(self.inputs_one.shape[0]),
            "n_inputs_two": int(self.inputs_two.shape[0]),
            "mean_tension_one": self.mean_tension_one,
            "mean_tension_two": self.mean_tension_two,
            "tension_per_output_one": [float(v) for v in self.tension_per_output_one],
            "tension_per_output_two": [float(v) for v in self.tension_per_output_two],
            "mean_tension_two_active_outputs": float(self.tension_two[self.active_two].mean()),
            "mean_tension_two_inactive_outputs": float(self.tension_two[~self.active_two].mean()),
            "represented": [bool(v) for v in self.represented],
            "n_represented": int(self.represented.sum()),
        }

    def save(self, path: str) -> None:
        arrays = {k: getattr(self, k).cpu().numpy() for k in self._ARRAYS}
        meta = {"config": self.config, "score": self.score}
        save_npz(path, arrays, meta)

    @classmethod
    def load(cls, path: str) -> "ToyAnalysis":
        z, meta = load_npz(path, "ToyAnalysis")
        arrays = {k: torch.from_numpy(z[k].copy()) for k in cls._ARRAYS}
        return cls(config=meta["config"], score=meta["score"], **arrays)


def analyze(model: ToyModel, count: int = 512, seed: int = 0, score: str = "min") -> ToyAnalysis:
    """Attribute each output to the hidden units on ``count`` one-feature and ``count`` two-feature inputs
    (:func:`k_feature_inputs`) and score the tension ``score(P, N)`` of every output on every input."""
    if not isinstance(model, ToyModel):
        raise TypeError(f"model must be a ToyModel, got {type(model).__name__}")
    c = model.config
    if c.n < 2:
        raise ValueError(f"analyze compares one- and two-feature inputs and needs n >= 2, got n={c.n}")
    model.eval()
    x1, a1 = k_feature_inputs(c, 1, count, seed)
    x2, a2 = k_feature_inputs(c, 2, count, seed + 1)
    out = {}
    for tag, x in (("one", x1), ("two", x2)):
        s, act = output_attributions(model, x)
        b, n, m = s.shape
        p, neg = signed_totals(s.reshape(b * n, m))
        out[f"scores_{tag}"], out[f"act_{tag}"] = s, act
        out[f"P_{tag}"], out[f"N_{tag}"] = p.reshape(b, n), neg.reshape(b, n)
        out[f"tension_{tag}"] = tension_score(p, neg, score).reshape(b, n)
    return ToyAnalysis(
        config=c.to_dict(), inputs_one=x1, inputs_two=x2, active_one=a1, active_two=a2,
        represented=represented_features(model), score=score if isinstance(score, str) else "custom", **out,
    )


# ------------------------------------------------------------------------------------------------
# figure
# ------------------------------------------------------------------------------------------------
def plot_superposition(
    superposed: ToyModel,
    inhibitory: Optional[ToyModel] = None,
    path: Optional[str] = None,
    analyses: Optional[Tuple[ToyAnalysis, ToyAnalysis]] = None,
    count: int = 256,
):
    """Interference vs inhibition: the same MTI motif from two different causes.

    One row per model (the trained superposed model; the hand-built inhibition model,
    :func:`inhibition_model` with the same ``n`` unless given). Columns: (1) the hidden weights
    (m x inputs), showing shared units; (2) P against N for every output on one-feature (circles) and
    two-feature (triangles) inputs, coloured by the output's pre-activation on a diverging map centred
    at 0; (3) the hidden-unit contributions for the most tense two-feature input, excitatory in red,
    inhibitory in blue, with their total.

    Returns the matplotlib Figure; saves a PNG to ``path`` if given.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    if inhibitory is None:
        inhibitory = inhibition_model(superposed.config.n, superposed.config.decay, superposed.config.S)
    models = [superposed, inhibitory]
    if analyses is None:
        analyses = tuple(analyze(m, count=count) for m in models)
    titles = ["superposed (trained): interference", "hand-built: genuine inhibition"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    for row, (model, an, title) in enumerate(zip(models, analyses, titles)):
        c = model.config
        ax = axes[row, 0]
        w = model.hidden.weight.detach()
        lim = float(w.abs().max()) or 1.0
        im = ax.imshow(w.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
        ax.set_xlabel("input" + (" (pairs: 2i, 2i+1)" if c.kind == "xor" else ""))
        ax.set_ylabel("hidden unit")
        ax.set_title(f"{title}\n{c.kind}: n={c.n}, m={c.m}; hidden weights")
        fig.colorbar(im, ax=ax, fraction=0.046)

        ax = axes[row, 1]
        acts = torch.cat([an.act_one.flatten(), an.act_two.flatten()])
        vmax = float(acts.abs().max()) or 1.0
        norm = TwoSlopeNorm(0.0, -vmax, vmax)
        ax.scatter(an.P_one.flatten(), an.N_one.flatten(), c=an.act_one.flatten(), cmap="RdBu_r", norm=norm,
                   marker="o", s=10, alpha=0.7, edgecolors="none")
        sc = ax.scatter(an.P_two.flatten(), an.N_two.flatten(), c=an.act_two.flatten(), cmap="RdBu_r", norm=norm,
                        marker="^", s=14, alpha=0.7, edgecolors="none")
        top = float(max(an.P_two.max(), an.N_two.max(), an.P_one.max(), an.N_one.max())) * 1.05 or 1.0
        ax.plot([0, top], [0, top], color="grey", lw=0.8, ls="--")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_xlabel("P (excitatory attribution)")
        ax.set_ylabel("N (inhibitory attribution)")
        ax.set_title("every output on 1- and 2-feature inputs")
        from matplotlib.lines import Line2D

        handles = [
            Line2D([], [], marker=mk, ls="", color="dimgrey", label=f"{what} (mean tension {t:.3f})")
            for mk, what, t in (("o", "one feature", an.mean_tension_one), ("^", "two features", an.mean_tension_two))
        ]
        ax.legend(handles=handles, loc="upper left", fontsize=8)
        fig.colorbar(sc, ax=ax, fraction=0.046, label="output pre-activation")

        ax = axes[row, 2]
        b, i = an.most_tense()
        s = an.scores_two[b, i]
        colors = ["#c0392b" if v > 0 else "#2c6fbb" for v in s.tolist()]
        ax.bar(np.arange(len(s)), s.numpy(), color=colors)
        ax.axhline(0, color="black", lw=0.8)
        feats = torch.nonzero(an.active_two[b]).flatten().tolist()
        ax.set_xlabel("hidden unit")
        ax.set_ylabel(f"contribution to output {i}")
        target = float(targets(c, an.inputs_two[b : b + 1])[0, i])
        ax.set_title(
            f"most tense 2-feature input {feats}, output {i} (target {target:.2f})\n"
            f"P={float(an.P_two[b, i]):.2f}  N={float(an.N_two[b, i]):.2f}  "
            f"sum={float(s.sum()):.2f}  pre-act.={float(an.act_two[b, i]):.2f}",
            fontsize=9,
        )
    fig.suptitle(
        "Two active features give the MTI motif (large + and - attributions cancelling) both through "
        "interference in superposition (top) and through designed inhibition (bottom)",
        fontsize=11,
    )
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
