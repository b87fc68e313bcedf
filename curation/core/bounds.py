"""Declared ranges of configuration values, checked where a config is built (Dagster-free).

A field of a config dataclass declares its valid range next to its type and default, in the
vocabulary of ``annotated_types`` (which pydantic reads too)::

    threshold: Annotated[float, Interval(gt=0, le=1)] = 0.8

:func:`field_problems` checks every field of a dataclass against its type and range, and the
dataclass raises :class:`InvalidConfig` from ``__post_init__`` with every problem, one line each,
so the library refuses a bad value however its config was built and the CLI can list all of them
at once. :func:`quoted` is how any value appears in such a message: at most
:data:`QUOTE_LIMIT` characters, whatever its size.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import reprlib
import typing
from collections.abc import Iterable, Sequence
from typing import Any

from annotated_types import Ge, GroupedMetadata, Gt, Le, Lt

__all__ = [
    "QUOTE_LIMIT",
    "InvalidConfig",
    "describe_range",
    "field_problems",
    "key_text",
    "quoted",
    "widen_ints",
]

#: Longest rendering of a value quoted in an error message (a config value can be any size).
QUOTE_LIMIT = 80

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = QUOTE_LIMIT
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 6
_REPR.maxlevel = 3


def quoted(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` cut to at most ``limit`` characters; only the shown part is rendered
    (``reprlib``), so quoting a huge or deeply shared value costs no more than a small one."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def key_text(key: Any) -> str:
    """A config key as written in a message: itself when a short string or integer, else
    :func:`quoted` (a YAML key can be anything, of any size)."""
    plain = isinstance(key, int | str) and not isinstance(key, bool) and len(str(key)) <= 60
    return str(key) if plain else quoted(key)


class InvalidConfig(ValueError):
    """Config values of the wrong type or outside their range: ``problems`` holds one line per
    bad value, each starting with the field's name."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


Bound = tuple[float, bool]  # (value, inclusive)


def _bounds(metadata: Iterable[Any]) -> tuple[Bound | None, Bound | None]:
    """The lower and upper bound declared by ``Ge``/``Gt``/``Le``/``Lt``/``Interval`` items."""
    lower: Bound | None = None
    upper: Bound | None = None
    for item in metadata:
        for part in item if isinstance(item, GroupedMetadata) else [item]:
            if isinstance(part, Ge):
                lower = (part.ge, True)
            elif isinstance(part, Gt):
                lower = (part.gt, False)
            elif isinstance(part, Le):
                upper = (part.le, True)
            elif isinstance(part, Lt):
                upper = (part.lt, False)
    return lower, upper


def describe_range(metadata: Iterable[Any]) -> str:
    """The declared range as text: ``>= 1``, ``in (0, 1]``; ``""`` when none is declared."""
    lower, upper = _bounds(metadata)
    if lower and upper:
        return f"in {'[' if lower[1] else '('}{lower[0]}, {upper[0]}{']' if upper[1] else ')'}"
    if lower:
        return f"{'>=' if lower[1] else '>'} {lower[0]}"
    if upper:
        return f"{'<=' if upper[1] else '<'} {upper[0]}"
    return ""


def in_range(value: float, metadata: Iterable[Any]) -> bool:
    """Whether ``value`` lies in the declared range (NaN never does)."""
    if isinstance(value, float) and math.isnan(value):
        return False
    lower, upper = _bounds(metadata)
    if lower and not (value >= lower[0] if lower[1] else value > lower[0]):
        return False
    return not (upper and not (value <= upper[0] if upper[1] else value < upper[0]))


_TYPE_NAMES = {bool: "a boolean (true/false)", int: "an integer", float: "a number"}


def _type_name(kind: Any) -> str:
    """How a field's type reads in a message: ``one of 'off', 'report', 'remove'`` for a
    ``Literal``."""
    if typing.get_origin(kind) is typing.Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(kind))
    return _TYPE_NAMES[kind]


def _right_type(value: Any, kind: Any) -> bool:
    """Strict types: ``True`` is not an integer, ``"5"`` not a number; an int is a number; a
    ``Literal`` field takes one of its values."""
    if typing.get_origin(kind) is typing.Literal:
        return any(type(value) is type(v) and value == v for v in typing.get_args(kind))
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return True  # other types are not checked here


@functools.cache
def _declared(cls: type) -> dict[str, tuple[type, tuple[Any, ...]]]:
    """``{field: (type, range metadata)}`` of the dataclass ``cls``."""
    hints = typing.get_type_hints(cls, include_extras=True)
    out = {}
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if typing.get_origin(hint) is typing.Annotated:
            kind, *metadata = typing.get_args(hint)
            out[field.name] = (kind, tuple(metadata))
        else:
            out[field.name] = (hint, ())
    return out


def widen_ints(config: Any) -> None:
    """Store an integer given for a ``float`` field of the frozen dataclass ``config`` as a float
    (``threshold: 1`` is ``1.0``), so a config serializes the same whichever was written."""
    for name, (kind, _) in _declared(type(config)).items():
        value = getattr(config, name)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(config, name, float(value))


def field_problems(config: Any) -> dict[str, str]:
    """``{field: problem}`` for every field of the dataclass instance ``config`` whose value is
    not of its declared type or outside its declared range; empty when all are valid."""
    problems = {}
    for name, (kind, metadata) in _declared(type(config)).items():
        value = getattr(config, name)
        if not _right_type(value, kind):
            problems[name] = f"{name}: {quoted(value)} is not {_type_name(kind)}"
        elif kind in (int, float) and not in_range(value, metadata):
            problems[name] = (
                f"{name}: {quoted(value)} is out of range: must be {describe_range(metadata)}"
            )
    return problems
