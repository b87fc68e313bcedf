"""Reports: the per-file ingest report carried in an ingested table's schema metadata and what
it implies, and the one renderer of tables of figures (Markdown for the card and Dagster
metadata, plain text for the CLI).

A table is a header and rows of cells (any values); :func:`markdown_table` and
:func:`plain_table` render the same rows, each with its own cell formatting.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from curation.core.redact import redact_uri

REPORT_KEY = b"rlhf_curation.report"

#: Thresholds of the ``quarantine_rate`` check: the share of a file's rows read that the rules
#: quarantine. Measured on the real rows in ``../shared/data`` with the rules of this code
#: (``docs/validation.md``, "Quarantine-rate thresholds"):
#:
#: * HH-RLHF ``harmless-base/test.jsonl.gz``, the complete upstream file: 13 of 2,312 rows,
#:   0.56 % (95 % Wilson interval 0.33-0.96 %; ``bad_turn_order`` 9, ``context_mismatch`` 5,
#:   ``empty_response`` 4, some rows break two rules); its halves in ``sample_data``: 4 of 800
#:   (0.50 %) and 9 of 1,512 (0.60 %);
#: * PKU-SafeRLHF ``Alpaca-7B/test.jsonl``, first 45 rows: 0 of 45 (1 warning).
#:
#: WARN above 1 % is just above the top of that interval, so clean upstream HH files stay quiet
#: (0.5 %, the earlier value, sat at the measured rate and warned on every real HH file) while a
#: file that quarantines about twice its usual share warns (non-blocking: a prompt to read its
#: ``by_reason`` table). ERROR above 5 % is nine times the measured rate and five times the top
#: of its interval: only a format change or a parser regression quarantines that many rows.
QUARANTINE_WARN_RATE = 0.01
QUARANTINE_ERROR_RATE = 0.05


def report_of(table: pa.Table) -> dict:
    """The file report stored in an ingested table's schema metadata."""
    return json.loads((table.schema.metadata or {})[REPORT_KEY])


def quarantine_rate(report: Mapping[str, Any]) -> float:
    """The share of a file's rows read that were quarantined (0 for a file with no rows)."""
    read = report["rows_read"]
    return report["rows_quarantined"] / read if read else 0.0


def format_value(value: Any) -> str:
    """A figure as text: integers with thousands separators, floats to 4 significant digits."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4g}"
    return str(value)


def markdown_escape(text: str) -> str:
    """Text that stays inside one Markdown table cell (``|`` escaped, newlines as spaces)."""
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_cell(value: Any) -> str:
    """The default Markdown cell: :func:`format_value`, escaped."""
    return markdown_escape(format_value(value))


def markdown_table(
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    right: Sequence[int] = (),
    cell: Callable[[Any], str] = markdown_cell,
) -> str:
    """A Markdown table; ``right``: indexes of right-aligned columns; ``cell`` formats a value."""
    rule = ["---:" if i in right else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def plain_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table for a terminal: columns padded to their widest cell, two spaces apart,
    numbers right-aligned, a dashed rule under the header (``None`` is an empty cell)."""
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if v.replace(",", "").lstrip("+-").isdigit() else v.ljust(w)
            for v, w in zip(values, widths, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(list(header)), rule, *(line(r) for r in cells)])


#: Header of a release's sources table, in the card and in ``rlhf-curate releases show``.
SOURCES_HEADER = ("source", "uri", "revision", "files present / listed", "rows read")


def source_rows(sources: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """One row per upstream source of a manifest, under :data:`SOURCES_HEADER`.

    A source lists every file the source list names (``curation.ingest.sources``); an absent one is
    listed with ``present: false``. ``files present / listed`` counts both (``3 / 9``): the one
    definition the card and the CLI share. ``rows read`` adds up the present files' rows.
    """
    rows = []
    for source in sources:
        files = source.get("files") or []
        present = sum(1 for f in files if f.get("present", True))
        rows.append(
            [
                source.get("name") or source.get("dataset") or "-",
                redact_uri(source.get("uri") or source.get("url") or "-"),
                source.get("revision") or "-",
                f"{present} / {len(files)}",
                sum(int(f.get("rows") or 0) for f in files),
            ]
        )
    return rows
