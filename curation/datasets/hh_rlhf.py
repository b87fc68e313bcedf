"""Anthropic HH-RLHF: its files, rules, pairs, suites and licence.

The upstream layout is four preference subsets of ``chosen``/``rejected`` transcripts, each with
a train and a test file, and the red-team attempts (one JSON array of transcripts, no pairs:
they go to the ``red_team`` table). ``harmless-base`` lines give ``harmless`` pairs, the helpful
subsets ``helpful`` pairs: ``prompt`` is the whole conversation before the final Assistant turn,
``chosen`` and ``rejected`` the final Assistant responses; the safety label columns are null.
Transcript parsing and the field specs are in :mod:`curation.datasets.hh_format`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from curation.core.jsonl import FieldSpec
from curation.core.rules import ERROR, Masks, Rule, RuleFamily
from curation.core.schema import SPLITS, TURN
from curation.core.suite_builder import (
    BOOL_TYPES,
    FLOAT_TYPES,
    LIST_TYPES,
    NUMBER_TYPES,
    STR_TYPES,
    SuiteBuilder,
)
from curation.datasets import hh_format as hh
from curation.datasets.base import (
    Licence,
    ObjectNormalizer,
    PreferenceDataset,
    SourceFile,
    SuiteDef,
    pair_table,
)

NAME = "hh-rlhf"
SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")
RED_TEAM_SUBSET = "red-team-attempts"
HARMLESS_SUBSETS = frozenset({"harmless-base"})
#: ``SourceFile.kind`` of the two formats.
PREFERENCE, RED_TEAM = "hh_preference", "hh_red_team"

_PAIR = ("chosen", "rejected")
HH_RULES = (
    Rule(
        "bad_turn_order",
        ERROR,
        "transcript must start with Human, alternate, end with Assistant",
        _PAIR,
    ),
    Rule(
        "context_mismatch",
        ERROR,
        "chosen and rejected differ before the final Assistant turn",
        _PAIR,
    ),
    Rule(
        "empty_response", ERROR, "final chosen or rejected response is empty or whitespace", _PAIR
    ),
    Rule("identical_responses", ERROR, "chosen and rejected responses are identical", _PAIR),
)
RED_TEAM_RULES = (
    Rule(
        "bad_turn_order", ERROR, "transcript must start with Human and alternate", ("transcript",)
    ),
)


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


PREFERENCE_RULES = RuleFamily(PREFERENCE, HH_RULES, _hh_preference_masks)
RED_TEAM_FAMILY = RuleFamily(RED_TEAM, RED_TEAM_RULES, _red_team_masks)


def _pairs(table: pa.Table) -> pa.Table:
    """HH preference rows (validated) → pairs without ``pair_id``."""
    chosen = hh.parse_transcripts(table.column("chosen"))
    rejected = hh.final_responses(table.column("rejected"))
    harmless = pc.is_in(table.column("subset"), pa.array(sorted(HARMLESS_SUBSETS)))
    return pair_table(
        table,
        dimension=pc.if_else(harmless, "harmless", "helpful"),
        prompt=chosen["prompt"].to_arrow(),
        prompt_turns=chosen["prompt_turns"].to_arrow().cast(pa.list_(TURN)),
        chosen=chosen["response"].to_arrow(),
        rejected=rejected.to_arrow(),
    )


def _preference_suite(b: SuiteBuilder) -> None:
    b.provenance()
    b.required_text("chosen", "rejected")


def _red_team_suite(b: SuiteBuilder) -> None:
    b.provenance()
    b.required_text("transcript")
    floats = ("min_harmlessness_score_transcript", "task_description_harmlessness_score")
    # red_team_member_id: int or string upstream, published as a string (curation.datasets.hh_format)
    texts = ("num_params", "model_type", "task_description", "red_team_member_id")
    b.exists(*floats, *texts, "rating", "is_upworker", "tags")
    b.types(FLOAT_TYPES, *floats)
    b.types(STR_TYPES, *texts)
    b.types(NUMBER_TYPES, "rating")
    b.between(0, 4, "rating")
    b.types(BOOL_TYPES, "is_upworker")
    b.types(LIST_TYPES, "tags")  # nulls allowed


class HHRLHF(PreferenceDataset):
    """Anthropic HH-RLHF (GitHub release layout, commit 354e5c3)."""

    name = NAME
    title = "Anthropic HH-RLHF"
    setting = "hh_rlhf"
    sample = "hh-rlhf"
    licence = Licence(
        licence="MIT",
        holder="Anthropic",
        url="https://huggingface.co/datasets/Anthropic/hh-rlhf",
        note="Rows with `dataset == '{dataset}'` are derived from Anthropic HH-RLHF and remain "
        "under the **MIT** licence (copyright Anthropic).",
    )
    #: Rows of the real upstream files (the red-team file is one JSON array).
    upstream_rows: Mapping[str, int] = {
        "helpful-base/train.jsonl.gz": 43_835,
        "helpful-base/test.jsonl.gz": 2_354,
        "helpful-rejection-sampled/train.jsonl.gz": 52_421,
        "helpful-rejection-sampled/test.jsonl.gz": 2_749,
        "helpful-online/train.jsonl.gz": 22_007,
        "helpful-online/test.jsonl.gz": 1_137,
        "harmless-base/train.jsonl.gz": 42_537,
        "harmless-base/test.jsonl.gz": 2_312,
        "red-team-attempts/red_team_attempts.jsonl.gz": 38_961,
    }

    def files(self) -> list[SourceFile]:
        """4 preference subsets × 2 splits, then the red-team file."""
        files = [
            SourceFile(NAME, subset, split, f"{subset}/{split}.jsonl.gz", PREFERENCE)
            for subset in SUBSETS
            for split in SPLITS
        ]
        relpath = f"{RED_TEAM_SUBSET}/red_team_attempts.jsonl.gz"
        files.append(SourceFile(NAME, RED_TEAM_SUBSET, None, relpath, RED_TEAM))
        return files

    def fields(self, source: SourceFile, variant: str = "current") -> list[FieldSpec]:
        return hh.RED_TEAM_FIELDS if source.kind == RED_TEAM else hh.PREFERENCE_FIELDS

    def array_reader(self, source: SourceFile) -> ObjectNormalizer | None:
        """The red-team file is one JSON array (upstream) or JSON Lines; its keys are
        normalized first (:func:`curation.datasets.hh_format.normalize_red_team`)."""
        return hh.normalize_red_team if source.kind == RED_TEAM else None

    def rule_family(self, source: SourceFile) -> RuleFamily:
        return RED_TEAM_FAMILY if source.kind == RED_TEAM else PREFERENCE_RULES

    def rule_families(self) -> tuple[RuleFamily, ...]:
        return (PREFERENCE_RULES, RED_TEAM_FAMILY)

    def pairs(self, table: pa.Table) -> pa.Table:
        return _pairs(table)

    def pairs_per_row(self, subset: str) -> int:
        """One pair per preference line; the red-team transcripts give none."""
        return 0 if subset == RED_TEAM_SUBSET else 1

    def raw_prompt(self, row: Mapping[str, Any]) -> tuple[str, list[dict]] | None:
        """The prompt and its turns from the ``chosen`` transcript (else ``rejected``), when one
        of them parses into a prompt with a non-empty human turn."""
        for side in ("chosen", "rejected"):
            text = row.get(side)
            if not isinstance(text, str):
                continue
            parsed = hh.parse_transcripts(pa.array([text], pa.large_string())).row(0, named=True)
            turns = parsed["prompt_turns"] or []
            if parsed["prompt"] and any(t["role"] == "human" and t["text"].strip() for t in turns):
                return parsed["prompt"], turns
        return None

    def is_large(self, source: SourceFile) -> bool:
        """The train files: their decompressed JSON, parsed table and output table are in memory
        together (``helpful-rejection-sampled/train`` at the benchmark's full scale: +612 MB,
        against +135 MB for the red-team array)."""
        return source.kind == PREFERENCE and source.split == "train"

    def suites(self) -> Mapping[str, SuiteDef]:
        return {
            "hh_preference_raw": (
                "Anthropic HH-RLHF preference rows (chosen/rejected).",
                _preference_suite,
            ),
            "hh_red_team_raw": (
                "Anthropic HH-RLHF red-team attempts (one transcript a row).",
                _red_team_suite,
            ),
        }

    def suite_for(self, subset: str, variant: str | None) -> str:
        return "hh_red_team_raw" if subset == RED_TEAM_SUBSET else "hh_preference_raw"


DATASET = HHRLHF()
