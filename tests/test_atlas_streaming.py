"""The atlas's vector collection in bounded memory: the points it streams into preallocated arrays equal,
bit for bit, those of the all-in-memory reference (every map of the selection concatenated, then cut to the
receptive-field box), for both kinds, both modes, every crop, linear layers, and maps spooled to disk."""
import errno
import os
import tempfile
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from lucent_inhibit.atlas import collect_vectors, read_layer
from lucent_inhibit.atlas.spool import MAP_BUDGET, MapStore, PointBuffer
from lucent_inhibit.attribution.attribute import attribute
from lucent_inhibit.attribution.totals import signed_totals
from lucent_inhibit.core.features import Feature
from lucent_inhibit.core.settings import PassSettings
from lucent_inhibit.synthesis.objectives import crop_box

FEAT = Feature("conv3", unit=1)
SELECTION = [11, 2, 7, 0, 5, 12, 3, 9, 1, 4, 8]  # unsorted, 11 images in batches of 4 (the last one short)


class _Linear(nn.Module):
    """conv-relu-pool-linear-relu-linear: an atlas layer without space (relu2, (B, 6))."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(2)
        self.conv1, self.relu1 = nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()
        self.pool, self.flat = nn.AdaptiveAvgPool2d(1), nn.Flatten()
        self.fc1, self.relu2, self.fc2 = nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x):
        return self.fc2(self.relu2(self.fc1(self.flat(self.pool(self.relu1(self.conv1(x)))))))


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(5)
    return [torch.rand(3, 16, 16, generator=g) for _ in range(13)]


@pytest.fixture(scope="module")
def tiny():
    from conftest import TinyConvNet

    return TinyConvNet().eval()


def _maps(model, data, feature, layer, kind, batch_size):
    """Every map of the selection, concatenated: S (n, ...), the vectors' source V and the feature values."""
    S, V, f = [], [], []
    for start in range(0, len(SELECTION), batch_size):
        x = torch.stack([data[i] for i in SELECTION[start: start + batch_size]])
        att = attribute(model, x, feature, [layer])
        S.append(att.scores[layer].float())
        f.append(att.activation.float())
        V.append(S[-1] if kind == "attribution" else read_layer(model, x, layer))
    return torch.cat(S), torch.cat(V), torch.cat(f)


def _reference(model, data, feature, layer, kind, mode, crop, batch_size=4):
    """The points as the all-in-memory collection computes them (box from the mean |S| of all images)."""
    S, V, f = _maps(model, data, feature, layer, kind, batch_size)
    n = S.shape[0]
    P, N = signed_totals(S, "element", "l1")
    box, image, pos = None, torch.arange(n), torch.full((n, 2), -1, dtype=torch.long)
    if S.dim() == 2:
        vec, net, mag = V, S.sum(1), S.norm(dim=1)
    else:
        box = (0, S.shape[2], 0, S.shape[3]) if crop is None else crop_box(S.abs().sum(1).mean(0, keepdim=True), crop)
        y0, y1, x0, x1 = box
        Sb, Vb = S[:, :, y0:y1, x0:x1], V[:, :, y0:y1, x0:x1]
        if mode == "sum":
            vec = Sb.sum((2, 3)) if kind == "attribution" else Vb.mean((2, 3))
            net, mag = Sb.sum((1, 2, 3)), Sb.flatten(1).norm(dim=1)
        else:
            hw = (y1 - y0) * (x1 - x0)
            vec = Vb.permute(0, 2, 3, 1).reshape(n * hw, -1)
            Sp = Sb.permute(0, 2, 3, 1).reshape(n * hw, -1)
            net, mag, image = Sp.sum(1), Sp.norm(dim=1), torch.arange(n).repeat_interleave(hw)
            yy, xx = torch.meshgrid(torch.arange(y0, y1), torch.arange(x0, x1), indexing="ij")
            pos = torch.stack([yy.flatten(), xx.flatten()], 1).repeat(n, 1)
    keep = vec.norm(dim=1) > 0
    return {"vectors": vec[keep], "net": net[keep], "magnitude": mag[keep], "point_image": image[keep],
            "point_position": pos[keep], "P": P, "N": N, "activation": f, "box": box, "dropped": int((~keep).sum())}


