"""Row-level validation rules with stable reason codes, evaluated vectorized over whole tables.

Each rule maps a table of parsed source rows to a boolean mask (True = the row breaks the rule).
A rule's level decides what happens: ``error`` quarantines the row, ``warn`` only counts it,
``off`` skips it. Parse failures (``invalid_json`` etc.) are always errors: such a row has no
fields to curate.

Declarations and checks are linked, not only named alike: every format's rules form a
:class:`RuleFamily` with the one function computing their masks, and each call checks that the
masks are exactly the family's rules that apply to the table (a rule applies when the table has
every column it declares, so the PKU v0 layout legitimately skips the severity, harm-category
and sha256 rules). Parse failures become verdicts through :func:`parse_failure`, which refuses a
code :data:`PARSE_RULES` does not declare.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from curation import hh
from curation.bounds import InvalidConfig, key_text, quoted
from curation.schema import HARM_CATEGORIES, SEVERITY_LEVELS

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


_HH = ("chosen", "rejected")
_TRANSCRIPT = ("transcript",)
_RESPONSES = ("response_0", "response_1")
_IDS = ("better_response_id", "safer_response_id")
_SAFE = ("is_response_0_safe", "is_response_1_safe")
#: PKU label columns of the current layout only (absent in v0, see :mod:`curation.pku`).
PKU_SEVERITY = ("response_0_severity_level", "response_1_severity_level")
PKU_HARM = ("response_0_harm_category", "response_1_harm_category")
PKU_SHA256 = ("response_0_sha256", "response_1_sha256")

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
)
HH_RULES = (
    Rule(
        "bad_turn_order",
        ERROR,
        "transcript must start with Human, alternate, end with Assistant",
        _HH,
    ),
    Rule(
        "context_mismatch",
        ERROR,
        "chosen and rejected differ before the final Assistant turn",
        _HH,
    ),
    Rule("empty_response", ERROR, "final chosen or rejected response is empty or whitespace", _HH),
    Rule("identical_responses", ERROR, "chosen and rejected responses are identical", _HH),
)
PKU_RULES = (
    Rule("empty_prompt", ERROR, "prompt is empty or whitespace", ("prompt",)),
    Rule("empty_response", ERROR, "response_0 or response_1 is empty or whitespace", _RESPONSES),
    Rule("identical_responses", ERROR, "response_0 equals response_1", _RESPONSES),
    Rule("bad_response_id", ERROR, "better_response_id or safer_response_id not in {0, 1}", _IDS),
    Rule("bad_severity", ERROR, "a severity level outside 0..3", PKU_SEVERITY),
    Rule(
        "sha256_mismatch",
        ERROR,
        "response_N_sha256 != sha256(prompt + response_N)",
        ("prompt", *_RESPONSES, *PKU_SHA256),
    ),
    Rule(
        "safe_with_severity",
        ERROR,
        "a response flagged safe has severity > 0",
        (*_SAFE, *PKU_SEVERITY),
    ),
    Rule(
        "safe_with_harm_category",
        ERROR,
        "a response flagged safe has a harm category set",
        (*_SAFE, *PKU_HARM),
    ),
    Rule(
        "unsafe_without_harm",
        ERROR,
        "a response flagged unsafe has severity 0 or no harm category",
        (*_SAFE, *PKU_SEVERITY, *PKU_HARM),
    ),
    Rule(
        "safer_contradicts_flags",
        ERROR,
        "exactly one response is safe but safer_response_id points at the other",
        (*_SAFE, *_IDS),
    ),
    Rule(
        "safer_has_higher_severity",
        WARN,
        "both responses unsafe and the 'safer' one has the higher severity",
        (*_SAFE, *_IDS, *PKU_SEVERITY),
    ),
)
RED_TEAM_RULES = (
    Rule("bad_turn_order", ERROR, "transcript must start with Human and alternate", _TRANSCRIPT),
)

ALL_RULES: dict[str, Rule] = {
    r.code: r for r in (*PARSE_RULES, *HH_RULES, *PKU_RULES, *RED_TEAM_RULES)
}
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


def default_levels() -> dict[str, str]:
    """The default level of every reason code."""
    return {code: rule.default for code, rule in ALL_RULES.items()}


def resolve_levels(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """Default levels with ``overrides`` applied; unknown codes or levels raise
    :class:`~curation.bounds.InvalidConfig` listing every bad entry, one line each."""
    levels = default_levels()
    problems = []
    for code, level in (overrides or {}).items():
        if code not in ALL_RULES:
            problems.append(f"{key_text(code)}: unknown rule; known: {sorted(ALL_RULES)}")
        elif level not in LEVELS:
            problems.append(f"{code}: level {quoted(level)} is not one of {LEVELS}")
        elif code in PARSE_CODES and level != ERROR:
            problems.append(f"{code}: a parse failure is always an error, not {quoted(level)}")
        else:
            levels[code] = level
    if problems:
        raise InvalidConfig(problems)
    return levels


def _np(array: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(array.to_numpy(zero_copy_only=False))


def _blank(array: pa.ChunkedArray) -> np.ndarray:
    return _np(pc.equal(pc.utf8_trim_whitespace(array), "")).astype(bool)


def _has(table: pa.Table, columns: Collection[str]) -> bool:
    return set(columns) <= set(table.column_names)


def _hh_preference_masks(table: pa.Table) -> Masks:
    """HH preference-line rules over a table with ``chosen`` and ``rejected`` columns."""
    chosen = hh.parse_transcripts(table.column("chosen"))
    rejected = hh.parse_transcripts(table.column("rejected"))
    order_ok = (hh.well_formed(chosen) & hh.well_formed(rejected)).fill_null(False)
    context_ok = (chosen["prompt"] == rejected["prompt"]).fill_null(False)
    responses = pl.DataFrame({"c": chosen["response"], "r": rejected["response"]})
    empty = responses.select(
        (pl.col("c").fill_null("").str.strip_chars() == "")
        | (pl.col("r").fill_null("").str.strip_chars() == "")
    ).to_series()
    identical = (responses["c"] == responses["r"]).fill_null(False)
    return {
        "bad_turn_order": ~order_ok.to_numpy(),
        "context_mismatch": (
            chosen["prompt"].is_not_null() & rejected["prompt"].is_not_null() & ~context_ok
        ).to_numpy(),
        "empty_response": empty.to_numpy(),
        "identical_responses": (identical & ~empty).to_numpy(),
    }


def _red_team_masks(table: pa.Table) -> Masks:
    """Red-team transcript rules: must start with Human and alternate (may end with either)."""
    parsed = hh.parse_transcripts(table.column("transcript"))
    ok = (
        (parsed["preamble"] == "")
        & parsed["roles"].str.contains(r"^(HA)*H?$")
        & (parsed["roles"].str.len_chars() > 0)
    )
    return {"bad_turn_order": ~ok.fill_null(False).to_numpy()}


def sha256_hex(prompts: pa.ChunkedArray, responses: pa.ChunkedArray) -> list[str]:
    """SHA-256 hex digests of UTF-8 ``prompt + response`` for each row (upstream convention)."""
    return [
        hashlib.sha256((p + r).encode("utf-8")).hexdigest()
        for p, r in zip(prompts.to_pylist(), responses.to_pylist(), strict=True)
    ]


def _pku_masks(table: pa.Table) -> Masks:
    """PKU-SafeRLHF rules; the label and sha256 rules only when the layout has their columns
    (the v0 layout has neither)."""
    masks = _pku_core_masks(table)
    if _has(table, (*PKU_SEVERITY, *PKU_HARM)):
        masks |= _pku_label_masks(table)
    if _has(table, PKU_SHA256):
        masks["sha256_mismatch"] = _sha256_mismatch(table)
    return masks


def _ids_and_flags(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``safer_response_id``, the bad-id mask and the two ``is_response_N_safe`` flags."""
    better, safer = _np(table.column("better_response_id")), _np(table.column("safer_response_id"))
    safe0, safe1 = _np(table.column("is_response_0_safe")), _np(table.column("is_response_1_safe"))
    bad_id = ~np.isin(better, (0, 1)) | ~np.isin(safer, (0, 1))
    return safer, bad_id, safe0, safe1


