"""Layer census: K units in one pass equal K one-feature scans; the Census result; bad input; the CLI stage."""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from lucent_inhibit import Census, Feature, layer_census, scan
from lucent_inhibit.census import ChunkMemoryError
from lucent_inhibit.core.settings import PassSettings
from lucent_inhibit.core.validate import InputError

HERE = os.path.dirname(os.path.abspath(__file__))
LAYERS = ["relu1", "relu2"]


class LinearHead(nn.Module):
    """conv -> relu -> pool -> flatten -> fc (fc is a linear (B, C) layer)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(24, 5)

    def forward(self, x):
        return self.fc(self.flat(self.pool(self.relu(self.conv(x)))))


class Wide(nn.Module):
    """A 3 -> 64 conv and a 1x1 conv to 256 units: a census whose chunks are large (module level so
    that a subprocess can build it)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 64, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Conv2d(64, 256, 1)

    def forward(self, x):
        return self.head(self.relu(self.conv(x)))


@pytest.fixture
def data():
    return torch.rand(14, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def _census(net, data, features="conv3", layers=LAYERS, **kw):
    passes = {k: kw.pop(k) for k in ("batch_size", "progress", "preprocess", "completeness_threshold") if k in kw}
    kw = dict(dict(chunk_size=3, settings=PassSettings(**dict(dict(batch_size=5, progress=False, preprocess=False),
                                                              **passes))), **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return layer_census(net, data, features, layers, **kw)


def _scan(net, data, feature, layers=LAYERS):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return scan(net, data, feature, layers, settings=PassSettings(batch_size=5, progress=False, preprocess=False))


@pytest.mark.parametrize("backward", ["loop", "batched"])
def test_census_of_k_units_equals_k_one_feature_scans(tiny_net, data, backward):
    census = _census(tiny_net, data, backward=backward)
    assert [f.unit for f in census.features] == [0, 1, 2, 3] and census.info["backward"] == backward
    assert census.activation.shape == (14, 4) and census.pos.shape == (14, 4, 2)
    for j, f in enumerate(census.features):
        one = _scan(tiny_net, data, f)
        np.testing.assert_allclose(census.activation[:, j], one.activation, rtol=1e-6, atol=1e-6)
        for layer in LAYERS:
            np.testing.assert_allclose(census.P(layer)[:, j], one.P(layer), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(census.N(layer)[:, j], one.N(layer), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(census.percentiles(layer)[:, j], one.percentiles(layer), atol=1e-9)
            np.testing.assert_allclose(census.tension(layer)[:, j], one.tension(layer), atol=1e-9)
        assert census.mtis(f.unit, 5).tolist() == one.mtis(5).tolist()
        assert census.meis(f, 3).tolist() == one.meis(3).tolist()
        np.testing.assert_allclose(census.completeness[j], [one.completeness[l] for l in LAYERS], atol=1e-6)


def test_a_list_of_features_on_two_layers_equals_their_scans(tiny_net, data):
    feats = [Feature("conv3", unit=1, position=(2, 3)), Feature("conv3", direction=[1.0, -0.5, 0.0, 2.0]),
             Feature("conv2", unit=5, position="mean"), Feature("conv3", unit=2, position=(2, 3))]
    census = _census(tiny_net, data, feats, ["relu1"], chunk_size=2)
    assert census.features == feats
    for j, f in enumerate(feats):
        one = _scan(tiny_net, data, f, ["relu1"])
        np.testing.assert_allclose(census.activation[:, j], one.activation, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(census.pos[:, j], one.pos[:, :, 0, 0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(census.neg[:, j], one.neg[:, :, 0, 0], rtol=1e-5, atol=1e-6)


def test_share_ranking_summary_plot_and_file(tiny_net, data, tmp_path):
    census = _census(tiny_net, data, units=[3, 0, 2])
    assert [f.unit for f in census.features] == [3, 0, 2]
    p, n = census.P().sum(0, dtype=np.float64), census.N().sum(0, dtype=np.float64)
    np.testing.assert_allclose(census.share(), n / (p + n))
    order = census.ranking()
    assert np.all(np.diff(census.share()[order]) <= 0)
    q = census.tension_quantiles((50, 90))
    assert q.shape == (3, 2) and np.all(q[:, 0] <= q[:, 1])
    s = census.summary()
    assert s["features"] == 3 and s["images"] == 14
    assert s["most_inhibited"][0]["feature"] == census.features[order[0]].name
    assert s["most_inhibited"][0]["mtis"] == census.mtis(census.features[order[0]], 5).tolist()
    fig = census.plot(tmp_path / "census.png")
    assert os.path.getsize(tmp_path / "census.png") > 1000 and len(fig.axes) == 2
    back = Census.load(census.save(tmp_path / "census"))
    assert back.features == census.features and back.layers == LAYERS and back.info == census.info
    for name in ("indices", "activation", "pos", "neg", "items", "completeness"):
        np.testing.assert_array_equal(getattr(back, name), getattr(census, name))
    with pytest.raises(KeyError, match="unit 1 names 0 features"):
        census.mtis(1)


def test_a_census_too_small_for_percentiles_warns_and_low_completeness_warns(tiny_net, data):
    with pytest.warns(UserWarning, match="too small for percentile tension"):
        small = layer_census(tiny_net, data[:6], "conv3", LAYERS, settings=PassSettings(batch_size=4, progress=False, preprocess=False))
    with pytest.raises(ValueError, match="at least 10 images"):
        small.tension()
    assert "most_inhibited" in small.summary()


def test_bad_input_names_the_value(tiny_net, data):
    with pytest.raises(InputError, match=r"position \(0, 1\): layer 'fc' is linear.*no spatial positions"):
        layer_census(LinearHead().eval(), data, "fc", ["relu"], position=(0, 1), settings=PassSettings(progress=False))
    head = _census(LinearHead().eval(), data, "fc", ["relu"], batch_size=7)  # a linear layer at 'center' is fine
    assert head.activation.shape == (14, 5)
    with pytest.raises(ValueError, match=r"position \(3, 16\) is outside layer 'conv3''s 16x16 map"):
        _census(tiny_net, data, position=(3, 16))
    with pytest.raises(InputError, match="units must be <= 3, got 4"):
        _census(tiny_net, data, units=[0, 4])
    with pytest.raises(InputError, match="units is empty"):
        _census(tiny_net, data, units=[])
    with pytest.raises(InputError, match="chunk_size must be >= 1, got 0"):
        _census(tiny_net, data, chunk_size=0)
    with pytest.raises(InputError, match="backward must be one of"):
        _census(tiny_net, data, backward="vmap")
    with pytest.raises(ValueError, match="Unknown layer 'conv9'"):
        _census(tiny_net, data, "conv9")
    with pytest.raises(ValueError, match="'relu2' does not feed the feature at 'conv2'.*runs after"):
        _census(tiny_net, data, "conv2")
    with pytest.raises(InputError, match="features is empty"):
        _census(tiny_net, data, [])
    with pytest.raises(InputError, match=r"units= and position= select units of one layer.*position=\(1, 1\)"):
        _census(tiny_net, data, [Feature("conv3", unit=0)], position=(1, 1))


def test_a_chunk_that_does_not_fit_says_what_would_fit():
    """A real allocation failure: the address space of a subprocess is capped 600 MiB above what it uses; the
    chunk size the error recommends then runs under the same cap."""
    code = f"""
import resource, sys, warnings
sys.path.insert(0, {HERE!r})
import torch
from test_census import Wide
from lucent_inhibit import PassSettings
from lucent_inhibit.census import ChunkMemoryError, layer_census
net, data = Wide().eval(), torch.rand(8, 3, 32, 32)
with open("/proc/self/status") as f:
    used = [int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:")][0]
resource.setrlimit(resource.RLIMIT_AS, (used + 600 * 2 ** 20, resource.RLIM_INFINITY))
run = lambda chunk: layer_census(net, data, "head", ["relu"], chunk_size=chunk,
                                 settings=PassSettings(batch_size=8, progress=False, preprocess=False))
try:
    run(256)
except ChunkMemoryError as e:
    print("ERR", e)
    fits = int(str(e).split("use chunk_size=")[1].split()[0])
    print("OK", len(run(fits).features))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert "ERR chunk_size=256 does not fit in memory" in res.stdout, res.stdout + res.stderr[-2000:]
    assert "(8 MiB per feature for a batch of 8 images)" in res.stdout and "OK 256" in res.stdout, res.stdout
    fits = int(res.stdout.split("use chunk_size=")[1].split()[0])
    assert 1 <= fits <= 600 // 8  # what the capped address space leaves, not the machine's free memory
    assert issubclass(ChunkMemoryError, ValueError)


def test_cli_census_stage_writes_the_census_and_its_figure(tmp_path, capsys):
    from lucent_inhibit.app.cli import main

    out = str(tmp_path / "c")
    args = ["census", "--model", "conftest:TinyConvNet", "--layer", "conv3", "--attr-layers", "relu2",
            "--n-images", "12", "--size", "16", "--batch-size", "5", "--chunk-size", "2", "--out", out]
    assert main(args) == 0
    text = capsys.readouterr().out
    census = Census.load(os.path.join(out, "census.npz"))
    assert len(census) == 12 and len(census.features) == 4 and census.layers == ["relu2"]
    assert "census of 4 units of conv3" in text and os.path.exists(os.path.join(out, "census.png"))
    top = census.features[census.ranking()[0]]
    assert f"unit {top.unit}: share {census.share()[census.ranking()[0]]:.3f}" in text
    assert main(args[:-2] + ["--position", "1,99", "--out", out]) == 2
    assert "outside layer 'conv3'" in capsys.readouterr().err
    assert main(args[:-2] + ["--units", "-1", "--out", out]) == 2
    assert "--units" in capsys.readouterr().err


@pytest.mark.slow
def test_real_model_census_of_units_equals_their_scans(lite0):
    from lucent_inhibit import sample_crops

    crops = sample_crops(10, size=64, seed=0)
    layers = ["blocks_4_0_bn2_act"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        census = layer_census(lite0, crops, "blocks_4_0_bn3_drop", layers, units=[5, 17, 40],
                              chunk_size=2, settings=PassSettings(batch_size=5, progress=False))
        for j, f in enumerate(census.features):
            one = scan(lite0, crops, f, layers, settings=PassSettings(batch_size=5, progress=False))
            scale = float(one.P().max())
            np.testing.assert_allclose(census.activation[:, j], one.activation, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(census.P()[:, j] / scale, one.P() / scale, atol=1e-5)
            np.testing.assert_allclose(census.N()[:, j] / scale, one.N() / scale, atol=1e-5)
            assert census.mtis(f.unit, 3).tolist() == one.mtis(3).tolist()


def test_a_file_of_another_type_or_truncated_is_refused(tiny_net, data, tmp_path):
    from lucent_inhibit.core.results import ResultFileError

    other = _scan(tiny_net, data, Feature("conv3", unit=0)).save(tmp_path / "scan")
    with pytest.raises(ResultFileError, match=r"scan.npz' holds a ScanResult .*expected a Census"):
        Census.load(other)
    good = open(_census(tiny_net, data, units=[0]).save(tmp_path / "c"), "rb").read()
    (tmp_path / "cut.npz").write_bytes(good[: len(good) // 2])
    with pytest.raises(ResultFileError, match="truncated"):
        Census.load(tmp_path / "cut.npz")
