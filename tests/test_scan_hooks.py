"""A scan leaves the model as it found it: hooks, requires_grad flags and train/eval mode, also when it
raises half-way (a dataset item or a forward pass that fails on the 3rd batch); the checkpoints written
before the failure resume to the uninterrupted result."""
import json
import os

import numpy as np
import pytest
import torch
from test_scan import FEATURE, LAYERS, CountingDataset, SmallNet, _same
from torch import nn

from lucent_inhibit.core.layers import hook_count
from lucent_inhibit.core.settings import PassSettings
from lucent_inhibit.scanning.result import ScanResult
from lucent_inhibit.scanning.run import scan

BATCH = 4


class FailingDataset(CountingDataset):
    """CountingDataset (same identity and items) whose item ``fail_at`` raises while ``armed``."""

    def __init__(self, n=20, fail_at=2 * BATCH):
        super().__init__(n)
        self.fail_at, self.armed = fail_at, True

    def __getitem__(self, i):
        if self.armed and int(i) == self.fail_at:
            raise RuntimeError(f"cannot read item {i}")
        return super().__getitem__(i)


class FailingForward(nn.Module):
    """Identity that raises on its ``fail_on``-th call on a batch of several images (the model's forward breaks
    while the pass's hooks are attached; the probe's one-image passes before it are not counted)."""

    def __init__(self, fail_on=1):
        super().__init__()
        self.calls, self.fail_on = 0, fail_on

    def forward(self, x):
        if x.shape[0] == 1:
            return x
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError("forward failed")
        return x


def _state(model):
    return hook_count(model), {n: p.requires_grad for n, p in model.named_parameters()}, model.training


def _model():
    net = SmallNet()
    net.conv1.weight.requires_grad_(False)  # a mixed set of flags, which must come back unchanged
    return net


def test_scan_leaves_hooks_flags_and_mode_unchanged(tmp_path):
    net = _model()
    net.train()
    before = _state(net)
    r = scan(net, CountingDataset(12), FEATURE, LAYERS, out=str(tmp_path / "s"), settings=PassSettings(batch_size=BATCH, progress=False))
    assert len(r) == 12 and _state(net) == before
    assert before[0] == 0 and before[2] is True and before[1]["conv1.weight"] is False


def test_scan_raising_dataset_restores_the_model_then_resumes(tmp_path):
    net, out = _model(), str(tmp_path / "s")
    net.train()
    before = _state(net)
    ds = FailingDataset(20)
    with pytest.raises(RuntimeError, match="cannot read item 8"):
        scan(net, ds, FEATURE, LAYERS, chunk_size=BATCH, out=out, settings=PassSettings(batch_size=BATCH, progress=False))
    assert _state(net) == before
    man = json.load(open(os.path.join(out, "manifest.json")))
    assert not man["complete"] and sorted(man["chunks"]) == ["000000", "000001"]  # the two batches before it
    with pytest.raises(ValueError, match="incomplete"):
        ScanResult.load(out)
    ds.armed, ds.reads = False, 0
    resumed = scan(net, ds, FEATURE, LAYERS, chunk_size=BATCH, out=out, settings=PassSettings(batch_size=BATCH, progress=False))
    assert ds.reads == BATCH + (20 - 2 * BATCH)  # validation batch + the chunks not yet written
    ref = scan(SmallNet(), CountingDataset(20), FEATURE, LAYERS, settings=PassSettings(batch_size=BATCH, progress=False))
    _same(ref, resumed)
    _same(ref, ScanResult.load(out))
    assert _state(net) == before


def test_scan_raising_forward_removes_its_hooks():
    net = _model()
    net.relu2 = FailingForward(fail_on=2)
    before = _state(net)
    with pytest.raises((RuntimeError, ValueError), match="forward failed"):
        scan(net, CountingDataset(20), FEATURE, ["relu1"], settings=PassSettings(batch_size=BATCH, progress=False))
    assert net.relu2.calls == 2 and _state(net) == before


def test_scan_refuses_bad_layer_without_touching_the_model():
    net = _model()
    before = _state(net)
    with pytest.raises(ValueError, match="Unknown layer 'relu9'"):
        scan(net, CountingDataset(8), FEATURE, ["relu9"], settings=PassSettings(progress=False))
    assert _state(net) == before
    assert np.isfinite(scan(net, torch.rand(6, 3, 12, 12), FEATURE, LAYERS, settings=PassSettings(progress=False)).activation).all()
