"""The registry of stages: one :class:`Stage` record per step of the papers' pipeline.

The command line builds one sub-command per registered stage (options from its config dataclass,
help from its texts), and the report (:func:`lucent_inhibit.app.stages.demo.run_demo`) runs the same stages
with the same defaults and asks each for its section. Registering is done by the stage modules of
this package at import (``STAGE = register(Stage(...))``), in the style of timm's model registry.
"""
from __future__ import annotations

import difflib
import inspect
import sys
from dataclasses import dataclass, is_dataclass
from typing import Any, Callable, Dict, List, Optional


@dataclass(frozen=True)
class Stage:
    """One stage.

    Attributes:
        name: the sub-command (``lucent-inhibit NAME``).
        help: one line for the list of sub-commands.
        description: what the stage computes and which files it writes (its ``--help`` text).
        config: the config dataclass; every visible field is one option.
        run: ``run(config, progress) -> result``: loads what the config names, computes, writes the
            stage's files to ``config.out`` and returns the result.
        describe: ``describe(result, config) -> [line, ...]``: what the command line prints.
        section: ``section(runs, root) -> (Section, numbers)``: the report's section for the runs
            ``[(config, result), ...]`` whose files lie under ``root``; ``numbers`` are
            ``(name, value, note)`` rows of the report's table. None for stages not in the report.
    """

    name: str
    help: str
    description: str
    config: type
    run: Callable[..., Any]
    describe: Callable[[Any, Any], List[str]]
    section: Optional[Callable[..., Any]] = None

    def __post_init__(self):
        if not self.name.isidentifier() or not self.name.islower():
            raise ValueError(f"stage name must be a lower-case identifier, got {self.name!r}")
        if not is_dataclass(self.config):
            raise TypeError(f"stage {self.name!r}: config must be a dataclass, got {self.config!r}")
        if not self.help or "\n" in self.help:
            raise ValueError(f"stage {self.name!r}: help must be one non-empty line")


#: name -> Stage, in registration order (the order of ``lucent-inhibit --help``).
STAGES: Dict[str, Stage] = {}


def register(stage: Stage) -> Stage:
    """Add ``stage`` to :data:`STAGES`; a second stage of the same name is refused."""
    if stage.name in STAGES:
        raise ValueError(f"a stage named {stage.name!r} is already registered")
    STAGES[stage.name] = stage
    return stage


def register_module(module_name: str, config: type, help: str) -> Stage:
    """Register the stage a module of this package defines by convention: the stage is named after the
    module, its ``description`` is the module docstring (its first line ``Stage ``name``: ...`` dropped),
    and ``run``, ``describe`` and ``section`` (optional) are the module's functions of those names."""
    module = sys.modules[module_name]
    doc = inspect.cleandoc(module.__doc__ or "")
    description = " ".join(p.replace("\n", " ") for p in doc.split("\n\n")[1:]).strip()
    return register(Stage(
        name=module_name.rsplit(".", 1)[-1], help=help, description=description or doc, config=config,
        run=module.run, describe=module.describe, section=getattr(module, "section", None),
    ))


def get_stage(name: str) -> Stage:
    """The registered stage ``name``; ``ValueError`` listing the stages (closest first) otherwise."""
    if name not in STAGES:
        close = difflib.get_close_matches(str(name), list(STAGES), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}.{hint}")
    return STAGES[name]


def list_stages() -> List[str]:
    return list(STAGES)
