"""The model-parameter randomization test of maximally tense images (Adebayo et al. 2018, "Sanity checks for
saliency maps"; paper 002, section 6.3): do the MTIs, and the inhibitor dictionary, depend on what the
model learned, or would an untrained network of the same architecture give them too?

:func:`randomization_cascade` re-initialises the model's natural blocks (:mod:`lucent_inhibit.models.blocks`)
one after the other, cumulatively, on a deep copy of the model, from the feature's block backwards through the
attribution layer to the input (a block holding the attribution layer is split there: first its part after
the layer, then the rest). Before the first step (the trained model) and after each, one attribution pass over
the dataset measures every image's ``f``, ``P`` and ``N`` at the attribution layer and the inhibitor dictionary's
ranking (``relu(-S)`` per channel summed over that step's own top-``k`` MTIs, as
:func:`~lucent_inhibit.causal.inhibitors.inhibitor_dictionary` ranks channels), and one more on the trained
model's top-``k`` MTIs takes their attribution ``S`` at the layer and their maps at the input. :class:`RandomizationCascade` compares each
step with the trained model: the Spearman rank correlation of the images' tension, the overlap of the top-``k``
MTIs, the rank correlation of the MTIs' attributions (every element of ``S``, Adebayo's rank correlation of
maps) and of the dictionary's channel ranking. The claim's rule is
:func:`lucent_inhibit.findings.randomization.randomization_finding`.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..attribution.agreement import pearson
from ..attribution.interventions import model_inputs
from ..attribution.passes import DatasetPass, dataset_pass
from ..attribution.totals import MIN_PERCENTILE_IMAGES, percentile_ranks, signed_totals, tension, top_indices
from ..core.checkpoints import checkpointed
from ..core.distributed import digest
from ..core.features import Feature, as_feature
from ..core.layers import check_layer_names
from ..core.results import Result
from ..core.settings import PassSettings
from ..core.validate import MAX_SEED, InputError, check_int
from ..data.datasets import load_batch
from ..models.blocks import forward_spans, natural_blocks, parameter_modules, reinitialize

#: side of the stored thumbnails of the trained model's MTIs (pixels).
THUMB = 64
#: A dataset whose images take at most this many bytes (float32) is decoded once and held for every step's
#: pass; a larger one is read again at each step.
CACHE_BYTES = 2 ** 30


# --- rank statistics ---
def ranks(values: np.ndarray) -> np.ndarray:
    """(n,) average ranks (ties share their mean rank) of ``values`` (n,)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    s = np.sort(v)
    return (np.searchsorted(s, v, "left") + np.searchsorted(s, v, "right") - 1) / 2.0


