"""Bundled images, their deterministic crops, user image folders and ImageNet class names."""
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from lucent_inhibit.data.bundled import SAMPLE_NAMES, imagenet_classes, sample_crops, sample_images
from lucent_inhibit.data.datasets import dataset_identity, describe_item
from lucent_inhibit.data.folders import ImageFolder
from lucent_inhibit.data.images import load_image, to_tensor


def test_sample_images_are_rgb_in_unit_range():
    imgs = sample_images()
    assert tuple(imgs) == SAMPLE_NAMES
    for name, t in imgs.items():
        assert t.dtype == torch.float32 and t.dim() == 3 and t.shape[0] == 3, name
        assert 0 <= float(t.min()) and float(t.max()) <= 1 and float(t.std()) > 0.02, name


def test_sample_images_are_at_least_twelve_distinct_photos_from_three_packages():
    imgs = sample_images()
    assert len(imgs) >= 12
    assert {"china", "flower", "grace_hopper", "astronaut"} <= set(imgs)  # scikit-learn, Matplotlib, scikit-image
    small = torch.stack([torch.nn.functional.interpolate(t[None], size=(32, 32), mode="area")[0] for t in imgs.values()])
    diffs = (small[:, None] - small[None]).abs().flatten(2).mean(2)
    assert float(diffs[~torch.eye(len(imgs), dtype=torch.bool)].min()) > 0.02  # no photo twice (skimage cat is chelsea)
    assert sum(float((t[0] - t[1]).abs().max()) > 0 for t in imgs.values()) >= 11  # colour photos
    crops = sample_crops(200, size=16, seed=0)
    assert {crops.describe(i).split("[")[0] for i in range(200)} == set(SAMPLE_NAMES)  # every photo is drawn


def test_sample_crops_are_deterministic_and_distinct():
    a, b = sample_crops(40, size=32, seed=0), sample_crops(40, size=32, seed=0)
    for i in (0, 7, 39):
        torch.testing.assert_close(a[i], b[i], rtol=0, atol=0)
        assert a[i].shape == (3, 32, 32) and 0 <= float(a[i].min()) and float(a[i].max()) <= 1
    boxes = [a.describe(i) for i in range(40)]
    assert len(set(boxes)) == 40
    stack = torch.stack(list(a))
    diffs = (stack[:, None] - stack[None]).abs().flatten(2).mean(2)
    assert float(diffs[~torch.eye(40, dtype=torch.bool)].min()) > 1e-3  # no two crops are the same image
    assert len({b.split("[")[0] for b in boxes}) >= 5  # crops come from many of the photos
    c = sample_crops(40, size=32, seed=1)
    assert not torch.equal(a[0], c[0]) and a.identity != c.identity
    # item i does not depend on n: growing the dataset keeps earlier crops
    torch.testing.assert_close(sample_crops(80, size=32, seed=0)[39], a[39], rtol=0, atol=0)
    assert describe_item(a, 3) == boxes[3] and dataset_identity(a) == a.identity
    assert len(a[2:5]) == 3 and torch.equal(a[-1], a[39])


def test_sample_crops_bad_arguments():
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        sample_crops(0)
    with pytest.raises(ValueError, match="n must be an integer, got 2.5"):
        sample_crops(2.5)
    with pytest.raises(ValueError, match="size must be >= 8, got 4"):
        sample_crops(4, size=4)
    with pytest.raises(ValueError, match="size must be an integer, got '8'"):
        sample_crops(4, size="8")
    with pytest.raises(ValueError, match=r"min_scale must be <= 1.0, got 1.5"):
        sample_crops(4, min_scale=1.5)
    with pytest.raises(ValueError, match="photos must be a non-empty subset"):
        sample_crops(4, photos=["nope"])
    with pytest.raises(IndexError, match="crop index 4 out of range for 4 crops"):
        sample_crops(4, size=16)[4]


