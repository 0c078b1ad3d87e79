"""Dataset scans: maximally exciting, inhibiting and tense images (Hamblin et al. 2024, section 2).

:func:`scan` streams a dataset through a model in batches. For every image it keeps only summary
statistics of the layer-to-feature attribution ``S_l = grad_{h_l} f * h_l`` at each attribution layer:

- the feature's activation ``f_v(x)``;
- ``P = sum relu(S)`` and ``N = sum relu(-S)`` with L1 and L2 norms, at element granularity (every
  channel-position split by sign) and channel granularity (space summed first);
- the spatial maps of ``relu(S)`` and ``relu(-S)`` summed over channels (float16, one small map per
  layer, optional);
- the image's dataset index and identity (path for folders, crop box for the bundled crops).

The attributions themselves are never kept, so memory does not grow with the dataset. With ``out=`` the
scan writes its chunks as they complete (one ``.npz`` per chunk and a JSON manifest, each written to a
temporary file and moved into place atomically): a killed scan resumes where it stopped, and
``shard=(i, n)`` plus :func:`merge` spread a large scan over many machines.

:class:`ScanResult` ranks images: :meth:`~ScanResult.meis` (top activation), :meth:`~ScanResult.miis`
(bottom activation), :meth:`~ScanResult.mtis` (top tension, e.g. ``min(P, N)``) and
:meth:`~ScanResult.select` (unions of criteria, as the attribution atlas needs). All return dataset
indices.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from .storage import load_npz, save_npz
from .attribution import Feature, as_feature, as_layers, attribute, tension as _tension
from .data import dataset_identity, describe_item

log = logging.getLogger(__name__)

FORMAT = "lucent-inhibit-scan/1"
MANIFEST = "manifest.json"
GRANULARITIES = ("element", "channel")
NORMS = ("l1", "l2")


# ------------------------------------------------------------------------------------------------
# result
# ------------------------------------------------------------------------------------------------
@dataclass
class ScanResult:
    """Per-image statistics of a dataset scan (rows are images, in dataset-index order).

    Attributes:
        feature: the scanned :class:`~lucent_inhibit.Feature`.
        layers: attribution layers, in the order given to :func:`scan`.
        indices: (n,) int64 dataset index of each row.
        activation: (n,) float32 feature value ``f_v(x)``.
        pos: (n, L, 2, 2) float32 excitatory totals ``P``; axis 2 is granularity (element, channel),
            axis 3 the norm (l1, l2).
        neg: (n, L, 2, 2) float32 inhibitory totals ``N`` (non-negative), same layout.
        items: (n,) str identity of each image (path, crop box or index; see ``describe_item``).
        pos_maps / neg_maps: layer -> (n, h, w) float16 maps of ``relu(S)`` / ``relu(-S)`` summed over
            channels at that layer's resolution (absent for linear layers or ``keep_maps=False``).
        dataset: identity string of the scanned dataset; dataset_size: its length.
        completeness: layer -> Pearson r between ``activation`` and ``E = P_l1 - N_l1`` over the rows.
        info: batch size, shard, tension score and other settings of the scan.
    """

    feature: Feature
    layers: List[str]
    indices: np.ndarray
    activation: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    items: np.ndarray
    pos_maps: Dict[str, np.ndarray] = field(default_factory=dict)
    neg_maps: Dict[str, np.ndarray] = field(default_factory=dict)
    dataset: str = ""
    dataset_size: int = 0
    completeness: Dict[str, float] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __repr__(self) -> str:
        return (
            f"ScanResult({self.feature.name}, layers={self.layers}, {len(self)} of {self.dataset_size} images "
            f"of {self.dataset})"
        )

    # -- statistics ---------------------------------------------------------------------------------
    def _layer(self, layer: Optional[str]) -> int:
        if layer is None:
            return 0
        if layer not in self.layers:
            raise KeyError(f"layer {layer!r} was not scanned; scanned attribution layers: {self.layers}")
        return self.layers.index(layer)

    @staticmethod
    def _gn(granularity: str, norm: str) -> Tuple[int, int]:
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        return GRANULARITIES.index(granularity), NORMS.index(norm)

    def P(self, layer: Optional[str] = None, granularity: str = "element", norm: str = "l1") -> np.ndarray:
        """(n,) excitatory total at ``layer`` (default: the first scanned layer)."""
        g, k = self._gn(granularity, norm)
        return self.pos[:, self._layer(layer), g, k]

    def N(self, layer: Optional[str] = None, granularity: str = "element", norm: str = "l1") -> np.ndarray:
        """(n,) inhibitory total (non-negative) at ``layer``."""
        g, k = self._gn(granularity, norm)
        return self.neg[:, self._layer(layer), g, k]

    def total(self, layer: Optional[str] = None, granularity: str = "element") -> np.ndarray:
        """(n,) ``E = P - N`` (L1): the attribution's sum, which approximates the activation."""
        return self.P(layer, granularity, "l1") - self.N(layer, granularity, "l1")

    def abs_l2(self, layer: Optional[str] = None, granularity: str = "element") -> np.ndarray:
        """(n,) L2 norm of the whole attribution ``|S|_2 = sqrt(P_l2^2 + N_l2^2)``."""
        return np.sqrt(self.P(layer, granularity, "l2") ** 2 + self.N(layer, granularity, "l2") ** 2)

    def tension(
        self, layer: Optional[str] = None, score="min", granularity: str = "element", norm: str = "l1"
    ) -> np.ndarray:
        """(n,) tension of P and N (``"min"``, ``"geometric"``, ``"harmonic"``, ``"product"`` or a callable)."""
        return _tension(self.P(layer, granularity, norm), self.N(layer, granularity, norm), score)

    def row(self, index: int) -> int:
        """Row of dataset index ``index`` in this result."""
        hits = np.nonzero(self.indices == int(index))[0]
        if hits.size == 0:
            raise KeyError(f"dataset index {index} is not in this scan ({len(self)} images)")
        return int(hits[0])

    def maps(self, index: int, layer: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
        """(h, w) float32 positive and negative attribution maps of dataset index ``index``."""
        name = self.layers[self._layer(layer)]
        if name not in self.pos_maps:
            raise KeyError(f"no spatial maps stored for layer {name!r} (linear layer, or scanned with keep_maps=False)")
        r = self.row(index)
        return self.pos_maps[name][r].astype(np.float32), self.neg_maps[name][r].astype(np.float32)

    # -- selection ----------------------------------------------------------------------------------
    def _top(self, values: np.ndarray, k: int, descending: bool = True) -> np.ndarray:
        k = _check_k(k)
        # stable order: ties broken by dataset index
        order = np.lexsort((self.indices, -values if descending else values))
        return self.indices[order[:k]].astype(np.int64)

    def meis(self, k: int = 10) -> np.ndarray:
        """Dataset indices of the ``k`` maximally exciting images (activation descending)."""
        return self._top(self.activation.astype(np.float64), k, True)

    def miis(self, k: int = 10) -> np.ndarray:
        """Dataset indices of the ``k`` maximally inhibiting images (activation ascending)."""
        return self._top(self.activation.astype(np.float64), k, False)

    def mtis(
        self, k: int = 10, score="min", layer: Optional[str] = None, granularity: str = "element", norm: str = "l1"
    ) -> np.ndarray:
        """Dataset indices of the ``k`` maximally tense images (tension descending)."""
        return self._top(self.tension(layer, score, granularity, norm).astype(np.float64), k, True)

    def top_abs(self, k: int = 10, layer: Optional[str] = None, granularity: str = "element") -> np.ndarray:
        """Dataset indices of the ``k`` images with the largest total attribution ``|S|_2``."""
        return self._top(self.abs_l2(layer, granularity).astype(np.float64), k, True)

    def select(
        self,
        top_activation: int = 0,
        bottom_activation: int = 0,
        top_abs: int = 0,
        top_tension: int = 0,
        layer: Optional[str] = None,
        score="min",
        granularity: str = "element",
        norm: str = "l1",
    ) -> np.ndarray:
        """Union of several selections, as the attribution atlas samples images.

        Args:
            top_activation / bottom_activation: ``k`` MEIs / MIIs.
            top_abs: ``k`` images with the largest ``|S|_2`` at ``layer``.
            top_tension: ``k`` MTIs at ``layer`` by ``score`` (with ``granularity`` and ``norm``).

        Returns:
            (m,) int64 sorted unique dataset indices (m <= the sum of the k's).
        """
        parts = []
        if top_activation:
            parts.append(self.meis(top_activation))
        if bottom_activation:
            parts.append(self.miis(bottom_activation))
        if top_abs:
            parts.append(self.top_abs(top_abs, layer, granularity))
        if top_tension:
            parts.append(self.mtis(top_tension, score, layer, granularity, norm))
        if not parts:
            raise ValueError(
                "select needs at least one criterion > 0: top_activation, bottom_activation, top_abs or top_tension"
            )
        return np.unique(np.concatenate(parts)).astype(np.int64)

    # -- persistence --------------------------------------------------------------------------------
    def _meta(self) -> dict:
        return {
            "format": FORMAT,
            "feature": self.feature.to_dict(),
            "layers": list(self.layers),
            "maps": [l for l in self.layers if l in self.pos_maps],
            "dataset": self.dataset,
            "dataset_size": int(self.dataset_size),
            "completeness": {k: float(v) for k, v in self.completeness.items()},
            "info": self.info,
        }

    def save(self, path: str) -> None:
        """Write one compressed ``.npz`` (no pickle; JSON metadata in a uint8 array)."""
        arrays = {
            "indices": self.indices.astype(np.int64),
            "activation": self.activation.astype(np.float32),
            "pos": self.pos.astype(np.float32),
            "neg": self.neg.astype(np.float32),
            "items": np.asarray(self.items, dtype=str),
        }
        for i, l in enumerate(self.layers):
            if l in self.pos_maps:
                arrays[f"pos_map_{i}"] = self.pos_maps[l].astype(np.float16)
                arrays[f"neg_map_{i}"] = self.neg_maps[l].astype(np.float16)
        save_npz(path, arrays, self._meta())

    @classmethod
    def load(cls, path: str) -> "ScanResult":
        """Read a file written by :meth:`save`, or a complete scan folder written by ``scan(out=...)``."""
        if os.path.isdir(path):
            return _load_dir(path)
        z, meta = load_npz(path, "scan result")
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path!r} is not a scan result (format {meta.get('format')!r}, expected {FORMAT!r})")
        layers = meta["layers"]
        pm, nm = {}, {}
        for i, l in enumerate(layers):
            if f"pos_map_{i}" in z:
                pm[l], nm[l] = z[f"pos_map_{i}"], z[f"neg_map_{i}"]
        return cls(
            Feature.from_dict(meta["feature"]),
            layers,
            z["indices"],
            z["activation"],
            z["pos"],
            z["neg"],
            z["items"],
            pm,
            nm,
            meta["dataset"],
            meta["dataset_size"],
            meta.get("completeness", {}),
            meta.get("info", {}),
        )


