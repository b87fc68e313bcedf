"""Arrow schemas of every table the pipeline produces, and the shared constants they use.

These schemas are the data contracts between stages and with downstream readers:
``PAIRS`` is the curated preference-pair table, ``QUARANTINE`` holds rows that failed an ERROR
rule, ``REMOVED`` is the per-row audit of dedup/decontamination removals, ``RED_TEAM`` holds the
HH red-team transcripts.
"""

from __future__ import annotations

import pyarrow as pa

HH_DATASET = "hh-rlhf"
PKU_DATASET = "pku-saferlhf"
DATASETS = (HH_DATASET, PKU_DATASET)

HH_SUBSETS = ("harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled")
HH_RED_TEAM_SUBSET = "red-team-attempts"
PKU_CONFIGS = ("Alpaca-7B", "Alpaca2-7B", "Alpaca3-8B")
SPLITS = ("train", "test")
#: The one name of "no split" (the quarantined HH red-team rows): their folder
#: (``quarantine/no_split/``), their split in the manifest, the card, the Hub ``configs``,
#: ``releases show`` and ``releases diff``. Their parquet ``split`` column stays null.
NO_SPLIT = "no_split"
DIMENSIONS = ("helpful", "harmless")

#: The 19 harm categories of PKU-SafeRLHF, in upstream key order.
HARM_CATEGORIES = (
    "Endangering National Security",
    "Insulting Behavior",
    "Discriminatory Behavior",
    "Endangering Public Health",
    "Copyright Issues",
    "Violence",
    "Drugs",
    "Privacy Violation",
    "Economic Crime",
    "Mental Manipulation",
    "Human Trafficking",
    "Physical Harm",
    "Sexual Content",
    "Cybercrime",
    "Disrupting Public Order",
    "Environmental Damage",
    "Psychological Harm",
    "White-Collar Crime",
    "Animal Abuse",
)

#: PKU-SafeRLHF severity levels of a response: 0 for a safe response, then the paper's three
#: levels "ranging from minor to severe" (Ji et al. 2024, "PKU-SafeRLHF: Towards Multi-Level
#: Safety Alignment for LLMs with Human Preference", arXiv:2406.15513, abstract; the
#: ``response_N_severity_level`` columns added to the Hugging Face dataset in commit 3fa35d0,
#: "Add harm category label and severity level label"). The 90 responses of the 45 real rows in
#: ``../shared/data`` use 0 (50 safe), 1 (4), 2 (32) and 3 (4).
SEVERITY_LEVELS = (0, 1, 2, 3)

TURN = pa.struct([("role", pa.string()), ("text", pa.string())])

#: Curated preference pairs: one row per (source row, dimension).
PAIRS = pa.schema(
    [
        ("pair_id", pa.string()),
        ("dataset", pa.string()),
        ("subset", pa.string()),
        ("split", pa.string()),
        ("source_file", pa.string()),
        ("source_line", pa.int64()),
        ("dimension", pa.string()),
        ("prompt", pa.string()),
        ("prompt_turns", pa.list_(TURN)),
        ("chosen", pa.string()),
        ("rejected", pa.string()),
        ("chosen_is_safe", pa.bool_()),
        ("rejected_is_safe", pa.bool_()),
        ("chosen_severity", pa.int8()),
        ("rejected_severity", pa.int8()),
        ("chosen_harm_categories", pa.list_(pa.string())),
        ("rejected_harm_categories", pa.list_(pa.string())),
    ]
)

#: Rows that failed at least one ERROR rule, with the raw line as read.
QUARANTINE = pa.schema(
    [
        ("dataset", pa.string()),
        ("subset", pa.string()),
        ("split", pa.string()),
        ("source_file", pa.string()),
        ("source_line", pa.int64()),
        ("reasons", pa.list_(pa.string())),
        ("raw_line", pa.string()),
    ]
)

#: One row per pair removed by dedup or decontamination, with what it matched.
REMOVED = pa.schema(
    [
        ("pair_id", pa.string()),
        ("dataset", pa.string()),
        ("subset", pa.string()),
        ("split", pa.string()),
        ("source_file", pa.string()),
        ("source_line", pa.int64()),
        ("dimension", pa.string()),
        ("reason", pa.string()),
        ("method", pa.string()),
        ("score", pa.float64()),
        ("matched_pair_id", pa.string()),
        ("matched_dataset", pa.string()),
        ("matched_subset", pa.string()),
        ("matched_split", pa.string()),
        ("matched_source_file", pa.string()),
        ("matched_source_line", pa.int64()),
    ]
)

#: The paraphrase report (``curation.decontam``, issue 25): one row per (train pair, test unit)
#: whose openings (first human turns) have close static embeddings but match no decontamination
#: rule. ``text`` and ``matched_text`` are the two openings in normalized form
#: (``curation.textnorm``); ``removed`` is true when the settings remove such pairs
#: (``paraphrase: remove``).
PARAPHRASES = pa.schema(
    [
        ("pair_id", pa.string()),
        ("dataset", pa.string()),
        ("subset", pa.string()),
        ("split", pa.string()),
        ("source_file", pa.string()),
        ("source_line", pa.int64()),
        ("dimension", pa.string()),
        ("score", pa.float64()),
        ("matched_pair_id", pa.string()),
        ("matched_dataset", pa.string()),
        ("matched_subset", pa.string()),
        ("matched_split", pa.string()),
        ("matched_source_file", pa.string()),
        ("matched_source_line", pa.int64()),
        ("text", pa.string()),
        ("matched_text", pa.string()),
        ("removed", pa.bool_()),
    ]
)

#: HH red-team attempts, one row per transcript, turns parsed.
RED_TEAM = pa.schema(
    [
        ("transcript_id", pa.string()),
        ("source_file", pa.string()),
        ("source_line", pa.int64()),
        ("transcript", pa.string()),
        ("turns", pa.list_(TURN)),
        ("min_harmlessness_score_transcript", pa.float64()),
        ("num_params", pa.string()),
        ("model_type", pa.string()),
        ("rating", pa.float64()),
        ("task_description", pa.string()),
        ("task_description_harmlessness_score", pa.float64()),
        ("red_team_member_id", pa.string()),
        ("is_upworker", pa.bool_()),
        ("tags", pa.list_(pa.string())),
    ]
)


def empty(schema: pa.Schema) -> pa.Table:
    """An empty table of ``schema``."""
    return schema.empty_table()
