"""Stage 1, ingest: one asset per upstream file (dataset × subset/config × split).

One asset per file (rather than partitions) because the files have different schemas (HH lines,
HH red-team array, PKU current/v0), the downstream normalize step needs all of them at once, and
separate assets run in parallel under the multiprocess executor and show per-file metadata
(URI, revision, size, sha256, rows, quarantine counts) in the UI.
"""

import json

import dagster as dg
import pyarrow as pa

from assets.metadata import counts_markdown
from assets.resources import AwsCredentials, CurationSettings, SourcesResource
from curation.ingest import ingest_file
from curation.sources import SourceError, SourceFile, all_files

REPORT_KEY = b"rlhf_curation.report"
INGEST_GROUP = "ingest"


def ingest_asset_key(source: SourceFile) -> dg.AssetKey:
    """The asset key of a source file's ingest asset."""
    return dg.AssetKey(f"raw_{source.key}")


def report_of(table: pa.Table) -> dict:
    """The file report stored in an ingested table's schema metadata."""
    return json.loads((table.schema.metadata or {})[REPORT_KEY])


def build_ingest_asset(source: SourceFile) -> dg.AssetsDefinition:
    """The ingest asset of one upstream file."""

    @dg.asset(
        key=ingest_asset_key(source),
        group_name=INGEST_GROUP,
        kinds={"python", "parquet"},
        owners=["team:data-curation"],
        description=f"Rows of `{source.relpath}` ({source.dataset}) with per-row verdicts of the "
        "parse and label-consistency rules; missing optional files yield an empty table.",
        retry_policy=dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL),
    )
    def _ingest(
        context: dg.AssetExecutionContext,
        sources: SourcesResource,
        settings: CurationSettings,
        aws: AwsCredentials,
    ) -> dg.Output[pa.Table]:
        root, revision = sources.root(source.dataset)
        try:
            result = ingest_file(
                source,
                root,
                revision=revision,
                levels=settings.levels(),
                storage_options=aws.storage_options(root),
            )
        except SourceError as exc:  # the file itself is unreadable: fail, do not retry
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        report = result.report
        if not report.present:
            context.log.info(f"{report.uri}: not in the mirror; {source.key} skipped (absent)")
        metadata = {
            "uri": report.uri,
            "revision": report.revision or "",
            "present": report.present,
            "bytes": report.size,
            "sha256": report.sha256,
            "rows_read": report.rows_read,
            "rows_quarantined": report.rows_quarantined,
            "quarantine_by_reason": counts_markdown(report.quarantine_by_reason),
            "warnings_by_reason": counts_markdown(report.warnings_by_reason),
            "dagster/row_count": result.table.num_rows,
        }
        table = result.table.replace_schema_metadata(
            {REPORT_KEY: json.dumps(report.to_dict()).encode()}
        )
        return dg.Output(table, metadata=metadata)

    return _ingest


INGEST_ASSETS = [build_ingest_asset(source) for source in all_files()]