def _check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _concat(parts: List[ScanResult], like: ScanResult) -> ScanResult:
    """Rows of ``parts`` sorted by dataset index (metadata from ``like``)."""
    if not parts:
        return ScanResult(
            like.feature, like.layers, np.zeros(0, np.int64), np.zeros(0, np.float32),
            np.zeros((0, len(like.layers), 2, 2), np.float32), np.zeros((0, len(like.layers), 2, 2), np.float32),
            np.zeros(0, dtype=str), {}, {}, like.dataset, like.dataset_size, {}, dict(like.info),
        )
    idx = np.concatenate([p.indices for p in parts])
    order = np.argsort(idx, kind="stable")
    if np.unique(idx).size != idx.size:
        dup = np.unique(idx[np.nonzero(np.diff(np.sort(idx)) == 0)[0]])[:5]
        raise ValueError(f"the parts overlap: dataset indices {dup.tolist()} appear more than once")
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])[order]  # noqa: E731
    map_layers = [l for l in like.layers if all(l in p.pos_maps for p in parts)]
    pm = {l: np.concatenate([p.pos_maps[l] for p in parts])[order] for l in map_layers}
    nm = {l: np.concatenate([p.neg_maps[l] for p in parts])[order] for l in map_layers}
    return ScanResult(
        like.feature, list(like.layers), idx[order].astype(np.int64), cat("activation"), cat("pos"), cat("neg"),
        cat("items"), pm, nm, like.dataset, like.dataset_size, {}, dict(like.info),
    )


