"""Stage 2, validate + normalize: split quarantined rows off and map every dataset to one pair table."""

import json

import dagster as dg
import pyarrow as pa

from assets.keys import ingest_keys
from assets.metadata import counts_markdown, preview, stage_out, table_metadata
from assets.resources import CurationSettings
from curation.core.report import report_of
from curation.core.stage_table import StageTable
from curation.ingest.ingest import require_recognisable
from curation.ingest.sources import SourceError
from curation.normalize.normalize import (
    is_red_team,
    pair_files_in_order,
    pair_preview_rows,
    pair_stream,
    quarantine_table,
    red_team_table,
)
from curation.publish.accounting import sum_counts

VALIDATE_GROUP = "validate"
SOURCE_FILES = pa.schema([("report", pa.string())])


def build_validate_and_normalize() -> dg.AssetsDefinition:
    """The ``validate_and_normalize`` multi-asset reading the ingest assets of the registered
    datasets (built when the definitions are)."""
    keys = ingest_keys()

    @dg.multi_asset(
        pool="rlhf_stage",
        ins={key.to_python_identifier(): dg.AssetIn(key, dagster_type=StageTable) for key in keys},
        outs={
            "normalized_pairs": stage_out(
                VALIDATE_GROUP,
                "Valid rows of every dataset as one preference-pair table (before dedup).",
            ),
            "quarantine": stage_out(
                VALIDATE_GROUP,
                "Rows that failed an ERROR rule, with reason codes and the raw line.",
            ),
            "red_team": stage_out(VALIDATE_GROUP, "HH red-team attempts with parsed turns."),
            "source_files": stage_out(
                VALIDATE_GROUP,
                "One JSON report per upstream file: URI, revision, size, sha256, rows.",
            ),
        },
    )
    def validate_and_normalize(
        context: dg.AssetExecutionContext, settings: CurationSettings, **raw_tables: StageTable
    ):
        yield from normalize_tables(settings, raw_tables)

    return validate_and_normalize


def normalize_tables(settings: CurationSettings, raw_tables: dict[str, StageTable]):
    """Split every ingested file into curated-bound rows and quarantine, then normalize.

    The raw tables are read as handles, group of record batches by group of record batches:
    the pair table is computed while the IO manager writes it (groups normalized on
    ``settings.ingest_threads`` threads), never held whole.
    """
    names = sorted(raw_tables)
    reports = [report_of(raw_tables[n]) for n in names]
    try:
        require_recognisable(reports)
    except SourceError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    # test files first, then train: each split is one contiguous run of rows, so the release
    # writes its split folders from zero-copy slices
    pair_files = pair_files_in_order(raw_tables)
    pairs = pair_stream(pair_files, settings.ingest_threads or None)
    yield dg.Output(
        pairs,
        "normalized_pairs",
        metadata={**table_metadata(pairs), "preview": preview(pair_preview_rows(pair_files))},
    )
    del pairs
    quarantine = quarantine_table([raw_tables[n] for n in names])
    by_reason = sum_counts(reports, "quarantine_by_reason")
    yield dg.Output(
        quarantine,
        "quarantine",
        metadata={
            **table_metadata(quarantine),
            "by_reason": counts_markdown(by_reason),
        },
    )
    del quarantine
    red_team = red_team_table([raw_tables[n] for n in names if is_red_team(raw_tables[n])])
    yield dg.Output(red_team, "red_team", metadata=table_metadata(red_team))
    del red_team
    absent = [r["relpath"] for r in reports if not r["present"]]
    source_files = pa.table({"report": [json.dumps(r) for r in reports]}, schema=SOURCE_FILES)
    yield dg.Output(
        source_files,
        "source_files",
        metadata={
            **table_metadata(source_files),
            "files_present": len(reports) - len(absent),
            "files_absent": dg.MetadataValue.md("\n".join(f"- `{a}`" for a in absent) or "_none_"),
            "rows_read": sum(r["rows_read"] for r in reports),
        },
    )


validate_and_normalize = build_validate_and_normalize()
"""The validate step of the built-in datasets (the definitions build their own)."""
