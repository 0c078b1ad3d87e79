"""Which channels of the attribution layer inhibit and excite each unit on its maximally tense images, and what
removing each does (Hamblin et al. 2024, section 2: ``S = grad f * h`` split by channel, as
:func:`~lucent_inhibit.inhibitor_dictionary` does for one feature).

For a unit with MTIs ``M`` (t images): channel ``c`` inhibits by ``sum over M and positions of relu(-S_c)`` (its
share of the MTIs' ``N``) and excites by ``sum relu(S_c)`` (its share of ``P``). The causal check sets the channel
to zero on the MTIs and re-runs the forward pass from the attribution layer: ``delta f`` is the mean change of
the unit over the MTIs (positive for a channel that held the unit down). All the removals of one unit run as
blocks of one batch (:func:`~lucent_inhibit.attribution.interventions.set_channels`).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..attribution.interventions import channel_sums, forward_replaced, model_inputs, replayed_prefix, set_channels
from ..attribution.passes import dataset_pass
from ..core.features import Feature
from ..core.settings import PassSettings
from ..data.datasets import load_batch
from .readings import recorded_outputs

log = logging.getLogger("lucent_inhibit")

#: the most images whose attribution-layer activations are held at once (one pass of the network before that
#: layer for all of them; memory: their activations there)
GROUP_IMAGES = 256
#: MTIs of the first unit on which the replay is checked against ordinary passes (its top inhibitor and exciter)
CHECK_IMAGES = 2
#: the per-unit channel fields of a :class:`~lucent_inhibit.microscope.result.Microscope`
FIELDS = ("inhibitors", "inhibitor_share", "inhibitor_effect", "exciters", "exciter_share", "exciter_effect")


def channel_split(scores: torch.Tensor) -> Tuple[np.ndarray, np.ndarray]:
    """``(P_c, N_c)``, each (C,) float64: ``relu(S)`` and ``relu(-S)`` of each channel of the attribution
    ``scores`` (B, C, ...) or a token layer's (B, T, C), summed over the images and positions."""
    s = scores.double().cpu()
    return channel_sums(s.clamp(min=0)).sum(0).numpy(), channel_sums((-s).clamp(min=0)).sum(0).numpy()


def channel_totals(run, indices: np.ndarray, feature: Feature, layer: str) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`channel_split` of the attribution of ``feature`` at ``layer`` over the dataset images ``indices``
    of the pass ``run``, in its batches."""
    pos = neg = 0.0
    for _, batch in run.batches(indices):
        p, n = channel_split(run.attribute(batch, feature).scores[layer])
        pos, neg = pos + p, neg + n
    return pos, neg


def top_channels(totals: np.ndarray, m: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(channels (m,) int64, shares (m,) float64)``: the ``m`` largest of ``totals`` (C,), largest first (ties
    by channel), with their shares of the sum."""
    order = np.argsort(-totals, kind="stable")[:m]
    return order.astype(np.int64), totals[order] / max(float(totals.sum()), 1e-30)


