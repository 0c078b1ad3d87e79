"""MkDocs hooks of the API reference site (mkdocs.yml ``hooks:``).

- The demo notebooks are read where they live, ``demos/*.ipynb``, and published under ``demos/`` (rendered
  by mkdocs-jupyter, not executed): no copy of them is kept in ``docs/``.
- ``<!-- cli-help -->`` in a page becomes the ``--help`` of the command line and of every stage, generated from
  the stage registry (the same parser ``lucent-inhibit`` runs; no torch import), so the page cannot drift. A
  description taken from a docstring reads as plain text there: a Sphinx role shows its target's name (the last
  part after ``~``), a ``literal`` its text.
"""
import contextlib
import glob
import io
import os
import re

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = "<!-- cli-help -->"
ROLE = re.compile(r":(?:py:)?[a-z]+:`(?P<tilde>~?)\.?(?P<body>[^`]+)`")
LITERAL = re.compile(r"``(?P<body>[^`]+)``")


@event_priority(100)  # before mkdocs-jupyter's on_files, which turns .ipynb files into notebook pages
def on_files(files, config):
    # a File whose source folder is the repository (not File.generated: mkdocs-jupyter's wrapper of a File reads
    # the source path from src_dir and would lose a generated file's), so the pages are demos/NAME.html
    for path in sorted(glob.glob(os.path.join(ROOT, "demos", "*.ipynb"))):
        files.append(File(os.path.relpath(path, ROOT), src_dir=ROOT, dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    return files


def _help(parser, argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        parser.parse_args(argv + ["--help"])
    text = ROLE.sub(lambda m: m["body"].rsplit(".", 1)[-1] if m["tilde"] else m["body"], out.getvalue().rstrip())
    return LITERAL.sub(lambda m: m["body"], text)


def on_page_markdown(markdown, page, config, files):
    if MARKER not in markdown:
        return markdown
    os.environ["COLUMNS"] = "110"  # argparse wraps at the terminal's width: fix it for a stable page
    from lucent_inhibit.app.cli import build_parser
    from lucent_inhibit.app.registry import list_stages

    parser = build_parser()
    parts = ["```text", "$ lucent-inhibit --help", _help(parser, []), "```"]
    for name in list_stages():
        parts += ["", f"### `lucent-inhibit {name}`", "", "```text", _help(parser, [name]), "```"]
    return markdown.replace(MARKER, "\n".join(parts))