def completeness_r(result: ScanResult) -> Dict[str, float]:
    """Per layer, Pearson r between the activation and ``E = P - N`` over the scanned images (nan if undefined)."""
    out = {}
    f = result.activation.astype(np.float64)
    for l in result.layers:
        e = result.total(l).astype(np.float64)
        if f.size < 3 or f.std() == 0 or e.std() == 0:
            out[l] = float("nan")
        else:
            out[l] = float(np.corrcoef(f, e)[0, 1])
    return out


def _warn_completeness(result: ScanResult, threshold: float) -> None:
    try:
        from .completeness import warn_if_incomplete  # written by the completeness stage
    except ImportError:
        warn_if_incomplete = None
    for layer, r in result.completeness.items():
        if not np.isfinite(r):
            continue
        if warn_if_incomplete is not None:
            warn_if_incomplete(r, result.feature, layer, threshold=threshold)
        elif r < threshold:
            warnings.warn(
                f"attribution at layer {layer!r} is incomplete for feature {result.feature.name}: Pearson r "
                f"between the activation and E = P - N over the scan is {r:.2f} (< {threshold}); P, N and "
                "tension there do not add up to the activation. Choose an attribution layer closer to the feature.",
                stacklevel=3,
            )


# ------------------------------------------------------------------------------------------------
# per-batch statistics
# ------------------------------------------------------------------------------------------------
def _batch_stats(scores: torch.Tensor, keep_maps: bool):
    """(B, C, ...) attribution -> pos (B, 2, 2), neg (B, 2, 2), maps or None.

    Few passes over the attribution: relu(S), relu(-S) = relu(S) - S, their channel sums (the maps,
    whose spatial sums are the L1 totals), their L2 norms, and the spatial sum per channel.
    """
    s = scores.float()
    b = s.shape[0]
    pos_el = s.clamp(min=0)
    neg_el = pos_el - s
    pos = torch.empty(b, 2, 2)
    neg = torch.empty(b, 2, 2)
    maps = None
    if s.dim() == 4:
        pm, nm = pos_el.sum(1), neg_el.sum(1)  # (B, H, W)
        pos[:, 0, 0], neg[:, 0, 0] = pm.flatten(1).sum(1), nm.flatten(1).sum(1)
        if keep_maps:
            maps = (pm.half().numpy(), nm.half().numpy())
        ch = s.flatten(2).sum(2)
    else:
        pos[:, 0, 0], neg[:, 0, 0] = pos_el.sum(1), neg_el.sum(1)
        ch = s
    pos[:, 0, 1] = torch.linalg.vector_norm(pos_el.reshape(b, -1), dim=1)
    neg[:, 0, 1] = torch.linalg.vector_norm(neg_el.reshape(b, -1), dim=1)
    pc, nc = ch.clamp(min=0), ch.clamp(max=0).neg()
    pos[:, 1, 0], neg[:, 1, 0] = pc.sum(1), nc.sum(1)
    pos[:, 1, 1], neg[:, 1, 1] = torch.linalg.vector_norm(pc, dim=1), torch.linalg.vector_norm(nc, dim=1)
    return pos.numpy(), neg.numpy(), maps


