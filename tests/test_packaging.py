"""Packaging: every third-party module the package imports is a declared requirement, the faccent extra covers
faccent's own imports, the license ships, the version lives in one place, and the API reference's sources
(mkdocs.yml, docs/) cover every public name, page and notebook (``make docs`` builds them strictly).

The imports are read with ``ast`` from every file of ``lucent_inhibit/`` (module level and inside functions, as
import-linter counts them) and mapped to their distributions with ``importlib.metadata``. The wheel itself, its
package data and a clean ``pip check`` are checked by ``.ci/wheel.sh`` (``make test`` runs it).
"""
import ast
import configparser
import importlib.metadata as md
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "lucent_inhibit")


def _config():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    return cfg


def _names(text):
    """Normalised distribution names of a requirement list (one a line, comments and markers dropped)."""
    out = set()
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line:
            out.add(_norm(re.match(r"[A-Za-z0-9._-]+", line).group(0)))
    return out


def _norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _top_level_imports(folder):
    """Top-level third-party module names imported anywhere under ``folder`` -> the files importing them."""
    own = os.path.basename(folder)
    found = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(dirpath, f)
            with open(path, encoding="utf-8") as fh:
                tree = ast.parse(fh.read(), path)
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    mods = [node.module]
                else:
                    continue
                for m in mods:
                    top = m.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in ("__future__", own):
                        found.setdefault(top, set()).add(os.path.relpath(path, folder))
    return found


def _distributions(modules):
    """module -> its normalised distribution name (torch-lucent for ``lucent``; faccent, installed --no-deps,
    brings no ``lucent`` distribution)."""
    table = md.packages_distributions()
    out = {}
    for m in modules:
        dists = {_norm(d) for d in table.get(m, [])}
        assert dists, f"module {m!r} is imported but no installed distribution provides it"
        if m == "lucent":  # the unrelated PyPI `lucent` must never be what provides it
            assert "lucent" not in dists, "the unrelated `lucent` package is installed (faccent without --no-deps?)"
        assert len(dists) == 1, f"module {m!r} is provided by several distributions: {sorted(dists)}"
        out[m] = dists.pop()
    return out


def test_every_import_of_the_package_is_declared():
    imports = _top_level_imports(PACKAGE)
    required = _names(_config()["options"]["install_requires"])
    dists = _distributions(imports)
    missing = {m: d for m, d in dists.items() if d not in required}
    assert not missing, f"imported but not in setup.cfg install_requires: {missing} (used in " \
                        f"{ {m: sorted(imports[m])[:3] for m in missing} })"
    unused = required - set(dists.values())
    assert not unused, f"install_requires lists distributions the package never imports: {sorted(unused)}"


def test_the_faccent_extra_covers_faccents_own_imports():
    """faccent installs with --no-deps; ``pip install lucent-inhibit[faccent]`` must bring what it imports."""
    pytest.importorskip("faccent")  # installed --no-deps by the Makefile: CI runs this
    folder = os.path.dirname(md.distribution("faccent").locate_file("faccent/__init__.py"))
    imports = _top_level_imports(str(folder))
    cfg = _config()
    required = _names(cfg["options"]["install_requires"])
    extra = _names(cfg["options.extras_require"]["faccent"])
    # what the required packages bring with them (torch-lucent brings kornia and decorator)
    brought = set()
    for d in required:
        try:
            brought |= {_norm(re.match(r"[A-Za-z0-9._-]+", r).group(0)) for r in (md.requires(d) or [])
                        if "extra ==" not in r}
        except md.PackageNotFoundError:
            pass
    dists = _distributions(imports)
    uncovered = {m: d for m, d in dists.items() if d not in required | extra | brought}
    assert not uncovered, f"faccent imports these, which neither the faccent extra nor the requirements bring: {uncovered}"
    assert extra <= set(dists.values()), f"the faccent extra lists what faccent never imports: {extra - set(dists.values())}"
    assert "lucent" not in extra | required and "faccent" not in extra | required  # never as a plain dependency