def _collect(model, data, feature, layer, kind, mode, crop, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pts = collect_vectors(model, data, feature, layer, SELECTION, kind, mode, crop, **kw, settings=PassSettings(batch_size=4))
    dropped = [str(w.message) for w in caught if "atlas points whose" in str(w.message)]
    return pts, dropped


def _assert_equal(pts, dropped, ref):
    for name in ("vectors", "net", "magnitude", "point_image", "point_position", "P", "N", "activation"):
        got, want = getattr(pts, name), ref[name].numpy()
        assert got.shape == want.shape and got.dtype == (np.int64 if want.dtype == np.int64 else np.float32), name
        np.testing.assert_array_equal(got, want, err_msg=name)
    assert pts.box == ref["box"]
    assert pts.image_index.tolist() == SELECTION
    if ref["dropped"]:
        assert len(dropped) == 1 and dropped[0].startswith(f"dropped {ref['dropped']} of ")
    else:
        assert not dropped


@pytest.mark.parametrize("kind", ["attribution", "activation"])
@pytest.mark.parametrize("mode", ["sum", "position"])
@pytest.mark.parametrize("crop", [0.01, 0.5, None])
@pytest.mark.parametrize("budget", [MAP_BUDGET, 0])  # maps in memory / spooled to a temporary file
def test_collected_points_equal_the_all_in_memory_reference(tiny, data, kind, mode, crop, budget):
    ref = _reference(tiny, data, FEAT, "relu2", kind, mode, crop)
    if crop == 0.5:  # the box is a proper part of the map, so cutting to it matters
        assert ref["box"] != (0, 16, 0, 16)
    if (kind, mode, crop) == ("attribution", "position", None):  # dead ReLU positions: points are dropped
        assert ref["dropped"] > 0
    pts, dropped = _collect(tiny, data, FEAT, "relu2", kind, mode, crop, memory_budget=budget)
    _assert_equal(pts, dropped, ref)


@pytest.mark.parametrize("kind", ["attribution", "activation"])
def test_linear_layer_points_equal_the_reference(data, kind):
    net = _Linear().eval()
    feature = Feature("fc2", unit=0)
    ref = _reference(net, data, feature, "relu2", kind, "sum", 0.01)
    pts, dropped = _collect(net, data, feature, "relu2", kind, "sum", 0.01)
    _assert_equal(pts, dropped, ref)
    assert pts.map_shape == (6,)


def test_spooled_and_in_memory_runs_give_the_same_thumbnails(tiny, data):
    a, _ = _collect(tiny, data, FEAT, "relu2", "activation", "position", 0.01)
    b, _ = _collect(tiny, data, FEAT, "relu2", "activation", "position", 0.01, memory_budget=0)
    np.testing.assert_array_equal(a.thumbnails, b.thumbnails)
    assert a.map_shape == b.map_shape == (8, 16, 16) and a.image_size == b.image_size == (16, 16)


def _batches(n=10, shape=(3, 4, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn((b,) + shape, generator=g) for b in (4, 4, n - 8)]


@pytest.mark.parametrize("budget", [MAP_BUDGET, 0])
def test_map_store_reads_back_what_it_wrote_in_other_batches(tmp_path, budget):
    first, second = _batches(), _batches(seed=1)
    with MapStore(10, count=2, budget=budget, folder=str(tmp_path)) as store:
        for a, b in zip(first, second):
            store.write([a, b])
        assert store.on_disk == (budget == 0) and store.nbytes == 2 * 10 * 60 * 4
        assert os.listdir(tmp_path) == []  # the temporary files have no name: nothing can be left behind
        got = list(store.read(3))
    assert [start for start, _ in got] == [0, 3, 6, 9]
    for i, want in enumerate((torch.cat(first), torch.cat(second))):
        assert torch.equal(torch.cat([maps[i] for _, maps in got]), want)
    assert store.files == [] and store.tensors is None


def test_map_store_refuses_batches_that_do_not_fit():
    store = MapStore(5, budget=0)
    store.write([torch.zeros(4, 2)])
    with pytest.raises(ValueError, match="MapStore of 5 images.*got a batch of 4 images"):
        store.write([torch.zeros(4, 2)])
    with pytest.raises(ValueError, match=r"maps \[\(2,\)\].*maps \[\(3,\)\]"):
        store.write([torch.zeros(1, 3)])
    with pytest.raises(ValueError, match="holds 1 maps per image, got 2"):
        store.write([torch.zeros(1, 2), torch.zeros(1, 2)])
    store.close()


def test_a_full_disk_is_reported_with_what_would_fit(tiny, data, monkeypatch):
    class _Full:
        def write(self, _):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            pass

    monkeypatch.setattr(tempfile, "TemporaryFile", lambda **kw: _Full())
    with pytest.raises(OSError, match=r"layer maps .* MiB in all.*No space left.*TMPDIR.*memory_budget >= \d+ bytes"):
        collect_vectors(tiny, data, FEAT, "relu2", SELECTION, memory_budget=0, settings=PassSettings(batch_size=4))


def test_the_store_is_closed_when_a_batch_raises(tiny, data, monkeypatch):
    import lucent_inhibit.atlas.collector as collector
    import lucent_inhibit.atlas.vectors as vectors

    stores, calls, real = [], [], vectors.attribute
    monkeypatch.setattr(collector, "MapStore", lambda *a: stores.append(MapStore(*a)) or stores[-1])

    def attribute(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("second batch")
        return real(*a, **kw)

    monkeypatch.setattr(vectors, "attribute", attribute)
    with pytest.raises(RuntimeError, match="second batch"):
        collect_vectors(tiny, data, FEAT, "relu2", SELECTION, memory_budget=0, settings=PassSettings(batch_size=4))
    assert stores[0].written == 0  # maps reach the store a whole chunk of images at a time: none finished
    assert stores[0].files == []  # its temporary file is closed, and so deleted


def test_bad_memory_budget_is_refused(tiny, data):
    with pytest.raises(ValueError, match="memory_budget"):
        collect_vectors(tiny, data, FEAT, "relu2", memory_budget=-1)


def test_point_buffer_keeps_only_non_zero_vectors_and_warns():
    buf = PointBuffer(4, 2)
    vec = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, -2.0]])
    buf.add(vec, vec.sum(1), vec.norm(dim=1), torch.arange(3), torch.full((3, 2), -1))
    with pytest.warns(UserWarning, match="dropped 1 of 3 atlas points whose attribution vector is all zero"):
        vectors, net, mag, image, pos = buf.arrays("attribution", "relu2")
    assert vectors.tolist() == [[1.0, 0.0], [0.0, -2.0]] and image.tolist() == [0, 2] and mag.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="overflows"):
        buf.add(torch.ones(3, 2), torch.ones(3), torch.ones(3), torch.arange(3), torch.full((3, 2), -1))
    empty = PointBuffer(1, 2)
    empty.add(torch.zeros(1, 2), torch.zeros(1), torch.zeros(1), torch.arange(1), torch.full((1, 2), -1))
    with pytest.raises(ValueError, match="every activation vector at layer 'relu2' is zero"), pytest.warns(UserWarning):
        empty.arrays("activation", "relu2")