def _item_image(dataset, i: int) -> torch.Tensor:
    item = dataset[i]
    if isinstance(item, (tuple, list)):  # (image, label) datasets
        item = item[0]
    if not torch.is_tensor(item):
        item = torch.as_tensor(np.asarray(item))
    return item


def _load_batch(dataset, idx: Sequence[int], shape: Optional[tuple]) -> torch.Tensor:
    """Stack dataset items ``idx`` into (B, 3, H, W); every item must have ``shape`` (default: the first's)."""
    imgs = []
    for i in idx:
        t = _item_image(dataset, int(i))
        if t.dim() != 3 or t.shape[0] != 3:
            raise ValueError(f"dataset item {int(i)} has shape {tuple(t.shape)}; expected an image (3, H, W) in [0, 1]")
        if shape is None:
            shape = tuple(t.shape)
        if tuple(t.shape) != shape:
            raise ValueError(
                f"dataset item {int(i)} has shape {tuple(t.shape)}, but the scan's images have shape {shape}: "
                "all images of a scan must share one shape (resize them, e.g. ImageFolder(root, size=224))"
            )
        imgs.append(t.float())
    return torch.stack(imgs)


def _scan_chunk(model, dataset, feature, layers, idx, batch_size, keep_maps, shape, pbar, preprocess,
                pre=None) -> ScanResult:
    acts, pos, neg = [], [], []
    pmaps: Dict[str, list] = {l: [] for l in layers}
    nmaps: Dict[str, list] = {l: [] for l in layers}
    for start in range(0, len(idx), batch_size):
        bidx = idx[start : start + batch_size]
        if pre is not None and start == 0 and np.array_equal(pre[0], bidx):
            att = pre[1]  # the validation batch (same images, same batch): reuse it
        else:
            images = _load_batch(dataset, bidx, shape)
            att = attribute(model, images, feature, layers, preprocess=preprocess)
        acts.append(att.activation.float().cpu().numpy())
        p_l, n_l = [], []
        for l in layers:
            p, n, m = _batch_stats(att.scores[l], keep_maps)
            p_l.append(p)
            n_l.append(n)
            if m is not None:
                pmaps[l].append(m[0])
                nmaps[l].append(m[1])
        pos.append(np.stack(p_l, 1))
        neg.append(np.stack(n_l, 1))
        del att
        if pbar is not None:
            pbar.update(len(bidx))
    items = np.asarray([describe_item(dataset, int(i)) for i in idx], dtype=str)
    return ScanResult(
        feature, list(layers), np.asarray(idx, np.int64), np.concatenate(acts).astype(np.float32),
        np.concatenate(pos).astype(np.float32), np.concatenate(neg).astype(np.float32), items,
        {l: np.concatenate(v) for l, v in pmaps.items() if v}, {l: np.concatenate(v) for l, v in nmaps.items() if v},
    )


