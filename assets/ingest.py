"""Stage 1, ingest: one asset per upstream file (dataset × subset/config × split).

One asset per file (rather than partitions) because the files have different schemas (HH lines,
HH red-team array, PKU current/v0), the downstream normalize step needs all of them at once, and
each shows its own metadata (URI, revision, size, sha256, rows, quarantine counts) and data
version in the UI. The 15 assets are computed by one subsettable multi-asset step,
:func:`ingest_files`, which runs the files on a thread pool: one process, no pickling, every
core busy (a step process per file cost ~2 s of start-up each).
"""

import json
import os

import dagster as dg
import pyarrow as pa

from assets.keys import ingest_asset_key, upstream_asset_key
from assets.metadata import counts_markdown, table_metadata
from assets.resources import AwsCredentials, CurationSettings, SourcesResource
from curation.ingest import ingest_file
from curation.parallel import in_threads
from curation.report import REPORT_KEY
from curation.sources import SourceError, SourceFile, all_files
from curation.upstream import is_transient
from curation.version import code_version

INGEST_GROUP = "ingest"


def _ingest_out(source: SourceFile) -> dg.AssetOut:
    return dg.AssetOut(
        key=ingest_asset_key(source),
        group_name=INGEST_GROUP,
        kinds={"python", "arrow"},
        owners=["team:data-curation"],
        description=f"Rows of `{source.relpath}` ({source.dataset}) with per-row verdicts of the "
        "parse and label-consistency rules; missing optional files yield an empty table.",
        code_version=code_version(),
        is_required=False,
    )


def ingest_one(
    source: SourceFile, sources: SourcesResource, settings: CurationSettings, aws: AwsCredentials
) -> tuple[pa.Table, dict]:
    """Ingest one upstream file: its table (report in the schema metadata) and asset metadata."""
    root, revision = sources.root(source.dataset)
    result = ingest_file(
        source,
        root,
        revision=revision,
        levels=settings.levels(),
        storage_options=aws.storage_options(root),
    )
    report = result.report
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
        **table_metadata(result.table),
    }
    table = result.table.replace_schema_metadata(
        {REPORT_KEY: json.dumps(report.to_dict()).encode()}
    )
    return table, metadata


@dg.multi_asset(
    name="ingest_files",
    outs={ingest_asset_key(s).to_python_identifier(): _ingest_out(s) for s in all_files()},
    deps=[upstream_asset_key(s) for s in all_files()],
    internal_asset_deps={  # each file's asset depends on its own upstream file only
        ingest_asset_key(s).to_python_identifier(): {upstream_asset_key(s)} for s in all_files()
    },
    pool="rlhf_stage",
    can_subset=True,
    retry_policy=dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL),
)
def ingest_files(
    context: dg.AssetExecutionContext,
    sources: SourcesResource,
    settings: CurationSettings,
    aws: AwsCredentials,
):
    """Ingest the selected upstream files, ``settings.ingest_threads`` at a time.

    One step for all files: parsing, decompression and the vectorized rules release the GIL, so
    threads use every core without the per-process start-up and pickling of one step per file.
    """
    selected = [s for s in all_files() if ingest_asset_key(s) in context.selected_asset_keys]
    # costliest first (the red-team array is parsed in Python), so no thread idles at the end
    selected.sort(key=lambda s: (s.kind != "hh_red_team", s.split == "test"))
    workers = settings.ingest_threads or os.cpu_count() or 1

    def work(source: SourceFile) -> tuple[pa.Table, dict]:
        return ingest_one(source, sources, settings, aws)

    try:
        for source, (table, metadata) in in_threads(work, selected, workers, ordered=False):
            if not metadata["present"]:
                context.log.info(f"{metadata['uri']}: not in the mirror; {source.key} skipped")
            yield dg.Output(
                table,
                output_name=ingest_asset_key(source).to_python_identifier(),
                metadata=metadata,
            )
    except SourceError as exc:
        if is_transient(exc):  # I/O error while reading: the retry policy retries it
            raise
        # the file itself is unreadable: fail, do not retry
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
