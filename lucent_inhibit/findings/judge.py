"""One entry point to every finding: :func:`judge` gives the findings of any result the papers make a claim
about, with the same rules and bars as the report (usable from a notebook, without the command line)."""
from __future__ import annotations

from typing import List

from .atlas import atlas_finding
from .causal import disinhibition_finding, inhibitor_finding
from .combinations import sweep_finding
from .completeness import completeness_study_finding
from .randomization import dictionary_finding, randomization_finding
from .scanning import scan_findings
from .synthesis import inversion_finding, tense_finding
from .toy import toy_finding
from .verdicts import Finding

#: result type -> its findings
RULES = {
    "ScanResult": scan_findings,
    "CompletenessResult": lambda r: [completeness_study_finding(r)],
    "Disinhibition": lambda r: [disinhibition_finding(r)],
    "InhibitorDictionary": lambda r: [inhibitor_finding(r)],
    "RandomizationCascade": lambda r: [randomization_finding(r), dictionary_finding(r)],
    "InversionResult": lambda r: [inversion_finding(r)],
    "TenseResult": lambda r: [tense_finding(r)],
    "Atlas": lambda r: [atlas_finding(r)],
    "CombinationResult": lambda r: [sweep_finding(r)],
    "ToyAnalysis": lambda r: [toy_finding(r)],
}


def judge(result) -> List[Finding]:
    """The :class:`Finding` s of ``result`` (a scan, completeness study, disinhibition, inhibitor dictionary,
    inversion (or a list of inversions, one render pair each), tense synthesis, atlas, combination sweep or toy
    analysis): each claim of the papers it tests, the number measured and the verdict.
    ``ValueError`` naming the types with findings for anything else."""
    if isinstance(result, (list, tuple)) and result and all(type(r).__name__ == "InversionResult" for r in result):
        return [inversion_finding(result)]
    kind = type(result).__name__
    if kind not in RULES:
        raise ValueError(f"no finding is defined for a {kind}; findings exist for {', '.join(sorted(RULES))}")
    return RULES[kind](result)
