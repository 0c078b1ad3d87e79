"""The command line is generated from the stage registry: every stage a sub-command, every config field
an option with its help; bad values are one line naming the flag; importing it does not import torch."""
import subprocess
import sys
import typing

import pytest

from lucent_inhibit.app.cli import build_parser, main
from lucent_inhibit.app.options import REQUIRED, base_type, choices_of, options
from lucent_inhibit.app.stages import STAGES


def _subparsers():
    parser = build_parser()
    action = [a for a in parser._actions if a.dest == "stage"][0]
    return action.choices


def test_import_does_not_load_torch():
    code = ("import sys, lucent_inhibit, lucent_inhibit.app.cli, lucent_inhibit.app.stages, lucent_inhibit.app.stages.demo; "
            "heavy = [m for m in ('torch', 'torchvision', 'lucent', 'timm', 'matplotlib', 'umap') if m in sys.modules]; "
            "print(','.join(heavy) or 'clean')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "clean"


def test_every_stage_is_a_subcommand_with_every_field_as_an_option():
    subs = _subparsers()
    assert list(subs) == list(STAGES)
    for name, stage in STAGES.items():
        flags = {s for a in subs[name]._actions for s in a.option_strings}
        opts = list(options(stage.config))
        assert opts, name
        for opt in opts:
            assert opt.flag in flags, f"{name}: {opt.flag} missing"
            assert opt.help.strip(), f"{name} {opt.flag} has no help"
        assert "--debug" in flags
        text = subs[name].format_help()
        for opt in opts:
            assert opt.help.split()[0] in text
        assert stage.description.split()[0] in text


def test_flags_the_tests_and_docs_use_are_spelled_as_before():
    subs = _subparsers()
    expected = {
        "scan": ["--model", "--device", "--images", "--n-images", "--size", "--seed", "--batch-size", "--layer",
                 "--unit", "--position", "--attr-layers", "--out", "--chunk-size", "--shard", "--merge", "--no-resume",
                 "--no-maps", "--top-k", "--score", "--no-figures"],
        "completeness": ["--layers", "--n-features", "--feature-seed", "--layer", "--unit", "--position", "--method",
                         "--steps", "--ig-features", "--ig-layers", "--ig-steps", "--batch-size", "--out"],
        "atlas": ["--scan", "--layer", "--unit", "--attr-layer", "--kind", "--mode", "--top-abs", "--top-activation",
                  "--bottom-activation", "--top-tension", "--crop", "--neighbors", "--min-dist", "--pca", "--grid",
                  "--min-points", "--steps", "--icon-size", "--batch-size", "--power", "--icon-target", "--out"],
        "invert": ["--image", "--index", "--seeded", "--steps", "--lr", "--param", "--power", "--attr-layer", "--out"],
        "tense": ["--size", "--steps", "--batch", "--mode", "--score", "--param", "--lr", "--seed-image",
                  "--record-every", "--attr-layer", "--out"],
        "combos": ["--layer", "--position", "--pair", "--units", "--n-angles", "--n-seeds", "--power", "--steps",
                   "--chunk", "--out"],
        "toy": ["--out", "--kind", "--n", "--m", "--S", "--decay", "--steps", "--seeds", "--batch-size", "--lr",
                "--count", "--load"],
        "demo": ["--model", "--device", "--out", "--images", "--layer", "--unit", "--attribution-layer", "--quick"],
    }
    for name, want in expected.items():
        flags = {s for a in subs[name]._actions for s in a.option_strings}
        assert set(want) <= flags, (name, set(want) - flags)


def _bad_value(opt):
    """A value argparse refuses for this option's type, or None for free-form strings and switches."""
    tp, _ = base_type(opt.type)
    if choices_of(opt.type) is not None:
        return ["not-a-choice"]
    if typing.get_origin(tp) is tuple and typing.get_args(tp)[-1] is not Ellipsis:
        return ["x"] * len(typing.get_args(tp))  # wrong item type
    return {int: ["1.5"], float: ["abc"]}.get(tp)


def _required(stage, tmp_path):
    return [a for o in options(stage.config) if o.default is REQUIRED for a in (o.flag, str(tmp_path / "o"))]


CASES = [(name, opt.flag) for name, st in STAGES.items() for opt in options(st.config) if _bad_value(opt) is not None]


@pytest.mark.parametrize("stage, flag", CASES, ids=[f"{s}{f}" for s, f in CASES])
def test_a_bad_value_is_one_line_naming_the_flag(stage, flag, tmp_path, capsys):
    st = STAGES[stage]
    opt = [o for o in options(st.config) if o.flag == flag][0]
    code = main([stage, *_required(st, tmp_path), flag, *_bad_value(opt)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("lucent-inhibit: error:")
    assert flag in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, flag", [
    (["scan", "--n-images", "0"], "--n-images"),
    (["scan", "--position", "top"], "--position"),
    (["scan", "--shard", "3"], "--shard"),
    (["scan", "--top-k", "0"], "--top-k"),
    (["invert", "--index", "first"], "--index"),
    (["invert", "--steps", "0"], "--steps"),
    (["invert", "--lr", "-1"], "--lr"),
    (["tense", "--size", "4"], "--size"),
    (["atlas", "--icon-target", "positions"], "--icon-target"),
    (["atlas", "--zoom-crops", "4"], "--zoom-crops 4 needs --icon-target center"),
    (["atlas", "--zoom-crops", "-1", "--icon-target", "center"], "--zoom-crops"),
    (["atlas", "--top-abs", "-1"], "--top-abs"),
    (["combos", "--n-angles", "4"], "--n-angles"),
    (["combos", "--units", "3", "3"], "--units"),
    (["toy", "--decay", "2"], "--decay"),
    (["demo", "--unit", "-1"], "--unit"),
    (["completeness", "--unit", "1"], "--unit needs --layer"),
])
def test_a_value_the_config_refuses_is_one_line_naming_the_flag(argv, flag, tmp_path, capsys):
    assert main(argv[:1] + ["--out", str(tmp_path / "o")] + argv[1:]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("lucent-inhibit: error:") and flag in err


def test_help_missing_stage_unknown_option_and_debug(tmp_path, capsys):
    assert main(["--help"]) == 0
    assert "scan" in capsys.readouterr().out
    assert main(["scan", "--help"]) == 0
    assert "--attr-layers" in capsys.readouterr().out
    assert main([]) == 2
    assert capsys.readouterr().err.strip().startswith("lucent-inhibit: error:")
    assert main(["scan", "--out", str(tmp_path), "--no-such-option"]) == 2
    assert "--no-such-option" in capsys.readouterr().err
    with pytest.raises(Exception, match="--m"):
        main(["--debug", "toy", "--out", str(tmp_path / "t"), "--m", "0"])


def test_a_user_error_while_running_is_one_line(tmp_path, capsys):
    code = main(["scan", "--model", "conftest:TinyConvNet", "--layer", "conv3", "--attr-layers", "relu9",
                 "--n-images", "2", "--size", "16", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Unknown layer 'relu9'" in err


def test_package_exports_are_a_literal_lazy_table():
    import ast
    import pathlib

    import lucent_inhibit as li

    tree = ast.parse(pathlib.Path(li.__file__).read_text())
    (node,) = [n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "__all__"]
    assert isinstance(node.value, ast.List) and all(isinstance(e, ast.Constant) for e in node.value.elts)
    assert len(li.__all__) == len(set(li.__all__))
    assert set(li.__all__) == set(li._WHERE) | set(li._SUBMODULES)
    assert li.stages.get_stage("scan").name == "scan"
