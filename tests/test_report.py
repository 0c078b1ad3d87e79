import os

import pytest

from lucent_inhibit.app.outputs import MANIFEST
from lucent_inhibit.app.staging import StagingDir
from lucent_inhibit.app.page import Report, Section


def test_report_html_escapes_and_lists_numbers(tmp_path):
    r = Report("T <1>", "intro & more")
    (tmp_path / "a.png").write_bytes(b"x")
    r.sections.append(Section("S<script>", "text", figures=["a.png"], links=["b.npz"]))
    r.add_number("activation", 1.234567, "note")
    page = r.to_html()
    assert "<script>" not in page and "S&lt;script&gt;" in page
    assert "1.235" in page
    path = r.write(str(tmp_path))
    assert os.path.exists(path)
    assert r.missing_files(str(tmp_path)) == ["b.npz"]


def test_staging_dir_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "report"
    with pytest.raises(RuntimeError):
        with StagingDir(str(out)) as tmp:
            open(os.path.join(tmp, "half.png"), "w").write("x")
            raise RuntimeError("stage failed")
    assert not out.exists()
    assert os.listdir(tmp_path) == []


def test_staging_dir_replaces_old_report_only_on_success(tmp_path):
    out = tmp_path / "report"
    with StagingDir(str(out)) as tmp:  # a previous report of its own (only those are replaced)
        open(os.path.join(tmp, "old.txt"), "w").write("old")
    with pytest.raises(ValueError):
        with StagingDir(str(out)) as tmp:
            raise ValueError("bad")
    assert (out / "old.txt").read_text() == "old"
    with StagingDir(str(out)) as tmp:
        open(os.path.join(tmp, "new.txt"), "w").write("new")
    assert sorted(os.listdir(out)) == [MANIFEST, "new.txt"]
    assert sorted(os.listdir(tmp_path)) == ["report"]


def test_report_states_findings_at_the_top_and_in_their_section(tmp_path):
    import json

    from lucent_inhibit.findings.verdicts import NOT_MEASURABLE, REPRODUCED, Finding

    r = Report("T", "intro")
    found = [Finding("P & N <cancel>", "r = 0.9 <b>", REPRODUCED, "bar: r >= 0.8"),
             Finding("icons", "cosine nan", NOT_MEASURABLE, "no icon <rendered>")]
    r.sections += [Section("A <1>", "text", findings=found), Section("B", "no claims here")]
    page = r.to_html()
    assert "<cancel>" not in page and "<b>" not in page and "<rendered>" not in page
    top, first = page.index('id="findings"'), page.index('id="s0"')
    assert top < first and page.count("P &amp; N &lt;cancel&gt;") == 2  # the summary table and the section
    summary = page[top:first]
    assert "A &lt;1&gt;" in summary and "#1a7f37" in summary and REPRODUCED in summary and NOT_MEASURABLE in summary
    assert "bar: r &gt;= 0.8" in page[first:]  # the why is shown in the section
    r.add_number("x", 1.0)
    r.write(str(tmp_path))
    assert json.loads((tmp_path / "numbers.json").read_text()) == {"x": "1"}
    assert json.loads((tmp_path / "findings.json").read_text()) == [
        {"section": "A <1>", **dataclass_dict(f)} for f in found]
    assert Report("T", "i").to_html().count('id="findings"') == 0


def dataclass_dict(finding):
    return {"claim": finding.claim, "measured": finding.measured, "verdict": finding.verdict, "why": finding.why}
