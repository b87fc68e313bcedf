"""Data-contract validation at full scale: every row in Arrow, the whole suite in GX on a sample.

Great Expectations evaluates a suite with a fixed Python cost of ~3-4 ms per expectation and a
pandas copy of the frame; on the full corpus the per-file suites took ~17 s of a 75 s run
(``docs/benchmarks.md``). :func:`validate_tables` therefore splits the work:

* **Every row** is checked for the row-level expectations of the suite (not null, regex,
  between, in set, unique) by vectorized Arrow/polars passes (:func:`row_failures`), with the
  same semantics as GX's pandas engine (nulls are skipped by all but ``not_null``; ``unique``
  flags every member of a duplicate group). Counts are exact, samples name ``source_file`` and
  ``source_line``.
* **Great Expectations** runs the whole JSON suite (column presence and types included) once per
  suite and schema on a **seeded sample**: up to ``sample_rows`` random rows of every table plus
  every row the Arrow pass flagged (up to ``sample_size`` per failing expectation), so GX's
  report shows the same failures. Tables with at most ``sample_rows`` rows are validated by GX in
  full, exactly as :func:`curation.validate.gx_validate.validate_frame` does. Tables with the same suite
  and the same Arrow schema share one GX run (a ``_member`` column attributes failing rows).

A table fails when GX fails on its rows or when the Arrow pass finds an unexpected row anywhere.

A table may be given as a :class:`~curation.core.stage_table.StageTable`: the Arrow pass then reads
one column at a time in blocks of rows (``unique`` reads its whole column) and the sample rows
batch by batch, so the table is never in memory whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from curation.core import stage_table
from curation.core.stage_table import StageTable
from curation.validate.gx_validate import (
    ID_COLUMNS,
    SuiteResult,
    _jsonable,
    flattened,
    load_suite_json,
    validate_frame,
)

__all__ = ["DEFAULT_SAMPLE_ROWS", "SuiteRun", "row_failures", "validate_tables"]

#: Rows of each table GX validates (plus flagged rows); GX's cost barely depends on it.
DEFAULT_SAMPLE_ROWS = 5_000
#: Rows of a column the Arrow pass evaluates at once (elementwise expectations).
BLOCK_ROWS = 1 << 16
MEMBER = "_member"

ROW_LEVEL = (
    "expect_column_values_to_not_be_null",
    "expect_column_values_to_match_regex",
    "expect_column_values_to_be_between",
    "expect_column_values_to_be_in_set",
    "expect_column_values_to_be_unique",
)


def _key(failure: Mapping[str, Any]) -> str:
    return json.dumps([failure["expectation"], failure.get("kwargs")], sort_keys=True, default=str)


def _kwargs(expectation: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in expectation.get("kwargs", {}).items() if k != "batch_id"}


def _unexpected(column: pa.ChunkedArray, kind: str, kwargs: Mapping[str, Any]) -> pa.Array | None:
    """Boolean mask of the unexpected rows, or ``None`` when the column type does not apply."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    valid = pc.is_valid(column)
    if kind == "expect_column_values_to_not_be_null":
        return pc.invert(valid)
    if kind == "expect_column_values_to_match_regex":
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            return None
        hit = pc.match_substring_regex(column, kwargs["regex"])
        return pc.and_(valid, pc.invert(pc.fill_null(hit, True)))
    if kind == "expect_column_values_to_be_between":
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
            return None
        bad = pa.array(np.zeros(len(column), bool))
        if kwargs.get("min_value") is not None:
            bad = pc.or_(bad, pc.fill_null(pc.less(column, kwargs["min_value"]), False))
        if kwargs.get("max_value") is not None:
            bad = pc.or_(bad, pc.fill_null(pc.greater(column, kwargs["max_value"]), False))
        return bad
    if kind == "expect_column_values_to_be_in_set":
        try:
            values = pa.array(kwargs["value_set"]).cast(column.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return None
        return pc.and_(valid, pc.invert(pc.is_in(column, value_set=values)))
    if kind == "expect_column_values_to_be_unique":
        series = pl.from_arrow(column)
        assert isinstance(series, pl.Series)
        dup = series.is_duplicated() & series.is_not_null()
        return dup.to_arrow()
    return None


def _flat(table: pa.Table | StageTable) -> pa.Table | StageTable:
    """Struct columns flattened (:func:`flattened`); a stage table without struct columns is
    left as it is (one with struct columns is read whole)."""
    if isinstance(table, StageTable):
        if not any(pa.types.is_struct(f.type) for f in table.schema):
            return table
        table = table.read_all()
    return flattened(table)


def _blocks(table: pa.Table | StageTable, columns: Sequence[str]) -> Iterator[pa.Table]:
    """``columns`` of ``table`` in blocks of about :data:`BLOCK_ROWS` rows, in row order (a stage
    table reads only these columns, one block at a time)."""
    if isinstance(table, pa.Table):
        picked = table.select(list(columns))
        for start in range(0, picked.num_rows, BLOCK_ROWS):
            yield picked.slice(start, BLOCK_ROWS)
        return
    block: list[pa.RecordBatch] = []
    rows = 0
    for batch in table.to_batches(columns):
        block.append(batch)
        rows += batch.num_rows
        if rows >= BLOCK_ROWS:
            yield pa.Table.from_batches(block)
            block, rows = [], 0
    if block:
        yield pa.Table.from_batches(block)


def _elementwise_masks(
    table: pa.Table | StageTable, checks: Sequence[tuple[str, dict[str, Any], str]]
) -> list[pa.Array | None]:
    """Per ``(kind, kwargs, column)`` check, the boolean mask of the unexpected rows (``None``
    when the column type does not apply), evaluated block by block in one pass over the checked
    columns."""
    columns = [c for c in table.column_names if any(c == check[2] for check in checks)]
    masks: list[list[pa.Array] | None] = [[] for _ in checks]
    for block in _blocks(table, columns):
        for i, (kind, kwargs, column) in enumerate(checks):
            parts = masks[i]
            if parts is None:
                continue
            mask = _unexpected(block.column(column), kind, kwargs)
            if mask is None:
                masks[i] = None
            else:
                parts.append(mask)
    return [None if m is None else pa.concat_arrays(m) for m in masks]


def take_rows(
    table: pa.Table | StageTable, rows: np.ndarray, columns: Sequence[str] | None = None
) -> pa.Table:
    """The rows at the ascending positions ``rows`` (of ``columns``, default all): the sample
    and flagged rows are picked in row order, so anything else is a caller's bug."""
    rows = np.asarray(rows, np.int64)
    if len(rows) > 1 and np.any(np.diff(rows) < 0):
        raise ValueError("take_rows needs ascending row positions")
    return stage_table.take_rows(table, rows, columns)


def _row_sample(
    table: pa.Table | StageTable, column: str, rows: np.ndarray
) -> list[dict[str, Any]]:
    wanted = [c for c in table.column_names if c in ID_COLUMNS or c == column]
    picked = take_rows(table, rows, wanted)
    out = []
    for i in range(len(rows)):
        entry: dict[str, Any] = {
            name: _jsonable(picked[name][i].as_py()) if name in picked.column_names else None
            for name in ID_COLUMNS
        }
        entry["value"] = _jsonable(picked[column][i].as_py())
        out.append(entry)
    return out


def row_failures(
    table: pa.Table | StageTable,
    suite_name: str,
    sample_size: int = 10,
    rows: np.ndarray | None = None,
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """The suite's row-level expectations evaluated on every row of ``table`` (Arrow/polars).

    Returns the failures (same dicts as :attr:`SuiteResult.failures`, counts over all rows) and
    the flagged rows to show GX (up to ``sample_size`` per failing expectation). Expectations on
    missing columns or columns of another type are left to GX. ``rows`` (a boolean mask)
    restricts the check to those rows without copying the table.
    """
    table = _flat(table)
    n = table.num_rows if rows is None else int(np.count_nonzero(rows))
    checks = []
    for expectation in load_suite_json(suite_name)["expectations"]:
        kind, kwargs = expectation["type"], _kwargs(expectation)
        column = kwargs.get("column")
        if kind in ROW_LEVEL and column in table.column_names and n > 0:
            checks.append((kind, kwargs, column))
    unique = "expect_column_values_to_be_unique"
    masks = iter(_elementwise_masks(table, [c for c in checks if c[0] != unique]))
    selected = None if rows is None else pa.array(np.asarray(rows, bool))
    failures, flagged = [], []
    for kind, kwargs, column in checks:
        if kind == unique:
            mask = _unique_mask(table, column, kwargs, rows)
        else:
            mask = next(masks)
            if mask is not None and selected is not None:
                mask = pc.and_(mask, selected)
        if mask is None:
            continue
        count = int(pc.sum(mask).as_py() or 0)
        if count == 0:
            continue
        unexpected = np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False), bool))
        flagged.append(unexpected[:sample_size])
        failures.append(
            {
                "expectation": kind,
                "column": column,
                "kwargs": _jsonable(kwargs),
                "unexpected_count": count,
                "unexpected_percent": 100.0 * count / n,
                "sample": _row_sample(table, column, unexpected[:sample_size]),
                "observed_value": None,
                "exception": None,
                "scope": "all rows (Arrow)",
            }
        )
    picked = np.unique(np.concatenate(flagged)) if flagged else np.zeros(0, np.int64)
    return failures, picked


