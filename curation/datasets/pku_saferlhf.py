"""PKU-SafeRLHF: its files, rules, pairs, suites and licence.

Three configs (``Alpaca-7B``, ``Alpaca2-7B``, ``Alpaca3-8B``) with a train and a test file of
JSON Lines each, in the current layout or the older v0 layout, detected per file by majority
(:mod:`curation.datasets.pku_format`: field specs, variants). Each row gives a ``helpful`` pair (chosen =
``response_{better_response_id}``) and a ``harmless`` pair (chosen =
``response_{safer_response_id}``), with the safety labels of the chosen and rejected response
(is_safe, severity, harm categories by name).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from curation.core.jsonl import (
    SOURCE_LINE,
    FieldSpec,
    ParsedFile,
    divert,
    parse_jsonl,
    require_fields,
)
from curation.core.rules import ERROR, WARN, Masks, Rule, RuleFamily, blank, has_columns, np_values
from curation.core.schema import HARM_CATEGORIES, SEVERITY_LEVELS, SPLITS, TURN
from curation.core.suite_builder import BOOL_TYPES, INT_TYPES, SHA256_HEX, STR_TYPES, SuiteBuilder
from curation.core.textnorm import normalize_array
from curation.datasets import pku_format as pku
from curation.datasets.base import (
    Licence,
    PairPart,
    PreferenceDataset,
    Reader,
    SourceFile,
    SuiteDef,
    constant,
    null_labels,
    pair_table,
)

NAME = "pku-saferlhf"
CONFIGS = ("Alpaca-7B", "Alpaca2-7B", "Alpaca3-8B")
#: ``SourceFile.kind`` of its files.
KIND = "pku"
#: The column naming the chosen response of each dimension, in output order.
CHOSEN_ID = {"helpful": "better_response_id", "harmless": "safer_response_id"}
DIMENSIONS = tuple(CHOSEN_ID)

_RESPONSES = ("response_0", "response_1")
_IDS = ("better_response_id", "safer_response_id")
_SAFE = ("is_response_0_safe", "is_response_1_safe")
#: Label columns of the current layout only (absent in v0, see :mod:`curation.datasets.pku_format`).
SEVERITY = ("response_0_severity_level", "response_1_severity_level")
HARM = ("response_0_harm_category", "response_1_harm_category")
SHA256 = ("response_0_sha256", "response_1_sha256")

RULES = (
    Rule("empty_prompt", ERROR, "prompt is empty or whitespace", ("prompt",)),
    Rule("empty_response", ERROR, "response_0 or response_1 is empty or whitespace", _RESPONSES),
    Rule("identical_responses", ERROR, "response_0 equals response_1", _RESPONSES),
    Rule("bad_response_id", ERROR, "better_response_id or safer_response_id not in {0, 1}", _IDS),
    Rule("bad_severity", ERROR, "a severity level outside 0..3", SEVERITY),
    Rule(
        "sha256_mismatch",
        ERROR,
        "response_N_sha256 != sha256(prompt + response_N)",
        ("prompt", *_RESPONSES, *SHA256),
    ),
    Rule(
        "safe_with_severity",
        ERROR,
        "a response flagged safe has severity > 0",
        (*_SAFE, *SEVERITY),
    ),
    Rule(
        "safe_with_harm_category",
        ERROR,
        "a response flagged safe has a harm category set",
        (*_SAFE, *HARM),
    ),
    Rule(
        "unsafe_without_harm",
        ERROR,
        "a response flagged unsafe has severity 0 or no harm category",
        (*_SAFE, *SEVERITY, *HARM),
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
        (*_SAFE, *_IDS, *SEVERITY),
    ),
)


def sha256_hex(prompts: pa.ChunkedArray, responses: pa.ChunkedArray) -> list[str]:
    """SHA-256 hex digests of UTF-8 ``prompt + response`` for each row (upstream convention)."""
    return [
        hashlib.sha256((p + r).encode("utf-8")).hexdigest()
        for p, r in zip(prompts.to_pylist(), responses.to_pylist(), strict=True)
    ]


def _masks(table: pa.Table) -> Masks:
    """The rules; the label and sha256 rules only when the layout has their columns
    (the v0 layout has neither)."""
    masks = _core_masks(table)
    if has_columns(table, (*SEVERITY, *HARM)):
        masks |= _label_masks(table)
    if has_columns(table, SHA256):
        masks["sha256_mismatch"] = _sha256_mismatch(table)
    return masks


def _ids_and_flags(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``safer_response_id``, the bad-id mask and the two ``is_response_N_safe`` flags."""
    better, safer = (
        np_values(table.column("better_response_id")),
        np_values(table.column("safer_response_id")),
    )
    safe0, safe1 = (
        np_values(table.column("is_response_0_safe")),
        np_values(table.column("is_response_1_safe")),
    )
    bad_id = ~np.isin(better, (0, 1)) | ~np.isin(safer, (0, 1))
    return safer, bad_id, safe0, safe1


