"""Models: the embedded model is really pretrained, InceptionV1 builds offline, layer naming, and the same
preprocessing as Lucent's render_vis."""
import pytest
import torch
from torch import nn

from lucent_inhibit.attribution.attribute import attribute, measure
from lucent_inhibit.core.features import Feature
from lucent_inhibit.core.layers import get_layer, layers
from lucent_inhibit.core.preparation import prepare, preprocess_fn
from lucent_inhibit.models.defaults import DEFAULT_LAYER
from lucent_inhibit.models.embedded import efficientnet_lite0
from lucent_inhibit.models.inception import inceptionv1
from lucent_inhibit.models.layers import block_outputs, preactivation_layers
from lucent_inhibit.models.loading import load_model


def _timm_lite0_untrained():
    import timm

    return prepare(timm.create_model("efficientnet_lite0", pretrained=False))


def _render_vis_value(model, image, feature):
    """The feature's value on ``image`` (1, 3, H, W) as Lucent's render_vis sees it at step 1, with its
    default preprocessing (preprocess=True) and no random transforms."""
    from lucent.optvis import render

    values = []
    pixels = image.clone().requires_grad_(True)

    def objective(T):
        v = feature(T(feature.layer))
        values.append(v.detach().clone())
        return -v.sum()

    render.render_vis(
        model, objective, param_f=lambda: ([pixels], lambda: pixels), optimizer=lambda p: torch.optim.Adam(p, lr=1e-9),
        transforms=[], thresholds=(1,), progress=False, show_image=False,
    )
    return values[0]


@pytest.mark.slow
def test_embedded_model_is_pretrained():
    from lucent_inhibit.data.bundled import sample_images
    from lucent_inhibit.data.images import resize_center

    model = efficientnet_lite0()
    imgs = sample_images()
    batch = torch.stack([resize_center(imgs["chelsea"], 224), resize_center(imgs["coffee"], 224)])
    with torch.no_grad():
        pred = model(preprocess_fn(model)(batch)).argmax(1).tolist()
    assert 281 <= pred[0] <= 285, pred  # a cat
    assert pred[1] == 967, pred  # espresso
    assert not model.training
    assert not any(getattr(m, "inplace", False) for m in model.modules())


