"""Row-level validation rules with stable reason codes, evaluated vectorized over whole tables.

Each rule maps a table of parsed source rows to a boolean mask (True = the row breaks the rule).
A rule's level decides what happens: ``error`` quarantines the row, ``warn`` only counts it,
``off`` skips it. Parse failures (``invalid_json`` etc.) are always errors: such a row has no
fields to curate.

Declarations and checks are linked, not only named alike: every format's rules (declared in its
dataset's module, :mod:`curation.datasets`) form a :class:`RuleFamily` with the one function computing their masks, and each call checks that the
masks are exactly the family's rules that apply to the table (a rule applies when the table has
every column it declares, so the PKU v0 layout legitimately skips the severity, harm-category
and sha256 rules). Parse failures become verdicts through :func:`parse_failure`, which refuses a
code :data:`PARSE_RULES` does not declare.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from curation.core.bounds import InvalidConfig, key_text, quoted

ERROR, WARN, OFF = "error", "warn", "off"
LEVELS = (ERROR, WARN, OFF)


@dataclass(frozen=True)
class Rule:
    """A reason code, its default level, what it means and the input columns it reads."""

    code: str
    default: str
    description: str
    #: Columns the rule reads; a table without one of them skips the rule (PKU v0 layout).
    columns: tuple[str, ...] = ()

    def applies_to(self, columns: Collection[str]) -> bool:
        """Whether a table with ``columns`` has every column this rule reads."""
        return set(self.columns) <= set(columns)


PARSE_RULES = (
    Rule("invalid_utf8", ERROR, "line is not valid UTF-8"),
    Rule("invalid_json", ERROR, "line is not valid JSON"),
    Rule("not_an_object", ERROR, "line is JSON but not an object"),
    Rule("missing_field", ERROR, "a required field is absent or null"),
    Rule("wrong_type", ERROR, "a field has the wrong JSON type"),
    Rule("int_out_of_range", ERROR, "an integer does not fit its column type (e.g. above 2^63-1)"),
    Rule("duplicate_key", ERROR, "an object gives the same key twice"),
    Rule("non_finite_number", ERROR, "NaN or Infinity where a JSON number is expected"),
    Rule("schema_variant_mismatch", ERROR, "a PKU row in the other layout than most of its file"),
    Rule("unknown_harm_category", ERROR, "a PKU harm-category key outside the 19 known names"),
    Rule("conflicting_fields", ERROR, "both spellings of a red-team field, with different values"),
    Rule("missing_role", ERROR, "a TRL message has no role"),
    Rule("unknown_role", ERROR, "a TRL message role other than user, assistant or system"),
    Rule(
        "response_not_assistant",
        ERROR,
        "a TRL chosen or rejected response is not one final assistant message",
    ),
    Rule(
        "mixed_forms",
        ERROR,
        "a TRL row in another form (standard or conversational, explicit or implicit prompt) "
        "than most of its file",
    ),
)
PARSE_CODES = frozenset(r.code for r in PARSE_RULES)


class RuleMismatchError(RuntimeError):
    """A check produced a reason code its rules do not declare, or a declared rule got no check."""


def parse_failure(code: str) -> str:
    """``code`` when :data:`PARSE_RULES` declares it; a line failing to parse for an undeclared
    reason raises :class:`RuleMismatchError` (where the verdict is recorded)."""
    if code not in PARSE_CODES:
        raise RuleMismatchError(f"parse failure {code!r} is not declared in PARSE_RULES")
    return code


Masks = dict[str, np.ndarray]


@dataclass(frozen=True)
class RuleFamily:
    """The rules of one source format and the one vectorized function that evaluates them.

    Calling the family evaluates the masks and checks them against the declarations: a mask for
    a code the family does not declare, a declared rule that applies to the table (see
    :meth:`Rule.applies_to`) but got no mask, a mask for a rule that does not apply, or a mask
    of the wrong length raise :class:`RuleMismatchError`. The masks keep the function's order
    (the order of the reason codes in a row's verdict).
    """

    kind: str
    rules: tuple[Rule, ...]
    evaluate: Callable[[pa.Table], Masks]

    def applicable(self, columns: Collection[str]) -> list[str]:
        """Codes of the rules that apply to a table with ``columns``."""
        return [r.code for r in self.rules if r.applies_to(columns)]

    def skipped(self, columns: Collection[str]) -> list[str]:
        """Codes of the rules a table with ``columns`` skips (it lacks a column they read)."""
        return [r.code for r in self.rules if not r.applies_to(columns)]

    def __call__(self, table: pa.Table) -> Masks:
        masks = self.evaluate(table)
        self.check(masks, table)
        return masks

    def check(self, masks: Mapping[str, np.ndarray], table: pa.Table) -> None:
        """Raise :class:`RuleMismatchError` unless ``masks`` are exactly the applicable rules'."""
        expected = set(self.applicable(table.column_names))
        declared = {r.code for r in self.rules}
        problems = [
            *(f"{c!r} has a mask but no declared rule" for c in sorted(set(masks) - declared)),
            *(f"{c!r} is declared but has no mask" for c in sorted(expected - set(masks))),
            *(
                f"{c!r} has a mask but the table lacks a column it declares"
                for c in sorted((set(masks) & declared) - expected)
            ),
            *(
                f"{c!r} mask has {len(m)} entries for {table.num_rows} rows"
                for c, m in masks.items()
                if len(m) != table.num_rows
            ),
        ]
        if problems:
            raise RuleMismatchError(f"{self.kind} rules: " + "; ".join(problems))


def all_rules(families: Iterable[RuleFamily]) -> dict[str, Rule]:
    """The parse rules and the rules of ``families`` by reason code (a code several families
    declare is one entry: the last declaration)."""
    return {r.code: r for r in (*PARSE_RULES, *(r for f in families for r in f.rules))}


def default_levels(known: Mapping[str, Rule]) -> dict[str, str]:
    """The default level of every reason code of ``known``."""
    return {code: rule.default for code, rule in known.items()}


def resolve_levels(
    overrides: Mapping[str, str] | None, known: Mapping[str, Rule]
) -> dict[str, str]:
    """Default levels of the ``known`` rules with ``overrides`` applied; unknown codes or levels
    raise :class:`~curation.core.bounds.InvalidConfig` listing every bad entry, one line each
    (the rules of the registered datasets: :func:`curation.datasets.resolve_levels`)."""
    levels = default_levels(known)
    problems = []
    for code, level in (overrides or {}).items():
        if code not in known:
            problems.append(f"{key_text(code)}: unknown rule; known: {sorted(known)}")
        elif level not in LEVELS:
            problems.append(f"{code}: level {quoted(level)} is not one of {LEVELS}")
        elif code in PARSE_CODES and level != ERROR:
            problems.append(f"{code}: a parse failure is always an error, not {quoted(level)}")
        else:
            levels[code] = level
    if problems:
        raise InvalidConfig(problems)
    return levels


def np_values(array: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A column as a numpy array."""
    return np.asarray(array.to_numpy(zero_copy_only=False))


def blank(array: pa.ChunkedArray) -> np.ndarray:
    """Where a string is empty or whitespace."""
    return np_values(pc.equal(pc.utf8_trim_whitespace(array), "")).astype(bool)


def has_columns(table: pa.Table, columns: Collection[str]) -> bool:
    """Whether ``table`` has every one of ``columns``."""
    return set(columns) <= set(table.column_names)


def reasons_by_level(
    masks: Mapping[str, np.ndarray], levels: Mapping[str, str], n: int
) -> tuple[pa.Array, pa.Array]:
    """Per-row lists of error codes and of warning codes, as Arrow ``list<string>`` arrays."""
    frame = pl.DataFrame({code: mask for code, mask in masks.items()}, height=n)

    def collect(level: str) -> pa.Array:
        codes = [code for code in masks if levels.get(code, ERROR) == level]
        if not codes:
            return pa.array([[] for _ in range(n)], pa.list_(pa.string()))
        lists = frame.select(
            pl.concat_list([pl.when(pl.col(c)).then(pl.lit(c)) for c in codes]).list.drop_nulls()
        ).to_series()
        return lists.to_arrow().cast(pa.list_(pa.string()))

    return collect(ERROR), collect(WARN)
