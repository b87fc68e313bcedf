"""Arrow schemas of every table the pipeline produces, and the shared constants they use.

These schemas are the data contracts between stages and with downstream readers:
``PAIRS`` is the curated preference-pair table, ``QUARANTINE`` holds rows that failed an ERROR
rule, ``REMOVED`` is the per-row audit of dedup/decontamination removals, ``RED_TEAM`` holds the
HH red-team transcripts.
"""

from __future__ import annotations

import pyarrow as pa

SPLITS = ("train", "test")
#: The one name of "no split" (the quarantined HH red-team rows): their folder
#: (``quarantine/no_split/``), their split in the manifest, the card, the Hub ``configs``,
#: ``releases show`` and ``releases diff``. Their parquet ``split`` column stays null.
NO_SPLIT = "no_split"
#: ``preference``: a declared dataset's pairs when its declaration names no dimension
#: (``curation.datasets.declared``).
DIMENSIONS = ("helpful", "harmless", "preference")

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

#: Field metadata key of a column's description (shown in the Dagster UI's Columns tab, kept in
#: every stage table and in the published parquet's Arrow schema).
DESCRIPTION = b"description"


def column(name: str, type_: pa.DataType, description: str) -> pa.Field:
    """A field with its description in its metadata (:data:`DESCRIPTION`)."""
    return pa.field(name, type_, metadata={DESCRIPTION: description.encode()})


def description(field: pa.Field) -> str:
    """The description of ``field`` (``""`` when it has none)."""
    return (field.metadata or {}).get(DESCRIPTION, b"").decode()


TURN = pa.struct([("role", pa.string()), ("text", pa.string())])

_PAIR_ID = (
    "Stable id of the pair: xxh3-128 hex of dataset, subset, split, dimension and the "
    "normalized prompt, chosen and rejected texts; exact repeats within a file get -1, -2..."
)
_DATASET = "Upstream dataset: hh-rlhf or pku-saferlhf."
_SUBSET = (
    "HH-RLHF subset (harmless-base, helpful-base, helpful-online, helpful-rejection-sampled, "
    "red-team-attempts) or PKU-SafeRLHF config (Alpaca-7B, Alpaca2-7B, Alpaca3-8B)."
)
_SPLIT = "train or test, as upstream; null for the red-team file, which has no split."
_SOURCE_FILE = "The upstream file of the row, relative to its dataset's root (as in the manifest)."
_SOURCE_LINE = "0-based line of the row in that file (element index in the red-team JSON array)."
_DIMENSION = (
    "What the preference judges: helpful or harmless (HH-RLHF: harmless-base is harmless, the "
    "helpful subsets helpful; PKU-SafeRLHF: one pair per dimension per row)."
)


_UNLABELLED = "null for HH-RLHF"
_OLD_LAYOUT = "and for PKU-SafeRLHF files in the older layout without these labels"


def _is_safe(side: str) -> pa.Field:
    return column(
        f"{side}_is_safe", pa.bool_(), f"PKU-SafeRLHF: the {side} response is safe; {_UNLABELLED}."
    )


def _severity(side: str) -> pa.Field:
    return column(
        f"{side}_severity",
        pa.int8(),
        f"PKU-SafeRLHF severity of the {side} response, 0 (safe) to 3 (severe); {_UNLABELLED} "
        f"{_OLD_LAYOUT}.",
    )


def _harm_categories(side: str) -> pa.Field:
    return column(
        f"{side}_harm_categories",
        pa.list_(pa.string()),
        f"PKU-SafeRLHF harm categories of the {side} response (names, of 19); {_UNLABELLED} "
        f"{_OLD_LAYOUT}.",
    )