def removal_effects(run, images: torch.Tensor, feature: Feature, layer: str, channels: Sequence[int],
                    replay=None, rows=None) -> np.ndarray:
    """(m,) float64 mean change of ``feature`` over ``images`` (t, 3, H, W) when each of ``channels`` of ``layer``
    alone is set to zero, in blocks of one batch of about ``4 * run.batch_size`` images, ``16 *`` where only the
    network from ``layer`` on runs (at least one removal, plus the unchanged images, per pass). Inside
    :func:`~lucent_inhibit.attribution.interventions.replayed_prefix` (``replay``, with ``images`` its recorded
    ``rows``) only the network from ``layer`` on runs for them, and the inputs are not read (a view of one image
    stands for them)."""
    t, chans = len(images), [-1] + [int(c) for c in channels]  # -1: the unchanged images, f0
    replayed = replay is not None and replay.active
    per_pass, f = max(2, (16 if replayed else 4) * run.batch_size // max(t, 1)), []
    x = model_inputs(run, images[:1] if replayed else images)
    for start in range(0, len(chans), per_pass):
        block = chans[start:start + per_pass]
        if replay is not None:
            replay.rows = rows.repeat(len(block))
        inputs = x.expand(len(block) * t, *x.shape[1:]) if replayed else x.repeat(len(block), 1, 1, 1)
        # replayed: the layer's output is the rows the replay gathered for this pass, a new tensor, zeroed in place
        remove = lambda o, b=block: set_channels(o, b, torch.zeros(()), block=t, copy=not replayed)  # noqa: E731
        f.append(forward_replaced(run, None, feature, layer, remove, inputs=inputs).double())
    f = torch.cat(f).reshape(len(chans), t).numpy()
    return (f[1:] - f[0]).mean(1)


def _groups(mtis: np.ndarray, limit: int) -> List[List[int]]:
    """Consecutive units whose MTIs together are at most ``limit`` images (at least one unit per group)."""
    groups, seen = [[]], set()
    for k, idx in enumerate(mtis):
        new = seen | set(int(i) for i in idx)
        if groups[-1] and len(new) > limit:
            groups.append([])
            new = set(int(i) for i in idx)
        groups[-1].append(k)
        seen = new
    return groups


def unit_channels(model, dataset, features: Sequence[Feature], attr: str, mtis: np.ndarray, m: int,
                  settings: PassSettings, kept: Optional[Dict[int, torch.Tensor]] = None) -> Dict[str, np.ndarray]:
    """For each of ``features`` (K units) on its MTIs ``mtis`` (K, t): the top ``m`` inhibitory and excitatory
    channels of ``attr`` with their shares of N and P and the mean change of f when each is removed
    (:data:`FIELDS`, each (K, m)). Units are taken in groups whose MTIs together are at most
    :data:`GROUP_IMAGES` images: the network before ``attr`` is replayed from its output on them
    (:func:`~lucent_inhibit.attribution.interventions.replayed_prefix`; ``kept``: dataset index -> that output,
    read off the census, the rest computed once per group), each unit's attribution and removals run from
    ``attr`` on. The first unit's top inhibitor and exciter are also computed with ordinary passes; where the two
    disagree (a model the replay does not fit) every unit runs ordinary passes (said on the log)."""
    run = dataset_pass(model, dataset, [attr], list(features), settings)
    kept = {} if kept is None else kept
    rows: Dict[str, list] = {k: [] for k in FIELDS}
    with run.evaluating(), run.bar(mtis.size, f"channels of {len(features)} units") as bar:
        replay_ok = _replay_agrees(run, dataset, features[0], attr, mtis[0], kept)
        for group in _groups(mtis, max(GROUP_IMAGES, mtis.shape[1])):
            union = np.unique(mtis[group])
            images = load_batch(dataset, union)
            with (_replayed(run, images, union, attr, kept) if replay_ok else contextlib.nullcontext()) as replay:
                for k in group:
                    at = torch.as_tensor(np.searchsorted(union, mtis[k]))
                    for name, v in _one_unit(run, images[at], features[k], attr, m, replay, at).items():
                        rows[name].append(v)
                    bar.update(mtis.shape[1])
    return {k: np.asarray(v) for k, v in rows.items()}


def _replayed(run, images: torch.Tensor, indices: np.ndarray, attr: str, kept: Dict[int, torch.Tensor]):
    """:func:`~lucent_inhibit.attribution.interventions.replayed_prefix` on the dataset images ``indices``
    (``images``), started from their ``kept`` outputs where the census left them."""
    x = model_inputs(run, images)
    return replayed_prefix(run.model, x, attr, run.batch_size,
                           recorded_outputs(run.model, x, indices, attr, kept, run.batch_size))


def _replay_agrees(run, dataset, feature: Feature, attr: str, mtis: np.ndarray, kept: Dict[int, torch.Tensor]) -> bool:
    """Whether one unit's top inhibitory and excitatory channel, their shares and removal effects on its first
    :data:`CHECK_IMAGES` MTIs come out the same with the network before ``attr`` replayed as with ordinary passes
    (relative tolerance 1e-4)."""
    mtis = np.asarray(mtis)[:CHECK_IMAGES]
    images = load_batch(dataset, mtis)
    plain = _one_unit(run, images, feature, attr, 1, None, None)
    try:
        with _replayed(run, images, mtis, attr, kept) as replay:
            fast = _one_unit(run, images, feature, attr, 1, replay, torch.arange(len(images)))
    except (RuntimeError, ValueError, IndexError) as exc:
        log.info("the network before %s is not replayed (%s): every unit runs ordinary passes", attr, exc)
        return False
    scale = max(float(np.abs(plain["inhibitor_effect"]).max(initial=0)), float(np.abs(plain["exciter_effect"]).max(initial=0)), 1e-12)
    same = all(np.array_equal(plain[k], fast[k]) for k in ("inhibitors", "exciters")) and all(
        np.allclose(plain[k], fast[k], rtol=1e-4, atol=1e-4 * scale) for k in FIELDS if k not in ("inhibitors", "exciters"))
    if not same:
        log.info("the network before %s replayed gives other numbers than ordinary passes on %s: every unit runs "
                 "ordinary passes", attr, feature.name)
    return same


def _one_unit(run, images, feature, attr, m, replay, rows) -> Dict[str, np.ndarray]:
    """One unit's :data:`FIELDS` on its MTIs ``images`` (t, 3, H, W), rows ``rows`` of the replay's images."""
    if replay is not None:
        replay.rows = rows
    p, n = channel_split(run.attribute(images, feature).scores[attr])
    top = {name: top_channels(totals, min(m, totals.size)) for name, totals in (("inhibitor", n), ("exciter", p))}
    both = np.concatenate([top["inhibitor"][0], top["exciter"][0]])
    effects = removal_effects(run, images, feature, attr, both, replay, rows)
    out = {}
    for name, (c, s) in top.items():
        out[name + "s"], out[name + "_share"] = c, s
        out[name + "_effect"] = effects[:c.size] if name == "inhibitor" else effects[-c.size:]
    return out