def _unique_mask(
    table: pa.Table | StageTable,
    column: str,
    kwargs: Mapping[str, Any],
    rows: np.ndarray | None,
) -> pa.Array | None:
    """The members of duplicate groups of ``column`` (among the rows of the mask ``rows``)."""
    kind = "expect_column_values_to_be_unique"
    if rows is None:
        return _unexpected(table.column(column), kind, kwargs)
    keep = np.asarray(rows, bool)
    inner = _unexpected(table.column(column).filter(pa.array(keep)), kind, kwargs)
    if inner is None:
        return None
    full = np.zeros(table.num_rows, bool)
    full[np.flatnonzero(keep)] = np.asarray(inner.to_numpy(zero_copy_only=False), bool)
    return pa.array(full)


def _sample_rows(candidates: np.ndarray, flagged: np.ndarray, sample_rows: int, seed: int):
    if sample_rows <= 0 or len(candidates) <= sample_rows:
        return candidates.astype(np.int64)
    rng = np.random.default_rng(seed)
    picked = rng.choice(candidates, size=sample_rows, replace=False)
    return np.unique(np.concatenate([picked.astype(np.int64), flagged.astype(np.int64)]))


def _member_name(entry: Mapping[str, Any], members: Sequence[str]) -> str | None:
    value = entry.get(MEMBER)
    return None if value is None else members[int(value)]