#: Curated preference pairs: one row per (source row, dimension).
PAIRS = pa.schema(
    [
        column("pair_id", pa.string(), _PAIR_ID),
        column("dataset", pa.string(), _DATASET),
        column("subset", pa.string(), _SUBSET),
        column("split", pa.string(), "train or test, as upstream."),
        column("source_file", pa.string(), _SOURCE_FILE),
        column("source_line", pa.int64(), _SOURCE_LINE),
        column("dimension", pa.string(), _DIMENSION),
        column(
            "prompt",
            pa.string(),
            "The conversation before the final assistant turn (HH-RLHF: the transcript with its "
            "Human:/Assistant: markers; PKU-SafeRLHF: the user's prompt).",
        ),
        column(
            "prompt_turns",
            pa.list_(TURN),
            "The prompt as turns: {role: human or assistant, text}.",
        ),
        column("chosen", pa.string(), "The preferred final assistant response."),
        column("rejected", pa.string(), "The other final assistant response."),
        _is_safe("chosen"),
        _is_safe("rejected"),
        _severity("chosen"),
        _severity("rejected"),
        _harm_categories("chosen"),
        _harm_categories("rejected"),
    ]
)

#: Rows that failed at least one ERROR rule, with the raw line as read.
QUARANTINE = pa.schema(
    [
        column("dataset", pa.string(), _DATASET),
        column("subset", pa.string(), _SUBSET),
        column("split", pa.string(), _SPLIT),
        column("source_file", pa.string(), _SOURCE_FILE),
        column("source_line", pa.int64(), _SOURCE_LINE),
        column(
            "reasons",
            pa.list_(pa.string()),
            "Reason codes of the ERROR rules the row failed (docs/validation.md).",
        ),
        column("raw_line", pa.string(), "The line (or array element) as read from the file."),
    ]
)

_MATCHED = "Of the pair or reference the removed pair matched:"


def _matched_columns(of: str, pair_id: str) -> list[pa.Field]:
    """Where a matched pair or reference is: ``matched_pair_id`` (described by ``pair_id``),
    ``matched_dataset`` ... ``matched_source_line``, each description opening with ``of``."""
    return [
        column("matched_pair_id", pa.string(), f"{of} {pair_id}"),
        column("matched_dataset", pa.string(), f"{of} dataset."),
        column("matched_subset", pa.string(), f"{of} subset."),
        column("matched_split", pa.string(), f"{of} split."),
        column("matched_source_file", pa.string(), f"{of} source file."),
        column("matched_source_line", pa.int64(), f"{of} 0-based line in that file."),
    ]


#: One row per pair removed by dedup or decontamination, with what it matched.
REMOVED = pa.schema(
    [
        column("pair_id", pa.string(), f"Of the removed pair. {_PAIR_ID}"),
        column("dataset", pa.string(), _DATASET),
        column("subset", pa.string(), _SUBSET),
        column("split", pa.string(), "train or test, as upstream."),
        column("source_file", pa.string(), _SOURCE_FILE),
        column("source_line", pa.int64(), _SOURCE_LINE),
        column("dimension", pa.string(), _DIMENSION),
        column(
            "reason",
            pa.string(),
            "Why it was removed: exact_duplicate, conflicting_duplicate, near_duplicate "
            "(docs/dedup.md), contaminated_exact, contaminated_turn, contaminated_ngram, "
            "contaminated_near (decontamination).",
        ),
        column("method", pa.string(), "The procedure and parameters that decided it."),
        column(
            "score",
            pa.float64(),
            "Strength of the match: 1.0 for exact matches, else the overlap or similarity.",
        ),
        *_matched_columns(
            _MATCHED,
            "pair_id (null for a reference that is not a pair: an extra reference set's prompt "
            "or a quarantined test row).",
        ),
    ]
)

_UPSTREAM = "(upstream field)"

