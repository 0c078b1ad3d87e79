"""Every image mode Pillow opens loads as the right float RGB in [0, 1]; broken files are named early."""
import numpy as np
import pytest
import torch
from PIL import Image

from lucent_inhibit.data.folders import ImageFolder
from lucent_inhibit.data.images import load_image

RAMP = np.linspace(0, 1, 16 * 16, dtype=np.float64).reshape(16, 16)


def _grey(t):
    assert t.shape == (3, 16, 16) and t.dtype == torch.float32
    assert torch.equal(t[0], t[1]) and torch.equal(t[1], t[2])
    return t[0].numpy()


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "1"])
def test_8bit_modes(tmp_path, mode):
    rgb = Image.fromarray((RAMP * 255).round().astype(np.uint8)).convert("RGB")
    im = rgb.convert(mode) if mode != "P" else rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    path = tmp_path / ("x.tif" if mode in ("CMYK", "YCbCr", "LA") else "x.png")
    if mode == "YCbCr":
        path = tmp_path / "x.jpg"
    im.save(path) if mode != "YCbCr" else im.save(path, quality=100)
    t = load_image(str(path))
    assert t.min() >= 0 and t.max() <= 1
    if mode == "1":
        assert set(np.unique(t.numpy())) <= {0.0, 1.0}
        return
    tol = 0.03 if mode in ("P", "CMYK", "YCbCr") else 1 / 255
    assert np.abs(t.numpy() - RAMP[None]).max() <= tol


def test_16bit_grey_png_is_scaled_not_white(tmp_path):
    path = tmp_path / "g16.png"
    Image.fromarray((RAMP * 65535).round().astype(np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    got = _grey(load_image(str(path)))
    assert np.abs(got - RAMP).max() < 1e-4
    assert (got == 1.0).mean() < 0.01  # the first release read 99.6% of pixels as 1.0


def test_float_tiff_is_used_as_is_not_black(tmp_path):
    path = tmp_path / "f.tif"
    Image.fromarray(RAMP.astype(np.float32)).save(path)
    got = _grey(load_image(str(path)))
    assert np.abs(got - RAMP).max() < 1e-6


def test_float_tiff_outside_unit_range_is_normalised_with_a_warning(tmp_path):
    path = tmp_path / "wide.tif"
    Image.fromarray((RAMP * 4000 - 1000).astype(np.float32)).save(path)
    with pytest.warns(UserWarning, match="min-max normalised"):
        got = _grey(load_image(str(path)))
    assert np.abs(got - RAMP).max() < 1e-5


def test_truncated_jpeg_is_found_when_the_folder_opens(tmp_path):
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="cut.jpg"):
        folder = ImageFolder(str(tmp_path), size=32)
    assert [p.endswith("ok.jpg") for p in folder.paths] == [True]
    with pytest.raises(ValueError, match="cut.jpg"):
        load_image(str(tmp_path / "cut.jpg"))