@pytest.mark.slow
def test_render_vis_sees_the_same_feature_value_as_attribute_and_measure():
    from lucent_inhibit.data.bundled import sample_crops

    model = efficientnet_lite0()  # a fresh copy: render_vis leaves its hooks on the model
    image = sample_crops(1, size=224, seed=4)[0][None]
    for feat in (Feature(DEFAULT_LAYER, unit=5), Feature("classifier", unit=285)):
        in_lucent = _render_vis_value(model, image, feat)
        ours = measure(model, image, feat)
        torch.testing.assert_close(ours, in_lucent, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(attribute(model, image, feat, ["blocks_2_0"]).activation, in_lucent, rtol=1e-5,
                                   atol=1e-5)
        # and it is not a coincidence: without the normalisation the value differs
        assert not torch.allclose(measure(model, image, feat, preprocess=False), in_lucent, rtol=1e-3, atol=1e-3)


def test_inceptionv1_builds_offline_and_matches_render_vis_preprocessing():
    torch.manual_seed(0)
    model = inceptionv1(pretrained=False)
    assert not model.training and not any(getattr(m, "inplace", False) for m in model.modules())
    assert {"mixed4a", "mixed4b_5x5_pre_relu_conv", "softmax2_pre_activation_matmul"} <= set(layers(model))
    x = torch.rand(1, 3, 224, 224)
    torch.testing.assert_close(preprocess_fn(model)(x), x * 255 - 117)
    with torch.no_grad():
        out = model(preprocess_fn(model)(x))
    assert out.shape == (1, 1008) and torch.isfinite(out).all()
    feat = Feature("mixed3a", unit=10)
    torch.testing.assert_close(measure(model, x, feat), _render_vis_value(model, x, feat), rtol=1e-5, atol=1e-4)


def test_inceptionv1_loads_an_injected_state_dict():
    torch.manual_seed(1)
    source = inceptionv1(pretrained=False)
    torch.manual_seed(2)
    other = inceptionv1(pretrained=False, state_dict=source.state_dict())
    for (k, a), (_, b) in zip(source.state_dict().items(), other.state_dict().items()):
        assert torch.equal(a, b), k


def test_timm_layer_names_preactivations_and_block_outputs():
    model = _timm_lite0_untrained()
    names = layers(model)
    assert names[:3] == ["conv_stem", "bn1", "bn1_drop"]
    assert DEFAULT_LAYER in names and "blocks_4_0_bn3_act" in names
    pre = preactivation_layers(model)
    assert {"blocks_4_0_bn3_drop", "blocks_4_0_bn1_drop", "bn2_drop", "blocks_4_0", "classifier"} <= set(pre)
    assert not {"blocks_4_0_bn1_act", "blocks_4_0_conv_pw", "blocks_4_0_bn1", "blocks_4"} & set(pre)
    blocks = block_outputs(model)
    assert len(blocks) == 16 and blocks[0] == "blocks_0_0" and blocks[-1] == "blocks_6_0"
    assert blocks == sorted(blocks, key=lambda n: names.index(n))
    # a pre-activation layer really is the value before ReLU6: it goes negative, the activation does not
    x = preprocess_fn(model)(torch.rand(1, 3, 64, 64))
    from lucent_inhibit.core.hooks import capture

    with torch.no_grad():
        acts = capture(model, x, ["blocks_4_0_bn1_drop", "blocks_4_0_bn1_act"])
    assert float(acts["blocks_4_0_bn1_drop"].min()) < 0 <= float(acts["blocks_4_0_bn1_act"].min())
    assert get_layer(model, "blocks_4_0_bn1_act") is model.blocks[4][0].bn1.act


def test_unknown_layer_lists_close_matches():
    model = _timm_lite0_untrained()
    with pytest.raises(ValueError, match=r"Unknown layer 'blocks_4_0_bn3drop'.*Closest valid names: blocks_4_0_bn3_drop"):
        get_layer(model, "blocks_4_0_bn3drop")


def test_prepare_disables_inplace_and_sets_eval():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.Dropout(inplace=True)).train()
    assert prepare(net) is net
    assert not net.training and not net[2].inplace and not net[3].inplace
    with pytest.raises(TypeError, match="expects a torch.nn.Module, got str"):
        prepare("resnet")


def test_embedded_weights_are_checked_by_shape_and_count():
    model = _timm_lite0_untrained()
    sd = model.state_dict()
    rebuilt = efficientnet_lite0(state_dict={f"w{i}": v.clone() for i, v in enumerate(sd.values())})
    for (k, a), b in zip(sd.items(), rebuilt.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match=r"have 295 tensors, timm's model expects 296"):
        efficientnet_lite0(state_dict=dict(list(sd.items())[:-1]))
    bad = dict(sd)
    bad["conv_stem.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"weight 'conv_stem.weight' has shape \(1,\)"):
        efficientnet_lite0(state_dict=bad)


def test_load_model_bad_specs():
    with pytest.raises(ValueError, match=r"Unknown model spec 'resnet'"):
        load_model("resnet")
    with pytest.raises(ValueError, match=r"Unknown torchvision model 'resnet5'.*resnet50"):
        load_model("torchvision:resnet5")
    with pytest.raises(ValueError, match=r"Cannot import module 'no_such_pkg'"):
        load_model("no_such_pkg:build")
    with pytest.raises(ValueError, match=r"has no attribute 'nope'"):
        load_model("torch.nn:nope")
    assert isinstance(load_model("conftest:TinyConvNet"), nn.Module)


def test_random_weights_are_the_same_in_every_load_and_leave_the_global_generator_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = load_model("timm:convnext_atto", weights="none")
    b = load_model("timm:convnext_atto", weights="none")
    assert torch.equal(torch.rand(3), expected)  # building under INIT_SEED restored the caller's generator
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(v.float().std() > 0 for v in sa.values() if v.ndim > 1)  # random, not a constant fill
