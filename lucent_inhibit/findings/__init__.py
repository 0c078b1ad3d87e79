"""The papers' claims as rules: each computes a :class:`Finding` (the claim, the number measured, a verdict
by a bar named as a module constant) from the numbers a result holds, so a notebook gets the same verdict as
the report. ``verdicts`` (the :class:`Finding` type), ``completeness``, ``scanning``, ``causal``,
``synthesis``, ``atlas``, ``combinations`` and ``toy`` (one module per method of the papers).
"""
from .atlas import icon_finding
from .causal import disinhibition_finding, removal_finding
from .combinations import combination_finding
from .completeness import completeness_finding, completeness_study_finding
from .scanning import mti_finding
from .synthesis import separation_finding, tension_finding
from .toy import interference_finding
from .verdicts import NOT_MEASURABLE, NOT_REPRODUCED, REPRODUCED, VERDICTS, Finding

__all__ = ["Finding", "NOT_MEASURABLE", "NOT_REPRODUCED", "REPRODUCED", "VERDICTS", "combination_finding",
           "completeness_finding", "completeness_study_finding", "disinhibition_finding", "icon_finding",
           "interference_finding", "mti_finding", "removal_finding", "separation_finding", "tension_finding"]
