"""The demo on models researchers use (random weights, nothing downloaded): every stage finishes and the
model is left with no hook (InceptionV1: only its permanent pre-ReLU hooks) and the requires_grad flags it was
loaded with. InceptionV1's logits take only 224 px: the demo reads its completeness images at that size. A
feature layer with no inhibition at its attribution layer is refused before anything is written."""
import dataclasses
import logging
import os
import time

import pytest

from lucent_inhibit.app.stages.demo import DemoConfig, run_demo
from lucent_inhibit.core.layers import hook_count

#: Smaller than DemoConfig.quick() (CPU test); combo_size stays 96: at smaller model inputs Lucent's standard
#: transforms (12 px pad, 8 px jitter) move a unit's receptive field so far that renders do not excite it.
SMALL = dataclasses.replace(DemoConfig.quick(), n_images=16, size=96, batch_size=8, completeness_images=8,
                            atlas_select=16, combo_images=12, toy_steps=60)


@pytest.mark.slow
@pytest.mark.parametrize("spec, layer", [("timm:convnext_atto", "stages_2_blocks_1"),
                                         ("torchvision:vgg11_bn", "features_15"),
                                         ("torchvision:densenet121", "features_denseblock2_denselayer3_conv2"),
                                         ("inceptionv1", "mixed4a_pre_relu")])
def test_quick_demo_finishes_on_random_weights(spec, layer, tmp_path, loaded, one_thread):
    t0 = time.time()
    report = run_demo(out=str(tmp_path / "report"), model=spec, weights="none", layer=layer, config=SMALL,
                      progress=False)
    assert os.path.exists(tmp_path / "report" / "index.html") and not report.missing_files(str(tmp_path / "report"))
    assert loaded
    permanent = 36 if spec == "inceptionv1" else 0  # InceptionV1's hooks that build mixedXY_pre_relu
    for model, n_hooks, grads in loaded:
        assert hook_count(model) == n_hooks == permanent
        assert [p.requires_grad for p in model.parameters()] == grads
    numbers = dict((n, v) for n, v, _ in report.numbers)
    assert "combination pair, anticorrelated (units, r)" in numbers and report.settings["attribution layer"]
    print(f"{spec}: demo {time.time() - t0:.0f} s")


def test_demo_refuses_a_feature_layer_without_inhibition_before_writing(tmp_path, loaded):
    # VGG's features_14 is a max-pool of the ReLU before it: N = 0 at that ReLU, so no MTIs nor inversions
    with pytest.raises(ValueError, match="no inhibitory attribution at 'features_13'"):
        run_demo(out=str(tmp_path / "report"), model="torchvision:vgg11_bn", weights="none", layer="features_14",
                 config=SMALL, progress=False)
    assert not os.path.exists(tmp_path / "report")
    for model, n_hooks, grads in loaded:
        assert hook_count(model) == n_hooks == 0
        assert [p.requires_grad for p in model.parameters()] == grads


#: Models of every family a user names without a layer: the demo picks the feature itself and says so.
NO_LAYER = ["torchvision:resnet18", "torchvision:googlenet", "timm:efficientnet_b0",
            "timm:swin_tiny_patch4_window7_224", "timm:convnext_tiny"]


@pytest.mark.slow
@pytest.mark.parametrize("spec", NO_LAYER)
def test_demo_with_no_layer_picks_a_feature_says_so_and_finishes(spec, tmp_path, loaded, caplog, one_thread):
    t0 = time.time()
    with caplog.at_level(logging.INFO, logger="lucent_inhibit"):
        report = run_demo(out=str(tmp_path / "report"), model=spec, weights="none", config=SMALL, progress=False)
    said = caplog.text
    assert "feature layer:" in said and "attribution layer:" in said and "unit:" in said
    assert report.settings["attribution layer"] in said and os.path.exists(tmp_path / "report" / "index.html")
    for model, n_hooks, grads in loaded:
        assert hook_count(model) == n_hooks == 0
        assert [p.requires_grad for p in model.parameters()] == grads
    print(f"{spec}: demo {time.time() - t0:.0f} s")


@pytest.mark.slow
def test_cli_quick_demo_with_no_layer_says_what_it_picked(tmp_path, loaded, capsys, one_thread):
    from lucent_inhibit.app.cli import main

    code = main(["demo", "--quick", "--model", "torchvision:mobilenet_v3_small", "--weights", "none",
                 "--out", str(tmp_path / "report")])
    err = capsys.readouterr().err
    assert code == 0, err[-2000:]
    assert "feature layer:" in err and "attribution layer:" in err and "unit:" in err
    assert os.path.exists(tmp_path / "report" / "index.html")
