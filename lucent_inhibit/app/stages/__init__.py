"""Stages as data: one registry of the pipeline's stages, from which the command line's sub-commands,
options and help and the report's sections are generated, so the two cannot drift apart.

Each stage module (``scan``, ``census``, ``inhibitors``, ``randomize``, ``completeness``, ``invert``, ``tense``, ``atlas``, ``combos``, ``toy``,
``demo``) defines a config dataclass (every field one ``--option`` with its help; validated in
``__post_init__`` with messages naming the option), a ``run(config, progress)`` that loads what the
config names, computes and writes the stage's files, a ``describe`` for the command line and a
``section`` writer for the report, and registers them as a :class:`Stage`. Shared configs (model,
images, feature, render settings) are in :mod:`.configs`. Importing this package does not import torch.
"""
from ..registry import STAGES, Stage, get_stage, list_stages, register
from ..runtime import shared_inputs

# the stage modules register themselves, in the order of `lucent-inhibit --help`
from . import (scan, census, inhibitors, randomize, completeness, atlas, microscope, invert, tense, combos, toy, demo)  # noqa: E402,F401  isort: skip

__all__ = ["STAGES", "Stage", "get_stage", "list_stages", "register", "shared_inputs"]