def _core_masks(table: pa.Table) -> Masks:
    """The rules every layout can evaluate (texts, response ids, safety flags)."""
    r0, r1 = table.column("response_0"), table.column("response_1")
    safer, bad_id, safe0, safe1 = _ids_and_flags(table)
    one_safe = safe0 != safe1
    return {
        "empty_prompt": blank(table.column("prompt")),
        "empty_response": blank(r0) | blank(r1),
        "identical_responses": np_values(pc.equal(r0, r1)).astype(bool),
        "bad_response_id": bad_id,
        "safer_contradicts_flags": one_safe & ~bad_id & (safer != np.where(safe0, 0, 1)),
    }


def _label_masks(table: pa.Table) -> Masks:
    """The rules on severity levels and harm categories (current layout only)."""
    safer, bad_id, safe0, safe1 = _ids_and_flags(table)
    sev0, sev1 = (np_values(table.column(name)) for name in SEVERITY)
    harm0, harm1 = (_any_category(table.column(name)) for name in HARM)
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
                table.column(SHA256[0]).to_pylist(),
                sha256_hex(prompt, r1),
                table.column(SHA256[1]).to_pylist(),
                strict=True,
            )
        ],
        dtype=bool,
    )


def _any_category(column: pa.ChunkedArray) -> np.ndarray:
    result = np.zeros(len(column), dtype=bool)
    for index in range(len(HARM_CATEGORIES)):
        result |= np_values(pc.fill_null(pc.struct_field(column, [index]), False)).astype(bool)
    return result


FAMILY = RuleFamily(KIND, RULES, _masks)


def _read(data: bytes) -> tuple[ParsedFile, str]:
    """Parse a file with both layouts; the majority layout wins, the other rows are
    quarantined as ``schema_variant_mismatch`` (see :mod:`curation.datasets.pku_format`)."""
    parsed = parse_jsonl(data, pku.UNION_FIELDS)
    variant, other = pku.majority_variant(parsed.table)
    table, mismatched = divert(
        parsed.table, other, "schema_variant_mismatch", f"file layout is {variant}", data
    )
    if variant == "current":
        table, missing = require_fields(table, pku.CURRENT_FIELDS, data)
    else:
        table, missing = table.select([f.name for f in pku.V0_FIELDS] + [SOURCE_LINE]), []
    parsed.table = table
    parsed.bad = sorted(parsed.bad + mismatched + missing, key=lambda b: b.line)
    return parsed, variant


def _categories(column: pa.ChunkedArray) -> pa.Array:
    """A struct of 19 named booleans → the list of names that are true."""
    frame = pl.from_arrow(pa.table({"c": column}).flatten())
    names = [pl.when(pl.col(f"c.{name}")).then(pl.lit(name)) for name in HARM_CATEGORIES]
    lists = frame.select(pl.concat_list(names).list.drop_nulls()).to_series()
    return lists.to_arrow().cast(pa.list_(pa.string()))


def _turns(prompt: pa.ChunkedArray) -> pa.ListArray:
    """One human turn per prompt."""
    n = len(prompt)
    return pa.ListArray.from_arrays(
        pa.array(range(n + 1), pa.int32()),
        pa.StructArray.from_arrays(
            [constant("human", n), prompt.combine_chunks()], fields=list(TURN)
        ),
    )


def _first(table: pa.Table, dimension: str) -> pa.ChunkedArray:
    """Where the chosen response of ``dimension`` is ``response_0``."""
    return pc.equal(table.column(CHOSEN_ID[dimension]), 0)


def _dimension(table: pa.Table, dimension: str, turns: pa.Array) -> pa.Table:
    """The ``dimension`` pairs of rows (validated), without ``pair_id``."""
    n = table.num_rows
    has_labels = "response_0_severity_level" in table.column_names
    first = _first(table, dimension)

    def pick(name: str, chosen: bool) -> pa.ChunkedArray:
        zero, one = table.column(name.format(0)), table.column(name.format(1))
        return pc.if_else(first, zero, one) if chosen else pc.if_else(first, one, zero)

    labels = null_labels(n)
    labels["chosen_is_safe"] = pick("is_response_{}_safe", True)
    labels["rejected_is_safe"] = pick("is_response_{}_safe", False)
    if has_labels:
        for side, chosen in (("chosen", True), ("rejected", False)):
            severity = pick("response_{}_severity_level", chosen)
            labels[f"{side}_severity"] = pc.cast(severity, pa.int8())
            labels[f"{side}_harm_categories"] = _categories(
                pick("response_{}_harm_category", chosen)
            )
    return pair_table(
        table,
        dimension=dimension,
        prompt=table.column("prompt"),
        prompt_turns=turns,
        chosen=pick("response_{}", True),
        rejected=pick("response_{}", False),
        labels=labels,
    )


