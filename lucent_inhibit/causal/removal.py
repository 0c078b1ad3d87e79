"""What removing inhibition means, shared by the causal test (:mod:`.disinhibition`) and the inhibitor
dictionary (:mod:`.inhibitors`): the scan that names the MTIs, its completeness check, the replacement value
of removed elements and the forward pass re-run with a layer's output replaced.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ..attribution.agreement import adds_up, warn_if_incomplete
from ..attribution.interventions import channel_means, model_inputs
from ..attribution.passes import DatasetPass
from ..core.features import Feature
from ..core.hooks import capture
from ..core.settings import PassSettings
from ..core.validate import check_choice, check_int, check_number
from ..data.datasets import dataset_identity

BASELINES = ("zero", "mean")


# ------------------------------------------------------------------------------------------------
# shared pieces
# ------------------------------------------------------------------------------------------------
def ensure_scan(model: nn.Module, dataset, feature: Feature, layer: str, scan_result,
                settings: Optional[PassSettings] = None):
    """``scan_result`` checked against ``feature``, ``layer`` and ``dataset``, or a new scan of ``dataset``
    (:func:`lucent_inhibit.scanning.run.scan`, with ``settings``) at ``layer`` when it is None."""
    from ..scanning.result import ScanResult
    from ..scanning.run import scan

    if scan_result is None:
        return scan(model, dataset, feature, [layer], settings=settings)
    if isinstance(scan_result, (str, os.PathLike)):
        scan_result = ScanResult.load(scan_result)
    if not isinstance(scan_result, ScanResult):
        raise TypeError(f"scan must be a ScanResult, a scan file or None, got {type(scan_result).__name__}")
    if scan_result.feature != feature or layer not in scan_result.layers:
        raise ValueError(f"scan holds {scan_result.feature.name} attributed at {scan_result.layers}, not "
                         f"{feature.name} at {layer!r}: scan that feature and layer first")
    ident = dataset_identity(dataset)
    if scan_result.dataset and ident != scan_result.dataset:
        raise ValueError(f"dataset {ident!r} is not the scanned dataset {scan_result.dataset!r}")
    return scan_result


def check_complete(scan_result, layer: str, threshold: float = 0.5) -> dict:
    """The scan's completeness at ``layer``: ``{"r", "slope", "share", "complete"}`` (Pearson r of f and
    E, and :func:`~lucent_inhibit.attribution.agreement.sum_check`); an ``IncompletenessWarning`` when r is
    below ``threshold`` or E does not add up to f: then removing "inhibitory elements" need not remove
    what inhibits the feature."""
    threshold = check_number("completeness_threshold", threshold, -1.0, 1.0)
    r = float(scan_result.completeness.get(layer, float("nan")))
    slope, share = scan_result.completeness_sums()[layer] if len(scan_result) >= 3 else (float("nan"),) * 2
    warned = warn_if_incomplete(r, scan_result.feature, layer, threshold, slope, share)
    return {"r": r, "slope": float(slope), "share": float(share), "threshold": threshold,
            "complete": bool(not warned and np.isfinite(r) and adds_up(slope, share))}


def layer_statistics(run: DatasetPass, layer: str) -> Tuple[np.ndarray, torch.Tensor]:
    """One pass over the dataset at ``layer``: ``(channel_means (n, C) float32, element_mean)``: each image's
    spatial mean activation per channel (a token layer's channels: its last dim, averaged over the tokens), and
    the mean activation over the images, shaped like one image's activation ((C, H, W), (T, C) or (C,))."""
    means, total = [], None
    with run.bar(run.size, f"statistics {layer}") as bar, torch.no_grad():
        for _, images in run.batches():
            h = capture(run.model, model_inputs(run, images), [layer])[layer].float().cpu()
            means.append(channel_means(h).numpy())
            total = h.sum(0) if total is None else total + h.sum(0)
            bar.update(len(images))
    return np.concatenate(means).astype(np.float32), total / run.size


def baseline_tensor(baseline: str, run: DatasetPass, layer: str, statistics=None) -> torch.Tensor:
    """The value removed elements take: a scalar zero, or the dataset mean at ``layer`` (from
    ``statistics``, a :func:`layer_statistics` pair, computed when None)."""
    if check_choice("baseline", baseline, BASELINES) == "zero":
        return torch.zeros(())
    return (layer_statistics(run, layer) if statistics is None else statistics)[1]


# ------------------------------------------------------------------------------------------------
# the test
# ------------------------------------------------------------------------------------------------
def matched_on_p(scan_result, layer: str, mtis: np.ndarray) -> np.ndarray:
    """The control group of the causal test: for each MTI (in order), the image with the nearest excitatory
    total P at ``layer`` among the images with little inhibition (N at most the scan's median N) that are not
    MTIs, each image used once. (k',) int64 dataset indices, k' <= k (fewer when the scan has too few
    candidates)."""
    p, n = scan_result.P(layer), scan_result.N(layer)
    free = (n <= np.median(n)) & ~np.isin(scan_result.indices, mtis)
    chosen = []
    for i in mtis:
        p_mti = p[scan_result.row(int(i))]
        if not free.any():
            break
        row = int(np.argmin(np.where(free, np.abs(p - p_mti), np.inf)))
        chosen.append(int(scan_result.indices[row]))
        free[row] = False
    return np.asarray(chosen, dtype=np.int64)


def select_groups(scan_result, layer: str, k: int, n_random: int, seed: int) -> Dict[str, np.ndarray]:
    """group -> dataset indices: the top-``k`` MEIs, MIIs and MTIs (percentile tension; ``"min"`` for a
    scan under 10 images) at ``layer`` and ``n_random`` images drawn without replacement (``seed``)."""
    from ..attribution.totals import MIN_PERCENTILE_IMAGES

    k = min(check_int("k", k, low=1), len(scan_result))
    n_random = min(check_int("n_random", n_random, low=2), len(scan_result))
    score = "percentile" if len(scan_result) >= MIN_PERCENTILE_IMAGES else "min"
    rng = np.random.default_rng(check_int("seed", seed, low=0))
    return {"meis": scan_result.meis(k), "miis": scan_result.miis(k), "mtis": scan_result.mtis(k, score, layer),
            "random": np.sort(rng.choice(scan_result.indices, n_random, replace=False)).astype(np.int64)}
