"""The report page: sections of figures and files, the findings (claim, number measured, verdict) and the
table of numbers, written as ``index.html``, ``numbers.json`` and ``findings.json``
(:func:`lucent_inhibit.app.stages.demo.run_demo` fills it; each stage's ``section`` writes its part).
"""
from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from ..findings.verdicts import NOT_MEASURABLE, NOT_REPRODUCED, REPRODUCED, Finding

_COLOURS = {REPRODUCED: "#1a7f37", NOT_REPRODUCED: "#b42318", NOT_MEASURABLE: "#6e6e6e"}


@dataclass
class Section:
    """One report entry: a title, files (figures are shown, others linked), what they show, and the
    :class:`Finding` s of the claims the section tests."""

    title: str
    text: str
    figures: List[str] = field(default_factory=list)
    links: List[str] = field(default_factory=list)
    findings: List[Finding] = field(default_factory=list)


def _verdict_cell(f: Finding) -> str:
    return f'<td class="verdict" style="color:{_COLOURS[f.verdict]};font-weight:bold">{html.escape(f.verdict)}</td>'


def _findings_table(rows: List[Tuple[str, Finding]], why: bool) -> List[str]:
    """HTML rows ``(where, finding)``: a column for ``where`` when it is given, the why column when ``why``."""
    e, where = html.escape, any(w for w, _ in rows)
    head = ("<th>section</th>" if where else "") + "<th>claim</th><th>measured here</th><th>verdict</th>"
    parts = ['<table class="findings">', f"<tr>{head}{'<th>why</th>' if why else ''}</tr>"]
    for w, f in rows:
        parts.append("<tr>" + (f"<td>{e(w)}</td>" if where else "") + f"<td>{e(f.claim)}</td><td>{e(f.measured)}</td>"
                     + _verdict_cell(f) + (f"<td>{e(f.why)}</td>" if why else "") + "</tr>")
    return parts + ["</table>"]


@dataclass
class Report:
    """Sections (each with its findings) plus a table of measured numbers ``(name, value, note)``."""

    title: str
    intro: str
    sections: List[Section] = field(default_factory=list)
    numbers: List[Tuple[str, str, str]] = field(default_factory=list)
    settings: Dict[str, str] = field(default_factory=dict)

    def add_number(self, name: str, value, note: str = "") -> None:
        if isinstance(value, float):
            value = f"{value:.4g}"
        self.numbers.append((name, str(value), note))

    @property
    def findings(self) -> List[Tuple[str, Finding]]:
        """``(section title, finding)`` for every section's findings, in report order."""
        return [(s.title, f) for s in self.sections for f in s.findings]

    def to_html(self) -> str:
        e = html.escape
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{e(self.title)}</title>",
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
            "img{max-width:100%;border:1px solid #ddd;margin:.5em 0}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}h2{margin-top:2em}"
            "nav a{margin-right:1em}table.findings td{vertical-align:top}</style>",
            "</head><body>",
            f"<h1>{e(self.title)}</h1>",
            f"<p>{e(self.intro)}</p>",
            "<nav>" + "".join(f'<a href="#s{i}">{e(s.title)}</a>' for i, s in enumerate(self.sections)) + "</nav>",
        ]
        if self.findings:
            parts.append('<h2 id="findings">Findings</h2>')
            parts += _findings_table(self.findings, why=False)
        if self.settings:
            parts.append("<h2>Settings</h2><table>")
            parts += [f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in self.settings.items()]
            parts.append("</table>")
        for i, s in enumerate(self.sections):
            parts.append(f'<h2 id="s{i}">{e(s.title)}</h2>')
            parts.append(f"<p>{e(s.text)}</p>")
            if s.findings:
                parts += _findings_table([("", f) for f in s.findings], why=True)
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
        with open(os.path.join(folder, "findings.json"), "w") as f:
            json.dump([{"section": t, **x.to_dict()} for t, x in self.findings], f, indent=1)
        return path

    def missing_files(self, folder: str) -> List[str]:
        """Files the page refers to that do not exist under ``folder``."""
        refs = [p for s in self.sections for p in s.figures + s.links]
        return [p for p in refs if not os.path.exists(os.path.join(folder, p))]
