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

from assets.keys import FINGERPRINT, ingest_asset_key, ingest_group, upstream_asset_key
from assets.metadata import counts_markdown, table_metadata
from assets.resources import CurationSettings, SourcesResource, StoreResource
from curation.core.report import REPORT_KEY
from curation.core.store import Store, StoreError
from curation.core.version import code_version
from curation.ingest.ingest import (
    check_patterns,
    check_presence,
    file_name,
    ingest_file,
    ingest_in_threads,
)
from curation.ingest.sources import (
    SourceError,
    SourceFile,
    all_files,
    check_layout,
    check_root,
    file_uri,
    is_glob,
    is_present,
    matching_files,
)
from curation.ingest.upstream import is_transient
from curation.publish.release import ReleaseError, previous_release_files


def _ingest_out(source: SourceFile) -> dg.AssetOut:
    return dg.AssetOut(
        key=ingest_asset_key(source),
        group_name=ingest_group(source),
        kinds={"python", "arrow"},
        owners=["team:data-curation"],
        description=f"Rows of `{source.relpath}` ({source.dataset}) with per-row verdicts of the "
        "parse and label-consistency rules; missing optional files yield an empty table.",
        code_version=code_version(),
        is_required=False,
    )


def ingest_one(
    source: SourceFile, sources: SourcesResource, settings: CurationSettings
) -> tuple[pa.Table, dict]:
    """Ingest one upstream file: its table (report in the schema metadata) and asset metadata."""
    root, revision = sources.root(source.dataset)
    result = ingest_file(
        source,
        root,
        revision=revision,
        levels=settings.levels(),
        storage_options=sources.storage_options(root),
        policy=settings.read_policy(),
    )
    report = result.report
    metadata = {
        "uri": report.uri,
        "revision": report.revision or "",
        "present": report.present,
        "bytes": report.size,
        "sha256": report.sha256,
        FINGERPRINT: report.fingerprint,  # compared with the next observation (automation)
        "rows_read": report.rows_read,
        "rows_quarantined": report.rows_quarantined,
        "quarantine_by_reason": counts_markdown(report.quarantine_by_reason),
        "warnings_by_reason": counts_markdown(report.warnings_by_reason),
        "unknown_keys": counts_markdown(report.unknown_keys),
        "unknown_key_rows": sum(report.unknown_keys.values()),
        **table_metadata(result.table),
    }
    table = result.table.replace_schema_metadata(
        {REPORT_KEY: json.dumps(report.to_dict()).encode()}
    )
    return table, metadata


def build_ingest_files() -> dg.AssetsDefinition:
    """The ``ingest_files`` multi-asset over the files of the registered datasets (built when
    the definitions are, after a settings file's datasets are registered)."""
    files = all_files()

    @dg.multi_asset(
        name="ingest_files",
        outs={ingest_asset_key(s).to_python_identifier(): _ingest_out(s) for s in files},
        deps=[upstream_asset_key(s) for s in files],
        internal_asset_deps={  # each file's asset depends on its own upstream file only
            ingest_asset_key(s).to_python_identifier(): {upstream_asset_key(s)} for s in files
        },
        pool="rlhf_stage",
        can_subset=True,
        retry_policy=dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL),
    )
    def ingest_files(
        context: dg.AssetExecutionContext,
        sources: SourcesResource,
        settings: CurationSettings,
        store: StoreResource,
    ):
        yield from ingest_selected(context, files, sources, settings, store)

    return ingest_files


