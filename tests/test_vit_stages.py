"""Every stage end to end on random-initialised timm vision transformers from the command line, with the
defaults the library picks for a transformer (feature layer, attribution layer, paired layer): each exits 0,
writes its files, and leaves the model with no hook and the requires_grad flags it was loaded with. Then the
demo (the main job) on ViT-Ti at its one input size."""
import dataclasses
import os

import pytest

from lucent_inhibit.app.cli import main
from lucent_inhibit.core.layers import hook_count

SPECS = ("timm:vit_tiny_patch16_224", "timm:deit_tiny_patch16_224")
MODEL = ["--weights", "none", "--size", "224"]
IMAGES = ["--n-images", "8", "--batch-size", "8"]  # tense reads no images


def stage_commands(spec, out):
    """(stage, arguments, files it must write) for every model stage, sized for a CPU test."""
    scan = os.path.join(out, "scan")
    return [
        ("scan", ["--out", scan], ["scan.npz", "scatter.png", "mtis.png"]),
        ("census", ["--out", os.path.join(out, "census"), "--units", "0", "1", "2"], ["census.npz", "census.png"]),
        ("completeness", ["--out", os.path.join(out, "completeness"), "--n-features", "2", "--ig-features", "1",
                          "--ig-steps", "2"], ["completeness.npz", "completeness.png"]),
        ("inhibitors", ["--out", os.path.join(out, "inhibitors"), "--scan", scan, "--top-k", "2", "--n-random", "2",
                        "--n-channels", "2", "--n-top-images", "2", "--n-remove", "2", "--random-draws", "2",
                        "--steps", "2"], ["disinhibition.npz", "inhibitors.npz", "inhibitors.png"]),
        ("invert", ["--out", os.path.join(out, "invert"), "--steps", "2"], ["inversion.npz", "inversion.png"]),
        ("tense", ["--out", os.path.join(out, "tense"), "--steps", "2"], ["tense.npz", "tense.png"]),
        ("atlas", ["--out", os.path.join(out, "atlas"), "--scan", scan, "--steps", "2", "--top-abs", "8",
                   "--top-activation", "0", "--bottom-activation", "0", "--top-tension", "0", "--min-points", "1"],
         ["atlas.npz", "atlas.png", "atlas.html"]),
        ("combos", ["--out", os.path.join(out, "combos"), "--steps", "2", "--n-angles", "5", "--n-seeds", "1",
                    "--scale-steps", "2", "--pair", "anticorrelated"],
         ["pair_stats.npz", "combos_anticorrelated.npz", "combos_anticorrelated.png"]),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS)
def test_every_stage_runs_on_a_random_vit_from_the_cli(spec, tmp_path, loaded, capsys, one_thread):
    for stage, args, files in stage_commands(spec, str(tmp_path)):
        code = main([stage, "--model", spec] + MODEL + ([] if stage == "tense" else IMAGES) + args)
        err = capsys.readouterr().err
        assert code == 0, f"{stage}: {err[-2000:]}"
        folder = args[args.index("--out") + 1]
        assert [f for f in files if not os.path.exists(os.path.join(folder, f))] == [], stage
        if stage == "scan":  # the transformer defaults, said when picked
            assert "feature layer: blocks_8_mlp_fc1" in err and "attribution layer: blocks_7" in err
    assert len(loaded) >= 8
    for model, n_hooks, grads in loaded:
        assert hook_count(model) == n_hooks == 0
        assert [p.requires_grad for p in model.parameters()] == grads


@pytest.mark.slow
def test_demo_runs_on_a_random_vit_at_its_input_size(tmp_path, loaded, caplog, one_thread):
    import logging

    from lucent_inhibit.app.stages.demo import DemoConfig, run_demo

    small = dataclasses.replace(DemoConfig.quick(), n_images=12, batch_size=6, completeness_images=6,
                                completeness_features=1, atlas_select=8, combo_images=8, toy_steps=40)
    with caplog.at_level(logging.INFO, logger="lucent_inhibit"):
        report = run_demo(out=str(tmp_path / "report"), model=SPECS[0], weights="none", config=small, progress=False)
    assert "224 px inputs only" in caplog.text and "feature layer: blocks_8_mlp_fc1" in caplog.text
    assert os.path.exists(tmp_path / "report" / "index.html") and not report.missing_files(str(tmp_path / "report"))
    assert report.settings["attribution layer"] == "blocks_7"
    for model, n_hooks, grads in loaded:
        assert hook_count(model) == n_hooks == 0
