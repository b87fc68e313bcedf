"""Normalize validated source rows of both datasets into one preference-pair table.

* HH-RLHF: ``harmless-base`` lines give ``harmless`` pairs, the helpful subsets ``helpful``
  pairs. ``prompt`` is the whole conversation before the final Assistant turn, ``chosen`` and
  ``rejected`` the final Assistant responses. Safety label columns are null.
* PKU-SafeRLHF: each row gives a ``helpful`` pair (chosen = ``response_{better_response_id}``)
  and a ``harmless`` pair (chosen = ``response_{safer_response_id}``), with the safety labels of
  the chosen and rejected response (is_safe, severity, harm categories by name).

``pair_id`` is the xxh3-128 hex digest of dataset, subset, split, dimension and the normalized
prompt/chosen/rejected (see :mod:`curation.textnorm`), so it is stable across runs and
independent of row order; exact repeats inside one file get ``-1``, ``-2``... in line order.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from curation import hh
from curation.ingest import RAW_LINE, REASONS
from curation.jsonl import SOURCE_LINE
from curation.report import report_of
from curation.schema import (
    HARM_CATEGORIES,
    HH_DATASET,
    PAIRS,
    QUARANTINE,
    RED_TEAM,
    TURN,
)
from curation.textnorm import NORMALIZED_PROMPT, normalize_array

HARMLESS_SUBSETS = frozenset({"harmless-base"})
#: Pairs between stages: :data:`~curation.schema.PAIRS` plus the normalized prompt.
PAIRS_STAGE = PAIRS.append(pa.field(NORMALIZED_PROMPT, pa.large_string()))
_KEY_SEP = "\x1f"


def split_verdicts(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Split an ingested table into (rows that go on, rows to quarantine)."""
    quarantined = pc.greater(pc.list_value_length(table.column(REASONS)), 0)
    return table.filter(pc.invert(quarantined)), table.filter(quarantined)


def quarantine_rows(table: pa.Table) -> pa.Table:
    """Quarantined rows of an ingested table in the :data:`~curation.schema.QUARANTINE` schema."""
    return pa.table(
        {
            "dataset": table.column("dataset"),
            "subset": table.column("subset"),
            "split": table.column("split"),
            "source_file": table.column("source_file"),
            "source_line": table.column(SOURCE_LINE),
            "reasons": table.column(REASONS),
            "raw_line": table.column(RAW_LINE),
        },
        schema=QUARANTINE,
    )


def _constant(value: str | None, n: int) -> pa.Array:
    return pa.array([value] * n, pa.string())


def _null_labels(n: int) -> dict[str, pa.Array]:
    return {
        "chosen_is_safe": pa.nulls(n, pa.bool_()),
        "rejected_is_safe": pa.nulls(n, pa.bool_()),
        "chosen_severity": pa.nulls(n, pa.int8()),
        "rejected_severity": pa.nulls(n, pa.int8()),
        "chosen_harm_categories": pa.nulls(n, pa.list_(pa.string())),
        "rejected_harm_categories": pa.nulls(n, pa.list_(pa.string())),
    }


def hh_pairs(table: pa.Table) -> pa.Table:
    """HH preference rows (validated) → pairs without ``pair_id`` (filled by :func:`with_pair_ids`)."""
    n = table.num_rows
    chosen = hh.parse_transcripts(table.column("chosen"))
    rejected = hh.final_responses(table.column("rejected"))
    subsets = table.column("subset")
    harmless = pc.is_in(subsets, pa.array(sorted(HARMLESS_SUBSETS)))
    columns = {
        "pair_id": _constant("", n),
        "dataset": table.column("dataset"),
        "subset": subsets,
        "split": table.column("split"),
        "source_file": table.column("source_file"),
        "source_line": table.column(SOURCE_LINE),
        "dimension": pc.if_else(harmless, "harmless", "helpful"),
        "prompt": chosen["prompt"].to_arrow(),
        "prompt_turns": chosen["prompt_turns"].to_arrow().cast(pa.list_(TURN)),
        "chosen": chosen["response"].to_arrow(),
        "rejected": rejected.to_arrow(),
        **_null_labels(n),
    }
    return pa.table(columns, schema=PAIRS)


def _categories(column: pa.ChunkedArray) -> pa.Array:
    """A struct of 19 named booleans → the list of names that are true."""
    frame = pl.from_arrow(pa.table({"c": column}).flatten())
    names = [pl.when(pl.col(f"c.{name}")).then(pl.lit(name)) for name in HARM_CATEGORIES]
    lists = frame.select(pl.concat_list(names).list.drop_nulls()).to_series()
    return lists.to_arrow().cast(pa.list_(pa.string()))


