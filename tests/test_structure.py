"""The code stays in small rooms: no module over ~400 lines, no function over ~60 lines of code
(docstrings and blank lines aside), every public name exported under the name it is defined as."""
import ast
import importlib
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "lucent_inhibit"
MAX_MODULE_LINES = 420
MAX_FUNCTION_LINES = 60


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def code_lines(node: ast.AST, source_lines) -> int:
    """Lines of a function that hold code: its span minus its docstring, blank lines and comments."""
    first, last = node.lineno, node.end_lineno
    skip = set()
    body = getattr(node, "body", [])
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        skip.update(range(body[0].lineno, body[0].end_lineno + 1))
    n = 0
    for i in range(first, last + 1):
        text = source_lines[i - 1].strip()
        if i in skip or not text or text.startswith("#"):
            continue
        n += 1
    return n


def long_functions(path: pathlib.Path):
    source = path.read_text()
    lines = source.splitlines()
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = code_lines(node, lines)
            if n > MAX_FUNCTION_LINES:
                out.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_code_line_counter_counts_code_only():
    src = 'def f(x):\n    """doc\n    more"""\n\n    # c\n    return x\n'
    node = ast.parse(src).body[0]
    assert code_lines(node, src.splitlines()) == 2


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_small(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_MODULE_LINES, f"{path.name} has {n} lines (limit {MAX_MODULE_LINES}): split it"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_functions_are_short(path):
    assert long_functions(path) == []


def test_public_names_are_defined_under_their_exported_name():
    import lucent_inhibit as li

    for name in li.__all__:
        obj = getattr(li, name)
        if hasattr(obj, "__name__") and not isinstance(obj, type(li)):
            assert obj.__name__ == name, f"lucent_inhibit.{name} is defined as {obj.__name__}"
        if callable(obj) and not isinstance(obj, type):
            try:
                importlib.import_module(f"lucent_inhibit.{name}")
            except ImportError:
                continue
            pytest.fail(f"lucent_inhibit.{name} is both a function and a module")