def _pku_core_masks(table: pa.Table) -> Masks:
    """The PKU rules every layout can evaluate (texts, response ids, safety flags)."""
    r0, r1 = table.column("response_0"), table.column("response_1")
    safer, bad_id, safe0, safe1 = _ids_and_flags(table)
    one_safe = safe0 != safe1
    return {
        "empty_prompt": _blank(table.column("prompt")),
        "empty_response": _blank(r0) | _blank(r1),
        "identical_responses": _np(pc.equal(r0, r1)).astype(bool),
        "bad_response_id": bad_id,
        "safer_contradicts_flags": one_safe & ~bad_id & (safer != np.where(safe0, 0, 1)),
    }


def _pku_label_masks(table: pa.Table) -> Masks:
    """The PKU rules on severity levels and harm categories (current layout only)."""
    safer, bad_id, safe0, safe1 = _ids_and_flags(table)
    sev0, sev1 = (_np(table.column(name)) for name in PKU_SEVERITY)
    harm0, harm1 = (_any_category(table.column(name)) for name in PKU_HARM)
    both_unsafe = ~safe0 & ~safe1
    sev_safer = np.where(safer == 1, sev1, sev0)
    sev_other = np.where(safer == 1, sev0, sev1)
    return {
        "bad_severity": ~np.isin(sev0, SEVERITY_LEVELS) | ~np.isin(sev1, SEVERITY_LEVELS),
        "safe_with_severity": (safe0 & (sev0 > 0)) | (safe1 & (sev1 > 0)),
        "safe_with_harm_category": (safe0 & harm0) | (safe1 & harm1),
        "unsafe_without_harm": (~safe0 & ((sev0 == 0) | ~harm0))
        | (~safe1 & ((sev1 == 0) | ~harm1)),
        "safer_has_higher_severity": both_unsafe & ~bad_id & (sev_safer > sev_other),
    }


def _sha256_mismatch(table: pa.Table) -> np.ndarray:
    """Rows whose ``response_N_sha256`` is not sha256(prompt + response_N) for either N."""
    prompt, r0, r1 = table.column("prompt"), table.column("response_0"), table.column("response_1")
    return np.array(
        [
            a != b or c != d
            for a, b, c, d in zip(
                sha256_hex(prompt, r0),
                table.column(PKU_SHA256[0]).to_pylist(),
                sha256_hex(prompt, r1),
                table.column(PKU_SHA256[1]).to_pylist(),
                strict=True,
            )
        ],
        dtype=bool,
    )


def _any_category(column: pa.ChunkedArray) -> np.ndarray:
    result = np.zeros(len(column), dtype=bool)
    for index in range(len(HARM_CATEGORIES)):
        result |= _np(pc.fill_null(pc.struct_field(column, [index]), False)).astype(bool)
    return result


#: The rule families, callable on a table (masks checked against the declarations).
hh_preference_masks = RuleFamily("hh_preference", HH_RULES, _hh_preference_masks)
red_team_masks = RuleFamily("hh_red_team", RED_TEAM_RULES, _red_team_masks)
pku_masks = RuleFamily("pku", PKU_RULES, _pku_masks)
FAMILIES: dict[str, RuleFamily] = {
    f.kind: f for f in (hh_preference_masks, red_team_masks, pku_masks)
}


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
