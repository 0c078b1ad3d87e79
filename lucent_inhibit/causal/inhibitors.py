"""The inhibitor dictionary: which channels of the attribution layer inhibit a feature on its maximally
tense images (Hamblin et al. 2024, section 2; SPEC 1, "MTIs are what negative weights are for").

For the MTIs of a scan, the attribution ``S_l = grad_{h_l} f * h_l`` at layer ``l`` is split by channel:
channel ``c`` contributes ``I_c = sum over MTIs and positions of relu(-S_l[c])`` to their inhibitory total
``N`` (so ``sum_c I_c = sum N``). :func:`inhibitor_dictionary` ranks the channels by ``I_c`` and gives,
for each of the top ones, its share of N, the causal change in the feature on the MTIs when that channel
alone is removed (set to the baseline: zero or its dataset mean; forward re-run from ``l``), the dataset
images on which the channel is most active (its spatial mean activation, from one pass over the scanned
dataset) and a feature visualization of the channel (Lucent's ``channel`` objective rendered with
:func:`lucent_inhibit.core.rendering.run_render`). It also checks the ranking causally: removing the top
``n_remove`` channels together against removing ``n_remove`` random channels (several draws).

:func:`plot_inhibitors` draws the dictionary (one row per channel) and :func:`plot_disinhibition` the
bars of :class:`~lucent_inhibit.causal.disinhibition.Disinhibition`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..attribution.interventions import channel_sums, forward_replaced, set_channels
from ..attribution.passes import DatasetPass, dataset_pass
from ..attribution.totals import top_indices
from ..core.features import Feature, as_feature
from ..core.motion import motion_fields
from ..core.results import Result
from ..core.settings import PassSettings, RenderSettings, as_settings
from ..core.validate import check_flag, check_int
from ..data.datasets import item_sources, load_batch
from ..synthesis.channels import visualize_channels
from .removal import baseline_tensor, check_complete, ensure_scan, layer_statistics, select_groups

#: side of the stored thumbnails of each channel's top dataset images (pixels).
THUMB = 64


@dataclass
class InhibitorDictionary(Result):
    """Result of :func:`inhibitor_dictionary`; arrays are over the ``m`` top inhibitory channels, rank order.

    Attributes:
        feature, layer: the feature and the attribution layer whose channels are ranked.
        baseline: ``"zero"`` or ``"mean"``: what a removed channel is set to.
        channels: (m,) int64 channel indices of ``layer``, most inhibitory first.
        inhibition: (m,) float64 ``I_c``: relu(-S) of the channel summed over the MTIs and positions.
        share: (m,) float64 ``I_c`` over the MTIs' summed N (all channels' shares add up to 1).
        delta: (m,) float64 mean change of f on the MTIs when the channel alone is removed (feature units).
        top_images: (m, t) int64 dataset indices where the channel's spatial mean activation is largest.
        thumbnails: (m, t, 3, 64, 64) uint8 those images, downsampled.
        visualizations: (m, 3, H, W) float in [0, 1] renders of Lucent's channel objective ((0,) if skipped).
        mtis: (k,) int64 the MTIs; mti_activation: (k,) float64 their f.
        removal: ``{"n", "top", "random", "random_mean"}``: mean change of f on the MTIs when the top ``n``
            channels are removed together, and when ``n`` random channels are (one value per draw).
        completeness: the scan's r, slope and share at ``layer`` (see ``check_complete``).
        info: settings (k, render settings, seed, dataset).
        moved: (m,) bool, whether each channel's visualization moved (:mod:`lucent_inhibit.core.motion`: a
            flat render, or a channel whose mean activation did not rise, cannot be visualized this way; None:
            not rendered); motion: (m, 2) float32 its ``[RMS image change, the channel's objective gain]``.
    """

    feature: Feature
    layer: str
    baseline: str
    channels: np.ndarray
    inhibition: np.ndarray
    share: np.ndarray
    delta: np.ndarray
    top_images: np.ndarray
    thumbnails: np.ndarray
    visualizations: torch.Tensor
    mtis: np.ndarray
    mti_activation: np.ndarray
    removal: dict = field(default_factory=dict)
    completeness: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    moved: Optional[torch.Tensor] = None
    motion: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return int(self.channels.size)

    def table(self) -> List[dict]:
        """One row per channel: ``channel``, ``share`` of N, causal ``delta``, ``top_images``."""
        return [{"channel": int(c), "share": float(s), "delta": float(d), "top_images": t.tolist()}
                for c, s, d, t in zip(self.channels, self.share, self.delta, self.top_images)]

    def summary(self) -> dict:
        return {"type": self.kind(), "feature": self.feature.name, "layer": self.layer, "baseline": self.baseline,
                "mtis": self.mtis.tolist(), "mti_mean_activation": float(self.mti_activation.mean()),
                "channels": self.table(), "removal": dict(self.removal), "completeness": dict(self.completeness)}

    def _repr_numbers(self) -> dict:
        """The repr's numbers: the top three channels' shares of N and removal deltas, then the removal of
        the top ``n`` channels together against random ones."""
        top = {k: v for c, s, d in list(zip(self.channels, self.share, self.delta))[:3]
               for k, v in ((f"share[{int(c)}]", float(s)), (f"delta[{int(c)}]", float(d)))}
        return {**top, **{f"removal.{k}": self.removal.get(k) for k in ("top", "random_mean")}}

    def plot(self, path=None, ax=None, **style):
        """The dictionary figure (:func:`plot_inhibitors`); returns the Figure (a PNG at ``path`` when given)."""
        from .figures import plot_inhibitors

        return plot_inhibitors(self, path, ax, **style)


# ------------------------------------------------------------------------------------------------
# measurement
# ------------------------------------------------------------------------------------------------
def remove_channels(run: DatasetPass, images: torch.Tensor, feature: Feature, layer: str, channels,
                    base: torch.Tensor) -> torch.Tensor:
    """(B,) the feature with ``channels`` of ``layer`` set to ``base`` (scalar, or shaped like one image's
    activation) on ``images`` (B, 3, H, W)."""
    return forward_replaced(run, images, feature, layer, lambda o: set_channels(o, channels, base))


def channel_inhibition(run: DatasetPass, indices: np.ndarray, feature: Feature, layer: str):
    """``(I (C,) float64, f (k,) float64)``: relu(-S) per channel of ``layer`` summed over the dataset images
    ``indices`` (k,) and over positions, and the feature on them."""
    total, acts = None, []
    for _, batch in run.batches(indices):
        att = run.attribute(batch, feature)
        i = channel_sums((-att.scores[layer]).clamp(min=0).double().cpu()).sum(0)  # per channel
        total = i if total is None else total + i
        acts.append(att.activation.double().cpu())
    return total.numpy(), torch.cat(acts).numpy()


def removal_check(run: DatasetPass, images, feature, layer, ranked, n_channels: int, base, f0: np.ndarray,
                  n: int, draws: int, seed: int) -> dict:
    """Mean change of f on ``images`` removing the top ``n`` of ``ranked`` against ``n`` random channels of
    all ``n_channels`` (``draws`` draws from ``seed``)."""
    rng = np.random.default_rng(seed)
    effect = lambda ch: float((remove_channels(run, images, feature, layer, ch, base).double().numpy() - f0).mean())  # noqa: E731
    rand = [effect(rng.choice(n_channels, n, replace=False)) for _ in range(draws)]
    return {"n": int(n), "top": effect(ranked[:n]), "random": rand, "random_mean": float(np.mean(rand))}


def _thumbnails(dataset, top: np.ndarray) -> np.ndarray:
    imgs = load_batch(dataset, top.reshape(-1))
    small = F.interpolate(imgs.float(), size=(THUMB, THUMB), mode="bilinear", align_corners=False)
    return (small.clamp(0, 1) * 255).round().to(torch.uint8).numpy().reshape(*top.shape, 3, THUMB, THUMB)


def inhibitor_dictionary(model: nn.Module, dataset, feature, layer: str, scan=None, k: int = 10,
                         n_channels: int = 8, n_top_images: int = 4, baseline: str = "zero", n_remove: int = 5,
                         random_draws: int = 5, render: Optional[RenderSettings] = None, visualize: bool = True,
                         seed: int = 0, statistics=None, settings: Optional[PassSettings] = None,
                         distinct: bool = True) -> InhibitorDictionary:
    """Rank the channels of ``layer`` by their inhibition of ``feature`` on its MTIs and test them causally.

    Args:
        model, dataset, feature, layer, scan, k, baseline, seed, settings: as in
            :func:`lucent_inhibit.causal.disinhibition.disinhibit`.
        n_channels: channels kept in the dictionary (the most inhibitory).
        n_top_images: dataset images shown per channel (its largest spatial mean activation first).
        distinct: each channel's row shows at most one image per source image (the photo a bundled crop is
            cut from: :func:`~lucent_inhibit.data.datasets.item_sources`) while there are enough, then the
            next-best (with a warning); ``False``: the top images by rank, several crops of one photo allowed.
        n_remove, random_draws: the removal check (top ``n_remove`` channels against as many random ones).
        render: :class:`~lucent_inhibit.RenderSettings` of the channel visualizations (None: the defaults,
            128 steps; param None -> Lucent's ``param.image``, 96 px); ``visualize=False`` skips them.
        statistics: a :func:`~lucent_inhibit.causal.removal.layer_statistics` pair to reuse (one pass).

    Returns:
        :class:`InhibitorDictionary`; ``IncompletenessWarning`` when the layer is incomplete for the feature.
    """
    feature = as_feature(feature)
    run = dataset_pass(model, dataset, [layer], [feature], settings)
    n_top_images = check_int("n_top_images", n_top_images, low=1)
    sources = item_sources(dataset, np.arange(run.size)) if check_flag("distinct", distinct) else None
    with run.evaluating():
        scan_result = ensure_scan(model, dataset, feature, layer, scan, run.settings)
        mtis = select_groups(scan_result, layer, k, 2, seed)["mtis"]
        complete = check_complete(scan_result, layer, run.threshold)
        stats = layer_statistics(run, layer) if statistics is None else statistics
        base = baseline_tensor(baseline, run, layer, stats)
        images = load_batch(dataset, mtis)
        inhibition, f0 = channel_inhibition(run, mtis, feature, layer)
        n_channels = min(check_int("n_channels", n_channels, low=1), inhibition.size)
        n_remove = min(check_int("n_remove", n_remove, low=1), inhibition.size)
        ranked = np.argsort(-inhibition, kind="stable")
        top = ranked[:n_channels]
        delta = np.array([(remove_channels(run, images, feature, layer, [c], base).double().numpy() - f0).mean()
                          for c in top])
        removal = removal_check(run, images, feature, layer, ranked, inhibition.size, base, f0, n_remove,
                                check_int("random_draws", random_draws, low=1), seed)
        rows = np.arange(stats[0].shape[0])
        tops = np.stack([top_indices(rows, stats[0][:, c].astype(np.float64), n_top_images, True, None, sources)
                         for c in top])
    vis = visualize_channels(model, layer, top, render, f"inhibitor channels of {layer}") if visualize else None
    return InhibitorDictionary(
        feature, layer, baseline, top.astype(np.int64), inhibition[top], inhibition[top] / max(inhibition.sum(), 1e-30),
        delta, tops.astype(np.int64), _thumbnails(dataset, tops), torch.zeros(0) if vis is None else vis.images, mtis,
        f0, removal, complete,
        {"k": int(mtis.size), "seed": int(seed), "dataset": scan_result.dataset, "layer_channels": int(inhibition.size),
         "render": as_settings(render).describe() if visualize else None}, *motion_fields(None if vis is None else vis.motion))


__all__ = ["InhibitorDictionary", "channel_inhibition", "inhibitor_dictionary", "plot_disinhibition",
           "plot_inhibitors", "remove_channels", "removal_check", "visualize_channels"]
