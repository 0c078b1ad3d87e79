"""The causal test of maximally tense images: would the feature fire on them were it not for inhibition?

Hamblin et al. (2024, section 2) find maximally tense images (MTIs), whose excitatory and inhibitory
attribution ``P = sum relu(S)`` and ``N = sum relu(-S)`` (``S_l = grad_{h_l} f * h_l`` at an attribution
layer ``l``) are both large while the feature ``f`` stays near zero, and read them as what the feature's
negative weights are *for*: without inhibition, it would fire on them. SPEC section 1 states the test:
remove the inhibitory elements at the attribution layer and re-run the forward pass.

:func:`disinhibit` does it per image: the elements of ``h_l(x)`` with ``S_l(x) < 0`` are set to a
baseline (``"zero"``, or ``"mean"``: their mean over the scanned dataset) and the forward pass is re-run
from ``l`` to the feature (:func:`lucent_inhibit.core.hooks.capture` with ``replace=``), beside the linear
estimate ``f + N`` (exact for a bias-free piecewise-linear path with the zero baseline). It reports, for
the MEIs, MIIs, MTIs, random images and a matched control group of a scan, the mean ``f``, mean
disinhibited ``f`` and mean ``f + N``, and a verdict computed from them (:class:`Disinhibition`).

Why a matched control. Setting every inhibitory element to a baseline raises *every* image's ``f``, and
MTIs are chosen for a large ``P``, so "the MTIs' disinhibited ``f`` is high" (against the MEIs' ``f`` or
random images') holds by construction and is no evidence. The paper's claim is that the feature would fire
*erroneously* on its MTIs: they carry the feature's own evidence, and inhibition is what keeps it quiet. The
test that can fail compares the MTIs with images *matched on P* (for each MTI, the image of nearest ``P``
among those with at most the median ``N``: the same excitation, little inhibition) and asks three things:

1. held down: the MTIs' ``f`` lies well below the matched images' ``f`` (Welch t >= :data:`MIN_T`);
2. released: the MTIs' disinhibited ``f`` reaches ``fraction`` of the matched images' ``f``;
3. the feature's own evidence: the direction of the MTIs' excitatory attribution (``relu(S)`` summed over
   positions, a C-vector) is closer to the MEIs' mean direction (cosine) than random images' directions are
   (Welch t >= :data:`MIN_T`). Tense images excited by something unlike the feature's preferred input fail
   here, however large their ``P``.

The MTIs' disinhibited ``f`` against the MEIs' ``f`` and the random images' is still reported, as context. When ``E = P - N`` does not account for the feature at ``l`` (the scan's
completeness r and sum check), the test warns with an
:class:`~lucent_inhibit.attribution.agreement.IncompletenessWarning` and its summary says so.

The shared pieces here (:func:`ensure_scan`, :func:`layer_statistics`, :func:`forward_replaced`,
:func:`baseline_tensor`, :func:`check_complete`) also serve :mod:`lucent_inhibit.causal.inhibitors`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np
import torch
from torch import nn

from ..attribution.interventions import channel_sums, forward_replaced
from ..attribution.passes import DatasetPass, dataset_pass
from ..core.features import Feature, as_feature
from ..core.results import Result
from ..core.settings import PassSettings
from ..core.validate import MAX_FRACTION, check_number
from .removal import baseline_tensor, check_complete, ensure_scan, matched_on_p, select_groups

GROUPS = ("meis", "miis", "mtis", "random", "matched")
#: "well above random images": Welch's t of the MTIs' disinhibited f against the random images' at least this.
MIN_T = 2.0


def disinhibit_batch(run: DatasetPass, images: torch.Tensor, feature: Feature, layer: str,
                     base: torch.Tensor) -> Dict[str, np.ndarray]:
    """For a batch (B, 3, H, W): ``f``, ``disinhibited`` (the feature with every element of ``layer`` whose
    attribution is negative set to ``base``) and ``N`` (the inhibitory total), each (B,) float64."""
    att = run.attribute(images, feature)
    s = att.scores[layer]
    mask = s < 0

    def remove(o):
        return torch.where(mask.to(o.device), base.to(o.device, o.dtype).expand_as(o), o)

    f_dis = forward_replaced(run, images, feature, layer, remove)
    return {"f": att.activation.double().cpu().numpy(), "disinhibited": f_dis.double().numpy(),
            "N": (-s).clamp(min=0).flatten(1).sum(1).double().cpu().numpy(),
            "excitation": channel_sums(s.clamp(min=0)).float().cpu().numpy()}


def mean_cosine(vectors: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """(k,) cosine of each row of ``vectors`` (k, C) with ``direction`` (C,); 0 for an all-zero row."""
    norms = np.linalg.norm(vectors, axis=1) * max(float(np.linalg.norm(direction)), 1e-12)
    return np.where(norms > 0, vectors @ direction / np.maximum(norms, 1e-30), 0.0)


# ------------------------------------------------------------------------------------------------
# result
# ------------------------------------------------------------------------------------------------
def _welch_t(a: np.ndarray, b: np.ndarray) -> float:
    """Welch's t of mean(a) - mean(b) (NaN with fewer than 2 values in either)."""
    if a.size < 2 or b.size < 2:
        return float("nan")
    se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    return float((a.mean() - b.mean()) / se) if se > 0 else float("inf") * np.sign(a.mean() - b.mean())


