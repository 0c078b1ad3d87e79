"""Toy model hyper-parameters, the network, and its weight file (a :class:`ToySnapshot` result).

The network is ``x -> hidden (Linear) -> relu -> out (Linear) -> out_relu`` (Elhage et al. 2022, "Toy
Models of Superposition", with a ReLU hidden layer as in Hamblin et al. 2024, final section); its Lucent
layer names are ``hidden``, ``relu``, ``out`` and ``out_relu``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Literal, Optional

import torch
from torch import nn

from ..core.features import Feature
from ..core.results import Result, ResultFileError, load_path, load_result, read_result_file
from ..core.validate import MAX_SEED, check_choice, check_int, check_number

KINDS = ("abs", "xor", "exclusive")
#: Most features ``n`` and hidden units ``m`` of a toy model: 10**4 (the papers' toys have tens; an xor model
#: at the bound holds 2 * 10**8 weights, 800 MB).
MAX_WIDTH = 10 ** 4
FEATURE_LAYER = "out"
ATTRIBUTION_LAYER = "relu"


@dataclass(frozen=True)
class ToyConfig:
    """Hyper-parameters of a toy model.

    Args:
        kind: ``"abs"``, ``"xor"`` or ``"exclusive"`` (see :mod:`lucent_inhibit.toy`).
        n: number of features (outputs), an integer in [1, :data:`MAX_WIDTH`]; inputs are ``n`` (abs,
            exclusive) or ``2 n`` (xor).
        m: number of hidden ReLU units, an integer in [1, :data:`MAX_WIDTH`].
        S: probability that a feature (a pair, for xor) is active, in (0, 1].
        decay: importance of output ``i`` is ``decay ** i``, in (0, 1].
        p: for xor, probability that a bit of an active pair is 1, in (0, 1).
    """

    kind: Literal["abs", "xor"] = "abs"
    n: int = 6
    m: int = 8
    S: float = 0.01
    decay: float = 0.9
    p: float = 0.5

    def __post_init__(self):
        check_choice("kind", self.kind, KINDS)
        object.__setattr__(self, "n", check_int("n", self.n, 1, MAX_WIDTH))
        object.__setattr__(self, "m", check_int("m", self.m, 1, MAX_WIDTH))
        S = check_number("S (feature activation probability)", self.S, low=0, high=1, low_open=True)
        decay = check_number("decay (importance decay)", self.decay, low=0, high=1, low_open=True)
        p = check_number("p (probability of a 1 bit in an active xor pair)", self.p, low=0, high=1, low_open=True)
        if p == 1:
            raise ValueError(f"p (probability of a 1 bit in an active xor pair) must be < 1, got {p}")
        object.__setattr__(self, "S", S)
        object.__setattr__(self, "decay", decay)
        object.__setattr__(self, "p", p)

    @property
    def n_inputs(self) -> int:
        return 2 * self.n if self.kind == "xor" else self.n

    @property
    def importance(self) -> torch.Tensor:
        """(n,) importance weights ``decay ** i``."""
        return self.decay ** torch.arange(self.n, dtype=torch.float32)

    def weight_shapes(self) -> Dict[str, tuple]:
        """The shape of every entry of a :class:`ToyModel`'s state dict."""
        return {
            "hidden.weight": (self.m, self.n_inputs),
            "hidden.bias": (self.m,),
            "out.weight": (self.n, self.m),
            "out.bias": (self.n,),
        }

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ToyConfig":
        known = {k: d[k] for k in ("kind", "n", "m", "S", "decay", "p") if k in d}
        return cls(**known)


