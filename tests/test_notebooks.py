"""Every demo notebook runs top to bottom (with small parameters) on the embedded model.

The notebooks read LUCENT_INHIBIT_SMALL=1 to shrink images, steps and datasets; their Colab install
cell only runs inside Colab. A broken notebook fails CI here.
"""
import glob
import os

import pytest

DEMOS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "demos")
EXPECTED = {
    "01_attribution_completeness.ipynb",
    "02_maximally_tense_images.ipynb",
    "03_inversions_accentuations.ipynb",
    "04_tense_synthesis.ipynb",
    "05_attribution_atlas.ipynb",
    "06_feature_combinations.ipynb",
    "07_superposition.ipynb",
}


def test_one_notebook_per_method():
    assert EXPECTED <= {os.path.basename(p) for p in glob.glob(os.path.join(DEMOS, "*.ipynb"))}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs(name, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("LUCENT_INHIBIT_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(os.path.join(DEMOS, name), as_version=4)
    first = "".join(nb.cells[0].source)
    assert "google.colab" in first and "pip install" in first, "notebooks open with a Colab install cell"
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
