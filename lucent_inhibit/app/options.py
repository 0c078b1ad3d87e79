"""Options as data: config dataclass fields that carry their own help, flag and choices.

A stage config is a ``@dataclass`` whose fields are made with :func:`option` (one value) or
:func:`group` (a nested shared config such as :class:`~lucent_inhibit.app.configs.ModelConfig`).
The command line (:mod:`lucent_inhibit.app.cli`) turns every field into one ``--flag`` with the field's help;
:func:`flag` gives the same spelling to the validation messages in ``__post_init__``, so an error names
the option the user typed. Nothing here imports torch.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import MISSING, Field
from typing import Any, Dict, Iterator, Optional, Tuple

#: The default of an option that must be given.
REQUIRED = MISSING
#: The largest value of any integer option (numpy's seed range, 2**32 - 1): a larger count, size or seed
#: is a typo or an overflow and is refused naming the option before any work. Configs check their own,
#: tighter bounds (``validate.MAX_STEPS``, ``MAX_SIDE``, ``MAX_IMAGES``, ...) in ``__post_init__``.
MAX_INT_OPTION = 2 ** 32 - 1


def option(default=REQUIRED, help: str = "", *, flag: Optional[str] = None, metavar: Optional[str] = None,
           hidden: bool = False) -> Any:
    """A config field with help text; ``flag`` overrides the spelling ``--field-name``.

    ``hidden`` keeps the field out of the command line (a stage sets it from other options).
    Booleans with default False become ``--flag`` switches; a boolean with default True needs a
    ``flag`` such as ``"--no-resume"`` that switches it off.
    """
    meta = {"help": help, "flag": flag, "metavar": metavar, "hidden": hidden}
    return dataclasses.field(default=default, metadata=meta)


def group(cls, **defaults) -> Any:
    """A nested shared config (its fields become options of the stage), with stage-specific defaults."""
    return dataclasses.field(default_factory=lambda: cls(**defaults), metadata={"group": cls})


def flag(cls, name: str) -> str:
    """The command-line spelling of field ``name`` of config class ``cls``."""
    f = cls.__dataclass_fields__[name]
    return f.metadata.get("flag") or "--" + name.replace("_", "-")


def default_of(f: Field):
    """A field's default value (``REQUIRED`` when it has none)."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return REQUIRED


class Option(typing.NamedTuple):
    """One command-line option of a config: where its value goes and how it is parsed."""

    path: Tuple[str, ...]  # field names from the stage config down to this field
    flag: str
    type: Any  # resolved annotation
    default: Any
    help: str
    metavar: Optional[str]
    owner: type  # the config class that declares the field


def options(cls, defaults=None, path: Tuple[str, ...] = ()) -> Iterator[Option]:
    """Every visible option of config class ``cls`` (groups expanded), in declaration order."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("hidden"):
            continue
        default = getattr(defaults, f.name) if defaults is not None else default_of(f)
        if "group" in f.metadata:
            yield from options(f.metadata["group"], default, path + (f.name,))
            continue
        yield Option(path + (f.name,), flag(cls, f.name), hints[f.name], default, f.metadata.get("help", ""),
                     f.metadata.get("metavar"), cls)


def base_type(tp) -> Tuple[Any, bool]:
    """``(X, optional)`` for ``Optional[X]`` / ``X``."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Union and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def build(cls, values: Dict[Tuple[str, ...], Any]):
    """Construct config ``cls`` from option values keyed by :attr:`Option.path` (missing keys: defaults).

    A group starts from the stage's default instance of it (so hidden fields keep the stage's values);
    each config's ``__post_init__`` validates its own fields and names the option in its message. Every
    integer value is first checked to be at most :data:`MAX_INT_OPTION` (``InputError`` naming the option).
    """
    check_int_options(cls, values)
    kwargs: Dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if "group" in f.metadata:
            inner = {k[1]: v for k, v in values.items() if len(k) == 2 and k[0] == f.name}
            kwargs[f.name] = dataclasses.replace(default_of(f), **inner)
        elif (f.name,) in values:
            kwargs[f.name] = values[(f.name,)]
    return cls(**kwargs)


def check_int_options(cls, values: Dict[Tuple[str, ...], Any]) -> None:
    """``InputError`` naming the flag when an integer option of ``cls`` (``int``, ``Optional[int]`` or a
    tuple of ints) in ``values`` is above :data:`MAX_INT_OPTION`."""
    from ..core.validate import check_int

    for opt in options(cls):
        tp, _ = base_type(opt.type)
        args = typing.get_args(tp) if typing.get_origin(tp) in (tuple, list) else (tp,)
        value = values.get(opt.path)
        if value is None or int not in args or choices_of(opt.type) is not None:
            continue
        for v in (value if isinstance(value, (tuple, list)) else (value,)):
            if isinstance(v, int) and not isinstance(v, bool):
                check_int(opt.flag, v, high=MAX_INT_OPTION)


def choices_of(tp) -> Optional[Tuple[Any, ...]]:
    """The allowed values of a ``Literal[...]`` (or ``Optional[Literal[...]]``) annotation, else None."""
    tp, _ = base_type(tp)
    return typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else None


def check_paths(obj) -> None:
    """``InputError`` naming the option when a path field of ``obj`` (its metavar is ``DIR`` or ``FILE``; one
    path or a tuple of them) has a component longer than the file system takes
    (:func:`~lucent_inhibit.core.validate.check_path_length`)."""
    from ..core.validate import check_path_length

    for f in dataclasses.fields(obj):
        if f.metadata.get("metavar") in ("DIR", "FILE"):
            value = getattr(obj, f.name)
            for path in value if isinstance(value, (tuple, list)) else (value,):
                check_path_length(flag(type(obj), f.name), path)


def check_choices(obj) -> None:
    """``ValueError`` naming the option when a ``Literal``-typed field of ``obj`` holds another value."""
    from ..core.validate import check_choice

    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        allowed = choices_of(hints[f.name])
        value = getattr(obj, f.name)
        if allowed is not None and not (value is None and base_type(hints[f.name])[1]):
            check_choice(flag(type(obj), f.name), value, allowed)