def test_the_atlas_config_and_the_cli_pass_the_memory_budget_to_the_collection(monkeypatch, tmp_path):
    """``AtlasConfig.memory_budget`` and ``lucent-inhibit atlas --map-memory MIB`` reach ``collect_vectors``
    (the stage's default is the library's, in MiB); a negative budget is refused naming the option."""
    import lucent_inhibit.atlas.build as build
    from lucent_inhibit.app.cli import UsageError, parse
    from lucent_inhibit.app.stages.atlas import MAP_MEMORY_MIB
    from lucent_inhibit.atlas import AtlasConfig

    assert MAP_MEMORY_MIB * 2 ** 20 == MAP_BUDGET == AtlasConfig().memory_budget
    seen = {}

    def collect(*args, memory_budget, **kw):
        seen["budget"] = memory_budget
        raise KeyboardInterrupt  # stop before any work: only the plumbing is checked here

    monkeypatch.setattr(build, "collect_vectors", collect)
    with pytest.raises(KeyboardInterrupt):
        build.build_atlas(None, None, FEAT, "relu2", [0], config=AtlasConfig(memory_budget=5))
    assert seen["budget"] == 5
    _, cfg, _ = parse(["atlas", "--out", str(tmp_path), "--map-memory", "3"])
    assert cfg.atlas_config().memory_budget == 3 * 2 ** 20
    with pytest.raises(ValueError, match="memory_budget"):
        AtlasConfig(memory_budget=-1)
    with pytest.raises(UsageError, match="--map-memory must be >= 0, got -1"):
        parse(["atlas", "--out", str(tmp_path), "--map-memory", "-1"])
