"""Row accounting: every row read is kept, removed with a reason, or quarantined.

Source rows: ``rows_read = rows_quarantined + rows_normalized`` per file. Pairs: every normalized
HH row yields one pair and every PKU row two, and ``pairs_emitted = pairs_kept + pairs_removed``.
Red-team rows: ``rows_read = red_team_rows + rows_quarantined``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc


def pairs_per_row(report: Mapping[str, Any]) -> int:
    """Pairs a valid row of this file yields (its dataset says: e.g. 2 for a row giving a
    helpful and a harmless pair, 0 for a file giving none)."""
    from curation.datasets import (
        pairs_per_row as registered_pairs_per_row,
    )  # the registry imports polars: `releases` commands must not

    return registered_pairs_per_row(report)


def account(
    reports: Iterable[Mapping[str, Any]],
    *,
    pairs_kept: int,
    pairs_removed: int,
    quarantine_rows: int,
    red_team_rows: int,
) -> dict[str, Any]:
    """The accounting identities with their figures and whether each holds (``ok``)."""
    reports = list(reports)
    rows_read = sum(r["rows_read"] for r in reports)
    rows_quarantined = sum(r["rows_quarantined"] for r in reports)
    pairs_emitted = sum(
        (r["rows_read"] - r["rows_quarantined"]) * pairs_per_row(r) for r in reports
    )
    red_team_valid = sum(
        r["rows_read"] - r["rows_quarantined"] for r in reports if pairs_per_row(r) == 0
    )
    identities = {
        "quarantine_table_matches_reports": quarantine_rows == rows_quarantined,
        "pairs_emitted_equals_kept_plus_removed": pairs_emitted == pairs_kept + pairs_removed,
        "red_team_rows_match": red_team_rows == red_team_valid,
    }
    return {
        "rows_read": rows_read,
        "rows_quarantined": rows_quarantined,
        "rows_normalized": rows_read - rows_quarantined,
        "pairs_emitted": pairs_emitted,
        "pairs_kept": pairs_kept,
        "pairs_removed": pairs_removed,
        "red_team_rows": red_team_rows,
        "identities": identities,
        "ok": all(identities.values()),
    }


class HasRows(Protocol):
    """A table or a row selection: anything with a row count."""

    @property
    def num_rows(self) -> int: ...


def account_release(
    reports: Iterable[Mapping[str, Any]],
    *,
    pairs: HasRows,
    removed: Iterable[HasRows],
    quarantine: HasRows,
    red_team: HasRows,
) -> dict[str, Any]:
    """The accounting of a release's tables: :func:`account` over their row counts.

    ``removed`` are the removal audit tables (dedup, decontamination). The ``row_accounting``
    check and the publisher both call this, so they cannot disagree.
    """
    return account(
        reports,
        pairs_kept=pairs.num_rows,
        pairs_removed=sum(table.num_rows for table in removed),
        quarantine_rows=quarantine.num_rows,
        red_team_rows=red_team.num_rows,
    )


def sum_counts(reports: Iterable[Mapping[str, Any]], key: str) -> dict[str, int]:
    """The ``{code: count}`` mappings under ``key`` of every report, summed, sorted by code."""
    total: Counter[str] = Counter()
    for report in reports:
        total.update(report[key])
    return dict(sorted(total.items()))


def reason_counts(removed: pa.Table) -> dict[str, int]:
    """Removed rows per reason code (the ``reason`` column)."""
    if removed.num_rows == 0:
        return {}
    return {c["values"]: c["counts"] for c in pc.value_counts(removed.column("reason")).to_pylist()}