def test_license_ships():
    cfg = _config()
    assert cfg["metadata"]["license"] == "MIT" and cfg["metadata"]["license_files"].strip() == "LICENSE"
    with open(os.path.join(ROOT, "LICENSE"), encoding="utf-8") as fh:
        text = fh.read()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the lucent-inhibit authors" in text


def _reference_blocks():
    """Every ``::: module`` block of the reference's pages (docs/*.md) -> (page, module, its ``members`` or None)."""
    import textwrap

    import yaml

    blocks = []
    for page in sorted(os.listdir(os.path.join(ROOT, "docs"))):
        if not page.endswith(".md"):
            continue
        with open(os.path.join(ROOT, "docs", page), encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        for i, line in enumerate(lines):
            if not line.startswith("::: "):
                continue
            body = []
            for nxt in lines[i + 1:]:
                if nxt.strip() and not nxt.startswith(" "):
                    break
                body.append(nxt)
            options = (yaml.safe_load(textwrap.dedent("\n".join(body))) or {}).get("options") or {}
            blocks.append((page, line[4:].strip(), options.get("members")))
    return blocks


def test_the_reference_documents_every_public_name():
    """The API reference (make docs) renders every name ``lucent_inhibit`` exports, and every member a page
    names exists where the page looks for it (mkdocstrings skips a missing member without a warning)."""
    import importlib
    import types

    import lucent_inhibit as li

    blocks = _reference_blocks()
    assert blocks, "no ::: blocks in docs/*.md"
    documented_modules, documented_names = set(), set()
    for page, module, members in blocks:
        mod = importlib.import_module(module)
        documented_modules.add(module)
        if members is None:  # the whole module
            continue
        absent = [m for m in members if not hasattr(mod, m)]
        assert not absent, f"docs/{page}: {module} has no {absent}"
        documented_names |= {f"{module}.{m}" for m in members}
    undocumented = []
    for name in li.__all__:
        obj = getattr(li, name)
        if isinstance(obj, types.ModuleType):  # li.objectives, li.param, ...: a page renders it or its modules
            if not any(m == obj.__name__ or m.startswith(obj.__name__ + ".") for m in documented_modules):
                undocumented.append(name)
        elif not any(n.endswith("." + name) for n in documented_names):
            undocumented.append(name)
    assert not undocumented, f"exported by lucent_inhibit but on no page of docs/: {undocumented}"


def test_the_reference_lists_every_page_and_notebook():
    """mkdocs.yml's navigation holds every page of docs/ and every demo notebook, and nothing that is not there
    (a page left out of the navigation is only an INFO line for ``mkdocs build --strict``)."""
    import glob

    import yaml

    with open(os.path.join(ROOT, "mkdocs.yml"), encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh)
    assert cfg["strict"] is True and cfg["docs_dir"] == "docs"

    def leaves(nav):
        for item in nav:
            value = list(item.values())[0] if isinstance(item, dict) else item
            if isinstance(value, list):
                yield from leaves(value)
            else:
                yield value

    nav = list(leaves(cfg["nav"]))
    assert len(nav) == len(set(nav)), "a page is listed twice in mkdocs.yml's nav"
    pages = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "docs", "*.md"))}
    notebooks = {"demos/" + os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "demos", "*.ipynb"))}
    assert set(nav) == pages | notebooks, f"not in the nav: {sorted(pages | notebooks - set(nav))}; " \
                                          f"in the nav but missing: {sorted(set(nav) - pages - notebooks)}"


def test_version_is_the_packages_and_the_readme_names_its_wheel():
    """setup.cfg reads the version from ``lucent_inhibit.__version__`` (one place); the README's Colab example
    names the wheel that version builds."""
    import lucent_inhibit as li

    assert _config()["metadata"]["version"].strip() == "attr: lucent_inhibit.__version__"
    assert re.fullmatch(r"\d+\.\d+\.\d+", li.__version__)
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    wheels = set(re.findall(r"lucent_inhibit-(\d+\.\d+\.\d+)-py3-none-any\.whl", readme))
    assert wheels == {li.__version__}, f"README names wheels of versions {sorted(wheels)}, the package is {li.__version__}"