def _write_folder(root):
    os.makedirs(os.path.join(root, "sub", "deeper"))
    gray = (np.arange(20 * 30).reshape(20, 30) % 256).astype(np.uint8)
    Image.fromarray(gray, mode="L").save(os.path.join(root, "gray.png"))
    rgba = np.zeros((24, 24, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10  # red, almost transparent
    Image.fromarray(rgba, mode="RGBA").save(os.path.join(root, "sub", "rgba.png"))
    Image.new("CMYK", (16, 16), (255, 0, 0, 0)).save(os.path.join(root, "sub", "deeper", "cyan_cmyk.jpg"))
    Image.new("P", (16, 16), 3).save(os.path.join(root, "sub", "palette.gif"))
    with open(os.path.join(root, "sub", "broken.jpg"), "wb") as f:
        f.write(b"this is not an image")
    with open(os.path.join(root, "notes.txt"), "w") as f:
        f.write("ignored: not an image extension")


def test_image_folder_is_recursive_and_converts_to_rgb(tmp_path):
    _write_folder(str(tmp_path))
    with pytest.warns(UserWarning, match=r"skipped image file '.*sub[/\\]broken\.jpg': it is unreadable") as rec:
        ds = ImageFolder(str(tmp_path), size=16)
    assert len([w for w in rec if "unreadable" in str(w.message)]) == 1  # one warning
    names = [os.path.relpath(p, tmp_path) for p in ds.paths]
    assert names == ["gray.png", os.path.join("sub", "deeper", "cyan_cmyk.jpg"), os.path.join("sub", "palette.gif"),
                     os.path.join("sub", "rgba.png")]
    for i in range(len(ds)):
        x = ds[i]
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32
        assert 0 <= float(x.min()) and float(x.max()) <= 1
    gray = ds[0]
    torch.testing.assert_close(gray[0], gray[1])
    torch.testing.assert_close(gray[1], gray[2])
    assert float(gray.std()) > 0.1
    cyan = ds[1].mean((1, 2))
    assert cyan[0] < 0.1 and cyan[1] > 0.9 and cyan[2] > 0.9  # CMYK (255, 0, 0, 0) is cyan in RGB
    red = ds[3].mean((1, 2))  # alpha is dropped, the colour is kept
    assert red[0] == pytest.approx(200 / 255, abs=0.01) and red[1] < 0.01
    assert ds.describe(2) == ds.paths[2] and str(tmp_path) in ds.identity


def test_image_folder_empty_or_missing(tmp_path):
    with pytest.raises(ValueError, match=r"contains no readable image.*0 unreadable"):
        ImageFolder(str(tmp_path))
    with open(tmp_path / "bad.png", "wb") as f:
        f.write(b"\x89PNG garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"contains no readable image.*1 unreadable"):
            ImageFolder(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolder(str(tmp_path / "nope"))


def test_load_image_and_to_tensor(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.png")
    t = load_image(str(tmp_path / "x.png"))
    torch.testing.assert_close(t, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)
    assert load_image(str(tmp_path / "x.png"), size=20).shape == (3, 20, 20)
    assert to_tensor(np.ones((4, 5), dtype=bool)).shape == (3, 4, 5)
    with pytest.raises(ValueError, match=r"got \(4, 5, 2\)"):
        to_tensor(np.zeros((4, 5, 2)))


def test_imagenet_class_names():
    names = imagenet_classes()
    assert len(names) == 1000
    assert "Egyptian cat" in names[285] and "tabby" in names[281].lower() and "espresso" in names[967]


def test_sample_crops_from_a_subset_of_photos_are_the_first_release_crops():
    from lucent_inhibit.data.bundled import FIRST_RELEASE_PHOTOS

    old = sample_crops(16, size=32, seed=0, photos=FIRST_RELEASE_PHOTOS)
    assert {old.describe(i).split("[")[0] for i in range(16)} <= set(FIRST_RELEASE_PHOTOS)
    assert "photos=" in old.identity and "photos=" not in sample_crops(16, size=32).identity
