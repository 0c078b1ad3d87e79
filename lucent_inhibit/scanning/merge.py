"""Combining shard scans (``shard=(i, n)`` runs, job arrays, torchrun ranks) into one :class:`ScanResult`.
"""
from __future__ import annotations

import os
from typing import Iterable, Optional, Union

import numpy as np

from ..core.settings import PassSettings, as_pass_settings
from ..core.validate import InputError, check_flag
from .result import ScanResult
from .stats import concat_rows, measure_completeness


def merge_scans(parts: Iterable[Union[ScanResult, str]], require_complete: bool = True,
                settings: Optional[PassSettings] = None) -> ScanResult:
    """Combine shard results (objects, result files or finished scan folders) into one result.

    All parts must scan the same feature, layers and dataset; they may not overlap. With
    ``require_complete`` the union must cover every dataset index (else ``ValueError`` naming the
    missing ones). Completeness r is recomputed over the merged rows (and warned about below
    ``settings.completeness_threshold``, :class:`~lucent_inhibit.core.settings.PassSettings`).
    """
    require_complete = check_flag("require_complete", require_complete)
    threshold = as_pass_settings(settings).completeness_threshold
    if isinstance(parts, (str, os.PathLike, ScanResult)) or not hasattr(parts, "__iter__"):
        raise InputError(f"parts must be a list of scan results, result files or scan folders, got {parts!r:.60}")
    loaded = [p if isinstance(p, ScanResult) else ScanResult.load(p) for p in parts]
    if not loaded:
        raise ValueError("merge_scans needs at least one scan result")
    ref = loaded[0]
    for k, p in enumerate(loaded[1:], 1):
        for what, a, b in (("feature", p.feature.to_dict(), ref.feature.to_dict()), ("layers", p.layers, ref.layers),
                           ("dataset", p.dataset, ref.dataset), ("dataset_size", p.dataset_size, ref.dataset_size)):
            if a != b:
                raise ValueError(f"cannot merge: part {k} has a different {what} ({a!r}) from part 0 ({b!r})")
    res = concat_rows(loaded, ref)
    if require_complete and len(res) != ref.dataset_size:
        missing = np.setdiff1d(np.arange(ref.dataset_size), res.indices)
        raise ValueError(f"the merged parts cover {len(res)} of {ref.dataset_size} images; missing dataset indices "
                         f"{missing[:10].tolist()}{' ...' if missing.size > 10 else ''} (a shard is absent; or pass "
                         "require_complete=False)")
    res.info = dict(ref.info, shard=None, merged_from=len(loaded))
    return measure_completeness(res, threshold)
