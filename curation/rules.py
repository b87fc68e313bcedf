"""Row-level validation rules with stable reason codes, evaluated vectorized over whole tables.

Each rule maps a table of parsed source rows to a boolean mask (True = the row breaks the rule).
A rule's level decides what happens: ``error`` quarantines the row, ``warn`` only counts it,
``off`` skips it. Parse failures (``invalid_json`` etc.) are always errors: such a row has no
fields to curate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from curation import hh
from curation.schema import HARM_CATEGORIES

ERROR, WARN, OFF = "error", "warn", "off"
LEVELS = (ERROR, WARN, OFF)


@dataclass(frozen=True)
class Rule:
    """A reason code, its default level and what it means."""

    code: str
    default: str
    description: str


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
        "bad_turn_order", ERROR, "transcript must start with Human, alternate, end with Assistant"
    ),
    Rule("context_mismatch", ERROR, "chosen and rejected differ before the final Assistant turn"),
    Rule("empty_response", ERROR, "final chosen or rejected response is empty or whitespace"),
    Rule("identical_responses", ERROR, "chosen and rejected responses are identical"),
)
PKU_RULES = (
    Rule("empty_prompt", ERROR, "prompt is empty or whitespace"),
    Rule("empty_response", ERROR, "response_0 or response_1 is empty or whitespace"),
    Rule("identical_responses", ERROR, "response_0 equals response_1"),
    Rule("bad_response_id", ERROR, "better_response_id or safer_response_id not in {0, 1}"),
    Rule("bad_severity", ERROR, "a severity level outside 0..3"),
    Rule("sha256_mismatch", ERROR, "response_N_sha256 != sha256(prompt + response_N)"),
    Rule("safe_with_severity", ERROR, "a response flagged safe has severity > 0"),
    Rule("safe_with_harm_category", ERROR, "a response flagged safe has a harm category set"),
    Rule(
        "unsafe_without_harm",
        ERROR,
        "a response flagged unsafe has severity 0 or no harm category",
    ),
    Rule(
        "safer_contradicts_flags",
        ERROR,
        "exactly one response is safe but safer_response_id points at the other",
    ),
    Rule(
        "safer_has_higher_severity",
        WARN,
        "both responses unsafe and the 'safer' one has the higher severity",
    ),
)
RED_TEAM_RULES = (Rule("bad_turn_order", ERROR, "transcript must start with Human and alternate"),)

ALL_RULES: dict[str, Rule] = {
    r.code: r for r in (*PARSE_RULES, *HH_RULES, *PKU_RULES, *RED_TEAM_RULES)
}


def default_levels() -> dict[str, str]:
    """The default level of every reason code."""
    return {code: rule.default for code, rule in ALL_RULES.items()}


def resolve_levels(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """Default levels with ``overrides`` applied; unknown codes or levels raise ValueError."""
    levels = default_levels()
    for code, level in (overrides or {}).items():
        if code not in ALL_RULES:
            raise ValueError(f"unknown rule {code!r}; known: {sorted(ALL_RULES)}")
        if level not in LEVELS:
            raise ValueError(f"rule {code!r}: level {level!r} not in {LEVELS}")
        if code in {r.code for r in PARSE_RULES} and level != ERROR:
            raise ValueError(f"rule {code!r} is a parse failure and is always an error")
        levels[code] = level
    return levels


def _np(array: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(array.to_numpy(zero_copy_only=False))


def _blank(array: pa.ChunkedArray) -> np.ndarray:
    return _np(pc.equal(pc.utf8_trim_whitespace(array), "")).astype(bool)


def hh_preference_masks(table: pa.Table) -> dict[str, np.ndarray]:
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


def red_team_masks(table: pa.Table) -> dict[str, np.ndarray]:
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


def pku_masks(table: pa.Table) -> dict[str, np.ndarray]:
    """PKU-SafeRLHF rules; rules needing columns absent in the v0 schema are skipped."""
    cols = set(table.column_names)
    r0, r1 = table.column("response_0"), table.column("response_1")
    better, safer = _np(table.column("better_response_id")), _np(table.column("safer_response_id"))
    safe0, safe1 = _np(table.column("is_response_0_safe")), _np(table.column("is_response_1_safe"))
    bad_id = ~np.isin(better, (0, 1)) | ~np.isin(safer, (0, 1))
    one_safe = safe0 != safe1
    masks = {
        "empty_prompt": _blank(table.column("prompt")),
        "empty_response": _blank(r0) | _blank(r1),
        "identical_responses": _np(pc.equal(r0, r1)).astype(bool),
        "bad_response_id": bad_id,
        "safer_contradicts_flags": one_safe & ~bad_id & (safer != np.where(safe0, 0, 1)),
    }
    if "response_0_severity_level" in cols:
        sev0 = _np(table.column("response_0_severity_level"))
        sev1 = _np(table.column("response_1_severity_level"))
        harm0 = _any_category(table.column("response_0_harm_category"))
        harm1 = _any_category(table.column("response_1_harm_category"))
        both_unsafe = ~safe0 & ~safe1
        sev_safer = np.where(safer == 1, sev1, sev0)
        sev_other = np.where(safer == 1, sev0, sev1)
        masks |= {
            "bad_severity": ~np.isin(sev0, (0, 1, 2, 3)) | ~np.isin(sev1, (0, 1, 2, 3)),
            "safe_with_severity": (safe0 & (sev0 > 0)) | (safe1 & (sev1 > 0)),
            "safe_with_harm_category": (safe0 & harm0) | (safe1 & harm1),
            "unsafe_without_harm": (~safe0 & ((sev0 == 0) | ~harm0))
            | (~safe1 & ((sev1 == 0) | ~harm1)),
            "safer_has_higher_severity": both_unsafe & ~bad_id & (sev_safer > sev_other),
        }
    if "response_0_sha256" in cols:
        prompt = table.column("prompt")
        masks["sha256_mismatch"] = np.array(
            [
                a != b or c != d
                for a, b, c, d in zip(
                    sha256_hex(prompt, r0),
                    table.column("response_0_sha256").to_pylist(),
                    sha256_hex(prompt, r1),
                    table.column("response_1_sha256").to_pylist(),
                    strict=True,
                )
            ],
            dtype=bool,
        )
    return masks


def _any_category(column: pa.ChunkedArray) -> np.ndarray:
    result = np.zeros(len(column), dtype=bool)
    for index in range(len(HARM_CATEGORIES)):
        result |= _np(pc.fill_null(pc.struct_field(column, [index]), False)).astype(bool)
    return result


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
