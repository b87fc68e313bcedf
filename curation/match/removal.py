"""What dedup and decontamination share: reading the pairs they compare and writing the pairs they
remove (Dagster-free).

:func:`sorted_pairs` checks a pair table and gives its identifying columns in a deterministic
order; :func:`prompt_columns`, :func:`batch_prompts` and :func:`read_prompts` read the normalized
prompts (stored, or normalized on the fly); :func:`removed_table` builds the ``REMOVED`` audit rows
of the removed pairs with the pair (or reference) each one matched; :func:`keep_in_input_order`
gives the kept rows in input order.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.core.schema import REMOVED
from curation.core.selection import RowSelection
from curation.core.stage_table import StageTable, take_rows
from curation.core.textnorm import NORMALIZED_PROMPT, normalized_prompts
from curation.match.text_index import read_columns

__all__ = [
    "SOURCE_ORDER",
    "batch_prompts",
    "empty_removed",
    "keep_in_input_order",
    "prompt_columns",
    "read_prompts",
    "removed_table",
    "sorted_pairs",
]


_REQUIRED = ("pair_id", "dataset", "subset", "split", "source_file", "source_line", "dimension")


#: Source-row order: the survivor of a duplicate cluster is the pair of the first source row.
SOURCE_ORDER = ("dataset", "subset", "split", "source_file", "source_line", "pair_id")


def sorted_pairs(
    pairs: pa.Table | StageTable,
    extra_columns: tuple[str, ...] = (),
    *,
    by: tuple[str, ...] = ("pair_id",),
) -> tuple[pa.Table, np.ndarray]:
    """Check ``pairs`` and sort it by ``by`` (default ``pair_id``; :data:`SOURCE_ORDER` for dedup).

    Returns ``(meta, order)``: ``meta`` holds the identifying columns in that order and
    ``order`` the input row of each ``meta`` row. Only the identifying columns are read (a
    :class:`~curation.core.stage_table.StageTable` reads nothing else); texts are read where needed
    (:func:`~curation.core.stage_table.take_rows`, :func:`~curation.match.text_index.table_batches`). Both
    orders are independent of the input order (``pair_id`` is unique).
    """
    missing = [c for c in (*_REQUIRED, "prompt", *extra_columns) if c not in pairs.column_names]
    if missing:
        raise ValueError(f"pairs table lacks columns {missing}")
    meta = read_columns(pairs, _REQUIRED)
    ids = meta["pair_id"]
    if ids.null_count:
        raise ValueError("pair_id must not be null")
    if pc.count_distinct(ids).as_py() != pairs.num_rows:
        raise ValueError("pair_id must be unique")
    order = pc.sort_indices(meta, sort_keys=[(c, "ascending") for c in by]).to_numpy()
    order = order.astype(np.int64)
    return meta.take(pa.array(order)).combine_chunks(), order


def prompt_columns(pairs: pa.Table | StageTable) -> list[str]:
    """The columns :func:`batch_prompts` reads: the stored normalized prompt, else the prompt."""
    return [NORMALIZED_PROMPT if NORMALIZED_PROMPT in pairs.column_names else "prompt"]


def batch_prompts(batch: pa.RecordBatch | pa.Table) -> pa.LargeStringArray:
    """The normalized prompts of one batch of :func:`prompt_columns`."""
    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    return normalized_prompts(table)


def removed_table(
    tbl: pa.Table,
    rows: np.ndarray,
    reason: np.ndarray,
    method: np.ndarray,
    score: np.ndarray,
    matched_row: np.ndarray,
    others: pa.Table | None = None,
) -> pa.Table:
    """Build the REMOVED audit table for rows ``rows`` of ``tbl``.

    ``matched_row[i]`` is the row of ``tbl`` that was matched, or ``-1`` when the match is a
    reference that is not a pair; then row ``i`` of ``others`` (columns ``dataset``, ``subset``,
    ``split``, ``source_file``, ``source_line``) says where it is, and ``matched_pair_id`` is null.
    """
    rows = np.asarray(rows, np.int64)
    order = np.argsort(rows, kind="stable")  # tbl is sorted by pair_id
    rows, reason, method = rows[order], np.asarray(reason)[order], np.asarray(method)[order]
    score, matched_row = np.asarray(score, np.float64)[order], np.asarray(matched_row)[order]
    own = tbl.take(pa.array(rows, pa.int64()))
    missing = matched_row < 0
    m_idx = pa.array(np.where(missing, 0, matched_row), pa.int64(), mask=missing)
    matched = tbl.take(m_idx)
    cols = {
        "pair_id": own["pair_id"],
        "dataset": own["dataset"],
        "subset": own["subset"],
        "split": own["split"],
        "source_file": own["source_file"],
        "source_line": own["source_line"],
        "dimension": own["dimension"],
        "reason": pa.array(reason.astype(str), pa.string()),
        "method": pa.array(method.astype(str), pa.string()),
        "score": pa.array(score, pa.float64()),
    }
    for name in ("pair_id", "dataset", "subset", "split", "source_file", "source_line"):
        cols[f"matched_{name}"] = matched[name]
    if others is not None and missing.any():
        where = others.take(pa.array(order, pa.int64()))
        for name in ("dataset", "subset", "split", "source_file", "source_line"):
            column = cols[f"matched_{name}"]
            column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
            cols[f"matched_{name}"] = pc.if_else(
                pa.array(missing), where[name].combine_chunks().cast(column.type), column
            )
    arrays = [
        cols[f.name].combine_chunks().cast(f.type)
        if isinstance(cols[f.name], pa.ChunkedArray)
        else cols[f.name].cast(f.type)
        for f in REMOVED
    ]
    return pa.Table.from_arrays(arrays, schema=REMOVED)


def keep_in_input_order(
    pairs: pa.Table | StageTable, order: np.ndarray, keep_sorted: np.ndarray, lazy: bool = False
) -> pa.Table | RowSelection:
    """The rows of ``pairs`` whose sorted position is flagged in ``keep_sorted``, in input order
    (a :class:`~curation.core.selection.RowSelection` when ``lazy``)."""
    keep = np.zeros(len(order), bool)
    keep[order[keep_sorted]] = True
    return RowSelection(pairs, keep) if lazy else pairs.filter(pa.array(keep))


def empty_removed() -> pa.Table:
    """A ``REMOVED`` table without rows."""
    return REMOVED.empty_table()


def read_prompts(pairs: pa.Table | StageTable, rows: np.ndarray) -> pa.Array:
    """The normalized prompts of input rows ``rows`` (read again for the few aligned pairs)."""
    return batch_prompts(take_rows(pairs, rows, prompt_columns(pairs)))