class ToyModel(nn.Module):
    """``out_relu(out(relu(hidden(x))))``: (B, n_inputs) -> (B, n), with Lucent layer names
    ``hidden`` (B, m), ``relu`` (B, m), ``out`` (B, n, pre-activation) and ``out_relu`` (B, n).

    Args:
        config: a :class:`ToyConfig`.
        seed: seeds the initialisation (0 to ``validate.MAX_SEED``; the global RNG is left alone); ``None``
            draws from it.
    """

    def __init__(self, config: ToyConfig, seed: Optional[int] = None):
        super().__init__()
        if not isinstance(config, ToyConfig):
            raise TypeError(f"config must be a ToyConfig, got {type(config).__name__}")
        self.config = config
        seed = None if seed is None else check_int("seed", seed, 0, MAX_SEED)
        with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the global RNG
            if seed is not None:
                torch.manual_seed(seed)
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
    def snapshot(self) -> "ToySnapshot":
        """This model's hyper-parameters and a CPU copy of its weights, as a :class:`ToySnapshot`."""
        state = {k: v.detach().cpu().clone() for k, v in self.state_dict().items()}
        return ToySnapshot(config=self.config.to_dict(), state=state)

    def save(self, path) -> str:
        """Write the weights and hyper-parameters to ``path`` (``.npz`` appended when missing; arrays plus
        JSON metadata, no pickle) as a :class:`ToySnapshot` file; returns the path written."""
        return self.snapshot().save(path)

    @classmethod
    def load(cls, path, expect: Optional[ToyConfig] = None, **expected) -> "ToyModel":
        """Load a model saved with :meth:`save` or :meth:`TrainResult.save <lucent_inhibit.toy.TrainResult.save>`.

        ``expect`` (a :class:`ToyConfig`) or keyword hyper-parameters (``n=6, m=8, kind="abs"``, ...)
        name what the caller needs; a file whose saved hyper-parameters differ raises ``ValueError``
        listing every mismatch. A file of another result type raises :class:`ResultFileError`.
        """
        if expect is not None and not isinstance(expect, ToyConfig):
            raise TypeError(f"expect must be a ToyConfig or None, got {type(expect).__name__}")
        wanted = dict(expect.to_dict()) if expect is not None else {}
        for k, v in expected.items():
            if k not in ToyConfig.__dataclass_fields__:
                known = list(ToyConfig.__dataclass_fields__)
                raise ValueError(f"unknown hyper-parameter {k!r}; expected some of {known}")
            wanted[k] = v
        snap = read_snapshot(path)
        snap.check_compatible(wanted, load_path(path, "ToySnapshot"))
        return snap.to_model()

    def load_weights(self, path) -> "ToyModel":
        """Load saved weights into this model; the file's hyper-parameters must equal ``self.config``."""
        snap = read_snapshot(path)
        snap.check_compatible(self.config.to_dict(), load_path(path, "ToySnapshot"))
        self.load_state_dict(snap.state)
        return self


@dataclass
class ToySnapshot(Result):
    """A toy model's weights as a result file (what :meth:`ToyModel.save` writes).

    Attributes:
        config: the :class:`ToyConfig` as a dict.
        state: the state dict: ``hidden.weight`` (m, n_inputs), ``hidden.bias`` (m,), ``out.weight``
            (n, m), ``out.bias`` (n,), float tensors. Shapes are checked against ``config`` on creation.
    """

    config: dict
    state: Dict[str, torch.Tensor]

    def __post_init__(self):
        config = ToyConfig.from_dict(self.config)
        shapes = config.weight_shapes()
        extra = sorted(set(self.state) - set(shapes))
        if extra:
            raise ValueError(f"unexpected saved weights {extra}; a toy model has {list(shapes)}")
        for k, shape in shapes.items():
            got = tuple(self.state[k].shape) if k in self.state else "missing"
            if got != shape:
                raise ValueError(
                    f"saved weight {k!r} has shape {got}, incompatible with its hyper-parameters {config} "
                    f"(expected {shape})"
                )

    @property
    def toy_config(self) -> ToyConfig:
        return ToyConfig.from_dict(self.config)

    def to_model(self) -> ToyModel:
        """A :class:`ToyModel` (eval mode) with these weights."""
        model = ToyModel(self.toy_config)
        model.load_state_dict({k: torch.as_tensor(v) for k, v in self.state.items()})
        return model.eval()

    def check_compatible(self, wanted: dict, path) -> None:
        """``ValueError`` listing every hyper-parameter whose saved value differs from ``wanted[k]``."""
        saved = self.toy_config.to_dict()
        bad = [f"{k}: saved {saved[k]!r}, expected {v!r}" for k, v in wanted.items() if saved[k] != v]
        if bad:
            raise ValueError(f"incompatible hyper-parameters in {path}: " + "; ".join(bad))

    def summary(self) -> dict:
        """The hyper-parameters and the largest absolute weight of each layer."""
        out = {"type": self.kind(), "config": self.toy_config.to_dict()}
        out.update({f"max_abs_{k}": float(torch.as_tensor(v).abs().max()) for k, v in self.state.items()})
        return out

    def plot(self, path=None, ax=None, **style):
        """Hidden and output weights as diverging heatmaps (:func:`plot_weights`); returns the Figure (a PNG
        at ``path`` when given)."""
        from .figures import plot_weights

        return plot_weights(self.to_model(), path, ax, **style)


def read_snapshot(path) -> ToySnapshot:
    """The :class:`ToySnapshot` in ``path``: a file written by :meth:`ToyModel.save` or by
    :meth:`TrainResult.save <lucent_inhibit.toy.TrainResult.save>` (whose best model it returns).

    Raises :class:`ResultFileError` (a ``ValueError``) naming the file and what it holds when it is not a
    saved toy model (another result type, another format, a truncated or pickled file).
    """
    try:
        path = load_path(path, "ToySnapshot")
        _, meta = read_result_file(path, "ToySnapshot")
        if not isinstance(meta, dict) or meta.get("type") not in ("ToySnapshot", "TrainResult"):
            held = meta.get("type") if isinstance(meta, dict) else type(meta).__name__
            raise ResultFileError(f"{path!r} holds a {held}, expected a ToySnapshot or a TrainResult")
        held = load_result(path)  # a TrainResult holds its best model
    except ResultFileError as e:
        raise ResultFileError(f"not a saved toy model: {e}") from None
    return held if isinstance(held, ToySnapshot) else held.model.snapshot()