# ------------------------------------------------------------------------------------------------
# checkpoint folder
# ------------------------------------------------------------------------------------------------
def _atomic_write(path: str, write) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _write_json(path: str, obj: dict) -> None:
    def w(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)
            f.flush()
            os.fsync(f.fileno())

    _atomic_write(path, w)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _chunk_name(c: int) -> str:
    return f"chunk-{c:06d}.npz"


_IDENTITY_KEYS = ("feature", "layers", "dataset", "dataset_size", "shard", "batch_size", "chunk_size", "keep_maps", "preprocess")


def _check_manifest(out: str, old: dict, new: dict) -> None:
    if old.get("format") != FORMAT:
        raise ValueError(f"{out!r} holds a manifest of format {old.get('format')!r}, not a scan ({FORMAT!r})")
    for key in _IDENTITY_KEYS:
        if old.get(key) != new.get(key):
            raise ValueError(
                f"refusing to resume into {out!r}: it holds a scan with a different {key} "
                f"({old.get(key)!r}, this scan: {new.get(key)!r}); mixing them would give a result of two "
                "different scans. Use another out folder, or resume=False to overwrite it."
            )


def _load_dir(out: str) -> ScanResult:
    path = os.path.join(out, MANIFEST)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{out!r} is not a scan folder (no {MANIFEST})")
    with open(path) as f:
        man = json.load(f)
    if not man.get("complete"):
        raise ValueError(
            f"scan folder {out!r} is incomplete ({len(man.get('chunks', {}))} of {man.get('n_chunks')} chunks); "
            "run scan(..., out=...) again with the same arguments to resume it"
        )
    parts = [ScanResult.load(os.path.join(out, man["chunks"][k]["file"])) for k in sorted(man["chunks"])]
    res = _concat(parts, parts[0])
    res.completeness = man.get("completeness", {})
    res.info = man.get("info", res.info)
    return res