def _attribute(failure: dict[str, Any], members: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Split one GX failure on a shared sample into per-member failures."""
    index = failure.pop("_index", None)
    if not index:  # a column-level failure (type, presence): the same for every member
        return {m: dict(failure) for m in members}
    counts: dict[str, int] = {}
    for entry in index:
        member = members[int(entry[MEMBER])]
        counts[member] = counts.get(member, 0) + 1
    out = {}
    for member, count in counts.items():
        own = dict(failure)
        own["unexpected_count"] = count
        own["unexpected_percent"] = None  # of the sample only; see unexpected_count
        own["sample"] = [s for s in failure.get("sample", []) if _member_name(s, members) == member]
        out[member] = own
    return out


class SuiteRun:
    """One suite over several tables: :meth:`add` each table, then :meth:`results`.

    :meth:`add` runs the Arrow pass and keeps only the sampled rows, so the tables need not be
    held in memory together.
    """

    def __init__(
        self,
        suite_name: str,
        *,
        sample_rows: int = DEFAULT_SAMPLE_ROWS,
        seed: int = 0,
        sample_size: int = 10,
    ) -> None:
        self.suite_name, self.sample_rows = suite_name, sample_rows
        self.seed, self.sample_size = seed, sample_size
        self._arrow: dict[str, list[dict[str, Any]]] = {}
        self._samples: dict[str, pa.Table] = {}
        self._rows: dict[str, int] = {}

    def add(self, name: str, table: pa.Table | StageTable, rows: np.ndarray | None = None) -> None:
        """Check every row of ``table`` (or the rows flagged in the mask ``rows``), keep a sample."""
        table = _flat(table)
        self._arrow[name], flagged = row_failures(table, self.suite_name, self.sample_size, rows)
        candidates = (
            np.arange(table.num_rows) if rows is None else np.flatnonzero(np.asarray(rows, bool))
        )
        picks = _sample_rows(candidates, flagged, self.sample_rows, self.seed)
        self._samples[name] = take_rows(table, picks).combine_chunks()
        self._rows[name] = len(candidates)

    def results(self) -> dict[str, SuiteResult]:
        """GX once per distinct schema on the kept samples, merged with the Arrow failures."""
        groups: dict[str, list[str]] = {}
        for name in sorted(self._samples):
            schema = self._samples[name].schema.remove_metadata()
            groups.setdefault(schema.to_string(show_schema_metadata=False), []).append(name)
        results: dict[str, SuiteResult] = {}
        for names in groups.values():
            gx_result, per_member = self._gx_group(names)
            for name in names:
                merged = {_key(f): f for f in per_member[name]}
                merged.update({_key(f): f for f in self._arrow[name]})  # full-data counts win
                failures = list(merged.values())
                results[name] = replace(
                    gx_result,
                    success=not failures,
                    failed=len(failures),
                    rows=self._rows[name],
                    failures=failures,
                    validated_rows=self._samples[name].num_rows,
                )
        return results

    def _gx_group(self, members: list[str]) -> tuple[SuiteResult, dict[str, list[dict]]]:
        parts = []
        for i, member in enumerate(members):
            part = self._samples[member]
            marker = pa.array(np.full(part.num_rows, i, np.int32))
            parts.append(part.append_column(MEMBER, marker))
        result = validate_frame(
            pa.concat_tables(parts),
            self.suite_name,
            id_columns=(*ID_COLUMNS, MEMBER),
            sample_size=self.sample_size,
            complete_index=True,
        )
        per_member: dict[str, list[dict[str, Any]]] = {m: [] for m in members}
        for failure in result.failures:
            for member, own in _attribute(dict(failure), members).items():
                own["sample"] = [
                    {k: v for k, v in entry.items() if k != MEMBER} for entry in own["sample"]
                ][: self.sample_size]
                own["scope"] = "GX sample"
                per_member[member].append(own)
        return result, per_member


def validate_tables(
    tables: Mapping[str, pa.Table],
    suite_name: str,
    *,
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
    seed: int = 0,
    sample_size: int = 10,
) -> dict[str, SuiteResult]:
    """Validate each of ``tables`` (name -> table) against one suite; returns name -> result.

    ``sample_rows`` = 0 makes GX validate every row. See the module docstring.
    """
    run = SuiteRun(suite_name, sample_rows=sample_rows, seed=seed, sample_size=sample_size)
    for name, table in tables.items():
        run.add(name, table)
    return run.results()
