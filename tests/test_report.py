import os

import pytest

from lucent_inhibit.outputs import MANIFEST
from lucent_inhibit.report import Report, Section, StagingDir


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
