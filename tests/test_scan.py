"""Dataset scans: statistics, selection, checkpoints (real SIGKILL), shards, bad input, planted tension."""
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from lucent_inhibit.attribution.attribute import attribute
from lucent_inhibit.attribution.totals import signed_totals
from lucent_inhibit.core.distributed import shard_indices
from lucent_inhibit.core.features import Feature
from lucent_inhibit.core.results import META_KEY
from lucent_inhibit.core.settings import PassSettings
from lucent_inhibit.scanning.merge import merge_scans as merge
from lucent_inhibit.scanning.result import ScanResult
from lucent_inhibit.scanning.run import scan

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


# ------------------------------------------------------------------------------------------------
# small models and datasets (module level so a subprocess can import them)
# ------------------------------------------------------------------------------------------------
class SmallNet(nn.Module):
    """conv1-relu1-conv2-relu2-conv3, deterministic weights."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(6, 4, 3, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.eval()

    def forward(self, x):
        return self.conv3(self.relu2(self.conv2(self.relu1(self.conv1(x)))))


class CountingDataset:
    """n random 12x12 images; counts item reads; optional delay per item (to be killed mid-scan)."""

    identity = "counting-dataset(n, seed=3)"

    def __init__(self, n=40, delay=0.0, size=12):
        g = torch.Generator().manual_seed(3)
        self.images = torch.rand(n, 3, size, size, generator=g)
        self.delay, self.reads = delay, 0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        self.reads += 1
        if self.delay:
            time.sleep(self.delay)
        return self.images[i]

    def describe(self, i):
        return f"img{i}"


FEATURE = Feature("conv3", unit=1)
LAYERS = ["relu2", "relu1"]


def _same(a: ScanResult, b: ScanResult, exact=True):
    check = np.testing.assert_array_equal if exact else (lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6))
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.items, b.items)
    check(a.activation, b.activation)
    check(a.pos, b.pos)
    check(a.neg, b.neg)
    assert sorted(a.pos_maps) == sorted(b.pos_maps)
    for l in a.pos_maps:
        check(a.pos_maps[l].astype(np.float32), b.pos_maps[l].astype(np.float32))
        check(a.neg_maps[l].astype(np.float32), b.neg_maps[l].astype(np.float32))


# ------------------------------------------------------------------------------------------------
# statistics
# ------------------------------------------------------------------------------------------------
def test_stats_match_attribution():
    net, ds = SmallNet(), CountingDataset(20)
    r = scan(net, ds, FEATURE, LAYERS, settings=PassSettings(batch_size=6, progress=False))
    att = attribute(net, ds.images, FEATURE, LAYERS)
    np.testing.assert_allclose(r.activation, att.activation.numpy(), rtol=1e-5, atol=1e-6)
    for l in LAYERS:
        for gran in ("element", "channel"):
            for norm in ("l1", "l2"):
                p, n = signed_totals(att.scores[l], gran, norm)
                np.testing.assert_allclose(r.P(l, gran, norm), p.numpy(), rtol=1e-5, atol=1e-5)
                np.testing.assert_allclose(r.N(l, gran, norm), n.numpy(), rtol=1e-5, atol=1e-5)
        s = att.scores[l]
        np.testing.assert_allclose(r.total(l), s.flatten(1).sum(1).numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(r.abs_l2(l), s.flatten(1).norm(dim=1).numpy(), rtol=1e-4, atol=1e-5)
        # maps: relu(S) / relu(-S) summed over channels, float16, at the layer's resolution
        assert r.pos_maps[l].dtype == np.float16 and r.pos_maps[l].shape == (20, 12, 12)
        np.testing.assert_allclose(r.pos_maps[l], s.clamp(min=0).sum(1).numpy(), rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(r.neg_maps[l], (-s).clamp(min=0).sum(1).numpy(), rtol=2e-3, atol=2e-3)
    # channel granularity cancels within channels: P_channel <= P_element
    assert np.all(r.P("relu2", "channel") <= r.P("relu2", "element") + 1e-4)
    assert list(r.items) == [f"img{i}" for i in range(20)]
    assert r.dataset == CountingDataset.identity and r.dataset_size == 20
    # bias-bearing ReLU net: E tracks f at the adjacent layer
    assert r.completeness["relu2"] > 0.95


def test_selection_orders_and_unions():
    net, ds = SmallNet(), CountingDataset(30)
    r = scan(net, ds, FEATURE, LAYERS, settings=PassSettings(batch_size=8, progress=False))
    order = np.argsort(-r.activation)
    np.testing.assert_array_equal(r.meis(5), r.indices[order[:5]])
    np.testing.assert_array_equal(r.miis(5), r.indices[np.argsort(r.activation)[:5]])
    t = np.minimum(r.P("relu1"), r.N("relu1"))
    np.testing.assert_array_equal(r.mtis(4, score="min", layer="relu1"), r.indices[np.argsort(-t)[:4]])
    g = np.sqrt(r.P() * r.N())
    np.testing.assert_array_equal(r.mtis(4, score="geometric"), r.indices[np.argsort(-g)[:4]])
    np.testing.assert_array_equal(r.top_abs(3), r.indices[np.argsort(-r.abs_l2())[:3]])
    sel = r.select(top_activation=3, bottom_activation=3, top_tension=4, top_abs=2)
    expected = set(r.meis(3)) | set(r.miis(3)) | set(r.mtis(4)) | set(r.top_abs(2))
    assert set(sel.tolist()) == expected and np.all(np.diff(sel) > 0)
    with pytest.raises(ValueError, match="at least one criterion"):
        r.select()
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        r.meis(0)
    with pytest.raises(KeyError, match="was not scanned"):
        r.mtis(3, layer="conv2")


def test_save_load_roundtrip(tmp_path):
    net, ds = SmallNet(), CountingDataset(17)
    r = scan(net, ds, FEATURE, LAYERS, settings=PassSettings(batch_size=5, progress=False))
    path = str(tmp_path / "scan.npz")
    r.save(path)
    back = ScanResult.load(path)
    _same(r, back)
    assert back.feature == FEATURE and back.layers == LAYERS and back.completeness == pytest.approx(r.completeness)
    with np.load(path, allow_pickle=False) as z:  # no pickled objects anywhere
        assert z[META_KEY].dtype == np.uint8
    px, nx = back.maps(int(back.indices[3]), "relu1")
    assert px.shape == (12, 12) and px.dtype == np.float32


def test_summary_and_plot(tmp_path):
    r = scan(SmallNet(), CountingDataset(30), FEATURE, LAYERS, settings=PassSettings(batch_size=8, progress=False))
    s = r.summary()
    rows = lambda idx: np.isin(r.indices, idx)  # noqa: E731
    assert s["type"] == "ScanResult" and s["images"] == 30 and s["k"] == 10
    assert s["mei_mean_activation"] == pytest.approx(float(r.activation[rows(r.meis(10))].mean()))
    assert s["mii_mean_activation"] == pytest.approx(float(r.activation[rows(r.miis(10))].mean()))
    for l in LAYERS:
        assert s["layers"][l]["completeness_r"] == r.completeness[l]
        assert s["layers"][l]["mti_mean_activation"] == pytest.approx(float(r.activation[rows(r.mtis(10, layer=l))].mean()))
        assert s["layers"][l]["mean_N"] == pytest.approx(float(r.N(l).mean()))
    json.dumps(s)  # plain numbers
    path = str(tmp_path / "scatter.png")
    assert r.plot(path).axes
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_keep_maps_false_stores_no_maps():
    r = scan(SmallNet(), CountingDataset(6), FEATURE, LAYERS, keep_maps=False, settings=PassSettings(batch_size=4, progress=False))
    assert r.pos_maps == {} and r.neg_maps == {}
    with pytest.raises(KeyError, match="keep_maps"):
        r.maps(0)


# ------------------------------------------------------------------------------------------------
# planted tension
# ------------------------------------------------------------------------------------------------
class RedMinusGreen(nn.Module):
    """feature = mean relu(red detector) - mean relu(green detector)."""

    def __init__(self):
        super().__init__()
        self.detect = nn.Conv2d(3, 2, 1, bias=False)
        self.relu = nn.ReLU()
        self.out = nn.Conv2d(2, 1, 1, bias=False)
        with torch.no_grad():
            self.detect.weight.copy_(torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0]]).view(2, 3, 1, 1))
            self.out.weight.copy_(torch.tensor([1.0, -1.0]).view(1, 2, 1, 1))
        self.eval()

    def forward(self, x):
        return self.out(self.relu(self.detect(x)))


def _planted_images(per_kind=6, size=16, seed=0):
    """Red patch on the left, green patch on the right, both, or neither (a grey patch), on blue clutter."""
    rng = np.random.default_rng(seed)
    images, kinds = [], []
    for kind in ("red", "green", "both", "neither"):
        for _ in range(per_kind):
            img = torch.zeros(3, size, size)
            img[2] = torch.from_numpy(rng.uniform(0, 0.3, (size, size))).float()
            side = int(rng.integers(4, 7))
            y1, y2 = (int(v) for v in rng.integers(0, size - side, 2))
            if kind in ("red", "both"):
                img[0, y1 : y1 + side, 1 : 1 + side] = 1.0
            if kind in ("green", "both"):
                img[1, y2 : y2 + side, size - 1 - side : size - 1] = 1.0
            if kind == "neither":
                img[:2, y1 : y1 + side, 1 : 1 + side] = 0.5
            images.append(img)
            kinds.append(kind)
    return images, np.array(kinds)


def test_planted_tension_ranks_two_colour_images_as_mtis():
    images, kinds = _planted_images()
    r = scan(RedMinusGreen(), images, Feature("out", unit=0, position="mean"), "relu", settings=PassSettings(batch_size=7, progress=False, preprocess=False))
    both = set(np.nonzero(kinds == "both")[0].tolist())
    mtis = r.mtis(len(both))
    assert set(mtis.tolist()) == both
    assert set(kinds[r.meis(6)]) == {"red"} and set(kinds[r.miis(6)]) == {"green"}
    top = float(r.activation[np.isin(r.indices, r.meis(6))].mean())
    mti_act = r.activation[np.isin(r.indices, mtis)]
    assert top > 0.05 and np.all(np.abs(mti_act) < 0.25 * top)  # tense images: activation near zero
    # their P and N are both large: each above the median of all images
    assert np.all(r.P()[np.isin(r.indices, mtis)] > np.median(r.P()))
    assert np.all(r.N()[np.isin(r.indices, mtis)] > np.median(r.N()))
    # no biases, piecewise linear: E = f exactly
    np.testing.assert_allclose(r.total("relu"), r.activation, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# checkpoints, resume, shards
# ------------------------------------------------------------------------------------------------
def test_out_folder_loads_and_resume_skips_done_chunks(tmp_path):
    net, out = SmallNet(), str(tmp_path / "scan")
    ref = scan(net, CountingDataset(40), FEATURE, LAYERS, settings=PassSettings(batch_size=4, progress=False))
    ds = CountingDataset(40)
    r = scan(net, ds, FEATURE, LAYERS, chunk_size=8, out=out, settings=PassSettings(batch_size=4, progress=False))
    _same(ref, r)
    man = json.load(open(os.path.join(out, "manifest.json")))
    assert man["complete"] and man["n_chunks"] == 5 and len(man["chunks"]) == 5
    _same(ref, ScanResult.load(out))
    ds2 = CountingDataset(40)
    again = scan(net, ds2, FEATURE, LAYERS, chunk_size=8, out=out, settings=PassSettings(batch_size=4, progress=False))
    assert ds2.reads == 4  # only the validation batch: every chunk reused
    _same(ref, again)


_KILL_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {here!r})
from test_scan import SmallNet, CountingDataset, FEATURE, LAYERS
from lucent_inhibit import PassSettings
from lucent_inhibit.scanning import scan
scan(SmallNet(), CountingDataset(48, delay=0.04), FEATURE, LAYERS, chunk_size=8, out={out!r},
     settings=PassSettings(batch_size=4, progress=False))
"""


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    out = str(tmp_path / "killed")
    script = tmp_path / "run.py"
    script.write_text(_KILL_SCRIPT.format(here=HERE, out=out))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    mpath = os.path.join(out, "manifest.json")
    deadline = time.time() + 120
    n_done = 0
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"scan subprocess ended before it was killed: {proc.stderr.read().decode()[-2000:]}")
            if os.path.exists(mpath):
                try:
                    n_done = len(json.load(open(mpath))["chunks"])
                except ValueError:
                    n_done = 0
                if n_done >= 2:
                    break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    man = json.load(open(mpath))
    assert not man["complete"] and 2 <= len(man["chunks"]) < 6
    with pytest.raises(ValueError, match="incomplete"):
        ScanResult.load(out)

    torch.set_num_threads(1)
    ds = CountingDataset(48)
    resumed = scan(SmallNet(), ds, FEATURE, LAYERS, chunk_size=8, out=out, settings=PassSettings(batch_size=4, progress=False))
    assert ds.reads <= 4 + 48 - 8 * len(man["chunks"])  # the finished chunks were not recomputed
    ref = scan(SmallNet(), CountingDataset(48), FEATURE, LAYERS, settings=PassSettings(batch_size=4, progress=False))
    _same(ref, resumed)
    _same(ref, ScanResult.load(out))
    assert not [f for f in os.listdir(out) if f.startswith(".")]  # no temporary file left behind


