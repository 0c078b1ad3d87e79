"""Weights from files and downloads, always read with ``torch.load(weights_only=True)``; the one torch seed
every model is built under, so random weights are the same in every stage and run.
"""
from __future__ import annotations

import os
import pickle

import torch
from torch import nn

WEIGHTS_CHOICES = ("default", "none")


#: :func:`load_model` builds every model under this torch seed (restoring the global generator after), so
#: ``weights="none"`` gives the same random weights in every stage of a run and in every run.
INIT_SEED = 0


class WeightsError(ValueError):
    """Weights that cannot be loaded: the message names the file and what did not match."""


def load_state_file(path: str) -> dict:
    """A state dict read from ``path`` with ``torch.load(weights_only=True)``: tensors only, never code."""
    import pickle

    if not os.path.isfile(path):
        raise WeightsError(f"weights file {path!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise WeightsError(
            f"weights file {path!r} cannot be loaded safely (weights_only=True refuses pickled code or objects, "
            f"and a truncated file fails): {str(exc).splitlines()[0]}"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise WeightsError(f"weights file {path!r} holds a {type(state).__name__}, expected a state dict of tensors")
    return state


def load_weights(model: nn.Module, state: dict, source: str) -> nn.Module:
    """``model.load_state_dict(state)`` with an error listing missing / unexpected / mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        def few(xs):
            return ", ".join(xs[:5]) + (f" (+{len(xs) - 5} more)" if len(xs) > 5 else "") if xs else "none"

        raise WeightsError(
            f"weights {source!r} do not fit {type(model).__name__}: missing keys: {few(missing)}; unexpected keys: "
            f"{few(unexpected)}; shape mismatches: {few(shapes)}"
        )
    model.load_state_dict(state)
    return model


def download_state(url: str, what: str) -> dict:
    """A state dict from ``url`` through torch's hub cache, loaded with ``weights_only=True``."""
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", weights_only=True, progress=False)
    except (OSError, ValueError) as exc:  # URLError is an OSError; no network here
        raise WeightsError(
            f"the {what} weights could not be downloaded ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
            "pass a local file instead: weights=PATH (CLI: --weights PATH), or weights='none' for random weights"
        ) from None
    except (RuntimeError, pickle.UnpicklingError, EOFError) as exc:  # an unsafe or broken pickle in the hub cache
        raise WeightsError(f"the cached {what} weights were refused by weights_only loading: {exc}") from None
