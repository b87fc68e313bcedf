"""Helpers that turn counts and tables into Dagster metadata (Markdown tables, previews)."""

from collections.abc import Mapping
from typing import Any

import dagster as dg
import pyarrow as pa

from curation.core.report import markdown_escape, markdown_table
from curation.core.schema import column_descriptions, description

PREVIEW_COLUMNS = ("pair_id", "dataset", "subset", "split", "dimension", "prompt", "chosen")


def counts_markdown(counts: Mapping[str, int], key: str = "reason") -> dg.MarkdownMetadataValue:
    """A two-column Markdown table of counts (``_none_`` when empty)."""
    if not counts:
        return dg.MetadataValue.md("_none_")
    rows = [[f"`{name}`", count] for name, count in sorted(counts.items())]
    return dg.MetadataValue.md(markdown_table([key, "rows"], rows, right=[1]))


def preview(table: pa.Table, n: int = 5, width: int = 80) -> dg.MarkdownMetadataValue:
    """The first ``n`` rows of a few columns as a Markdown table, texts cut to ``width``."""
    columns = [c for c in PREVIEW_COLUMNS if c in table.column_names] or table.column_names[:6]
    rows = [[r[c] for c in columns] for r in table.select(columns).slice(0, n).to_pylist()]

    def cut(value: Any) -> str:
        return markdown_escape(str(value))[:width]

    return dg.MetadataValue.md(markdown_table(columns, rows, cell=cut))


def column_schema(schema: pa.Schema) -> dg.TableSchema:
    """The Arrow schema as Dagster's ``dagster/column_schema`` (the UI's Columns tab), each
    column described by its field metadata (``curation.core.schema``), else by what its name means
    in the curation schemas (an ingested file's ``prompt``, ``split``...)."""
    known = column_descriptions()
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                field.name,
                str(field.type),
                description=description(field) or known.get(field.name),
            )
            for field in schema
        ]
    )


def table_metadata(table) -> dict:
    """Row count and column schema of a stage table (``pa.Table`` or ``RowSelection``)."""
    return {
        "dagster/row_count": table.num_rows,
        "dagster/column_schema": column_schema(table.schema),
    }


def stage_out(group: str, description: str) -> dg.AssetOut:
    """An output of a multi-asset stage: its group, kinds (stage tables are Arrow IPC files),
    owner and description."""
    return dg.AssetOut(
        group_name=group,
        kinds={"python", "arrow"},
        owners=["team:data-curation"],
        description=description,
    )
