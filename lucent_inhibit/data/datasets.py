"""Reading items of a dataset: an (N, 3, H, W) tensor or a sequence of (3, H, W) images (or ``(image, label)``
pairs); item descriptions and the identity string stored in result files; a fingerprint of the pixels.
"""
from __future__ import annotations

import hashlib
from typing import Optional

import numpy as np
import torch

from ..core.validate import InputError, check_int


def describe_item(dataset, i: int) -> str:
    """The identity of item ``i`` (a path for folders, a crop box for sample crops, else the index)."""
    if hasattr(dataset, "describe"):
        return dataset.describe(i)
    return str(i)


def item_sources(dataset, indices) -> np.ndarray:
    """(m,) str id of the source image of each of the dataset items ``indices`` (m,): ``dataset.source(i)``
    where the dataset has one (the bundled crops: the photo a crop was cut from), else the item's own
    identity (:func:`describe_item`: a folder's file, a tensor's index), so every such item is its own source.
    Grids of top images show one image per source (:func:`lucent_inhibit.attribution.totals.top_indices`)."""
    get = getattr(dataset, "source", None)
    get = get if callable(get) else (lambda i: describe_item(dataset, i))
    return np.asarray([str(get(int(i))) for i in np.asarray(indices).reshape(-1)], dtype=str)


def check_dataset(dataset):
    """``dataset`` unchanged if it is a tensor or a sized sequence (not a string), else :class:`InputError`."""
    if torch.is_tensor(dataset):
        return dataset
    if isinstance(dataset, (str, bytes)) or not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise InputError(f"dataset must be an image tensor (N, 3, H, W) or a sequence of (3, H, W) images "
                         f"(e.g. lucent_inhibit.ImageFolder), got {type(dataset).__name__}")
    return dataset


def dataset_identity(dataset) -> str:
    """A string naming the dataset, stored in result files so a resume checks it scans the same data."""
    if torch.is_tensor(check_dataset(dataset)):
        return f"tensor(n={len(dataset)})"
    return getattr(dataset, "identity", f"{type(dataset).__name__}(n={len(dataset)})")


# ------------------------------------------------------------------------------------------------
# batching: the one way every stage reads a dataset
# ------------------------------------------------------------------------------------------------
def dataset_item(dataset, i: int) -> torch.Tensor:
    """Item ``i`` of a dataset as a (3, H, W) float image (``(image, label)`` items give the image);
    :class:`InputError` for a dataset that is not a sequence of images or an index outside it."""
    if len(check_dataset(dataset)) == 0:
        raise InputError("the dataset is empty: no image to read")
    item = dataset[check_int("dataset index", i, 0, len(dataset) - 1)]
    if isinstance(item, (tuple, list)):
        item = item[0]
    if not torch.is_tensor(item):
        arr = np.asarray(item)
        if arr.dtype.kind not in "biuf":
            raise InputError(f"dataset item {int(i)} is a {type(item).__name__}; expected an image (3, H, W) in [0, 1]")
        item = torch.as_tensor(arr)
    if item.dim() != 3 or item.shape[0] != 3:
        raise ValueError(f"dataset item {int(i)} has shape {tuple(item.shape)}; expected an image (3, H, W) in [0, 1]")
    return item


def load_batch(dataset, indices, shape: Optional[tuple] = None) -> torch.Tensor:
    """Stack dataset items ``indices`` into (B, 3, H, W); all must share ``shape`` (default: the first's)."""
    if torch.is_tensor(dataset):
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return dataset[idx]
    images = []
    for i in indices:
        t = dataset_item(dataset, i)
        shape = tuple(t.shape) if shape is None else shape
        if tuple(t.shape) != tuple(shape):
            raise ValueError(
                f"dataset item {int(i)} has shape {tuple(t.shape)}, but the batch's images have shape {tuple(shape)}: "
                "all images of a dataset must share one shape (resize them, e.g. ImageFolder(root, size=224))"
            )
        images.append(t)
    return torch.stack(images)


def check_indices(name: str, indices, n: int) -> np.ndarray:
    """``indices`` as an (m,) int64 array of dataset indices in [0, n); :class:`InputError` naming ``name``
    for fractions, booleans, non-numbers, more than one dimension or indices outside the dataset."""
    idx = np.arange(indices.start, indices.stop, indices.step) if isinstance(indices, range) else np.asarray(indices)
    if idx.size == 0:
        return np.zeros(0, np.int64)
    if idx.ndim != 1 or idx.dtype.kind not in "iu":
        raise InputError(f"{name} must be a 1-D sequence of integer dataset indices, got {idx.dtype} of shape {idx.shape}")
    if int(idx.min()) < 0 or int(idx.max()) >= n:
        raise InputError(f"{name} must lie in [0, {n}) for a dataset of {n} images, got {int(idx.min())}..{int(idx.max())}")
    return idx.astype(np.int64)


def dataset_digest(dataset) -> str:
    """SHA-256 (hex) of the first and the last image of ``dataset``, as float32 bytes: a fingerprint that
    tells apart datasets of one identity string and length but other pixels (e.g. two tensors)."""
    from .datasets import dataset_item

    h = hashlib.sha256()
    for i in sorted({0, len(dataset) - 1}):
        h.update(np.ascontiguousarray(dataset_item(dataset, i).detach().float().cpu().numpy()).tobytes())
    return h.hexdigest()
