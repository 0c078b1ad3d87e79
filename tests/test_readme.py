"""The README's Python examples run as written (the render with fewer steps)."""
import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _blocks():
    return re.findall(r"```python\n(.*?)```", open(README).read(), re.S)


def test_the_readme_has_its_examples():
    assert len(_blocks()) >= 2


@pytest.mark.slow
def test_readme_example_runs(capsys):
    text = open(README).read()
    code = re.search(r"## Ten lines into `render_vis`\s+```python\n(.*?)```", text, re.S).group(1)
    assert len([l for l in code.splitlines() if l.strip()]) <= 12
    code = code.replace("thresholds=(128,)", "thresholds=(2,)")
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["images"][-1].shape == (1, 128, 128, 3)
    assert (scope["att"].positive("blocks_4_0_bn2_act") > 0).all()
    assert (scope["att"].negative("blocks_4_0_bn2_act") > 0).all()


@pytest.mark.slow
def test_every_other_readme_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for code in _blocks()[1:]:
        exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "reproduced" in printed or "not measurable" in printed
    assert os.path.exists(tmp_path / "scan.npz")
