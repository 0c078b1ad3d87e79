"""Shared fixtures: tiny synthetic models for unit tests, the real embedded model for `slow` checks."""
import os

import pytest
import torch
from torch import nn

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


class TinyConvNet(nn.Module):
    """conv-relu-conv-relu-conv, optionally bias-free: piecewise linear, Lucent names conv1, relu1, ..."""

    def __init__(self, bias=True, seed=0, width=8):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=bias)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=bias)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(width, 4, 3, padding=1, bias=bias)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x):
        return self.conv3(self.relu2(self.conv2(self.relu1(self.conv1(x)))))


@pytest.fixture
def tiny_net():
    return TinyConvNet().eval()


@pytest.fixture
def tiny_images():
    g = torch.Generator().manual_seed(1)
    return torch.rand(4, 3, 16, 16, generator=g)


@pytest.fixture(scope="session")
def lite0():
    """The real embedded pretrained EfficientNet-Lite0 (shared across the session: read-only use only)."""
    from lucent_inhibit.models.embedded import efficientnet_lite0

    return efficientnet_lite0()


@pytest.fixture
def one_thread():
    """One torch thread for the test: on a shared 2-core machine two OpenMP threads make renders ~10x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def loaded(monkeypatch):
    """Every model a stage loads (``app.runtime.load_model``), with its hook count and requires_grad flags
    at load time: (model, hooks, flags) tuples, for checks that a run leaves the model as it found it."""
    from lucent_inhibit.app import runtime as common
    from lucent_inhibit.core import layers as hooks

    seen = []
    load = common.load_model

    def recording(cfg):
        model = load(cfg)
        seen.append((model, hooks.hook_count(model), [p.requires_grad for p in model.parameters()]))
        return model

    monkeypatch.setattr(common, "load_model", recording)
    return seen