@dataclass
class Disinhibition(Result):
    """Result of :func:`disinhibit`.

    Attributes:
        feature, layer: the feature and the attribution layer where inhibition was removed.
        baseline: ``"zero"`` or ``"mean"``: the value the removed (S < 0) elements took.
        indices: group (``meis``, ``miis``, ``mtis``, ``random``) -> (k,) int64 dataset indices.
        activation: group -> (k,) float64 feature ``f`` (feature units).
        disinhibited: group -> (k,) float64 ``f`` with the inhibitory elements removed (forward re-run).
        linear: group -> (k,) float64 ``f + N``, the first-order estimate of ``disinhibited``.
        fraction: the verdict's bar: the MTIs' mean disinhibited f must reach this fraction of the matched
            group's mean f.
        excitation: group -> (k, C) float32 ``relu(S)`` summed over positions (the direction of each image's
            excitatory attribution at ``layer``).
        completeness: the scan's r, slope and share at ``layer`` and whether E adds up there.
        info: scan score, k and other settings.
    """

    feature: Feature
    layer: str
    baseline: str
    indices: Dict[str, np.ndarray]
    activation: Dict[str, np.ndarray]
    disinhibited: Dict[str, np.ndarray]
    linear: Dict[str, np.ndarray]
    fraction: float = 0.5
    completeness: dict = field(default_factory=dict)
    excitation: Dict[str, np.ndarray] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def means(self) -> Dict[str, Dict[str, float]]:
        """group -> mean ``f``, mean disinhibited ``f`` and mean ``f + N`` over its images."""
        return {g: {"f": float(self.activation[g].mean()), "disinhibited": float(self.disinhibited[g].mean()),
                    "f_plus_N": float(self.linear[g].mean()), "images": int(self.indices[g].size)}
                for g in GROUPS if g in self.indices}

    @property
    def ratio(self) -> float:
        """Mean disinhibited f of the MTIs over mean f of the MEIs."""
        mei = float(self.activation["meis"].mean())
        return float(self.disinhibited["mtis"].mean()) / mei if mei > 0 else float("nan")

    def _over_random(self) -> float:
        """Mean disinhibited f of the MTIs over that of the random images (NaN unless the latter is > 0)."""
        rand = float(self.disinhibited["random"].mean())
        return float(self.disinhibited["mtis"].mean()) / rand if rand > 0 else float("nan")

    @property
    def t_vs_random(self) -> float:
        """Welch's t of the MTIs' disinhibited f against the random images' disinhibited f."""
        return _welch_t(self.disinhibited["mtis"], self.disinhibited["random"])

    @property
    def held_down_t(self) -> float:
        """Welch's t of the matched group's f against the MTIs' f (large: inhibition keeps the MTIs quiet)."""
        return _welch_t(self.activation.get("matched", np.zeros(0)), self.activation["mtis"])

    @property
    def released(self) -> float:
        """Mean disinhibited f of the MTIs over mean f of the matched group (NaN unless the latter is > 0)."""
        matched = float(self.activation["matched"].mean()) if self.activation.get("matched", np.zeros(0)).size else 0.0
        return float(self.disinhibited["mtis"].mean()) / matched if matched > 0 else float("nan")

    def cosines(self) -> Dict[str, np.ndarray]:
        """group -> (k,) cosine of each image's excitatory direction with the MEIs' mean direction."""
        if "meis" not in self.excitation:
            return {}
        direction = self.excitation["meis"].astype(np.float64).mean(0)
        return {g: mean_cosine(v.astype(np.float64), direction) for g, v in self.excitation.items()}

    @property
    def evidence_t(self) -> float:
        """Welch's t of the MTIs' cosine to the MEIs' direction against the random images' cosine."""
        cos = self.cosines()
        return _welch_t(cos["mtis"], cos["random"]) if cos else float("nan")

    def checks(self) -> Dict[str, bool]:
        """The three parts of the verdict (see the module notes): held down, released, the feature's evidence."""
        return {"held_down": bool(self.held_down_t >= MIN_T), "released": bool(self.released >= self.fraction),
                "evidence": bool(self.evidence_t >= MIN_T)}

    @property
    def verdict(self) -> str:
        """``"reproduced"`` when the MTIs are held down against images matched on P, their disinhibited f
        reaches ``fraction`` of the matched images' f, and their excitation points the MEIs' way more than
        random images' does (:meth:`checks`); else ``"not reproduced on this model"``."""
        return "reproduced" if all(self.checks().values()) else "not reproduced on this model"

    def explanation(self) -> str:
        """The verdict with the numbers it was computed from."""
        if "matched" not in self.indices or not self.indices["matched"].size:
            return (f"{self.verdict}: no images matched on P with little inhibition (a result of an older "
                    "version, or a scan too small): the control the verdict needs is missing")
        m, cos = self.means(), self.cosines()
        failed = [k for k, ok in self.checks().items() if not ok]
        text = (f"{self.verdict}: MTIs' f {m['mtis']['f']:.3g} against {m['matched']['f']:.3g} for images matched on "
                f"P with little inhibition (Welch t {self.held_down_t:.2f}, bar {MIN_T:g}); disinhibited "
                f"{m['mtis']['disinhibited']:.3g} = {self.released:.2f} x the matched f (bar {self.fraction:g}); "
                f"cosine of excitation to the MEIs' {float(cos['mtis'].mean()):.2f} vs random images' "
                f"{float(cos['random'].mean()):.2f} (Welch t {self.evidence_t:.2f}, bar {MIN_T:g})"
                + (f"; failed: {', '.join(failed)}" if failed else ""))
        if not self.completeness.get("complete", True):
            text += (f"; attribution layer {self.layer} is incomplete for {self.feature.name} (r "
                     f"{self.completeness.get('r', float('nan')):.3f}, share {self.completeness.get('share', float('nan')):.3g})"
                     ": the elements removed need not be what inhibits the feature")
        return text

    def summary(self) -> dict:
        return {"type": self.kind(), "feature": self.feature.name, "layer": self.layer, "baseline": self.baseline,
                "groups": self.means(), "ratio_mti_disinhibited_to_mei": self.ratio, "t_vs_random": self.t_vs_random,
                "ratio_mti_to_random_disinhibited": self._over_random(), "held_down_t": self.held_down_t,
                "released": self.released, "evidence_t": self.evidence_t, "checks": self.checks(),
                "fraction": self.fraction, "verdict": self.verdict, "explanation": self.explanation(),
                "completeness": dict(self.completeness)}

    def plot(self, path=None, ax=None, **style):
        """Bars per group: mean f, mean disinhibited f and mean f + N (with standard errors), the MEIs'
        mean f as a dashed line (:func:`plot_disinhibition`); returns the Figure (a PNG at ``path`` when given)."""
        from .figures import plot_disinhibition

        return plot_disinhibition(self, path, ax, **style)