def _pairs(table: pa.Table) -> pa.Table:
    """Rows (validated) → a helpful and a harmless pair per row, without ``pair_id``."""
    turns = _turns(table.column("prompt"))
    return pa.concat_tables([_dimension(table, d, turns) for d in DIMENSIONS])


def _pair_parts(good: pa.Table) -> list[PairPart]:
    """Both dimensions of validated rows; the prompt and the two responses are normalized once."""
    prompt = normalize_array(good.column("prompt"))
    responses = [normalize_array(good.column(f"response_{i}")) for i in (0, 1)]
    turns = _turns(good.column("prompt"))
    out = []
    for dimension in DIMENSIONS:
        first = _first(good, dimension)
        chosen = pc.if_else(first, responses[0], responses[1])
        rejected = pc.if_else(first, responses[1], responses[0])
        pairs = _dimension(good, dimension, turns)
        out.append(PairPart(dimension, pairs, prompt, chosen, rejected))
    return out


def _common_suite(b: SuiteBuilder) -> None:
    b.provenance()
    b.required_text("prompt", "response_0", "response_1")
    safe = ("is_response_0_safe", "is_response_1_safe")
    b.exists(*safe)
    b.types(BOOL_TYPES, *safe)
    b.not_null(*safe)
    ids = ("better_response_id", "safer_response_id")
    b.exists(*ids)
    b.types(INT_TYPES, *ids)
    b.not_null(*ids)
    b.in_set([0, 1], *ids)


def _current_suite(b: SuiteBuilder) -> None:
    _common_suite(b)
    sources = ("prompt_source", "response_0_source", "response_1_source")
    b.exists(*sources)
    b.types(STR_TYPES, *sources)
    severity = ("response_0_severity_level", "response_1_severity_level")
    b.exists(*severity)
    b.types(INT_TYPES, *severity)
    b.not_null(*severity)
    b.between(min(SEVERITY_LEVELS), max(SEVERITY_LEVELS), *severity)
    sha = ("response_0_sha256", "response_1_sha256")
    b.exists(*sha)
    b.types(STR_TYPES, *sha)
    b.not_null(*sha)
    b.regex(SHA256_HEX, *sha)
    harm = pku.harm_category_columns()
    b.exists(*harm)
    b.types(BOOL_TYPES, *harm)
    b.not_null(*harm)


class PKUSafeRLHF(PreferenceDataset):
    """PKU-SafeRLHF (Hugging Face layout ``data/<config>/<split>.jsonl``)."""

    name = NAME
    title = "PKU-SafeRLHF"
    setting = "pku_saferlhf"
    sample = "PKU-SafeRLHF"
    harm_labels = True
    licence = Licence(
        licence="CC BY-NC 4.0",
        holder="PKU-Alignment",
        url="https://huggingface.co/datasets/PKU-Alignment/PKU-SafeRLHF",
        note="Rows with `dataset == '{dataset}'` are derived from PKU-SafeRLHF and remain under "
        "**CC BY-NC 4.0** (PKU-Alignment): the **non-commercial** restriction applies to every "
        "derived PKU row in this release (pairs, quarantine and removed alike) - filter them out "
        "before any commercial use.",
    )

    def files(self) -> list[SourceFile]:
        """3 configs × 2 splits."""
        return [
            SourceFile(NAME, config, split, f"data/{config}/{split}.jsonl", KIND)
            for config in CONFIGS
            for split in SPLITS
        ]

    def fields(self, source: SourceFile, variant: str = "current") -> list[FieldSpec]:
        return pku.fields_for(variant)

    def reader(self, source: SourceFile) -> Reader:
        """Both layouts at once, the majority layout of the file wins (:func:`_read`)."""
        return _read

    def rule_family(self, source: SourceFile) -> RuleFamily:
        return FAMILY

    def rule_families(self) -> tuple[RuleFamily, ...]:
        return (FAMILY,)

    def pairs(self, table: pa.Table) -> pa.Table:
        return _pairs(table)

    def pair_parts(self, good: pa.Table) -> list[PairPart]:
        return _pair_parts(good)

    def pairs_per_row(self, subset: str) -> int:
        """A helpful and a harmless pair per row."""
        return len(DIMENSIONS)

    def suites(self) -> Mapping[str, SuiteDef]:
        return {
            "pku_saferlhf_raw": (
                "PKU-SafeRLHF, current upstream schema; harm categories flattened to "
                "'response_<i>_harm_category.<Category Name>' boolean columns.",
                _current_suite,
            ),
            "pku_saferlhf_v0_raw": ("PKU-SafeRLHF, older (v0) schema.", _common_suite),
        }

    def suite_for(self, subset: str, variant: str | None) -> str:
        return "pku_saferlhf_v0_raw" if variant == "v0" else "pku_saferlhf_raw"


DATASET = PKUSafeRLHF()