# ------------------------------------------------------------------------------------------------
# the scan
# ------------------------------------------------------------------------------------------------
def _parse_shard(shard) -> Tuple[int, int]:
    if shard is None:
        return 0, 1
    if isinstance(shard, str):
        try:
            i, n = (int(v) for v in shard.split("/"))
        except ValueError:
            raise ValueError(f"shard must be 'i/n' or (i, n) with 0 <= i < n, got {shard!r}")
    else:
        try:
            i, n = (int(v) for v in shard)
        except (TypeError, ValueError):
            raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard!r}")
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard must be (i, n) with 0 <= i < n, got ({i}, {n})")
    return i, n


def shard_indices(n_items: int, shard) -> np.ndarray:
    """Dataset indices of shard ``(i, n)``: the ``i``-th of ``n`` contiguous, near-equal ranges."""
    i, n = _parse_shard(shard)
    return np.array_split(np.arange(n_items, dtype=np.int64), n)[i]


def scan(
    model: nn.Module,
    dataset,
    feature,
    layers: Union[str, Sequence[str]],
    batch_size: int = 32,
    out: Optional[str] = None,
    resume: bool = True,
    shard=None,
    keep_maps: bool = True,
    chunk_size: Optional[int] = None,
    score: str = "min",
    completeness_threshold: float = 0.5,
    progress: bool = True,
    preprocess: bool = True,
) -> ScanResult:
    """Stream ``dataset`` through ``model`` and keep per-image attribution statistics.

    Args:
        model: a prepared model (:func:`lucent_inhibit.prepare`).
        dataset: a sequence of images (3, H, W) float in [0, 1], all the same shape (or ``(image, label)``
            pairs), e.g. :func:`~lucent_inhibit.sample_crops` or :class:`~lucent_inhibit.ImageFolder`.
        feature: the :class:`~lucent_inhibit.Feature` (or ``(layer, unit)``); usually pre-activation.
        layers: attribution layer(s) before the feature layer; pick them close to the feature, where
            ``E = P - N`` tracks the activation (the scan measures this and warns when r is low).
        batch_size: images per forward/backward pass (one pass gives all layers).
        out: folder for checkpoints: ``manifest.json`` and one ``chunk-*.npz`` per ``chunk_size`` images,
            written atomically as they complete; the finished folder loads with :meth:`ScanResult.load`.
        resume: reuse the complete chunks already in ``out`` (it must hold the same feature, layers,
            dataset, shard, batch and chunk size, else ``ValueError``). A chunk whose file is missing or
            does not match its recorded SHA-256 is recomputed with a warning. ``resume=False`` starts over.
        shard: ``(i, n)`` or ``"i/n"``: scan only the ``i``-th of ``n`` contiguous index ranges; combine
            the shards with :func:`merge`.
        keep_maps: keep the (h, w) float16 maps of relu(S) and relu(-S) summed over channels.
        chunk_size: images per checkpoint chunk (rounded up to a multiple of ``batch_size``; default
            about 256).
        score: the tension score recorded in ``info`` (selections can use any score later).
        completeness_threshold: warn when Pearson r(activation, E) at a layer is below it.
        progress: show a tqdm bar.
        preprocess: apply the model's input normalisation (as ``render_vis(preprocess=True)``); False for
            models that take the [0, 1] images as they are.

    Returns:
        :class:`ScanResult`, rows sorted by dataset index.
    """
    feature = as_feature(feature)
    layers = as_layers(layers)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    batch_size = int(batch_size)
    _tension(np.ones(1), np.ones(1), score)  # validates the score name
    try:
        n_items = len(dataset)
    except TypeError:
        raise TypeError(f"dataset must be a sequence with len() and indexing, got {type(dataset).__name__}")
    if n_items == 0:
        raise ValueError("dataset is empty")
    si, sn = _parse_shard(shard)
    if chunk_size is None:
        chunk_size = max(1, 256 // batch_size) * batch_size
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size!r}")
    chunk_size = -(-int(chunk_size) // batch_size) * batch_size

    # Validate feature, layers and images on the first batch before anything is written (attribution
    # layers after the feature, unknown layers, unit/position out of range raise here); the batch is reused.
    idx_all = shard_indices(n_items, (si, sn))
    if idx_all.size == 0:
        raise ValueError(f"shard {si}/{sn} of a {n_items}-image dataset is empty; use fewer shards")
    first_idx = idx_all[:batch_size]
    first_images = _load_batch(dataset, first_idx, None)
    shape = tuple(first_images.shape[1:])
    first_att = attribute(model, first_images, feature, layers, preprocess=preprocess)
    del first_images

    ident = dataset_identity(dataset)
    info = {"batch_size": batch_size, "chunk_size": chunk_size, "shard": [si, sn], "score": score,
            "keep_maps": bool(keep_maps), "method": "gradient_x_activation", "preprocess": bool(preprocess), "image_shape": list(shape)}
    like = ScanResult(feature, layers, np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros((0, len(layers), 2, 2)),
                      np.zeros((0, len(layers), 2, 2)), np.zeros(0, str), dataset=ident, dataset_size=n_items, info=info)
    chunks = [idx_all[s : s + chunk_size] for s in range(0, idx_all.size, chunk_size)]

    manifest = {
        "format": FORMAT, "feature": feature.to_dict(), "layers": layers, "dataset": ident,
        "dataset_size": n_items, "shard": [si, sn], "batch_size": batch_size, "chunk_size": chunk_size,
        "keep_maps": bool(keep_maps), "preprocess": bool(preprocess), "image_shape": list(shape), "n_chunks": len(chunks), "chunks": {},
        "complete": False, "info": info,
    }
    done: Dict[int, ScanResult] = {}
    if out is not None:
        if os.path.exists(out) and not os.path.isdir(out):
            raise ValueError(f"out {out!r} exists and is not a folder; scan checkpoints need a folder")
        os.makedirs(out, exist_ok=True)
        mpath = os.path.join(out, MANIFEST)
        if os.path.exists(mpath) and resume:
            try:
                with open(mpath) as f:
                    old = json.load(f)
            except (OSError, ValueError) as exc:
                raise ValueError(f"cannot read the scan manifest {mpath!r} ({exc}); use resume=False to start over")
            _check_manifest(out, old, manifest)
            for name in os.listdir(out):  # temporary files of a killed write
                if name.startswith(".tmp-"):
                    os.remove(os.path.join(out, name))
            for key, entry in old.get("chunks", {}).items():
                c = int(key)
                path = os.path.join(out, entry["file"])
                reason = None
                if not os.path.exists(path):
                    reason = "its file is missing"
                elif os.path.getsize(path) != entry.get("bytes") or _sha256(path) != entry.get("sha256"):
                    reason = "its file does not match the SHA-256 recorded in the manifest (corrupt or partial)"
                else:
                    try:
                        part = ScanResult.load(path)
                    except Exception as exc:  # noqa: BLE001 - any load failure means recompute
                        reason = f"it cannot be read ({exc})"
                    else:
                        if c >= len(chunks) or not np.array_equal(part.indices, chunks[c]):
                            reason = "its images are not the ones this scan expects there"
                if reason:
                    warnings.warn(f"scan chunk {c} in {out!r} is not reusable: {reason}; recomputing it")
                    continue
                done[c] = part
                manifest["chunks"][key] = entry
        else:
            for name in os.listdir(out):  # starting over: drop stale chunks
                if name.startswith("chunk-") or name.startswith(".tmp-") or name == MANIFEST:
                    os.remove(os.path.join(out, name))
        _write_json(mpath, manifest)

    pbar = None
    if progress:
        from tqdm.auto import tqdm

        pbar = tqdm(total=int(idx_all.size), initial=int(sum(len(p) for p in done.values())),
                    desc=f"scan {feature.name}", unit="img")
    parts: List[ScanResult] = []
    try:
        was_training = model.training
        model.eval()
        for c, idx in enumerate(chunks):
            if c in done:
                parts.append(done[c])
                continue
            part = _scan_chunk(model, dataset, feature, layers, idx, batch_size, keep_maps, shape, pbar, preprocess,
                               pre=(first_idx, first_att) if c == 0 else None)
            first_att = None
            part.dataset, part.dataset_size, part.info = ident, n_items, info
            if out is not None:
                name = _chunk_name(c)
                path = os.path.join(out, name)
                _atomic_write(path, lambda tmp, p=part: p.save(tmp))
                manifest["chunks"][f"{c:06d}"] = {"file": name, "n": len(part), "bytes": os.path.getsize(path),
                                                  "sha256": _sha256(path)}
                _write_json(os.path.join(out, MANIFEST), manifest)
            parts.append(part)
        model.train(was_training)
    finally:
        if pbar is not None:
            pbar.close()

    result = _concat(parts, like)
    result.completeness = completeness_r(result)
    if out is not None:
        manifest["complete"] = True
        manifest["completeness"] = result.completeness
        _write_json(os.path.join(out, MANIFEST), manifest)
    _warn_completeness(result, completeness_threshold)
    return result


def merge(parts: Iterable[Union[ScanResult, str]], require_complete: bool = True,
          completeness_threshold: float = 0.5) -> ScanResult:
    """Combine shard results (objects, ``.npz`` files or scan folders) into one result.

    All parts must scan the same feature, layers and dataset; they may not overlap. With
    ``require_complete`` the union must cover every dataset index (else ``ValueError`` naming the
    missing ones). Completeness r is recomputed over the merged rows.
    """
    loaded = [p if isinstance(p, ScanResult) else ScanResult.load(p) for p in parts]
    if not loaded:
        raise ValueError("merge needs at least one scan result")
    ref = loaded[0]
    for k, p in enumerate(loaded[1:], 1):
        for what, a, b in (("feature", p.feature.to_dict(), ref.feature.to_dict()), ("layers", p.layers, ref.layers),
                           ("dataset", p.dataset, ref.dataset), ("dataset_size", p.dataset_size, ref.dataset_size)):
            if a != b:
                raise ValueError(f"cannot merge: part {k} has a different {what} ({a!r}) from part 0 ({b!r})")
    res = _concat(loaded, ref)
    if require_complete and len(res) != ref.dataset_size:
        missing = np.setdiff1d(np.arange(ref.dataset_size), res.indices)
        raise ValueError(
            f"the merged parts cover {len(res)} of {ref.dataset_size} images; missing dataset indices "
            f"{missing[:10].tolist()}{' ...' if missing.size > 10 else ''} (a shard is absent; or pass require_complete=False)"
        )
    res.info = dict(ref.info, shard=None, merged_from=len(loaded))
    res.completeness = completeness_r(res)
    _warn_completeness(res, completeness_threshold)
    return res
