"""Distinct images: grids of top images (MEIs, MIIs, MTIs), the atlas's selection and the inhibitor dictionary's
rows show at most one crop per source photo by default, fill up with the next-best crops (and say so) when
there are fewer sources than images asked for, and show every crop with ``distinct=False``."""
import warnings

import numpy as np
import pytest
import torch

from lucent_inhibit.attribution.totals import RepeatedSourcesWarning, top_indices
from lucent_inhibit.core.features import Feature
from lucent_inhibit.core.settings import PassSettings
from lucent_inhibit.data.datasets import item_sources
from lucent_inhibit.scanning.result import ScanResult

SOURCES = np.array(["a"] * 3 + ["b"] * 3 + ["c"] * 3)  # crop i comes from photo SOURCES[i]
ACTIVATION = np.array([10, 9, 8, 7, 6, 5, 4, 3, 2], np.float32)  # photo a's crops rank first, then b's, then c's


class ThreePhotoCrops:
    """Nine 16 px 'crops' of three photos: crop ``i`` is photo ``SOURCES[i]``'s colour plus a little noise."""

    identity = "three-photo-crops(n=9)"

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        base = {"a": (0.9, 0.2, 0.1), "b": (0.2, 0.8, 0.3), "c": (0.3, 0.3, 0.9)}
        self.images = torch.stack([torch.tensor(base[s]).view(3, 1, 1) + 0.05 * torch.rand(3, 16, 16, generator=g)
                                   for s in SOURCES]).clamp(0, 1)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]

    def source(self, i):
        return str(SOURCES[i])


def planted_scan(source=SOURCES) -> ScanResult:
    """A scan whose activation, P and N all rank photo a's crops first (tension = activation here)."""
    n = len(ACTIVATION)
    totals = np.broadcast_to(ACTIVATION[:, None, None, None], (n, 1, 2, 2)).astype(np.float32)
    return ScanResult(feature=Feature("conv3", unit=0), layers=["relu2"], indices=np.arange(n, dtype=np.int64),
                      activation=ACTIVATION.copy(), pos=totals.copy(), neg=totals.copy(),
                      items=np.array([f"crop{i}" for i in range(n)]), dataset="planted", dataset_size=n,
                      info={"score": "min"}, source=None if source is None else np.asarray(source))


def test_top_indices_takes_one_per_source_then_fills_and_says_so():
    idx, order = np.arange(9), ACTIVATION.astype(np.float64)
    assert top_indices(idx, order, 3).tolist() == [0, 1, 2]  # no sources: the plain ranking, one photo
    assert top_indices(idx, order, 3, sources=SOURCES).tolist() == [0, 3, 6]  # the best crop of each photo
    assert top_indices(idx, order, 3, descending=False, sources=SOURCES).tolist() == [8, 5, 2]
    with pytest.warns(RepeatedSourcesWarning, match="only 3 distinct source images"):
        five = top_indices(idx, order, 5, sources=SOURCES)
    assert five.tolist() == [0, 3, 6, 1, 2]  # never fewer: three distinct, then the next-best crops
    with pytest.warns(RepeatedSourcesWarning):
        assert top_indices(idx, order, 20, sources=SOURCES).tolist() == [0, 3, 6, 1, 2, 4, 5, 7, 8]


def test_scan_result_accessors_are_distinct_by_default_and_all_on_request():
    r = planted_scan()
    for pick in (r.meis, lambda k, **kw: r.mtis(k, "min", **kw), lambda k, **kw: r.top_abs(k, **kw)):
        assert SOURCES[pick(3)].tolist() == ["a", "b", "c"]
        assert pick(3, distinct=False).tolist() == [0, 1, 2]  # every crop: three of photo a
    assert r.miis(3).tolist() == [8, 5, 2] and r.miis(3, distinct=False).tolist() == [8, 7, 6]
    assert r.select(top_activation=3).tolist() == [0, 3, 6]
    assert r.select(top_activation=3, distinct=False).tolist() == [0, 1, 2]
    with pytest.raises(TypeError, match="distinct"):
        r.meis(3, distinct="no")


def test_summary_is_quiet_and_a_scan_without_sources_ranks_every_image_as_its_own():
    r = planted_scan()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RepeatedSourcesWarning)
        r.summary()  # the top-10 of 9 crops of 3 photos needs repeats: the summary does not warn
        old = planted_scan(source=None)  # a file written before sources were stored
        assert old.meis(3).tolist() == [0, 1, 2] and old.mtis(5, "min").tolist() == [0, 1, 2, 3, 4]


def test_sources_survive_save_and_an_old_file_without_them_loads(tmp_path):
    r = planted_scan()
    back = ScanResult.load(r.save(str(tmp_path / "scan")))
    assert back.source.tolist() == SOURCES.tolist() and back.meis(3).tolist() == [0, 3, 6]
    old = ScanResult.load(planted_scan(source=None).save(str(tmp_path / "old")))
    assert old.source is None and old.meis(3).tolist() == [0, 1, 2]