def test_corrupt_chunk_is_recomputed_with_warning(tmp_path):
    net, out = SmallNet(), str(tmp_path / "scan")
    ref = scan(net, CountingDataset(24), FEATURE, LAYERS, chunk_size=8, out=out, settings=PassSettings(batch_size=4, progress=False))
    chunk = os.path.join(out, "chunk-000001.npz")
    data = open(chunk, "rb").read()
    open(chunk, "wb").write(data[: len(data) // 2])  # a partial write
    ds = CountingDataset(24)
    with pytest.warns(UserWarning, match="chunk 1 .*not reusable.*SHA-256"):
        again = scan(net, ds, FEATURE, LAYERS, chunk_size=8, out=out, settings=PassSettings(batch_size=4, progress=False))
    assert ds.reads == 4 + 8  # validation batch + exactly the corrupt chunk
    _same(ref, again)
    _same(ref, ScanResult.load(out))  # repaired on disk


def test_refuses_to_mix_different_scans(tmp_path):
    net, out = SmallNet(), str(tmp_path / "scan")
    scan(net, CountingDataset(8), FEATURE, LAYERS, out=out, settings=PassSettings(batch_size=4, progress=False))
    with pytest.raises(ValueError, match="different feature"):
        scan(net, CountingDataset(8), Feature("conv3", unit=2), LAYERS, out=out, settings=PassSettings(batch_size=4, progress=False))
    with pytest.raises(ValueError, match="different layers"):
        scan(net, CountingDataset(8), FEATURE, ["relu2"], out=out, settings=PassSettings(batch_size=4, progress=False))
    with pytest.raises(ValueError, match="different dataset_size"):
        scan(net, CountingDataset(12), FEATURE, LAYERS, out=out, settings=PassSettings(batch_size=4, progress=False))
    # resume=False starts over explicitly
    r = scan(net, CountingDataset(8), Feature("conv3", unit=2), LAYERS, out=out, resume=False, settings=PassSettings(batch_size=4, progress=False))
    assert ScanResult.load(out).feature == Feature("conv3", unit=2) and len(r) == 8


def test_shards_merge_to_full_scan(tmp_path):
    net, ds = SmallNet(), CountingDataset(23)
    full = scan(net, ds, FEATURE, LAYERS, settings=PassSettings(batch_size=4, progress=False))
    parts = []
    for i in range(3):
        out = str(tmp_path / f"shard{i}")
        r = scan(net, ds, FEATURE, LAYERS, shard=(i, 3), out=out, settings=PassSettings(batch_size=4, progress=False))
        np.testing.assert_array_equal(r.indices, shard_indices(23, (i, 3)))
        parts.append(out if i != 1 else r)  # paths and objects both accepted
    merged = merge(parts[::-1])
    _same(full, merged, exact=False)
    assert merged.completeness["relu2"] == pytest.approx(full.completeness["relu2"], abs=1e-6)
    with pytest.raises(ValueError, match="missing dataset indices"):
        merge(parts[:2])
    assert len(merge(parts[:2], require_complete=False)) == len(shard_indices(23, (0, 3))) + len(shard_indices(23, (1, 3)))
    with pytest.raises(ValueError, match="overlap"):
        merge([parts[0], parts[0]], require_complete=False)
    other = scan(net, ds, Feature("conv3", unit=0), LAYERS, shard=(1, 3), settings=PassSettings(batch_size=4, progress=False))
    with pytest.raises(ValueError, match="different feature"):
        merge([parts[0], other, parts[2]])
    with pytest.raises(ValueError, match="shard"):
        scan(net, ds, FEATURE, LAYERS, shard=(3, 3), settings=PassSettings(progress=False))


# ------------------------------------------------------------------------------------------------
# completeness warning
# ------------------------------------------------------------------------------------------------
class TwoBranch(nn.Module):
    """feature = a(x) + b(x); attributing at branch a's relu misses b, so E does not track f."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.a = nn.Conv2d(3, 2, 3, padding=1)
        self.a_relu = nn.ReLU()
        self.a_out = nn.Conv2d(2, 1, 1)
        self.b = nn.Conv2d(3, 1, 3, padding=1)
        self.sum = nn.Identity()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
            self.a_out.weight.mul_(0.05)
            self.b.weight.mul_(20.0)
        self.eval()

    def forward(self, x):
        return self.sum(self.a_out(self.a_relu(self.a(x))) + self.b(x))


def test_low_completeness_warns_and_is_stored():
    ds = CountingDataset(30)
    with pytest.warns(UserWarning, match="a_relu"):
        r = scan(TwoBranch(), ds, Feature("sum", unit=0), "a_relu", settings=PassSettings(batch_size=10, progress=False))
    expected = np.corrcoef(r.activation, r.total("a_relu"))[0, 1]
    assert r.completeness["a_relu"] == pytest.approx(expected) and expected < 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # complete pair: no warning
        ok = scan(SmallNet(), CountingDataset(30), FEATURE, "relu2", settings=PassSettings(batch_size=10, progress=False))
    assert ok.completeness["relu2"] > 0.95


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------
def test_bad_input(tmp_path):
    net, ds = SmallNet(), CountingDataset(8)
    out = str(tmp_path / "never")
    with pytest.raises(ValueError, match="'conv3'.*before the feature layer"):
        scan(net, ds, Feature("relu1", unit=0), ["conv3"], out=out, settings=PassSettings(progress=False))
    with pytest.raises(ValueError, match="unit 9 out of range.*4 channels"):
        scan(net, ds, Feature("conv3", unit=9), LAYERS, out=out, settings=PassSettings(progress=False))
    with pytest.raises(ValueError, match=r"position \(30, 2\) is outside.*12x12"):
        scan(net, ds, Feature("conv3", unit=0, position=(30, 2)), LAYERS, out=out, settings=PassSettings(progress=False))
    with pytest.raises(ValueError, match="Unknown layer 'relu9'"):
        scan(net, ds, FEATURE, ["relu9"], out=out, settings=PassSettings(progress=False))
    assert not os.path.exists(out)  # validated before anything was written
    mixed = [torch.rand(3, 12, 12)] * 5 + [torch.rand(3, 14, 12)] + [torch.rand(3, 12, 12)] * 2
    with pytest.raises(ValueError, match=r"item 5 has shape \(3, 14, 12\).*\(3, 12, 12\)"):
        scan(net, mixed, FEATURE, LAYERS, settings=PassSettings(batch_size=4, progress=False))
    with pytest.raises(ValueError, match="expected an image"):
        scan(net, [torch.rand(12, 12)] * 3, FEATURE, LAYERS, settings=PassSettings(progress=False))
    with pytest.raises(ValueError, match="batch_size"):
        scan(net, ds, FEATURE, LAYERS, settings=PassSettings(batch_size=0, progress=False))
    with pytest.raises(ValueError, match="empty"):
        scan(net, [], FEATURE, LAYERS, settings=PassSettings(progress=False))
    with pytest.raises(ValueError, match="score must be one of 'min'.*got 'max'"):
        scan(net, ds, FEATURE, LAYERS, score="max", settings=PassSettings(progress=False))
    # flags must be bools: "no" is not read as true, 0 is not read as false
    for name, value in (("keep_maps", "no"), ("resume", None)):
        with pytest.raises(TypeError, match=f"{name} must be True or False, got {value!r}"):
            scan(net, ds, FEATURE, LAYERS, out=out, **{name: value}, settings=PassSettings(progress=False))
    for name, value in (("progress", 1), ("preprocess", "yes")):
        with pytest.raises(TypeError, match=f"{name} must be True or False, got {value!r}"):
            scan(net, ds, FEATURE, LAYERS, out=out, settings={name: value})
    for value in (True, 2.5):
        with pytest.raises(ValueError, match="batch_size must be"):
            scan(net, ds, FEATURE, LAYERS, out=out, settings={"batch_size": value, "progress": False})
    with pytest.raises(ValueError, match="chunk_size must be"):
        scan(net, ds, FEATURE, LAYERS, out=out, chunk_size=0, settings=PassSettings(progress=False))
    with pytest.raises(ValueError, match="completeness_threshold must be <= 1"):
        scan(net, ds, FEATURE, LAYERS, out=out, settings=PassSettings(completeness_threshold=2, progress=False))
    with pytest.raises(ValueError, match=r"an image tensor dataset must have shape \(N, 3, H, W\), got \(3, 12, 12\)"):
        scan(net, ds.images[0], FEATURE, LAYERS, settings=PassSettings(progress=False))
    with pytest.raises(TypeError, match="dataset must be a sequence"):
        scan(net, iter(ds.images), FEATURE, LAYERS, settings=PassSettings(progress=False))
    assert not os.path.exists(out)


# ------------------------------------------------------------------------------------------------
# real model
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_real_model_mtis_cancel_between_meis_and_miis(lite0):
    """MTIs: P and N both high for this feature, and they cancel: the MTIs' total attribution E = P - N is
    smaller in magnitude than the MEIs' and the MIIs', and their activation lies between the two. (Not "near
    zero": after blocks_4_0_bn2_act the feature carries a constant bias, f = E + 3.87, and on the 13-photo
    set unit 5's top MTIs still lean excitatory: mean f 8.3 against the MEIs' 12.6 and the MIIs' -7.0.)"""
    from lucent_inhibit.data.bundled import sample_crops

    torch.set_num_threads(2)
    ds = sample_crops(48, size=128, seed=0)
    feature = Feature("blocks_4_0_bn3_drop", unit=5)
    r = scan(lite0, ds, feature, ["blocks_4_0_bn2_act"], settings=PassSettings(batch_size=16, progress=False))
    assert r.completeness["blocks_4_0_bn2_act"] > 0.95  # adjacent layer inside the block: E tracks f
    group = lambda idx: np.isin(r.indices, idx)  # noqa: E731
    mei, mii, mti = group(r.meis(5)), group(r.miis(5)), group(r.mtis(5))
    E = r.total()
    assert abs(E[mti].mean()) < min(E[mei].mean(), -E[mii].mean())  # excitation and inhibition cancel
    assert r.activation[mii].mean() < r.activation[mti].mean() < r.activation[mei].mean()
    # both P and N of the MTIs are high relative to the dataset (percentile ranks)
    assert (np.median(r.percentiles()[mti], axis=0) >= 75).all()
    assert r.items[0].startswith(ds.describe(0).split("[")[0])


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------
def test_cli_scan_shards_merge_and_figures(tmp_path, capsys):
    from lucent_inhibit.app.cli import main

    base = ["--model", "test_scan:SmallNet", "--layer", "conv3", "--unit", "1", "--attr-layers", "relu2", "relu1",
            "--n-images", "12", "--size", "16", "--batch-size", "4", "--top-k", "3"]
    out = str(tmp_path / "cli")
    assert main(["scan", *base, "--out", out]) == 0
    text = capsys.readouterr().out
    r = ScanResult.load(os.path.join(out, "scan.npz"))
    assert len(r) == 12 and r.feature == FEATURE and r.layers == LAYERS
    assert f"MTIs {r.mtis(3).tolist()}" in text and "completeness r(f, E) at relu2" in text
    for name in ("scatter", "meis", "miis", "mtis", "overlay_mti0"):
        assert os.path.exists(os.path.join(out, f"{name}.png"))
    _same(r, ScanResult.load(os.path.join(out, "scan")))
    # shards, then merge
    for i in range(2):
        assert main(["scan", *base, "--out", out + "2", "--shard", f"{i}/2"]) == 0
    shards = [os.path.join(out + "2", f"shard-{i}-of-2") for i in range(2)]
    assert main(["scan", *base, "--out", out + "2", "--merge", *shards, "--no-figures"]) == 0
    _same(r, ScanResult.load(os.path.join(out + "2", "scan.npz")), exact=False)
    capsys.readouterr()
    # bad input: one clear line, status 2
    assert main(["scan", *base[:7], "relu9", *base[9:], "--out", out]) == 2
    assert "Unknown layer 'relu9'" in capsys.readouterr().err
    assert main(["scan", *base[:5], "7", *base[6:], "--out", out]) == 2
    assert "unit 7 out of range" in capsys.readouterr().err
    assert main(["scan", *base, "--unit", "2", "--out", out]) == 2  # existing out holds unit 1
    assert "different feature" in capsys.readouterr().err
    assert main(["scan", *base, "--out", out, "--shard", "2/2"]) == 2
    assert "shard" in capsys.readouterr().err


def test_image_folder_items_are_paths(tmp_path):
    from PIL import Image

    from lucent_inhibit.data.folders import ImageFolder

    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
    ds = ImageFolder(str(tmp_path), size=12)
    r = scan(SmallNet(), ds, FEATURE, LAYERS, settings=PassSettings(batch_size=2, progress=False))
    assert list(r.items) == ds.paths and r.dataset == ds.identity
    np.testing.assert_array_equal(r.meis(5), np.argsort(-r.activation, kind="stable")[:5])


def test_bad_paths_parts_and_lookups_are_input_errors(tmp_path):
    from lucent_inhibit.core.validate import InputError
    from lucent_inhibit.scanning.result import NotInScanError

    net, ds = SmallNet(), CountingDataset(6)
    with pytest.raises(InputError, match="out must be a folder path .* got 2.5"):
        scan(net, ds, FEATURE, LAYERS, out=2.5, settings=PassSettings(progress=False))
    assert ds.reads == 0  # refused before any image is read
    r = scan(net, ds, FEATURE, LAYERS, keep_maps=False, settings=PassSettings(batch_size=3, progress=False))
    for parts in (2.5, str(tmp_path), r):  # a number, one folder name (not its characters), one result
        with pytest.raises(InputError, match="parts must be a list of scan results"):
            merge(parts)
    for lookup, named in ((lambda: r.row(99), "dataset index 99"), (lambda: r.maps(0), "relu2"),
                          (lambda: r.P("conv2"), "'conv2'")):
        with pytest.raises(NotInScanError, match=named) as info:
            lookup()
        assert isinstance(info.value, KeyError) and isinstance(info.value, InputError)
        assert str(info.value).startswith(("dataset index", "no spatial maps", "layer"))  # not KeyError's repr
