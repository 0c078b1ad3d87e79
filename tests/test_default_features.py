"""What the stages pick when no feature layer (or attribution layer) is given: only defaults the library
can stand behind (the embedded model's; a transformer's MLP pre-GELU with the residual stream before it,
checked to be a cut), each said when picked; other models get an error naming candidate layers."""
import logging

import pytest
import torch
from test_vit import tiny_vit

import lucent_inhibit as li
from lucent_inhibit.core.hooks import separates
from lucent_inhibit.core.settings import PassSettings
from lucent_inhibit.models import defaults
from lucent_inhibit.models.defaults import DEFAULT_ATTR_LAYER, DEFAULT_LAYER
from lucent_inhibit.models.layers import probe_input


def test_embedded_model_keeps_its_default_feature(lite0):
    layer, attr, why = defaults.default_feature_layers(lite0)
    assert (layer, attr) == (DEFAULT_LAYER, DEFAULT_ATTR_LAYER) and "embedded" in why


@pytest.mark.parametrize("depth, block", [(2, 1), (3, 2), (6, 4), (12, 8)])
def test_transformer_default_is_the_mlp_pre_gelu_two_thirds_deep_with_the_stream_before_it(depth, block):
    net = tiny_vit(depth=depth)
    layer, attr, why = defaults.default_feature_layers(net)
    assert (layer, attr) == (f"blocks_{block}_mlp_fc1", f"blocks_{block - 1}")
    assert separates(net, probe_input(net), attr, layer)  # the pick is a cut to the feature
    assert f"block {block} of {depth}" in why


def test_transformer_default_feature_has_both_signs_at_its_attribution_layer():
    net = tiny_vit(depth=3)
    layer, attr, _ = defaults.default_feature_layers(net)
    att = li.attribute(net, torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)),
                       li.Feature(layer, unit=3, position="center"), [attr])
    assert bool((att.positive(attr) > 0).all()) and bool((att.negative(attr) > 0).all())


def test_any_other_model_gets_the_pre_activation_map_two_thirds_deep_with_a_cut_before_it():
    net = li.load_model("torchvision:resnet18", weights="none")
    layer, attr, why = defaults.default_feature_layers(net)
    maps = [n for n in li.preactivation_layers(net) if n.startswith("layer")]
    assert layer in maps and abs(maps.index(layer) - 2 * (len(maps) - 1) / 3) <= 2, (layer, maps)
    assert separates(net, probe_input(net), attr, layer) and "two thirds deep" in why


def test_a_model_without_a_pre_activation_map_gets_an_error_naming_the_option():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 4)).eval()
    with pytest.raises(ValueError, match="no default feature layer for model Sequential.*give --layer"):
        defaults.default_feature_layers(net, size=32)


def test_resolve_says_what_it_picked_and_keeps_what_was_given(caplog):
    net = tiny_vit(depth=3)
    with caplog.at_level(logging.INFO, logger="lucent_inhibit"):
        assert defaults.resolve_feature_layers(net, None, None, 32) == ("blocks_2_mlp_fc1", "blocks_1")
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "feature layer: blocks_2_mlp_fc1" in said and "attribution layer: blocks_1" in said
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lucent_inhibit"):
        assert defaults.resolve_feature_layers(net, "blocks_2_mlp_fc1", "blocks_0", 32) == ("blocks_2_mlp_fc1", "blocks_0")
    assert not caplog.records  # nothing picked, nothing said
    with pytest.raises(ValueError, match="blocks_9"):
        defaults.resolve_feature_layers(net, "blocks_9", None, 32)


def test_missing_attribution_layer_of_a_given_feature_layer_is_a_cut(caplog):
    net = tiny_vit(depth=3)
    with caplog.at_level(logging.INFO, logger="lucent_inhibit"):
        layer, attr = defaults.resolve_feature_layers(net, "blocks_2", None, 32)
    assert separates(net, probe_input(net), attr, layer) and "cut" in caplog.text


def test_pick_unit_reads_a_token_layer_at_its_centre_patch():
    net = tiny_vit(depth=2)
    data = [torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    unit = defaults.pick_unit(net, data, "blocks_1_mlp_fc1", n=6, settings=PassSettings(batch_size=3))
    with torch.no_grad():
        acts = li.capture(net, li.preprocess_fn(net)(torch.stack(data)), ["blocks_1_mlp_fc1"])
    centre = acts["blocks_1_mlp_fc1"][:, 1 + 2 * 4 + 2]  # class token, then row 2, column 2 of the 4x4 grid
    assert unit == int(centre.std(0).argmax()) and 0 <= unit < centre.shape[1]


def test_scan_file_argument_may_be_the_scan_stage_folder(tmp_path, tiny_net, tiny_images):
    feature = li.Feature("conv2", unit=1)
    result = li.scan(tiny_net, tiny_images, feature, ["conv1"], settings=PassSettings(batch_size=4, progress=False))
    result.save(tmp_path / "scan.npz")
    again = li.ScanResult.load(tmp_path)
    assert again.indices.tolist() == result.indices.tolist()


@pytest.mark.slow
def test_cli_scan_on_a_vit_without_layers_says_its_picks(tmp_path, capsys):
    from lucent_inhibit.app.cli import main

    code = main(["scan", "--model", "timm:vit_tiny_patch16_224", "--weights", "none", "--size", "224",
                 "--n-images", "4", "--batch-size", "4", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "lucent-inhibit: feature layer: blocks_8_mlp_fc1" in err and "attribution layer: blocks_7" in err
    assert li.ScanResult.load(tmp_path).feature.layer == "blocks_8_mlp_fc1"
