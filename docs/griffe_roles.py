"""A griffe extension for the API reference (mkdocs.yml, mkdocstrings ``extensions:``): the package's docstrings
cross-reference with Sphinx roles (``:func:`scan```, ``:class:`~lucent_inhibit.core.results.Result```,
``:mod:`.cosdots```), which Markdown would print literally. Each role becomes an *optional* autorefs link: a link
where the target is rendered on a page of the site, inline code where it is not (an optional reference never
warns, so ``mkdocs build --strict`` stays clean). The docstrings themselves are not changed, only what the site
renders from them.

Resolution, as Sphinx does it: ``~a.b.c`` shows ``c``; ``lucent_inhibit.NAME`` (a lazily exported public name)
is where the package's export table defines it; ``.name`` is looked up relative to the current module and
its parents; a bare ``name`` in the scope of the documented object (its members, its module's imports, then its
parents), the first dotted component first. A reStructuredText literal-block marker (``text::`` before an indented
block) is shown as Sphinx shows it, ``text:``.
"""
import ast
import html
import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const|ref):`(?P<body>[^`]+)`")
LITERAL = re.compile(r"(?P<before>[^\n]*?)[ \t]*::(?P<after>\n[ \t]*\n[ \t]+\S)")
EXPLICIT = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$")  # :func:`title <target>`


def _module(obj):
    while not obj.is_module:
        obj = obj.parent
    return obj


def _public_names(pkg):
    """``lucent_inhibit.NAME`` -> where NAME is defined, from the package's lazy export tables (``_EXPORTS``,
    ``_SUBMODULES``: its ``__getattr__`` imports them on first use, which static analysis cannot follow)."""
    table = {}
    try:
        exports = ast.literal_eval(str(pkg.members["_EXPORTS"].value))
        submodules = ast.literal_eval(str(pkg.members["_SUBMODULES"].value))
    except (KeyError, ValueError, SyntaxError):
        return table
    for module, names in exports.items():
        try:
            imports = pkg[module].imports  # a name imported from a submodule of the same name: its real path
        except KeyError:
            imports = {}
        table.update({f"{pkg.path}.{n}": imports.get(n, f"{pkg.path}.{module}.{n}") for n in names})
    table.update({f"{pkg.path}.{n}": f"{pkg.path}.{module}" for n, module in submodules.items()})
    return table


def _resolve(obj, target: str, public=None):
    """The full path of ``target`` seen from ``obj``, or None."""
    for short, full in (public or {}).items():  # li.NAME and li.objectives.NAME
        if target == short or target.startswith(short + "."):
            return full + target[len(short):]
    if target.startswith("."):
        name = target.lstrip(".")
        scope = _module(obj)
        while scope is not None:
            candidate = f"{scope.path}.{name}"
            try:
                obj.modules_collection[candidate]
                return candidate
            except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
                scope = scope.parent
        return None
    head, _, rest = target.partition(".")
    try:
        path = obj.resolve(head)
    except (griffe.NameResolutionError, griffe.AliasResolutionError, griffe.CyclicAliasError, KeyError, ValueError):
        return target if "." in target else None  # a full path (lucent_inhibit.x.y, lucent.optvis...), or nothing
    path = f"{path}.{rest}" if rest else path
    return _resolve(obj, path, public) if public and path.startswith(tuple(public)) else path


def _rewrite(obj, text: str, public) -> str:
    def replace(match):
        body = match["body"].strip()
        explicit = EXPLICIT.match(body)
        if explicit:
            title, target = explicit["title"], explicit["target"]
        else:
            target = body.lstrip("~")
            title = target.lstrip(".").rsplit(".", 1)[-1] if body.startswith("~") else target.lstrip(".")
        code = f"<code>{html.escape(title)}</code>"
        path = _resolve(obj, target.lstrip("~"), public)
        if path is None:
            return code
        return f'<autoref identifier="{html.escape(path)}" optional>{code}</autoref>'

    text = ROLE.sub(replace, text)
    # reStructuredText's literal-block marker: "text::" before an indented block reads "text:" (as Sphinx shows it)
    return LITERAL.sub(lambda m: (m["before"] + ":" if m["before"].strip() else "") + m["after"], text)


class SphinxRoles(griffe.Extension):
    """Rewrite the Sphinx roles of every docstring of the loaded package (see the module docstring)."""

    def on_package(self, *, pkg, **kwargs):
        self._walk(pkg, set(), _public_names(pkg))

    def _walk(self, obj, seen, public):
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None and ":" in obj.docstring.value:
            obj.docstring.value = _rewrite(obj, obj.docstring.value, public)
        for member in list(obj.members.values()):
            if not member.is_alias:
                self._walk(member, seen, public)
