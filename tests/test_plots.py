"""Scan figures: what they show is checked against the scan's numbers, not only that files appear."""
import os

import numpy as np
import pytest
import torch
from test_scan import RedMinusGreen, _planted_images

from lucent_inhibit.core.features import Feature
from lucent_inhibit.core.settings import PassSettings
from lucent_inhibit.scanning.figures import (plot_image_grid, plot_scan_overlay, plot_scan_scatter,
                                             plot_signed_overlay, save_scan_figures)
from lucent_inhibit.scanning.run import scan


@pytest.fixture(scope="module")
def planted():
    images, kinds = _planted_images(per_kind=4)
    r = scan(RedMinusGreen(), images, Feature("out", unit=0, position="mean"), "relu", settings=PassSettings(batch_size=8, progress=False, preprocess=False))
    return r, images, kinds


def _close(fig):
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_scatter_colours_by_activation_centred_at_zero(planted, tmp_path):
    r, _, _ = planted
    path = str(tmp_path / "s.png")
    fig = plot_scan_scatter(r, highlight="mtis", k=4, contours=True, path=path)
    assert os.path.getsize(path) > 1000
    ax = fig.axes[0]
    dots, ring = ax.collections[0], [c for c in ax.collections if c.get_label().startswith("selected")][0]
    assert dots.norm.vcenter == 0 and dots.norm.vmin == -dots.norm.vmax and dots.cmap.name == "RdBu_r"
    # every image is a dot at (P, N) with its activation as colour value
    pts = {(round(float(x), 5), round(float(y), 5)): float(c) for (x, y), c in zip(dots.get_offsets(), dots.get_array())}
    for p, n, a in zip(r.P(), r.N(), r.activation):
        assert pts[(round(float(p), 5), round(float(n), 5))] == pytest.approx(float(a))
    rows = [r.row(i) for i in r.mtis(4)]
    np.testing.assert_allclose(ring.get_offsets(), np.stack([r.P()[rows], r.N()[rows]], 1))
    assert any(type(c).__name__ in ("QuadContourSet", "ContourSet") for c in ax.collections) or len(ax.collections) > 2
    assert "P" in ax.get_xlabel() and "N" in ax.get_ylabel()
    _close(fig)
    with pytest.raises(ValueError, match="highlight"):
        plot_scan_scatter(r, highlight="meis")


def test_grid_shows_each_image_with_its_numbers(planted):
    r, images, _ = planted
    idx = r.mtis(3)
    fig = plot_image_grid(r, dataset=images, indices=idx, ncols=2)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 3
    for ax, i in zip(shown, idx):
        np.testing.assert_allclose(ax.images[0].get_array(), images[i].permute(1, 2, 0).numpy(), atol=1e-6)
        text = ax.get_xlabel()
        row = r.row(i)
        assert f"f={r.activation[row]:.3g}" in text and f"P={r.P()[row]:.3g}" in text and f"N={r.N()[row]:.3g}" in text
    _close(fig)
    with pytest.raises(ValueError, match="empty"):
        plot_image_grid(r, dataset=images, indices=[])

    class Other(list):
        identity = "another dataset"

    with pytest.raises(ValueError, match="not the scanned dataset"):
        plot_image_grid(r, dataset=Other(images), indices=idx)


def test_overlay_puts_red_on_excitation_and_blue_on_inhibition(planted):
    r, images, kinds = planted
    i = int(np.nonzero(kinds == "both")[0][0])
    fig = plot_scan_overlay(r, dataset=images, index=i)
    img = images[i]
    red_px = (img[0] > 0.9).nonzero()[0].tolist()
    green_px = (img[1] > 0.9).nonzero()[0].tolist()
    pos_panel = np.asarray(fig.axes[1].images[0].get_array())
    neg_panel = np.asarray(fig.axes[2].images[0].get_array())
    ry, rx = red_px
    gy, gx = green_px
    assert pos_panel[ry, rx, 0] > pos_panel[ry, rx, 2] + 0.2  # red patch excites: red in the + panel
    assert neg_panel[gy, gx, 2] > neg_panel[gy, gx, 0] + 0.2  # green patch inhibits: blue in the - panel
    assert abs(pos_panel[gy, gx, 0] - pos_panel[gy, gx, 2]) < 0.1  # no excitation on the green patch
    assert "excitation" in fig.axes[1].get_title() and "inhibition" in fig.axes[2].get_title()
    _close(fig)


def test_overlay_bad_input():
    img = torch.rand(3, 8, 8)
    with pytest.raises(ValueError, match="one shape"):
        plot_signed_overlay(img, positive=np.ones((4, 4)), negative=np.ones((4, 3)))
    with pytest.raises(ValueError, match="non-negative"):
        plot_signed_overlay(img, positive=-np.ones((4, 4)), negative=np.ones((4, 4)))
    with pytest.raises(ValueError, match="expected an image"):
        plot_signed_overlay(torch.rand(8, 8), positive=np.ones((4, 4)), negative=np.ones((4, 4)))


def test_save_scan_figures_writes_all(planted, tmp_path):
    r, images, _ = planted
    files = save_scan_figures(r, str(tmp_path / "figs"), dataset=images, k=4)
    assert set(files) == {"scatter", "scatter_percentile", "meis", "miis", "mtis", "overlay_mti0", "overlay_mti1",
                          "overlay_mti2"}
    for p in files.values():
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_percentile_scatter_and_grid_captions_show_percentile_ranks(planted):
    r, images, _ = planted
    pct = r.percentiles()
    fig = plot_scan_scatter(r, highlight="mtis", k=4, scale="percentile")
    ax = fig.axes[0]
    np.testing.assert_allclose(np.sort(ax.collections[0].get_offsets()[:, 0]), np.sort(pct[:, 0]), rtol=1e-6)
    rows = [r.row(i) for i in r.mtis(4)]
    np.testing.assert_allclose(ax.collections[1].get_offsets(), pct[rows], rtol=1e-6)  # rings at the MTIs' ranks
    assert "percentile rank" in ax.get_xlabel()
    _close(fig)
    idx = r.mtis(3)
    fig = plot_image_grid(r, dataset=images, indices=idx)
    for ax, i in zip([a for a in fig.axes if a.images], idx):
        row = r.row(i)
        text = ax.get_xlabel()
        assert f"(p{pct[row, 0]:.0f})" in text and f"(p{pct[row, 1]:.0f})" in text
    _close(fig)
    with pytest.raises(ValueError, match="scale must be one of 'raw', 'percentile'"):
        plot_scan_scatter(r, scale="log")


def test_small_scan_figures_fall_back_to_raw_totals(tmp_path):
    images, _ = _planted_images(per_kind=2)
    with pytest.warns(UserWarning, match="at least 10 images"):
        r = scan(RedMinusGreen(), images, Feature("out", unit=0, position="mean"), "relu", settings=PassSettings(batch_size=8, progress=False, preprocess=False))
    files = save_scan_figures(r, str(tmp_path / "small"), dataset=images, k=3)
    assert "scatter_percentile" not in files and os.path.exists(files["mtis"])
    fig = plot_image_grid(r, dataset=images, indices=r.mtis(2, score="min"))
    assert "(p" not in fig.axes[0].get_xlabel()
    _close(fig)
    _close(plot_scan_scatter(r))
