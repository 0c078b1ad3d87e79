"""Layouts on the models researchers use (random weights, nothing downloaded): channels-last layers of timm
Swin-T, timm ConvNeXt-T (its MLP's fc1 is an nn.Linear on (B, H, W, C)) and torchvision Swin-T are read along
their true channel axis by Feature, attribute (activation, S and E at a channels-last attribution layer) and
the objectives inside Lucent's own render_vis, all against hand-written computations on the raw tensors; and
over a zoo of architectures every layer preactivation_layers lists runs once in eval mode and is read with its
true number of channels."""
import pytest
import torch
from lucent.optvis.render import hook_model
from torch import nn

import lucent_inhibit as li
from lucent_inhibit.core.hooks import capture
from lucent_inhibit.core.layers import get_layer, hooks_restored
from lucent_inhibit.core.preparation import preprocess_fn
from lucent_inhibit.core.probe import forward_order

pytestmark = pytest.mark.slow

#: (model, feature layer (channels-last), attribution layer (channels-last), input side)
CHANNELS_LAST = [("timm:swin_tiny_patch4_window7_224", "layers_2", "layers_2_downsample", 224),
                 ("timm:convnext_tiny", "stages_2_blocks_1_mlp_fc1", "stages_2_blocks_1_norm", 64),
                 ("torchvision:swin_t", "features_5_0_mlp_0", "features_5_0_norm2", 64)]


def _raw(model, x, names):
    """The named layers' outputs as the model computes them (forward hooks on the modules)."""
    out = {}
    with hooks_restored(model), torch.no_grad():
        for n in names:
            get_layer(model, n).register_forward_hook(lambda m, i, o, n=n: out.__setitem__(n, o))
        model(x)
    return out


@pytest.fixture(scope="module", params=CHANNELS_LAST, ids=[c[0] for c in CHANNELS_LAST])
def channels_last(request):
    spec, layer, attr, side = request.param
    model = li.load_model(spec, weights="none")
    x = torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    return model, layer, attr, x