def disinhibit(model: nn.Module, dataset, feature, layer: str, scan=None, k: int = 10, n_random: int = 32,
               baseline: str = "zero", fraction: float = 0.5, seed: int = 0, statistics=None,
               settings: Optional[PassSettings] = None) -> Disinhibition:
    """Remove the inhibition of ``feature`` at ``layer`` on its MEIs, MIIs, MTIs and random images.

    Args:
        model: a prepared model, run in eval mode (mode, hooks and ``requires_grad`` flags restored).
        dataset: the images (as for :func:`lucent_inhibit.scan`).
        feature: the :class:`~lucent_inhibit.Feature` (usually a pre-activation unit).
        layer: the attribution layer (one Lucent name, before the feature, where ``E = P - N`` tracks f).
        scan: a :class:`~lucent_inhibit.ScanResult` (or its file) of ``feature`` over ``dataset`` with
            ``layer`` among its layers; None scans first.
        k: images per group (MEIs, MIIs, MTIs by percentile tension); n_random: random images.
        baseline: ``"zero"`` or ``"mean"`` (each removed element takes its mean over the dataset).
        fraction: the verdict's bar (see :attr:`Disinhibition.verdict`).
        seed: draws the random images.
        statistics: a :func:`~lucent_inhibit.causal.removal.layer_statistics` pair to reuse for
            ``baseline="mean"``.
        settings: the passes' :class:`~lucent_inhibit.core.settings.PassSettings` (images per pass, input
            normalisation, progress bars, the completeness threshold: r below it counts as incomplete and
            warns); None: the defaults.

    Returns:
        :class:`Disinhibition`; ``IncompletenessWarning`` when the layer is incomplete for the feature.
    """
    feature = as_feature(feature)
    if not isinstance(layer, str):
        raise TypeError(f"layer must be one Lucent layer name, got {type(layer).__name__}")
    fraction = check_number("fraction", fraction, 0, MAX_FRACTION, low_open=True)
    run = dataset_pass(model, dataset, [layer], [feature], settings)
    with run.evaluating():
        scan_result = ensure_scan(model, dataset, feature, layer, scan, run.settings)
        groups = select_groups(scan_result, layer, k, n_random, seed)
        groups["matched"] = matched_on_p(scan_result, layer, groups["mtis"])
        complete = check_complete(scan_result, layer, run.threshold)
        base = baseline_tensor(baseline, run, layer, statistics)
        out = {name: {} for name in ("activation", "disinhibited", "linear", "excitation")}
        for g, idx in groups.items():
            parts = [disinhibit_batch(run, images, feature, layer, base) for _, images in run.batches(idx)]
            if not parts:  # a matched group the scan had no candidates for
                parts = [{"f": np.zeros(0), "disinhibited": np.zeros(0), "N": np.zeros(0),
                          "excitation": np.zeros((0, 0), np.float32)}]
            cat = {key: np.concatenate([p[key] for p in parts]) for key in ("f", "disinhibited", "N", "excitation")}
            out["activation"][g], out["disinhibited"][g] = cat["f"], cat["disinhibited"]
            out["linear"][g], out["excitation"][g] = cat["f"] + cat["N"], cat["excitation"]
    info = {"k": int(groups["mtis"].size), "n_random": int(groups["random"].size), "seed": int(seed),
            "dataset": scan_result.dataset, "matched": "nearest P among images with N <= the median N"}
    return Disinhibition(feature, layer, baseline, groups, out["activation"], out["disinhibited"], out["linear"],
                         fraction, complete, excitation=out["excitation"], info=info)


__all__ = ["BASELINES", "Disinhibition", "baseline_tensor", "check_complete", "disinhibit", "disinhibit_batch",
           "ensure_scan", "forward_replaced", "layer_statistics", "select_groups"]
