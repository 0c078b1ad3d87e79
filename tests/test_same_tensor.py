"""One layer name, one tensor: what `capture` (attribute, scan, atlas, ...) reads equals what Lucent's
render_vis hook hands the objectives, on the architectures researchers use (random weights)."""
import pytest
import torch
from lucent.optvis import objectives as lucent_objectives
from lucent.optvis import param as lucent_param
from lucent.optvis.render import hook_model

from lucent_inhibit.core import hooks, rendering
from lucent_inhibit.core.layers import AmbiguousLayerError, hook_count, hooks_restored, layers
from lucent_inhibit.core.probe import call_counts
from lucent_inhibit.core.settings import RenderSettings
from lucent_inhibit.models.loading import load_model


def _models():
    return [
        ("torchvision:resnet18", 64),
        ("torchvision:vgg11_bn", 64),
        ("torchvision:densenet121", 64),
        ("timm:convnext_atto", 64),
        ("inceptionv1", 224),
    ]


def _sample(names, k=12):
    step = max(1, len(names) // k)
    return names[::step][:k] + names[-1:]


@pytest.mark.parametrize("spec, size", _models(), ids=[m for m, _ in _models()])
def test_capture_reads_the_tensor_lucents_hook_reads(spec, size):
    model = load_model(spec, weights="none")
    before = hook_count(model)  # InceptionV1 keeps its own pre-ReLU hooks (lucent_inhibit.models.inception)
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    counts = call_counts(model, x)
    single = [n for n in layers(model) if counts.get(n) == 1]
    reused = [n for n in layers(model) if counts.get(n, 0) > 1]
    with hooks_restored(model):
        lucent_hook = hook_model(model, lambda: x)
        with torch.no_grad():
            model(x)
        for name in _sample(single):
            got = hooks.capture(model, x, [name])[name]
            assert torch.equal(got, lucent_hook(name)), name
    for name in reused[:3]:  # a reused module names several tensors: refused, never guessed
        with pytest.raises(AmbiguousLayerError, match="runs"):
            hooks.capture(model, x, [name])
    assert hook_count(model) == before


def test_render_refuses_an_objective_on_a_reused_module():
    model = load_model("torchvision:resnet18", weights="none")
    settings = RenderSettings(steps=2, size=32, model_size=32)
    with pytest.raises(AmbiguousLayerError, match="layer1_0_relu"):
        rendering.run_render(model, lucent_objectives.channel("layer1_0_relu", 0), lucent_param.image(32), settings, "t")
    assert hook_count(model) == 0


def test_inceptionv1_below_its_size_says_which_size_it_needs():
    model = load_model("inceptionv1", weights="none")
    before = hook_count(model)
    settings = RenderSettings(steps=2, size=64, model_size=64)
    early = rendering.run_render(model, lucent_objectives.channel("mixed3a", 0), lucent_param.image(64), settings, "t")
    assert early.stopped_after == "mixed3a"  # early layers render at 64 px
    with pytest.raises(ValueError, match=r"'softmax2' was not computed for a 64x64 model input.*224"):
        rendering.run_render(model, lucent_objectives.channel("softmax2", 0), lucent_param.image(64), settings, "t")
    assert hook_count(model) == before


def test_attribution_below_the_size_a_layer_needs_names_it():
    from lucent_inhibit import Feature, attribute

    model = load_model("inceptionv1", weights="none")
    x = torch.rand(1, 3, 128, 128)
    with pytest.raises(ValueError, match=r"128x128 input before computing \['softmax2'\].*224 px"):
        attribute(model, x, Feature("softmax2", unit=3), "mixed4a")
    assert attribute(model, x, Feature("mixed4b_3x3_pre_relu_conv", unit=3), "mixed4a").scores["mixed4a"].dim() == 4


def test_inplace_ops_after_a_layer_do_not_change_what_capture_returns():
    model = load_model("torchvision:resnet18", weights="none")
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    alone = hooks.capture(model, x, ["layer1_0_bn2"])["layer1_0_bn2"]
    with_later = hooks.capture(model, x, ["layer1_0_bn2", "layer1_1_conv1"])["layer1_0_bn2"]
    assert torch.equal(alone, with_later)  # `out += identity` runs after bn2


def test_objectives_read_unmutated_layers_from_the_second_step():
    model = load_model("torchvision:resnet18", weights="none")
    seen = []

    def parts(T):
        seen.append(T("layer1_0_bn2").detach().clone())
        return -(T("layer1_0_bn2").mean() + T("layer1_1_conv1").mean()), {}

    torch.manual_seed(0)
    start = lucent_param.image(32)
    rendering.run_render(model, rendering.Parts(parts), start, RenderSettings(steps=2, size=32, model_size=32, lr=1e-9, transforms=[]), "t")
    with torch.no_grad():
        ref = hooks.capture(model, preprocess(model, start[1]()), ["layer1_0_bn2"])["layer1_0_bn2"]
    assert torch.allclose(seen[1], ref, atol=1e-4)


def preprocess(model, x):
    from lucent_inhibit.core.preparation import preprocess_fn

    return preprocess_fn(model)(x)
