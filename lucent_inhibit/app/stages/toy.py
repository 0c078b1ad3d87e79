"""Stage ``toy``: superposition toy models, where interference looks like inhibition (Hamblin et al.
2024, final section; Elhage et al. 2022; SPEC 2.8).

Train the absolute-value (or scaled XOR) toy model over several seeds and keep the best (CPU, about a minute
by default), save it, attribute every output to the hidden units on inputs with one and two active features,
and draw the interference-vs-inhibition figure.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import List, Literal, NamedTuple, Optional

from ...core.validate import MAX_LR, check_int, check_number
from ..configs import check_host_memory
from ..options import REQUIRED, check_choices, check_paths, flag, option
from ..registry import register_module

#: The files this stage writes into --out (lucent_inhibit.app.outputs: only these are ever overwritten).
OUTPUTS = ("toy_model.npz", "toy_analysis.npz", "toy_superposition.png", "toy_summary.json")

#: Default feature probability S per kind (sparse enough for superposition in a minute of CPU training).
DEFAULT_S = {"abs": 0.01, "xor": 0.05}


@dataclass
class ToyStageConfig:
    """Options of ``lucent-inhibit toy``."""

    out: str = option(REQUIRED, "output folder (model toy_model.npz, analysis, figure, summary JSON)", metavar="DIR")
    kind: Literal["abs", "xor"] = option("abs", "'abs' (|x|) or 'xor' (scaled XOR)")
    n: int = option(6, "number of features / outputs")
    m: int = option(8, "number of hidden ReLU units")
    S: Optional[float] = option(None, "probability that a feature is active, in (0, 1] (default 0.01 for abs, "
                                "0.05 for xor)")
    decay: float = option(0.9, "importance of output i is decay**i")
    steps: int = option(3000, "training steps per seed")
    seeds: int = option(5, "number of seeds to train; the best is kept")
    batch_size: int = option(1024, "samples per training step")
    lr: float = option(3e-3, f"peak Adam learning rate (> 0, at most {MAX_LR:g})")
    count: int = option(512, "one- and two-feature inputs analysed each")
    load: Optional[str] = option(None, "skip training and load this saved toy model (.npz); its hyper-parameters "
                                 "must match --kind/--n/--m (and --S/--decay if given)", metavar="FILE")

    def __post_init__(self):
        check_choices(self)
        check_paths(self)
        for name in ("n", "m", "steps", "seeds", "batch_size", "count"):
            check_int(flag(ToyStageConfig, name), getattr(self, name), low=1)
        if self.n < 2:
            raise ValueError(f"--n must be >= 2 to compare one- and two-feature inputs, got {self.n}")
        if self.S is not None:  # named as lucent_inhibit.toy.ToyConfig names it
            check_number("--S (feature activation probability)", self.S, low=0, high=1, low_open=True)
        check_number("--decay (importance decay)", self.decay, low=0, high=1, low_open=True)
        check_number(flag(ToyStageConfig, "lr"), self.lr, 0, MAX_LR, low_open=True)
        self._check_memory()

    def _check_memory(self) -> None:
        """Refuse sizes whose up-front tensors (float32) exceed the machine's memory, before any training: the
        analysis attributes every output to every hidden unit on ``count`` inputs of each kind (2 x count x n x
        m values); a training step holds inputs, hidden units and outputs of its batch and their gradients
        (about 2 x batch_size x (3n + m) values)."""
        n, m = flag(ToyStageConfig, "n"), flag(ToyStageConfig, "m")
        check_host_memory(f"the analysis of {flag(ToyStageConfig, 'count')} {self.count} inputs per kind with {n} "
                          f"{self.n} and {m} {self.m}", 4 * 2 * self.count * self.n * self.m)
        check_host_memory(f"a training batch of {flag(ToyStageConfig, 'batch_size')} {self.batch_size} with {n} "
                          f"{self.n} and {m} {self.m}", 4 * 2 * self.batch_size * (3 * self.n + self.m))

    def toy_config(self):
        from ...toy import ToyConfig

        S = self.S if self.S is not None else DEFAULT_S[self.kind]
        return ToyConfig(self.kind, n=self.n, m=self.m, S=S, decay=self.decay)


class ToyRun(NamedTuple):
    model: object  # the trained (or loaded) ToyModel
    analysis: object  # ToyAnalysis of it (with its control's numbers)
    inhibition: object  # ToyAnalysis of the hand-built inhibition model
    summary: dict


def _model(cfg: ToyStageConfig, config, progress: bool):
    from ...toy import ToyModel, evaluate, train_toy

    if cfg.load:
        expected = {"kind": config.kind, "n": config.n, "m": config.m, "decay": config.decay}
        if cfg.S is not None:
            expected["S"] = config.S
        model = ToyModel.load(cfg.load, **expected)
        loss, zero = evaluate(model)
        return model, {"loaded": cfg.load, "loss": loss, "zero_loss": zero, "loss_ratio": loss / zero}
    result = train_toy(config, steps=cfg.steps, seeds=range(cfg.seeds), batch_size=cfg.batch_size, lr=cfg.lr,
                       progress=progress)
    result.save(os.path.join(cfg.out, "toy_model.npz"))
    return result.model, result.summary()


def run(cfg: ToyStageConfig, progress: bool = True) -> ToyRun:
    from ...toy import analyze_toy, inhibition_model, plot_superposition, separated_model, units_per_feature
    from ...toy.analysis import control_numbers
    from ..runtime import out_folder

    config = cfg.toy_config()
    out_folder(cfg.out)
    model, train = _model(cfg, config, progress)
    control = analyze_toy(separated_model(config), count=cfg.count, control=False)
    analysis = analyze_toy(model, count=cfg.count, control=False)
    analysis.control = control_numbers(control)  # the control analysed once: for the finding and the figure
    inhibitory = inhibition_model(config.n, config.decay, config.S)
    inhib = analyze_toy(inhibitory, count=cfg.count)
    analysis.save(os.path.join(cfg.out, "toy_analysis.npz"))
    plot_superposition(model, os.path.join(cfg.out, "toy_superposition.png"), inhibitory=inhibitory,
                       analyses=(analysis, control, inhib))
    summary = {"train": train, "analysis": {**analysis.summary(), "units_per_feature":
                                            units_per_feature(model).tolist()}, "inhibition_model": inhib.summary()}
    with open(os.path.join(cfg.out, "toy_summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    return ToyRun(model, analysis, inhib, summary)


def describe(run_: ToyRun, cfg: ToyStageConfig) -> List[str]:
    t, a, i, c = run_.summary["train"], run_.summary["analysis"], run_.summary["inhibition_model"], run_.model.config
    lines = [f"toy model: {c.kind}, n={c.n} features, m={c.m} hidden units, S={c.S}, importance {c.decay}^i"]
    if "seeds" in t:
        lines.append(f"  seeds {t['seeds']}: losses " + ", ".join(f"{v:.4g}" for v in t["losses"])
                     + f"; best seed {t['best_seed']}")
    lines += [
        f"  loss {t['loss']:.4g} vs all-zero predictor {t['zero_loss']:.4g} (ratio {t['loss_ratio']:.3f})",
        f"  features represented (alone, output >= half its target): {a['n_represented']} of {c.n} (without "
        f"sharing {c.m} units fit {c.m // 2}); hidden units per feature {a['units_per_feature']}",
        f"  mean tension min(P, N): one-feature inputs {a['mean_tension_one']:.4f}, two-feature inputs "
        f"{a['mean_tension_two']:.4f} (inactive outputs {a['mean_tension_two_inactive_outputs']:.4f}, active "
        f"{a['mean_tension_two_active_outputs']:.4f})",
        "  tension per output (one / two features): " + ", ".join(
            f"{k}: {u:.3f}/{v:.3f}" for k, (u, v) in enumerate(zip(a["tension_per_output_one"],
                                                                   a["tension_per_output_two"]))),
        f"  control without superposition (exact solution, m={a['control']['m']}, "
        f"{a['control']['shared_units']} shared units): one-feature {a['control']['mean_tension_one']:.4f}, "
        f"two-feature {a['control']['mean_tension_two']:.4f}; the trained model shares {a['shared_units']} units",
        f"  hand-built inhibition model (m={2 * c.n}): one-feature {i['mean_tension_one']:.4f}, two-feature "
        f"{i['mean_tension_two']:.4f}",
        f"  wrote {', '.join(_written(cfg))} to {cfg.out}",
    ]
    return lines


def _written(cfg: ToyStageConfig) -> List[str]:
    """The files :func:`run` wrote into ``cfg.out`` (a loaded model is not saved again), none of the others."""
    return [f for f in ("toy_model.npz", "toy_analysis.npz", "toy_superposition.png", "toy_summary.json")
            if f != "toy_model.npz" or cfg.load is None]


def section(runs, root: str):
    from ...findings.toy import toy_finding
    from ..runtime import files_section

    cfg, run_ = runs[0]
    t, a = run_.summary["train"], run_.analysis
    text = ("A toy model that must store more features than it has neurons (absolute value of sparse inputs, two "
            "ReLU units per feature needed) puts them in superposition. Inputs with two active features produce "
            "large positive and negative attributions that cancel, the MTI motif, through interference alone. The "
            "control passes the same inputs through the task's exact solution with enough units (two per feature, "
            "none shared): the motif should vanish there. Last, a model where the same motif comes from a genuine "
            "inhibition mechanism: tension alone cannot tell interference from inhibition.")
    numbers = [("toy: weighted loss / all-zero predictor's loss", t["loss_ratio"], "well below 1: it reconstructs |x|"),
               ("toy: features represented (of n)", int(a.represented.sum()),
                f"m/2 = {run_.model.config.m // 2} would fit without sharing"),
               ("toy: mean tension, one-feature inputs", a.mean_tension_one, ""),
               ("toy: mean tension, two-feature inputs", a.mean_tension_two, "higher: interference"),
               ("toy: hidden units shared between features", a.shared_units, "superposition"),
               ("toy control (no superposition): mean tension, two-feature inputs", a.control["mean_tension_two"],
                "about 0: no motif without shared units")]
    links = [f for f in _written(cfg) if not f.endswith(".png")]
    sec = files_section("Superposition: interference looks like inhibition", text, cfg.out, root,
                        ["toy_superposition.png"], links)
    sec.findings = [toy_finding(a)]
    return sec, numbers


STAGE = register_module(
    __name__, ToyStageConfig, "superposition toy models: train, attribute, and show interference that looks like inhibition")