def ingest_selected(
    context: dg.AssetExecutionContext,
    files: list[SourceFile],
    sources: SourcesResource,
    settings: CurationSettings,
    store: StoreResource,
):
    """Ingest the selected upstream files, ``settings.ingest_threads`` at a time, at most one
    large file (:func:`curation.ingest.ingest.is_large`) of them.

    One step for all files: parsing, decompression and the vectorized rules release the GIL, so
    threads use every core without the per-process start-up and pickling of one step per file.
    Before any file is read, each mirror root must be a readable folder; after, absent files are
    judged against ``expected_files`` / ``allow_missing_files`` and the previous release
    (:func:`curation.ingest.ingest.check_presence`).
    """
    selected = [s for s in files if ingest_asset_key(s) in context.selected_asset_keys]
    previous = _preflight(context, selected, sources, settings, store)
    before = _absent(selected, sources, settings)
    _judge_absent(context, before, settings, previous)  # fail before any output
    workers = settings.ingest_threads or os.cpu_count() or 1

    def work(source: SourceFile) -> tuple[pa.Table, dict]:
        return ingest_one(source, sources, settings)

    absent: list[str] = []
    try:
        for source, (table, metadata) in ingest_in_threads(work, selected, workers):
            if not metadata["present"]:
                context.log.info(f"{metadata['uri']}: not in the mirror; {source.key} skipped")
                absent.append(file_name(source.dataset, source.relpath))
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
    late = [name for name in absent if name not in before]  # vanished while the others were read
    if late:
        _judge_absent(context, late, settings, previous)


def _absent(
    selected: list[SourceFile], sources: SourcesResource, settings: CurationSettings
) -> list[str]:
    """Names of the selected files absent from their mirror; one that may not be read (a link
    out of its mirror, a special file, unreadable) fails the run before any file is read."""
    absent = []
    policy = settings.read_policy()
    try:
        for source in selected:
            root, revision = sources.root(source.dataset)
            options = sources.storage_options(root)
            if is_glob(source.relpath):
                present = bool(matching_files(root, source.relpath, revision, options))
            else:
                uri = file_uri(root, source.relpath, revision)
                present = is_present(uri, options, root=root, policy=policy)
            if not present:
                absent.append(file_name(source.dataset, source.relpath))
    except SourceError as exc:
        if is_transient(exc):
            raise
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    return absent


def _judge_absent(
    context: dg.AssetExecutionContext,
    absent: list[str],
    settings: CurationSettings,
    previous: tuple[str, set[str]] | None,
) -> None:
    """Fail on absent files that must be there; log one warning line for the others."""
    verdict = check_presence(
        absent,
        expected=settings.expected_files,
        allow_missing=settings.allow_missing_files,
        previous=previous,
    )
    if verdict.errors:
        raise dg.Failure(
            description="missing upstream files:\n" + "\n".join(verdict.errors),
            allow_retries=False,
        )
    if verdict.warnings:  # one line, not one per file: the bundled sample lacks 10 files
        context.log.warning(
            f"{len(verdict.warnings)} upstream files absent (expected_files unset): "
            + "; ".join(w.split(":")[0] for w in verdict.warnings)
        )


def _preflight(
    context: dg.AssetExecutionContext,
    selected: list[SourceFile],
    sources: SourcesResource,
    settings: CurationSettings,
    store: StoreResource,
) -> tuple[str, set[str]] | None:
    """Check the file settings and every selected mirror root (a readable folder holding files of
    its dataset's layout); the previous release's files."""
    try:
        check_patterns(settings.expected_files or [], "expected_files")
        check_patterns(settings.allow_missing_files, "allow_missing_files")
        for dataset in sorted({s.dataset for s in selected}):
            root, _ = sources.root(dataset)
            check_root(root, sources.storage_options(root))
            layout = [s for s in all_files() if s.dataset == dataset]
            check_layout(root, layout, sources.storage_options(root))
    except (ValueError, SourceError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    try:
        return previous_release_files(Store.of(store.uri, store.storage_options()))
    except (
        StoreError,
        ReleaseError,
    ) as exc:  # publishing reports store problems; ingest need not stop here
        context.log.warning(f"previous release not readable, vanished files not checked: {exc}")
        return None


ingest_files = build_ingest_files()
"""The ingest step of the built-in datasets (the definitions build their own)."""
