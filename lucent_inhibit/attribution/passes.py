"""One attribution pass over a dataset: the checks and the loop that dataset scans and the completeness
study share (Hamblin et al. 2024, section 2).

Both stream a dataset through a model in batches and, per batch, take the layer-to-feature attribution
``S_l = grad_{h_l} f * h_l`` with :func:`lucent_inhibit.attribution.attribute.attribute`. :func:`dataset_pass`
validates their common arguments once (model, dataset, attribution layers and the
:class:`~lucent_inhibit.core.settings.PassSettings`: batch size, ``preprocess``, ``progress``, completeness
threshold) and returns a :class:`DatasetPass` whose :meth:`~DatasetPass.batches`
reads the data through :func:`lucent_inhibit.data.batching.iter_batches`, whose :meth:`~DatasetPass.attribute`
attributes one batch, whose :meth:`~DatasetPass.evaluating` context puts the model in eval mode (restoring
its mode, also on error) and whose :meth:`~DatasetPass.bar` is the progress bar.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..core.features import Feature
from ..core.layers import check_layer_names, check_model, model_device
from ..core.probe import forward_order
from ..core.settings import PassSettings, as_pass_settings
from ..data.batching import iter_batches
from ..data.datasets import dataset_identity
from .attribute import Attribution, as_layers, attribute


def dataset_size(dataset) -> int:
    """``len(dataset)`` of a sequence of (3, H, W) images or an (N, 3, H, W) tensor; errors for anything
    else and for an empty dataset."""
    if torch.is_tensor(dataset) and (dataset.dim() != 4 or dataset.shape[1] != 3):
        raise ValueError(f"an image tensor dataset must have shape (N, 3, H, W), got {tuple(dataset.shape)}")
    try:
        n = len(dataset)
    except TypeError:
        raise TypeError(
            "dataset must be a sequence of (3, H, W) images (with len() and indexing) or an (N, 3, H, W) tensor, "
            f"got {type(dataset).__name__}"
        ) from None
    if n == 0:
        raise ValueError("dataset is empty (0 images)")
    return int(n)


@dataclass(frozen=True)
class DatasetPass:
    """Validated arguments of one pass over a dataset (made by :func:`dataset_pass`).

    Attributes:
        model: the model (prepared, see :func:`lucent_inhibit.prepare`).
        dataset: the images; ``size`` of them; ``name`` its identity string.
        layers: attribution layers (Lucent names, ``"input"`` for the normalised input), de-duplicated.
        settings: the :class:`~lucent_inhibit.core.settings.PassSettings` (batch size, input normalisation,
            progress bar, completeness threshold), also readable as attributes of the pass.
    """

    model: nn.Module
    dataset: object
    layers: List[str]
    settings: PassSettings
    size: int
    name: str

    @property
    def batch_size(self) -> int:
        return self.settings.batch_size

    @property
    def preprocess(self) -> bool:
        return self.settings.preprocess

    @property
    def progress(self) -> bool:
        return self.settings.progress

    @property
    def threshold(self) -> float:
        """The completeness threshold: Pearson r(f, E) below it warns."""
        return self.settings.completeness_threshold

    def precision(self) -> str:
        """The precision the pass runs in now (:func:`lucent_inhibit.attribution.precision.active_precision`)."""
        from .precision import active_precision

        return active_precision(model_device(self.model))

    def identity(self) -> dict:
        """What makes two passes read the same numbers (dataset, its pixels, layers, batch size, input
        normalisation, precision): part of a checkpoint's identity (:mod:`lucent_inhibit.core.checkpoints`)."""
        from ..data.datasets import dataset_digest

        return {"dataset": self.name, "dataset_size": self.size, "images": dataset_digest(self.dataset),
                "layers": list(self.layers), "batch_size": self.batch_size, "preprocess": self.preprocess,
                "precision": self.precision()}

    def batches(self, indices: Optional[Sequence[int]] = None) -> Iterator[Tuple[np.ndarray, torch.Tensor]]:
        """``(indices (b,), images (b, 3, H, W))`` over ``indices`` (default: all) in batches."""
        return iter_batches(self.dataset, self.batch_size, indices)

    def attribute(self, images: torch.Tensor, feature: Feature, method: str = "gradient_x_activation",
                  steps: int = 16) -> Attribution:
        """Attribution of ``feature`` at every pass layer for one batch of images in [0, 1]."""
        return attribute(self.model, images, feature, self.layers, method=method, steps=steps,
                         preprocess=self.preprocess)

    def forward_sorted(self, images: torch.Tensor) -> List[str]:
        """The pass layers in the order the forward pass computes them (``"input"`` first)."""
        order = forward_order(self.model, images.to(model_device(self.model)))
        rank = {n: i for i, n in reversed(list(enumerate(order)))}
        return sorted(self.layers, key=lambda l: -1 if l == "input" else rank.get(l, len(order)))

    @contextlib.contextmanager
    def evaluating(self):
        """The model in eval mode for the block (no dropout, fixed batch-norm statistics); its train/eval
        mode is restored on exit, also on error. A model already in eval mode throughout is left as it is."""
        if not any(m.training for m in self.model.modules()):
            yield self.model
            return
        training = self.model.training
        self.model.eval()
        try:
            yield self.model
        finally:
            self.model.train(training)

    def bar(self, total: int, desc: str, initial: int = 0):
        """A tqdm bar over ``total`` images (``initial`` already done; silent unless ``progress``); use it
        as a context manager so it is closed also on error."""
        from tqdm.auto import tqdm

        return tqdm(total=int(total), initial=int(initial), desc=desc, unit="img", disable=not self.progress)

def dataset_pass(model: nn.Module, dataset, layers, features: Sequence[Feature],
                 settings: Optional[PassSettings] = None) -> DatasetPass:
    """Check the arguments every pass over a dataset shares: ``model`` is a module, ``dataset`` a non-empty
    image dataset, ``layers`` and the ``features``' layers are layers of the model, ``settings`` a
    :class:`~lucent_inhibit.core.settings.PassSettings` (None: the defaults). Raises ``ValueError`` /
    ``TypeError`` naming the argument; returns the :class:`DatasetPass`."""
    check_model(model)
    layers = as_layers(layers)
    check_layer_names(model, list(layers) + [f.layer for f in features])
    return DatasetPass(model=model, dataset=dataset, layers=layers, settings=as_pass_settings(settings),
                       size=dataset_size(dataset), name=dataset_identity(dataset))


def check_shape(idx: np.ndarray, images: torch.Tensor, shape: tuple) -> None:
    """``ValueError`` unless the batch's images (B, 3, H, W) have the scan's image ``shape`` (3, H, W)."""
    if tuple(images.shape[1:]) != tuple(shape):
        raise ValueError(
            f"dataset item {int(idx[0])} has shape {tuple(images.shape[1:])}, but the scan's images have shape "
            f"{tuple(shape)}: all images of a scan must share one shape (resize them, e.g. ImageFolder(root, size=224))"
        )
