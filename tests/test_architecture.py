"""The folder tree is the architecture: subpackages by concern, imports one way (the contracts in .importlinter,
checked with import-linter), no import cycle between any two modules counting imports inside functions, a
small top level, and each shared mechanism defined once."""
import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lucent_inhibit"


def _graph():
    grimp = pytest.importorskip("grimp")  # installed with import-linter (the test extra)
    return grimp.build_graph("lucent_inhibit", cache_dir=None)


def _cycles(edges):
    """Strongly connected components with more than one node (Tarjan), for ``edges``: node -> successors."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_counting_imports_inside_functions():
    graph = _graph()
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    assert _cycles(edges) == []


def test_import_contracts_hold():
    """The layers (app > findings > methods > attribution | models > data > core) and acyclic subpackages."""
    lint = pathlib.Path(sys.executable).with_name("lint-imports")
    pytest.importorskip("importlinter")
    run = subprocess.run([str(lint), "--config", str(ROOT / ".importlinter"), "--no-cache"], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "broken" not in run.stdout.lower().replace("0 broken", "")


def test_the_top_level_holds_only_the_package_entry_points():
    top = sorted(p.name for p in PACKAGE.iterdir() if p.suffix == ".py")
    assert top == ["__init__.py", "__main__.py"]
    subpackages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert len(subpackages) <= 14, subpackages


def _imports(path: pathlib.Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("lucent_inhibit")):
            yield node


def test_no_private_name_is_imported_across_modules():
    found = [f"{p.relative_to(ROOT)}:{n.lineno} {a.name}" for p in PACKAGE.rglob("*.py") for n in _imports(p)
             for a in n.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert found == []


def _calls(name: str):
    """Modules of the package that call ``name`` (an attribute or a function of that name)."""
    out = set()
    for p in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                called = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
                if called == name:
                    out.add(str(p.relative_to(PACKAGE)))
    return out


def test_each_shared_mechanism_is_defined_once():
    assert _calls("use") == {"core/figures.py"}  # matplotlib.use: the one place that picks the backend
    # files are replaced atomically in core.io only; app/staging.py moves finished outputs into place
    replacers = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if "os.replace(" in p.read_text()}
    assert replacers <= {"core/io.py", "app/staging.py"}
    defs = {}
    for p in PACKAGE.rglob("*.py"):
        for node in ast.parse(p.read_text()).body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                defs.setdefault(node.name, []).append(str(p.relative_to(PACKAGE)))
    for name in ("check_flag", "parse_shard", "atomic_write", "read_json", "pyplot", "preprocess_fn",
                 "default_attribution_layer", "pick_unit"):
        assert len(defs.get(name, [])) == 1, f"{name} is defined in {defs.get(name)}"


def test_figure_modules_do_not_import_the_results_they_draw():
    """A result's plot() imports its figure module; the figure module never imports a result module back."""
    from lucent_inhibit.core.results import RESULT_MODULES

    graph = _graph()
    results = {f"lucent_inhibit.{m}" for m in RESULT_MODULES.values()}
    for fig in sorted(m for m in graph.modules if m.endswith(".figures")):
        assert not graph.find_modules_directly_imported_by(fig) & results, fig


def test_dir_lists_public_names_only():
    code = "import lucent_inhibit as li; print(' '.join(dir(li)))"
    names = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "annotations" not in names and "importlib" not in names
    assert {"scan", "PassSettings", "pick_unit", "default_attribution_layer", "findings"} <= set(names)
    assert [n for n in names if n.startswith("_") and n != "__version__"] == []
