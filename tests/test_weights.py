"""Model specs and weights: random, default or a local file; weights never load pickled code."""
import os

import pytest
import torch

from lucent_inhibit.models.inception import INCEPTIONV1_URL, inceptionv1
from lucent_inhibit.models.loading import load_model
from lucent_inhibit.models.weights import WeightsError


class _Planted:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(path, marker):
    torch.save({"conv.weight": torch.zeros(1), "x": _Planted(str(marker))}, str(path))


def test_torchvision_model_with_random_weights_downloads_nothing(monkeypatch):
    def no_download(*a, **k):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    model = load_model("torchvision:resnet18", weights="none")
    assert not model.training and sum(p.numel() for p in model.parameters()) > 1e6


def test_local_state_dict_loads_with_the_same_values(tmp_path):
    source = load_model("torchvision:resnet18", weights="none")
    path = tmp_path / "r18.pt"
    torch.save(source.state_dict(), path)
    again = load_model("torchvision:resnet18", weights=str(path))
    assert torch.equal(again.fc.weight, source.fc.weight)


def test_weights_of_another_architecture_list_the_keys(tmp_path):
    path = tmp_path / "vgg.pt"
    torch.save(load_model("torchvision:vgg11_bn", weights="none").state_dict(), path)
    with pytest.raises(WeightsError, match=r"missing keys: conv1.weight.*unexpected keys: features"):
        load_model("torchvision:resnet18", weights=str(path))


def test_weights_file_with_pickled_code_is_refused_and_never_runs(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "evil.pt"
    _plant(path, marker)
    with pytest.raises(WeightsError, match="weights_only"):
        load_model("torchvision:resnet18", weights=str(path))
    assert not marker.exists()


def test_planted_checkpoint_in_the_hub_cache_does_not_execute(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        os.makedirs(tmp_path / "hub" / "checkpoints")
        marker = tmp_path / "ran"
        _plant(tmp_path / "hub" / "checkpoints" / os.path.basename(INCEPTIONV1_URL), marker)
        with pytest.raises(WeightsError, match="refused|cannot"):
            inceptionv1(pretrained=True)
        assert not marker.exists()
    finally:
        torch.hub.set_dir(os.path.join(os.path.expanduser("~"), ".cache", "torch", "hub"))


def test_download_that_cannot_happen_says_how_to_pass_a_local_file(tmp_path, monkeypatch):
    def offline(*a, **k):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError, match=r"--weights PATH") as info:
        inceptionv1(pretrained=True)
    assert len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize("weights, match", [("", "weights must be"), ("/no/such/file.pt", "neither 'default'")])
def test_bad_weights_values(weights, match):
    with pytest.raises(ValueError, match=match):
        load_model("torchvision:resnet18", weights=weights)


def test_a_model_module_that_exits_on_import_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "exits_on_import.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="Importing module 'exits_on_import'.*SystemExit"):
        load_model("exits_on_import:build")


def test_inceptionv1_from_a_state_file_attributes_with_true_relu_gradients(tmp_path):
    from lucent_inhibit import Feature, attribute, preprocess_fn

    source = inceptionv1(pretrained=False)
    path = tmp_path / "inception.pt"
    torch.save(source.state_dict(), path)
    model = load_model("inceptionv1", weights=str(path))
    assert not any("Redirected" in type(m).__name__ for m in model.modules())
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    feature = Feature("mixed3b_3x3_pre_relu_conv", unit=5)
    got = attribute(model, x, feature, "mixed3a").scores["mixed3a"]

    out = {}
    h1 = model.mixed3a.register_forward_hook(lambda m, i, o: out.setdefault("h", o))
    h2 = model.mixed3b_3x3_pre_relu_conv.register_forward_hook(lambda m, i, o: out.setdefault("f", o))
    try:
        model(preprocess_fn(model)(x))
    finally:
        h1.remove(), h2.remove()
    f = out["f"][:, 5, out["f"].shape[2] // 2, out["f"].shape[3] // 2]
    (g,) = torch.autograd.grad(f.sum(), out["h"])
    assert got.abs().sum() > 0 and torch.allclose(got, g * out["h"], atol=1e-5, rtol=1e-4)

    redirected = inceptionv1(pretrained=False, state_dict=source.state_dict(), redirected_relu=True)
    other = attribute(redirected, x, feature, "mixed3a").scores["mixed3a"]
    assert not torch.allclose(other, got, atol=1e-5, rtol=1e-4)  # the redirected gradient is another quantity


def test_inceptionv1_pre_relu_concatenations_are_layers_and_leave_the_logits_unchanged():
    from lucent.modelzoo.inceptionv1.InceptionV1 import InceptionV1

    from lucent_inhibit import Feature, attribute, preprocess_fn
    from lucent_inhibit.core import hooks, layers
    from lucent_inhibit.models.inception import pre_relu_layers

    plain = InceptionV1(pretrained=False, redirected_ReLU=False).eval()
    model = inceptionv1(pretrained=False, state_dict=plain.state_dict())
    assert "mixed3b_pre_relu" in pre_relu_layers(model) and len(pre_relu_layers(model)) == 9
    images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    x = preprocess_fn(model)(images)
    with torch.no_grad():
        assert torch.allclose(model(x), plain(x), atol=1e-5)
    acts = hooks.capture(model, x, ["mixed3b_pre_relu", "mixed3b", "mixed3b_5x5_pre_relu_conv"])
    pre = acts["mixed3b_pre_relu"]
    assert pre.shape[1] == 480 and (pre < 0).any()
    assert torch.equal(pre[:, 379], acts["mixed3b_5x5_pre_relu_conv"][:, 379 - 320])  # 128 + 192 channels before
    assert torch.equal(pre.clamp(min=0), acts["mixed3b"])
    att = attribute(model, images, Feature("mixed3b_pre_relu", unit=379), ["mixed3a", "mixed3b_pre_relu"])
    assert att.scores["mixed3a"].abs().sum() > 0
    with pytest.raises(ValueError, match="no gradient path"):
        attribute(model, images, Feature("mixed4a_pre_relu", unit=1), "mixed3b_1x1")
    assert layers.hook_count(model) == 36  # the model's own pre-ReLU keepers, nothing left by the calls
