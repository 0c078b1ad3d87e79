"""Attribution analysis of toy models and the hand-built genuine-inhibition model.

Every output (pre-ReLU, layer ``out``) is attributed to the hidden units (layer ``relu``) with
:func:`lucent_inhibit.attribute` (gradient x activation, Hamblin et al. 2024, section 2) on inputs with
exactly one and exactly two active features; the excitatory and inhibitory totals P and N and their
tension show the MTI motif that superposition produces through interference alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from ..attribution.attribute import attribute
from ..attribution.totals import signed_totals
from ..attribution.totals import tension as tension_score
from ..core.results import Result
from ..core.validate import MAX_IMAGES, MAX_SEED, check_int
from .control import features_per_unit, separated_model
from .data import k_feature_inputs
from .model import ATTRIBUTION_LAYER, MAX_WIDTH, ToyConfig, ToyModel


def inhibition_model(n: int = 6, decay: float = 0.9, S: float = 0.01) -> ToyModel:
    """A hand-built ``kind="exclusive"`` model with ``m = 2 n`` that computes
    ``y_i = relu(|x_i| - sum_{j != i} |x_j|)`` exactly.

    Hidden units ``2i`` and ``2i + 1`` are ``relu(x_i)`` and ``relu(-x_i)`` (one feature per unit, no
    superposition); output ``i`` adds its own two units and subtracts every other feature's units. The
    negative weights implement inhibition on purpose: with two features active, output ``i`` receives a
    large positive and a large negative attribution that cancel, the MTI motif from a real mechanism.
    """
    config = ToyConfig("exclusive", n=n, m=2 * check_int("n", n, 1, MAX_WIDTH // 2), S=S, decay=decay)
    n = config.n
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
class ToyAnalysis(Result):
    """Attribution of each output to the hidden units on one- and two-feature inputs.

    Attributes:
        config: the model's :class:`ToyConfig` (as a dict).
        inputs_one, inputs_two: (B1, n_inputs), (B2, n_inputs) inputs with one / two active features.
        active_one, active_two: (B1, n), (B2, n) which features are active.
        scores_one, scores_two: (B, n, m) hidden-unit contributions to each output.
        act_one, act_two: (B, n) pre-ReLU outputs.
        P_one, N_one, P_two, N_two: (B, n) excitatory / inhibitory totals (L1, element-wise).
        tension_one, tension_two: (B, n) tension ``score(P, N)`` per input and output.
        represented: (n,) which features the model represents (:func:`represented_features`).
        score: the tension score used (``"min"`` by default; ``"custom"`` for a callable).
        shared_units: number of hidden units carrying more than one feature
            (:func:`~lucent_inhibit.toy.control.features_per_unit`; 0: no superposition).
        control: the control, the same inputs through the task's exact no-superposition solution with
            ``m = 2 n`` (:func:`~lucent_inhibit.toy.control.separated_model`): its ``m``, ``shared_units``,
            ``mean_tension_one`` and ``mean_tension_two``; None for the ``"exclusive"`` kind or when not asked.
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
    shared_units: int = 0
    control: Optional[dict] = None

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

    def target(self, b: int, i: int) -> float:
        """The model's training target for output ``i`` on two-feature input ``b``."""
        from .data import targets

        return float(targets(ToyConfig.from_dict(self.config), self.inputs_two[b: b + 1])[0, i])

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
            "shared_units": self.shared_units,
            "control": self.control,
        }

    def plot(self, path=None, ax=None, **style):
        """P against N for every output, and the most tense two-feature input's contributions;
        returns the Figure (a PNG at ``path`` when given)."""
        from .figures import plot_analysis

        return plot_analysis(self, path, ax, **style)


def analyze_toy(model: ToyModel, count: int = 512, seed: int = 0, score: str = "min",
                control: bool = True) -> ToyAnalysis:
    """Attribute each output to the hidden units on ``count`` one-feature and ``count`` two-feature inputs
    (:func:`~lucent_inhibit.toy.k_feature_inputs`) and score the tension ``score(P, N)`` of every output on
    every input (``score``: one of :data:`lucent_inhibit.attribution.totals.TENSION_SCORES` or a callable).

    Args:
        model: a :class:`ToyModel` with ``n >= 2``.
        count: inputs of each kind, an integer in [1, ``validate.MAX_IMAGES``].
        seed: seeds the inputs (one-feature inputs use ``seed``, two-feature ones ``seed + 1``), 0 to
            ``validate.MAX_SEED - 1``.
        control: also pass the same inputs through the control, the task's exact no-superposition solution
            (:func:`~lucent_inhibit.toy.control.separated_model`; ``abs`` and ``xor`` kinds), into
            :attr:`ToyAnalysis.control`.
    """
    if not isinstance(model, ToyModel):
        raise TypeError(f"model must be a ToyModel, got {type(model).__name__}")
    c = model.config
    if c.n < 2:
        raise ValueError(f"analyze_toy compares one- and two-feature inputs and needs n >= 2, got n={c.n}")
    seed, count = check_int("seed", seed, 0, MAX_SEED - 1), check_int("count", count, 1, MAX_IMAGES)
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
        represented=represented_features(model), score=score if isinstance(score, str) else "custom",
        shared_units=int((features_per_unit(model) > 1).sum()),
        control=_control(c, count, seed, score) if control and c.kind in ("abs", "xor") else None, **out,
    )


def _control(config: ToyConfig, count: int, seed: int, score) -> dict:
    """The numbers of the control (:func:`~lucent_inhibit.toy.control.separated_model` of ``config``) on the
    same one- and two-feature inputs as the model analysed."""
    return control_numbers(analyze_toy(separated_model(config), count=count, seed=seed, score=score, control=False))


def control_numbers(control: ToyAnalysis) -> dict:
    """What :attr:`ToyAnalysis.control` holds of the control's own analysis (:func:`analyze_toy` of
    :func:`~lucent_inhibit.toy.control.separated_model` on the same ``count`` and ``seed``): its ``m``,
    ``shared_units`` and mean tension on one- and two-feature inputs."""
    return {"m": int(control.config["m"]), "shared_units": control.shared_units,
            "mean_tension_one": control.mean_tension_one, "mean_tension_two": control.mean_tension_two}
