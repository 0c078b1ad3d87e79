"""A finding: one claim of the papers, the number measured in a run and a verdict computed from it.

The verdict is one of :data:`VERDICTS`, never written by hand: each rule in :mod:`lucent_inhibit.findings`
computes it from measured numbers against a bar named as a module constant.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, Optional

from ..core.validate import check_choice

REPRODUCED = "reproduced"


#: The numbers were measured, and the stated rule says the claim does not hold here.
NOT_REPRODUCED = "not reproduced on this model"


#: The number the rule needs could not be measured in this run (too few images, an undefined ratio, ...).
NOT_MEASURABLE = "not measurable here"


VERDICTS = (REPRODUCED, NOT_REPRODUCED, NOT_MEASURABLE)


@dataclass
class Finding:
    """One claim of the papers (Hamblin et al.) tested in a run.

    Attributes:
        claim: what the paper says, in one sentence.
        measured: the number(s) measured here, as text with their units.
        verdict: one of :data:`VERDICTS`, computed by the stage from ``measured`` (never written by hand).
        why: the rule and bar that decided the verdict, or what was missing to measure it.
    """

    claim: str
    measured: str
    verdict: str
    why: str = ""

    def __post_init__(self):
        check_choice("Finding verdict", self.verdict, VERDICTS)

    @classmethod
    def judge(cls, claim: str, measured: str, ok: Optional[bool], why: str) -> "Finding":
        """The finding whose verdict is :data:`REPRODUCED` when ``ok``, :data:`NOT_REPRODUCED` when not,
        and :data:`NOT_MEASURABLE` when ``ok`` is None."""
        verdict = NOT_MEASURABLE if ok is None else REPRODUCED if ok else NOT_REPRODUCED
        return cls(claim, measured, verdict, why)

    def to_dict(self) -> Dict[str, str]:
        return dataclasses.asdict(self)