#: The paraphrase report (``curation.match.decontam``, issue 25): one row per (train pair, test unit)
#: whose openings (first human turns) have close static embeddings but match no decontamination
#: rule. ``text`` and ``matched_text`` are the two openings in normalized form
#: (``curation.core.textnorm``); ``removed`` is true when the settings remove such pairs
#: (``paraphrase: remove``).
PARAPHRASES = pa.schema(
    [
        column("pair_id", pa.string(), f"Of the train pair. {_PAIR_ID}"),
        column("dataset", pa.string(), _DATASET),
        column("subset", pa.string(), _SUBSET),
        column("split", pa.string(), "train (only train pairs are searched)."),
        column("source_file", pa.string(), _SOURCE_FILE),
        column("source_line", pa.int64(), _SOURCE_LINE),
        column("dimension", pa.string(), _DIMENSION),
        column(
            "score",
            pa.float64(),
            "Cosine similarity of the two openings' static embeddings (docs/dedup.md §6).",
        ),
        *_matched_columns("Of the test pair whose opening is close:", "pair_id."),
        column("text", pa.string(), "The train pair's opening (first human turn), normalized."),
        column("matched_text", pa.string(), "The test pair's opening, normalized."),
        column(
            "removed",
            pa.bool_(),
            "Whether the train pair was removed for it (settings: paraphrase: remove).",
        ),
    ]
)

#: HH red-team attempts, one row per transcript, turns parsed.
RED_TEAM = pa.schema(
    [
        column(
            "transcript_id",
            pa.string(),
            "xxh3-128 hex of the transcript; repeats get -1, -2... in file order.",
        ),
        column("source_file", pa.string(), _SOURCE_FILE),
        column("source_line", pa.int64(), _SOURCE_LINE),
        column("transcript", pa.string(), "The red-team conversation (Human:/Assistant: markers)."),
        column("turns", pa.list_(TURN), "The transcript as turns: {role, text}."),
        column(
            "min_harmlessness_score_transcript",
            pa.float64(),
            f"Harmlessness of the assistant by a preference model, lower is more harmful {_UPSTREAM}.",
        ),
        column(
            "num_params", pa.string(), f"Parameters of the model behind the assistant {_UPSTREAM}."
        ),
        column(
            "model_type",
            pa.string(),
            f"Kind of model behind the assistant (plain LM, context distillation, rejection "
            f"sampling, RLHF) {_UPSTREAM}.",
        ),
        column(
            "rating",
            pa.float64(),
            f"The red-teamer's rating of their success, 0 (not) to 4 (very) {_UPSTREAM}.",
        ),
        column(
            "task_description", pa.string(), f"The red-teamer's own task description {_UPSTREAM}."
        ),
        column(
            "task_description_harmlessness_score",
            pa.float64(),
            f"Harmlessness of the task description by a preference model {_UPSTREAM}.",
        ),
        column("red_team_member_id", pa.string(), f"Who red-teamed, as text {_UPSTREAM}."),
        column(
            "is_upworker",
            pa.bool_(),
            f"The red-teamer worked through Upwork (else MTurk) {_UPSTREAM}.",
        ),
        column(
            "tags",
            pa.list_(pa.string()),
            f"Tags of the attempt, given for a sample of transcripts only {_UPSTREAM}.",
        ),
    ]
)


#: Columns of stage tables that are in none of the schemas above, by name.
STAGE_COLUMNS = {
    "quarantine_reasons": "Reason codes of the ERROR rules the row failed; empty: the row goes on.",
    "warning_reasons": "Reason codes of the WARN rules the row failed (counted, not removed).",
    "prompt_normalized": "The prompt as dedup and decontamination compare it "
    "(curation.core.textnorm); in stage tables only, never published.",
}
#: Columns that mean the same in every table, the ingested files' included.
SHARED_COLUMNS = ("dataset", "subset", "split", "source_file", "source_line", "raw_line")


def column_descriptions() -> dict[str, str]:
    """Descriptions by column name for tables whose fields carry none (the ingested files): the
    :data:`STAGE_COLUMNS` and the :data:`SHARED_COLUMNS` (an upstream ``chosen`` is a whole
    HH-RLHF transcript, not the pair's response, so other names are not described)."""
    shared = {name: description(QUARANTINE.field(name)) for name in SHARED_COLUMNS}
    return {**STAGE_COLUMNS, **shared}


def empty(schema: pa.Schema) -> pa.Table:
    """An empty table of ``schema``."""
    return schema.empty_table()