def spearman(a, b) -> float:
    """Spearman rank correlation of two equally long 1-D arrays; NaN when either is constant or not finite."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.size < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    return pearson(ranks(a), ranks(b))


# --- result ---
@dataclass
class RandomizationCascade(Result):
    """Result of :func:`randomization_cascade`; step 0 is the trained model, step ``s`` the model with the
    blocks of steps 1..s re-initialised.

    Attributes:
        feature, layer: the feature and its attribution layer.
        steps: (S,) labels, ``"trained"`` first, then the block (or part of a block) each step re-initialises.
        modules: per step, the Lucent names of the modules whose parameters it re-initialised ([] for step 0).
        between: the first step after which every parameter between ``layer`` and the feature is re-initialised
            (-1: none is, or there is none).
        indices: (n,) int64 dataset indices of the images.
        activation, pos, neg: (S, n) float64 ``f``, ``P`` and ``N`` (element, L1) at ``layer`` per step.
        inhibition: (S, C) float64 ``relu(-S)`` per channel of ``layer`` summed over positions and over that
            step's own top-``k`` MTIs (the inhibitor dictionary's ranking).
        attribution_rho: (S, k) float64 Spearman rank correlation of each of the trained model's top-``k`` MTIs'
            attribution ``S`` at ``layer`` (every element) with the trained model's.
        maps: (S, k, h, w) float32 their attribution at the input (gradient x input summed over colour channels),
            average-pooled to at most 64 px a side (:func:`input_maps`).
        thumbnails: (k, 3, 64, 64) uint8 the trained model's top-``k`` MTIs, downsampled.
        k: MTIs compared per step; score: ``"percentile"`` (``"min"`` under 10 images); seed: of the draws.
        info: re-initialisation method per module, completeness r of the trained model, images, dataset.
    """

    feature: Feature
    layer: str
    steps: List[str]
    modules: List[List[str]]
    between: int
    indices: np.ndarray
    activation: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    inhibition: np.ndarray
    attribution_rho: np.ndarray
    maps: np.ndarray
    thumbnails: np.ndarray
    k: int
    score: str = "percentile"
    seed: int = 0
    info: dict = field(default_factory=dict)

    def tension(self) -> np.ndarray:
        """(S, n) float64 tension of every image at every step (``score`` of P and N)."""
        if self.score == "percentile":
            return np.stack([np.minimum(percentile_ranks(p), percentile_ranks(n)) for p, n in zip(self.pos, self.neg)])
        return np.asarray(tension(self.pos, self.neg, self.score), dtype=np.float64)

    def mtis(self, step: int = 0) -> np.ndarray:
        """(k,) dataset indices of the top-``k`` MTIs at ``step`` (ties of the percentile score broken by
        the larger rank, as :meth:`lucent_inhibit.ScanResult.mtis`)."""
        then = None
        if self.score == "percentile":
            then = np.maximum(percentile_ranks(self.pos[step]), percentile_ranks(self.neg[step]))
        return top_indices(self.indices, self.tension()[step], self.k, True, then)

    def tension_correlation(self) -> np.ndarray:
        """(S,) Spearman rank correlation of the images' tension with the trained model's."""
        t = self.tension()
        return np.array([spearman(t[0], row) for row in t])

    def mti_overlap(self) -> np.ndarray:
        """(S,) share of the trained model's top-``k`` MTIs among each step's top-``k``."""
        top = set(self.mtis(0).tolist())
        return np.array([len(top & set(self.mtis(s).tolist())) / self.k for s in range(len(self.steps))])

    def attribution_correlation(self) -> np.ndarray:
        """(S,) mean over the trained model's top-``k`` MTIs of the rank correlation of their attribution ``S``
        with the trained one (NaN where it is undefined for every MTI: an all-constant attribution)."""
        rho = np.asarray(self.attribution_rho, dtype=np.float64)
        finite = np.isfinite(rho)
        return np.array([float(r[f].mean()) if f.any() else float("nan") for r, f in zip(rho, finite)])

    def dictionary_correlation(self) -> np.ndarray:
        """(S,) Spearman rank correlation of each step's channel ranking by inhibition with the trained one's."""
        return np.array([spearman(self.inhibition[0], row) for row in self.inhibition])

    def curves(self) -> Dict[str, np.ndarray]:
        """metric name -> (S,) values per step (1 at step 0, where each compares the trained model with itself)."""
        return {"tension rank correlation": self.tension_correlation(), f"top-{self.k} MTI overlap": self.mti_overlap(),
                "MTI attribution rank correlation": self.attribution_correlation(),
                "inhibitor ranking correlation": self.dictionary_correlation()}

    def table(self) -> List[dict]:
        """One row per step: its label and every metric of :meth:`curves`."""
        curves = self.curves()
        return [{"step": i, "reinitialised": label, **{k: float(v[i]) for k, v in curves.items()}}
                for i, label in enumerate(self.steps)]

    def summary(self) -> dict:
        rho = self.tension_correlation()
        return {"type": self.kind(), "feature": self.feature.name, "layer": self.layer, "images": int(self.indices.size),
                "k": self.k, "score": self.score, "steps": list(self.steps), "between": self.between,
                "tension_correlation_between": float(rho[self.between]) if self.between >= 0 else float("nan"),
                "table": self.table(), "completeness_r": self.info.get("completeness_r")}

    def plot(self, path=None, ax=None, **style):
        """Adebayo's cascade: the maps of the trained model's top MTIs at each step above the curves of
        :meth:`curves` against the steps (``ax``: the curves only, drawn there; ``style``:
        :func:`~lucent_inhibit.causal.figures.plot_randomization`'s keywords). Returns the Figure (a PNG at
        ``path`` when given)."""
        from .figures import plot_randomization

        return plot_randomization(self, None if path is None else os.fspath(path), ax=ax, **style)


# --- the cascade's steps ---
Step = Tuple[str, List[str], float]  # label, modules, ordering key (the latest module start)


def _short(layer: str, block: str) -> str:
    return layer[len(block) + 1:] if block and layer.startswith(block + "_") else layer


def automatic_steps(model: nn.Module, spans, feature_end: int, layer_end: float, layer: str) -> List[Step]:
    """Every natural block that runs before the feature ends, latest first; a block that holds modules on
    both sides of the attribution layer becomes two steps, its part after the layer first."""
    start = lambda m: 0.5 if m == "" else spans.get(m, (np.inf,))[0]  # noqa: E731  the model's own: first
    steps: List[Step] = []
    for block in natural_blocks(model):
        mods = [m for m in parameter_modules(model, block) if start(m) < feature_end]
        after, before = [m for m in mods if start(m) > layer_end], [m for m in mods if start(m) <= layer_end]
        name = block or type(model).__name__
        if after and before:
            steps += [(f"{name} (after {_short(layer, block)})", after, max(map(start, after))),
                      (f"{name} (up to {_short(layer, block)})", before, max(map(start, before)))]
        elif mods:
            steps.append((name, mods, max(map(start, mods))))
    return sorted(steps, key=lambda s: -s[2])


def named_steps(model: nn.Module, blocks: Sequence[str]) -> List[Step]:
    """One step per name of ``blocks`` (Lucent names; ``""`` the model's own parameters), in that order."""
    names = [_checked_block(model, b) for b in blocks]
    steps = []
    for b in names:
        mods = parameter_modules(model, b)
        if not mods:
            raise InputError(f"block {b!r} holds no parameters: nothing to re-initialise (blocks with parameters: "
                             f"{', '.join(natural_blocks(model)[:12])}, ...)")
        steps.append((b or type(model).__name__, mods, 0.0))
    return steps


def _checked_block(model: nn.Module, name) -> str:
    if not isinstance(name, str):
        raise InputError(f"blocks must be None, a number of steps or Lucent module names, got {name!r}")
    if name:
        check_layer_names(model, [name], allow=())
    return name


def cascade_plan(model: nn.Module, x: torch.Tensor, feature: Feature, layer: str,
                 blocks: Union[None, int, Sequence[str]]) -> Tuple[List[Step], int]:
    """The steps (label, modules, key) and the first step after which every parameterised module that runs
    between ``layer`` and the feature is re-initialised (-1: never, or none runs there)."""
    spans = forward_spans(model, x, stop_after=feature.layer)
    feature_end = spans[feature.layer][1]
    layer_end = 0 if layer == "input" else spans[layer][1]
    auto = automatic_steps(model, spans, feature_end, layer_end, layer)
    if blocks is None or isinstance(blocks, (int, np.integer)) and not isinstance(blocks, bool):
        steps = auto if blocks is None else auto[:check_int("blocks", blocks, 1, len(auto))]
    elif isinstance(blocks, str):
        steps = named_steps(model, [blocks])
    else:
        steps = named_steps(model, list(blocks))
    between = {m for _, mods, _ in auto for m in mods if m in spans and spans[m][0] > layer_end}
    done: set = set()
    for i, (_, mods, _) in enumerate(steps, 1):
        done |= set(mods)
        if between and between <= done:
            return steps, i
    return steps, -1


# --- measurement ---
def input_maps(s: torch.Tensor) -> torch.Tensor:
    """(B, h, w) the input attribution (B, 3, H, W) summed over colour channels, average-pooled to at most
    :data:`THUMB` pixels a side (Adebayo et al.'s maps, in the input's space whatever the attribution layer)."""
    m = s.sum(1, keepdim=True)
    return F.adaptive_avg_pool2d(m, (min(THUMB, m.shape[2]), min(THUMB, m.shape[3])))[:, 0]


def channel_inhibition(s: torch.Tensor) -> torch.Tensor:
    """(B, C) ``relu(-S)`` per channel summed over positions."""
    neg = (-s).clamp(min=0)
    return neg.flatten(2).sum(2) if neg.dim() == 4 else neg.sum(1) if neg.dim() == 3 else neg


def measure(run: DatasetPass, feature: Feature, layer: str, bar) -> Dict[str, np.ndarray]:
    """One attribution pass over the dataset: ``f``, ``P``, ``N`` (n,) and per-channel inhibition ``channels``
    (n, C)."""
    parts: Dict[str, list] = {"f": [], "P": [], "N": [], "channels": []}
    for _, images in run.batches():
        att = run.attribute(images, feature)
        s = att.scores[layer].detach().float().cpu()
        p, n = signed_totals(s)
        for key, value in (("f", att.activation.detach().cpu()), ("P", p), ("N", n), ("channels", channel_inhibition(s))):
            parts[key].append(value.double().numpy())
        bar.update(len(images))
    return {key: np.concatenate(v) for key, v in parts.items()}


def _top(state: Dict[str, np.ndarray], k: int, score: str) -> np.ndarray:
    """Rows of the top-``k`` MTIs of one measured state (ties of the percentile score broken by the larger rank)."""
    rows = np.arange(state["P"].size)
    if score == "percentile":
        pp, pn = percentile_ranks(state["P"]), percentile_ranks(state["N"])
        return top_indices(rows, np.minimum(pp, pn), k, True, np.maximum(pp, pn))
    return top_indices(rows, np.minimum(state["P"], state["N"]), k, True)


def attributions(run: DatasetPass, feature: Feature, layer: str, rows: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
    """The dataset images ``rows``' attribution: ``S`` (k, ...) float32 at ``layer`` and their input maps (k, h, w)
    (:func:`input_maps`), from one pass."""
    both = dataclasses.replace(run, layers=list(dict.fromkeys([layer, "input"])))
    parts = [both.attribute(images, feature).scores for _, images in both.batches(rows)]
    return (torch.cat([p[layer].detach().float().cpu() for p in parts]),
            torch.cat([input_maps(p["input"].detach().float().cpu()) for p in parts]))


def reduced(run: DatasetPass, feature: Feature, layer: str, state: Dict[str, np.ndarray], rows: np.ndarray,
            trained: Optional[torch.Tensor], k: int, score: str) -> Dict[str, np.ndarray]:
    """What a step keeps: ``f``, ``P``, ``N`` of its pass, the inhibition per channel summed over its own
    top-``k`` MTIs, and on the trained model's MTIs ``rows`` the attribution ``S`` (``"S"``; the trained one:
    ``trained``, None at step 0), its rank correlation with the trained one and its map."""
    s, maps = attributions(run, feature, layer, rows)
    base = s if trained is None else trained
    rho = np.array([spearman(a.numpy(), b.numpy()) for a, b in zip(base, s)])
    return {"f": state["f"], "P": state["P"], "N": state["N"], "S": s, "rho": rho,
            "maps": maps.numpy(), "inhibition": state["channels"][_top(state, k, score)].sum(0)}


def _thumbnails(dataset, indices: np.ndarray) -> np.ndarray:
    small = F.interpolate(load_batch(dataset, indices).float(), size=(THUMB, THUMB), mode="bilinear",
                          align_corners=False)
    return (small.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def held(run: DatasetPass) -> DatasetPass:
    """``run`` over its images decoded once into one tensor when they fit :data:`CACHE_BYTES`, else itself."""
    first = load_batch(run.dataset, [0])
    if torch.is_tensor(run.dataset) or run.size * first[0].numel() * 4 > CACHE_BYTES:
        return run
    return dataclasses.replace(run, dataset=torch.cat([images for _, images in run.batches()]))


def step_seed(seed: int, step: int) -> int:
    """The seed of step ``step``'s re-initialisation (independent streams per step)."""
    return int(np.random.SeedSequence([int(seed), int(step)]).generate_state(1, np.uint64)[0])


def _cascade_states(run: DatasetPass, net: nn.Module, feature: Feature, layer: str, steps: List[Step], k: int,
                    score: str, seed: int, checkpoint, identity: dict, resume: bool) -> Tuple[list, Dict[str, str]]:
    """Every step's :func:`reduced` state (step 0 the trained model) and the re-initialisation method per module,
    one checkpoint chunk per step (:func:`~lucent_inhibit.core.checkpoints.checkpointed`): a resumed run
    re-initialises the finished steps' modules again (seeded, so the same weights) without attributing."""
    states: list = []
    how: Dict[str, str] = {}

    def advance(step: int) -> None:
        if step > 0:
            how.update(reinitialize(net, steps[step - 1][1], step_seed(seed, step)))

    with run.bar(run.size * (len(steps) + 1), f"randomization cascade of {feature.name}") as bar:
        def compute(c: int, idx: np.ndarray) -> Dict[str, np.ndarray]:
            advance(c)
            rows = _top(states[0], k, score) if states else None
            state = measure(run, feature, layer, bar)
            rows = _top(state, k, score) if rows is None else rows
            out = reduced(run, feature, layer, state, rows, states[0]["S"] if states else None, k, score)
            return {key: (v.numpy() if torch.is_tensor(v) else v)[None] for key, v in out.items()}

        def skipped(idx: np.ndarray) -> None:
            advance(int(idx[0]))
            bar.update(run.size)

        def consume(c: int, arrays: Dict[str, np.ndarray]) -> None:
            states.append({key: torch.from_numpy(v[0]) if key == "S" else v[0] for key, v in arrays.items()})

        checkpointed(checkpoint, "randomization cascade", identity, [np.array([i]) for i in range(len(steps) + 1)],
                     compute, resume, skipped, consume)
    return states, how


def randomization_cascade(model: nn.Module, dataset, feature, layer: str, blocks=None, k: int = 10,
                          settings: Optional[PassSettings] = None, seed: int = 0, checkpoint=None,
                          resume: bool = True) -> RandomizationCascade:
    """The model-parameter randomization test of the MTIs of ``feature`` attributed at ``layer``.

    Args:
        model: a prepared model; left untouched (the cascade runs on a deep copy, in eval mode).
        dataset: the images (as for :func:`lucent_inhibit.scan`); every step attributes all of them.
        feature: the :class:`~lucent_inhibit.Feature`; layer: its attribution layer (one Lucent name).
        blocks: None: every natural block back to the input (:func:`~lucent_inhibit.models.blocks.natural_blocks`,
            latest first, split at ``layer``); an int n: the first n of those steps; or Lucent module names, one
            step each, in that order (``""``: the model's own parameters).
        k: MTIs compared per step (at most the number of images).
        settings: the passes' :class:`~lucent_inhibit.PassSettings`; None: the defaults.
        seed: seeds each step's re-initialisation (:func:`lucent_inhibit.models.blocks.reinitialize`).
        checkpoint: a folder where each finished step is saved (:mod:`lucent_inhibit.core.checkpoints`), so an
            interrupted cascade resumes at its first unfinished step; None: nothing is saved.
        resume: reuse the folder's steps of the same work (False: start over).

    Returns:
        :class:`RandomizationCascade` (its finding: :func:`lucent_inhibit.findings.randomization_finding`).
    """
    feature = as_feature(feature)
    if not isinstance(layer, str):
        raise TypeError(f"layer must be one Lucent layer name, got {type(layer).__name__}")
    run = dataset_pass(model, dataset, [layer], [feature], settings)
    k, seed = min(check_int("k", k, low=1), run.size), check_int("seed", seed, 0, MAX_SEED)
    score = "percentile" if run.size >= MIN_PERCENTILE_IMAGES else "min"
    net = copy.deepcopy(model)
    identity = run.identity()
    run = held(dataclasses.replace(run, model=net))
    with run.evaluating():
        steps, between = cascade_plan(net, model_inputs(run, load_batch(run.dataset, [0])), feature, layer, blocks)
        identity.update(feature=feature.to_dict(), layer=layer, k=int(k), seed=int(seed), score=score,
                        model=digest(model), steps=[[label, list(mods)] for label, mods, _ in steps])
        states, how = _cascade_states(run, net, feature, layer, steps, k, score, seed, checkpoint, identity, resume)
    rows = _top(states[0], k, score)
    stack = lambda key: np.stack([np.asarray(s[key]) for s in states])  # noqa: E731
    indices = np.arange(run.size, dtype=np.int64)
    return RandomizationCascade(
        feature, layer, ["trained"] + [label for label, _, _ in steps], [[]] + [list(m) for _, m, _ in steps],
        int(between), indices, stack("f"), stack("P"), stack("N"), stack("inhibition"), stack("rho"),
        stack("maps").astype(np.float32), _thumbnails(run.dataset, indices[rows]), int(k), score, int(seed),
        {"reinitialised": how, "completeness_r": pearson(states[0]["f"], states[0]["P"] - states[0]["N"]),
         "images": int(run.size), "dataset": run.name})


__all__ = ["RandomizationCascade", "automatic_steps", "cascade_plan", "channel_inhibition", "measure", "named_steps",
           "attributions", "randomization_cascade", "ranks", "reduced", "input_maps", "spearman", "step_seed"]