def pku_pairs(table: pa.Table) -> pa.Table:
    """PKU rows (validated) → a helpful and a harmless pair per row, without ``pair_id``."""
    n = table.num_rows
    has_labels = "response_0_severity_level" in table.column_names
    prompt = table.column("prompt")
    turns = pa.ListArray.from_arrays(
        pa.array(range(n + 1), pa.int32()),
        pa.StructArray.from_arrays(
            [_constant("human", n), prompt.combine_chunks()], fields=list(TURN)
        ),
    )
    parts = []
    for dimension, id_column in (
        ("helpful", "better_response_id"),
        ("harmless", "safer_response_id"),
    ):
        first = pc.equal(table.column(id_column), 0)

        def pick(name: str, chosen: bool, first=first) -> pa.ChunkedArray:
            zero, one = table.column(name.format(0)), table.column(name.format(1))
            return pc.if_else(first, zero, one) if chosen else pc.if_else(first, one, zero)

        labels = _null_labels(n)
        labels["chosen_is_safe"] = pick("is_response_{}_safe", True)
        labels["rejected_is_safe"] = pick("is_response_{}_safe", False)
        if has_labels:
            for side, chosen in (("chosen", True), ("rejected", False)):
                severity = pick("response_{}_severity_level", chosen)
                labels[f"{side}_severity"] = pc.cast(severity, pa.int8())
                labels[f"{side}_harm_categories"] = _categories(
                    pick("response_{}_harm_category", chosen)
                )
        columns = {
            "pair_id": _constant("", n),
            "dataset": table.column("dataset"),
            "subset": table.column("subset"),
            "split": table.column("split"),
            "source_file": table.column("source_file"),
            "source_line": table.column(SOURCE_LINE),
            "dimension": _constant(dimension, n),
            "prompt": prompt,
            "prompt_turns": turns,
            "chosen": pick("response_{}", True),
            "rejected": pick("response_{}", False),
            **labels,
        }
        parts.append(pa.table(columns, schema=PAIRS))
    return pa.concat_tables(parts)


_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def hex_digests128(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``xxh3_128_hexdigest`` of every string of ``values`` (UTF-8 bytes), without Python strings.

    Each value is hashed straight from the Arrow data buffer and the digests are hex-encoded in
    numpy (the per-row ``to_pylist`` + ``encode`` + ``hexdigest`` took ~1.5 s at full scale).
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    values = values.cast(pa.large_string())
    n = len(values)
    if n == 0:
        return pa.array([], pa.string())
    offsets = np.frombuffer(values.buffers()[1], np.int64, n + 1, values.offset * 8)
    data = values.buffers()[2]
    view = memoryview(data) if data is not None else memoryview(b"")
    digest = xxhash.xxh3_128_digest
    starts, ends = offsets[:-1].tolist(), offsets[1:].tolist()
    raw = b"".join([digest(view[a:b]) for a, b in zip(starts, ends, strict=True)])
    nibbles = np.frombuffer(raw, np.uint8).reshape(n, 16)
    text = np.empty((n, 32), np.uint8)
    text[:, 0::2], text[:, 1::2] = _HEX[nibbles >> 4], _HEX[nibbles & 15]
    return pa.array(text.view("S32").ravel(), pa.binary(32)).cast(pa.string())


def content_ids(keys: list[pa.ChunkedArray | pa.Array], order: pa.ChunkedArray) -> pa.Array:
    """xxh3-128 hex ids of the joined ``keys`` per row; repeats get ``-1``, ``-2``... by ``order``."""
    joined = pc.binary_join_element_wise(
        *[pc.fill_null(pc.cast(k, pa.large_string()), "") for k in keys],
        pa.scalar(_KEY_SEP, pa.large_string()),
    )
    frame = pl.DataFrame({"id": hex_digests128(joined), "order": order.to_numpy()})
    rank = frame.select(pl.col("order").rank("ordinal").over("id") - 1).to_series()
    ids = frame.select(
        pl.when(rank == 0).then(pl.col("id")).otherwise(pl.col("id") + "-" + rank.cast(pl.String))
    ).to_series()
    return ids.to_arrow().cast(pa.string())


def with_pair_ids(pairs: pa.Table) -> pa.Table:
    """Fill ``pair_id`` (see the module docstring) and add the normalized prompt.

    The result has the :data:`PAIRS_STAGE` schema: :data:`~curation.schema.PAIRS` plus
    :data:`~curation.textnorm.NORMALIZED_PROMPT`, so dedup and decontamination do not normalize
    the prompts again.
    """
    prompt = normalize_array(pairs.column("prompt"))
    keys = [
        pairs.column("dataset"),
        pairs.column("subset"),
        pairs.column("split"),
        pairs.column("dimension"),
        prompt,
        normalize_array(pairs.column("chosen")),
        normalize_array(pairs.column("rejected")),
    ]
    ids = pairs.set_column(0, "pair_id", content_ids(keys, pairs.column("source_line")))
    return ids.append_column(PAIRS_STAGE.field(NORMALIZED_PROMPT), prompt)


def red_team_rows(table: pa.Table) -> pa.Table:
    """Validated red-team rows → the :data:`~curation.schema.RED_TEAM` table with parsed turns."""
    parsed = hh.parse_transcripts(table.column("transcript"))
    columns = {name: table.column(name) for name in RED_TEAM.names if name in table.column_names}
    columns["turns"] = parsed["turns"].to_arrow().cast(pa.list_(TURN))
    columns["transcript_id"] = content_ids([table.column("transcript")], table.column(SOURCE_LINE))
    columns["source_line"] = table.column(SOURCE_LINE)
    return pa.table({name: columns[name] for name in RED_TEAM.names}, schema=RED_TEAM)


def pairs_from(table: pa.Table) -> pa.Table:
    """Pairs of one validated ingested table of either dataset, ``pair_id`` not yet filled."""
    if table.num_rows == 0:
        return PAIRS.empty_table()
    return hh_pairs(table) if table.column("dataset")[0].as_py() == HH_DATASET else pku_pairs(table)


def normalize_file(table: pa.Table) -> tuple[dict, pa.Table, pa.Table]:
    """One ingested file -> (its report, its quarantine rows, its pairs or red-team rows)."""
    good, bad = split_verdicts(table)
    if "transcript" in table.column_names:
        out = red_team_rows(good)
    else:
        out = with_pair_ids(pairs_from(good))
    return report_of(table), quarantine_rows(bad), out
