"""The papers' claims as rules: each computes a :class:`Finding` (the claim, the number measured, a verdict
by a bar named as a module constant) from the numbers a result holds, so a notebook gets the same verdict as
the report; :func:`judge` gives the findings of any result. ``verdicts`` (the :class:`Finding` type), ``completeness``, ``scanning``, ``causal``,
``synthesis``, ``atlas``, ``combinations``, ``toy`` and ``randomization`` (one module per method of the papers).
"""
from .atlas import atlas_finding, icon_finding
from .causal import disinhibition_finding, inhibitor_finding, removal_finding
from .combinations import combination_finding, pair_finding, sweep_finding
from .completeness import completeness_finding, completeness_study_finding
from .judge import judge
from .randomization import dictionary_finding, randomization_finding, weight_dependence_finding
from .scanning import mti_finding, scan_findings
from .synthesis import inversion_finding, separation_finding, tense_finding, tension_finding
from .toy import interference_finding, toy_finding
from .verdicts import NOT_MEASURABLE, NOT_REPRODUCED, REPRODUCED, VERDICTS, Finding

__all__ = ["Finding", "NOT_MEASURABLE", "NOT_REPRODUCED", "REPRODUCED", "VERDICTS", "atlas_finding",
           "combination_finding", "completeness_finding", "completeness_study_finding", "dictionary_finding", "disinhibition_finding",
           "icon_finding", "inhibitor_finding", "interference_finding", "inversion_finding", "judge", "mti_finding", "pair_finding",
           "randomization_finding", "removal_finding", "scan_findings", "separation_finding", "sweep_finding", "tense_finding",
           "tension_finding", "toy_finding", "weight_dependence_finding"]