def test_datasets_report_the_source_of_each_image(tmp_path):
    from PIL import Image

    from lucent_inhibit.data.bundled import sample_crops
    from lucent_inhibit.data.folders import ImageFolder

    crops = sample_crops(12, size=16)
    names = item_sources(crops, np.arange(12))
    assert names.tolist() == [crops.describe(i).split("[")[0] for i in range(12)]
    assert set(names) <= set(crops.sources)
    for name in ("x.png", "y.png"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / name)
    folder = ImageFolder(str(tmp_path), size=8)
    assert item_sources(folder, [0, 1]).tolist() == folder.paths  # a folder's images are their own sources
    assert item_sources(torch.zeros(3, 3, 8, 8), [0, 2]).tolist() == ["0", "2"]


def test_scan_stores_sources_and_its_grids_pick_one_per_photo(tmp_path):
    from conftest import TinyConvNet

    from lucent_inhibit.scanning.figures import save_scan_figures
    from lucent_inhibit.scanning.run import scan

    ds = ThreePhotoCrops()
    r = scan(TinyConvNet().eval(), ds, Feature("conv3", unit=1), ["relu2"], out=str(tmp_path / "scan"), score="min",
             settings=PassSettings(batch_size=4, progress=False, preprocess=False))
    assert r.source.tolist() == SOURCES.tolist()
    assert ScanResult.load(str(tmp_path / "scan")).source.tolist() == SOURCES.tolist()  # the chunk folder too
    for picked in (r.meis(3), r.miis(3), r.mtis(3, "min")):
        assert sorted(SOURCES[picked]) == ["a", "b", "c"]
    plain = top_indices(r.indices, r.activation.astype(np.float64), 3)
    assert r.meis(3, distinct=False).tolist() == plain.tolist()
    with pytest.warns(RepeatedSourcesWarning):
        files = save_scan_figures(r, str(tmp_path / "figs"), dataset=ds, k=4, score="min")
    assert {"meis", "miis", "mtis"} <= set(files)


def test_inhibitor_dictionary_rows_show_one_crop_per_photo():
    from conftest import TinyConvNet

    from lucent_inhibit.causal.inhibitors import inhibitor_dictionary
    from lucent_inhibit.scanning.run import scan

    ds, net, feature = ThreePhotoCrops(), TinyConvNet().eval(), Feature("conv3", unit=1)
    scan_result = scan(net, ds, feature, ["relu2"], score="min", settings=PassSettings(progress=False, preprocess=False))
    kw = dict(scan=scan_result, k=3, n_channels=3, n_remove=1, random_draws=2, visualize=False, settings=PassSettings(preprocess=False))
    res = inhibitor_dictionary(net, ds, feature, "relu2", n_top_images=3, **kw)
    assert all(sorted(SOURCES[row]) == ["a", "b", "c"] for row in res.top_images), res.top_images
    every = inhibitor_dictionary(net, ds, feature, "relu2", n_top_images=3, distinct=False, **kw)
    assert np.array_equal(every.channels, res.channels)
    with pytest.warns(RepeatedSourcesWarning):
        filled = inhibitor_dictionary(net, ds, feature, "relu2", n_top_images=4, **kw)
    assert all(len(set(row.tolist())) == 4 and len(set(SOURCES[row])) == 3 for row in filled.top_images)


def test_atlas_selection_is_distinct_with_one_warning():
    from lucent_inhibit.atlas.selection import select_images

    r = planted_scan()
    assert select_images(r, top_activation=3, bottom_activation=3).indices.tolist() == [0, 2, 3, 5, 6, 8]
    assert select_images(r, top_activation=3, distinct=False).indices.tolist() == [0, 1, 2]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sel = select_images(r, top_activation=5, bottom_activation=5, top_abs=5)
    assert len([w for w in caught if w.category is RepeatedSourcesWarning]) == 1 and len(sel) == 8


@pytest.mark.slow
def test_demo_top10_mtis_come_from_at_least_6_photos(tmp_path, one_thread):
    """The demo's scan (the scan stage's defaults: embedded EfficientNet-Lite0, 256 bundled crops at 224 px;
    about 40 s on one thread): its top-10 MTIs came from 5 photos before distinct picking, 10 after."""
    from lucent_inhibit.app.configs import DataConfig
    from lucent_inhibit.app.stages.scan import ScanConfig, run

    r = run(ScanConfig(out=str(tmp_path / "scan"), data=DataConfig(n_images=256, size=224), figures=False),
            progress=False)
    assert r.source is not None
    assert len(set(r.source[np.isin(r.indices, r.mtis(10))])) >= 6
    assert len(set(r.source[np.isin(r.indices, r.mtis(10, distinct=False))])) < 10  # the plain ranking repeats