def test_feature_and_attribute_read_the_true_channel(channels_last):
    model, layer, attr, x = channels_last
    raw = _raw(model, preprocess_fn(model)(x), [layer, attr])
    assert raw[layer].dim() == 4 and raw[layer].shape[1] == raw[layer].shape[2]  # (B, H, W, C): channels last
    c = raw[layer].shape[3]
    h, w = raw[layer].shape[1:3]
    for unit in (3, c // 2, c - 1):
        feature = li.Feature(layer, unit=unit)
        att = li.attribute(model, x, feature, [attr])
        assert torch.allclose(att.activation, raw[layer][:, h // 2, w // 2, unit], atol=1e-5)
    # S and E at the channels-last attribution layer, by hand on the raw tensors
    a = raw[attr].detach().requires_grad_(True)
    feature = li.Feature(layer, unit=c // 2)
    with hooks_restored(model):
        get_layer(model, attr).register_forward_hook(lambda m, i, o: a)  # the forward continues from a
        out = _raw_with_grad(model, preprocess_fn(model)(x), layer)
    (g,) = torch.autograd.grad(out[:, h // 2, w // 2, c // 2].sum(), a)
    att = li.attribute(model, x, feature, [attr])
    assert torch.allclose(att.scores[attr], (g * a).permute(0, 3, 1, 2), atol=1e-5)
    assert torch.allclose(att.total(attr), (g * a).flatten(1).sum(1), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=rf"unit {c} out of range for layer '{layer}' with {c} channels"):
        li.attribute(model, x, li.Feature(layer, unit=c), [attr])


def _raw_with_grad(model, x, layer):
    out = {}
    get_layer(model, layer).register_forward_hook(lambda m, i, o: out.__setitem__(layer, o))
    with torch.enable_grad():
        model(x)
    return out[layer]


def test_objectives_in_lucents_render_vis_read_the_same_values(channels_last):
    model, layer, _, x = channels_last
    x = preprocess_fn(model)(x[:1])
    raw = _raw(model, x, [layer])[layer]
    h, w = raw.shape[1:3]
    obj = li.objectives.feature(li.Feature(layer, unit=5))
    with hooks_restored(model), torch.no_grad():
        T = hook_model(model, lambda: x)
        model(x)
        value = float(obj(T))
    assert value == pytest.approx(-float(raw[0, h // 2, w // 2, 5]), abs=1e-5)


def test_every_method_runs_on_a_channels_last_layer(tmp_path):
    model = li.load_model("timm:convnext_tiny", weights="none")
    images = li.sample_crops(10, size=64)
    feature, attr = li.Feature("stages_2_blocks_1_mlp_fc1", unit=7), "stages_2_blocks_1_norm"
    settings = li.PassSettings(batch_size=5, progress=False)
    scan = li.scan(model, images, feature, [attr], settings=settings)
    census = li.layer_census(model, images, feature.layer, [attr], units=[3, 7], settings=settings)
    assert abs(census.activation[:, 1] - scan.activation).max() < 1e-4
    render = li.RenderSettings(steps=2, size=64, model_size=64, transforms=[])
    inv = li.inversions(model, images[0], feature, attr, render=render, completeness_images=0)
    assert torch.isfinite(inv.images).all()
    points = li.collect_vectors(model, images, feature, attr, settings=settings)
    assert points.vectors.shape[1] == 384  # ConvNeXt-T stage 2 has 384 channels (the map is 4x4)
    a, b = li.Feature(feature.layer, unit=1), li.Feature(feature.layer, unit=2)
    sweep = li.sweep_combinations(model, a, b, n_angles=5, n_seeds=1, scale=(1.0, 1.0), render=render)
    assert torch.isfinite(sweep.best).all()


#: A zoo of torchvision and timm architectures at small inputs (strict ones at their own size).
ZOO = [("torchvision:resnet18", 64), ("torchvision:mobilenet_v3_small", 64), ("torchvision:googlenet", 64),
       ("torchvision:densenet121", 64), ("torchvision:efficientnet_b0", 64), ("torchvision:convnext_tiny", 64),
       ("torchvision:swin_t", 64), ("torchvision:regnet_y_400mf", 64), ("torchvision:shufflenet_v2_x0_5", 64),
       ("torchvision:squeezenet1_0", 64), ("torchvision:mnasnet0_5", 64), ("timm:mobilenetv3_small_050", 64),
       ("timm:convnext_atto", 64), ("timm:swin_tiny_patch4_window7_224", 224), ("timm:vit_tiny_patch16_224", 224),
       ("timm:mobilevit_xxs", 64), ("timm:resnet18", 64)]


def _declared_channels(module):
    """The channel count a module states (convolutions, linear layers, norms), else None."""
    for attr in ("out_channels", "out_features", "num_features"):
        if isinstance(getattr(module, attr, None), int):
            return getattr(module, attr)
    if isinstance(module, nn.LayerNorm):
        return module.normalized_shape[-1]
    return None


def _channels_by_growth(model, x, name):
    """The true channel count of a map, from which axes grow with the input (the test's own two sizes)."""
    small, big = (_raw(model, t, [name])[name].shape for t in (x, nn.functional.interpolate(x, scale_factor=2)))
    fixed = [i for i in range(1, len(small)) if small[i] == big[i]]
    return small[fixed[0]] if len(fixed) == 1 else None


@pytest.mark.parametrize("spec, side", ZOO, ids=[z[0] for z in ZOO])
def test_every_preactivation_layer_runs_once_and_is_read_with_its_true_channels(spec, side):
    model = li.load_model(spec, weights="none")
    x = preprocess_fn(model)(torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0)))
    names = li.preactivation_layers(model)
    order = forward_order(model, x)
    assert names and all(order.count(n) == 1 for n in names)  # aux classifiers and reused modules are not listed
    with torch.no_grad():
        acts = capture(model, x, names, stop_at=False)
    table = {n: get_layer(model, n) for n in names}
    for n in names:
        t = acts[n]
        channels = t.shape[1] if t.dim() in (2, 4) else t.shape[2]  # the library's layouts: (B, C, ...) or (B, T, C)
        truth = _declared_channels(table[n])
        if truth is None and side != 224:
            truth = _channels_by_growth(model, x, n)
        if truth is None and n.endswith("_drop"):  # timm's BatchNormAct pre-activation: its parent's channels
            truth = _declared_channels(get_layer(model, n[: -len("_drop")]))
        if truth is None and t.dim() == 3:  # a transformer's residual stream: the model's width
            truth = getattr(model, "embed_dim", None)
        assert truth is not None, f"{spec} {n}: no independent channel count"
        assert channels == truth, f"{spec} {n}: read {channels} channels, the module has {truth} ({tuple(t.shape)})"
