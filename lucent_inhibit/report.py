"""The main job: every method of the papers on one model, written as a browsable report.

:func:`run_demo` runs, with tqdm progress for every stage, the completeness study, a scan with its
MEI/MII/MTI figures, +/- inversions and accentuations of the top MTIs, a synthesised maximally tense
image, an attribution atlas (PNG and interactive HTML), one feature-combination plot and the
superposition toy figure, then writes ``index.html`` that links every figure with a paragraph on what
it shows and a table of the numbers measured in the run.

The report is built in a temporary folder beside ``out`` and moved into place only when every stage
succeeded, so a failed run never leaves a half-written report.
"""
from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple


@dataclass
class Section:
    """One report entry: a title, files (figures are shown, others linked) and what they show."""

    title: str
    text: str
    figures: List[str] = field(default_factory=list)
    links: List[str] = field(default_factory=list)


@dataclass
class Report:
    """Sections plus a table of measured numbers ``(name, value, note)``."""

    title: str
    intro: str
    sections: List[Section] = field(default_factory=list)
    numbers: List[Tuple[str, str, str]] = field(default_factory=list)
    settings: Dict[str, str] = field(default_factory=dict)

    def add_number(self, name: str, value, note: str = "") -> None:
        if isinstance(value, float):
            value = f"{value:.4g}"
        self.numbers.append((name, str(value), note))

    def to_html(self) -> str:
        e = html.escape
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{e(self.title)}</title>",
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
            "img{max-width:100%;border:1px solid #ddd;margin:.5em 0}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}h2{margin-top:2em}"
            "nav a{margin-right:1em}</style>",
            "</head><body>",
            f"<h1>{e(self.title)}</h1>",
            f"<p>{e(self.intro)}</p>",
            "<nav>" + "".join(f'<a href="#s{i}">{e(s.title)}</a>' for i, s in enumerate(self.sections)) + "</nav>",
        ]
        if self.settings:
            parts.append("<h2>Settings</h2><table>")
            parts += [f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in self.settings.items()]
            parts.append("</table>")
        for i, s in enumerate(self.sections):
            parts.append(f'<h2 id="s{i}">{e(s.title)}</h2>')
            parts.append(f"<p>{e(s.text)}</p>")
            for fig in s.figures:
                parts.append(f'<a href="{e(fig)}"><img src="{e(fig)}" alt="{e(s.title)}"></a>')
            if s.links:
                parts.append(
                    "<p>Files: " + ", ".join(f'<a href="{e(l)}">{e(os.path.basename(l))}</a>' for l in s.links) + "</p>"
                )
        parts.append('<h2 id="numbers">Numbers measured in this run</h2><table>')
        parts.append("<tr><th>quantity</th><th>value</th><th>what it means</th></tr>")
        parts += [f"<tr><td>{e(n)}</td><td>{e(v)}</td><td>{e(note)}</td></tr>" for n, v, note in self.numbers]
        parts.append("</table></body></html>")
        return "\n".join(parts)

    def write(self, folder: str) -> str:
        path = os.path.join(folder, "index.html")
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_html())
        with open(os.path.join(folder, "numbers.json"), "w") as f:
            json.dump({n: v for n, v, _ in self.numbers}, f, indent=1)
        return path

    def missing_files(self, folder: str) -> List[str]:
        """Files the page refers to that do not exist under ``folder``."""
        refs = [p for s in self.sections for p in s.figures + s.links]
        return [p for p in refs if not os.path.exists(os.path.join(folder, p))]


class StagingDir:
    """Build output in a temporary sibling folder; move it onto ``out`` only on success.

    On failure the temporary folder is removed and ``out`` is left as it was.
    """

    def __init__(self, out: str):
        self.out = os.path.abspath(out)
        self.tmp: Optional[str] = None

    def __enter__(self) -> str:
        parent = os.path.dirname(self.out) or "."
        os.makedirs(parent, exist_ok=True)
        self.tmp = tempfile.mkdtemp(prefix=".partial-" + os.path.basename(self.out) + "-", dir=parent)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        if os.path.exists(self.out):
            old = self.out + f".old-{int(time.time())}"
            os.replace(self.out, old)
            os.replace(self.tmp, self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.out)
        return False
