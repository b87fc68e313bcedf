"""Asset checks: GX schema suites, quarantine rates, row accounting. ERROR checks block publish.

Every failing check (WARN or ERROR) sends a data-quality alert through :class:`AlertsResource`
(logged at once, delivered at the end of the run within its alert budget).
"""

import json

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from assets.alerting import AlertsResource
from assets.io import OPTIONAL_INPUT_MANAGER
from assets.keys import RELEASE_KEY, ingest_keys
from assets.metadata import counts_markdown
from assets.resources import CurationSettings, StoreResource
from curation.core.report import quarantine_rate, report_of
from curation.core.stage_table import StageTable
from curation.core.store import StoreError
from curation.datasets import suite_for
from curation.ingest.ingest import (
    RAW_LINE,
    REASONS,
    UPSTREAM_ROWS,
    WARNINGS,
    upstream_row_differences,
)
from curation.publish.accounting import account_release
from curation.publish.reader import open_release
from curation.publish.release import ReleaseError
from curation.validate.contract import SuiteRun
from curation.validate.gx_validate import SuiteResult, warm_up

BOOKKEEPING = [REASONS, WARNINGS, RAW_LINE, "dataset", "subset", "split"]


def _result(
    context: dg.AssetCheckExecutionContext,
    alerts: AlertsResource,
    *,
    asset: dg.AssetKey | str,
    check: str,
    passed: bool,
    severity: dg.AssetCheckSeverity,
    counts: dict,
    message: str,
    metadata: dict,
) -> dg.AssetCheckResult:
    asset_key = dg.AssetKey(asset) if isinstance(asset, str) else asset
    if not passed:
        alerts.send(
            asset=asset_key.to_user_string(),
            check=check,
            severity=severity.value,
            counts=counts,
            run_id=context.run.run_id,
            message=message,
        )
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=check,
        passed=passed,
        severity=severity,
        description=message,
        metadata=metadata,
    )


def _suite_result(
    context: dg.AssetCheckExecutionContext,
    alerts: AlertsResource,
    key: dg.AssetKey,
    check: str,
    result: SuiteResult,
) -> dg.AssetCheckResult:
    """A GX suite result as an ERROR-severity check result with failing-row samples."""
    return _result(
        context,
        alerts,
        asset=key,
        check=check,
        passed=result.success,
        severity=dg.AssetCheckSeverity.ERROR,
        counts={"rows": result.rows, "failed_expectations": result.failed},
        message=f"{result.suite}: {result.evaluated - result.failed}/{result.evaluated} expectations met",
        metadata={
            "suite": result.suite,
            "rows": result.rows,
            "failed_expectations": result.failed,
            "failures": dg.MetadataValue.md(result.to_markdown() or "_none_"),
            "details": dg.MetadataValue.json(result.to_metadata()),
        },
    )


def _absent_result(key: dg.AssetKey) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=key,
        check_name="schema_suite",
        passed=True,
        description="source absent: nothing to validate",
    )


def _as_table(table: StageTable | pa.Table) -> pa.Table:
    return table.read_all() if isinstance(table, StageTable) else table


def _clean_rows(table: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """The table without bookkeeping columns, and the mask of rows that passed the row rules
    (a mask, not a filtered copy of the file)."""
    clean = pc.equal(pc.list_value_length(table.column(REASONS)), 0)
    mask = np.asarray(clean.to_numpy(zero_copy_only=False), bool)
    return table.drop_columns(BOOKKEEPING), mask


def _quarantine_rate(
    context: dg.AssetCheckExecutionContext,
    alerts: AlertsResource,
    settings: CurationSettings,
    key: dg.AssetKey,
    report: dict,
) -> dg.AssetCheckResult:
    read, bad = report["rows_read"], report["rows_quarantined"]
    rate = quarantine_rate(report)
    severity = (
        dg.AssetCheckSeverity.ERROR
        if rate > settings.quarantine_error_rate
        else dg.AssetCheckSeverity.WARN
    )
    return _result(
        context,
        alerts,
        asset=key,
        check="quarantine_rate",
        passed=rate <= settings.quarantine_warn_rate,
        severity=severity,
        counts={"rows_read": read, "rows_quarantined": bad, **report["quarantine_by_reason"]},
        message=f"{bad:,} of {read:,} rows quarantined ({rate:.2%}); warn > "
        f"{settings.quarantine_warn_rate:.2%}, error > {settings.quarantine_error_rate:.2%}",
        metadata={
            "rate": rate,
            "rows_read": read,
            "rows_quarantined": bad,
            "by_reason": counts_markdown(report["quarantine_by_reason"]),
        },
    )


def _ingest_specs(key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            "schema_suite",
            asset=key,
            blocking=True,
            description="GX suite of the raw data contract over the rows that passed the row "
            "rules (row-level expectations on every row, the whole suite on a seeded sample).",
        ),
        dg.AssetCheckSpec(
            "quarantine_rate",
            asset=key,
            blocking=True,
            description="Share of the file's rows quarantined: WARN above the warn rate, "
            "ERROR above the error rate.",
        ),
    ]


def build_ingest_checks() -> dg.AssetChecksDefinition:
    """The ``ingest_checks`` step over the ingest assets of the registered datasets."""
    by_name = {key.to_python_identifier(): key for key in ingest_keys()}

    @dg.multi_asset_check(
        name="ingest_checks",
        specs=[spec for key in by_name.values() for spec in _ingest_specs(key)],
        # a subset run (incremental refresh) may select the checks of files never ingested yet
        ins={
            name: dg.AssetIn(key, input_manager_key=OPTIONAL_INPUT_MANAGER)
            for name, key in by_name.items()
        },
        can_subset=True,
        description="Schema suite and quarantine rate of every ingested file. One step, so that "
        "each GX suite runs once per schema on the files' samples (curation.validate.contract).",
    )
    def ingest_checks(
        context: dg.AssetCheckExecutionContext,
        alerts: AlertsResource,
        settings: CurationSettings,
        **tables: StageTable | None,
    ):
        yield from check_ingested(context, alerts, settings, by_name, tables)

    return ingest_checks


def check_ingested(
    context: dg.AssetCheckExecutionContext,
    alerts: AlertsResource,
    settings: CurationSettings,
    by_name: dict[str, dg.AssetKey],
    tables: dict[str, StageTable | None],
):
    """The quarantine rate and the GX schema suite of every selected ingested file.

    The tables come as :class:`StageTable` handles (see ``OPTIONAL_INPUT_MANAGER``): each file
    is read when its turn comes and dropped after its Arrow pass, so the step holds one file,
    not all fifteen."""
    selected = context.selected_asset_check_keys
    gx_ready = warm_up()  # GX imports while the Arrow passes below run
    runs: dict[str, SuiteRun] = {}
    for name in sorted(tables):
        key, handle = by_name[name], tables.pop(name)
        wanted = {dg.AssetCheckKey(key, c) for c in ("quarantine_rate", "schema_suite")}
        if not wanted & selected:
            continue
        if handle is None:
            raise dg.Failure(f"{key.to_user_string()}: checks selected but never materialized")
        report = report_of(handle)
        if dg.AssetCheckKey(key, "quarantine_rate") in selected:
            yield _quarantine_rate(context, alerts, settings, key, report)
        if dg.AssetCheckKey(key, "schema_suite") not in selected:
            continue
        if not report["present"]:
            yield _absent_result(key)
            continue
        suite = suite_for(report)
        if suite not in runs:
            runs[suite] = SuiteRun(suite, sample_rows=settings.gx_sample_rows)
        runs[suite].add(name, *_clean_rows(_as_table(handle)))
        del handle
    for suite in sorted(runs):
        for name, result in sorted(runs[suite].results().items()):
            yield _suite_result(context, alerts, by_name[name], "schema_suite", result)
    gx_ready.join()


@dg.asset_check(
    asset="curated_pairs",
    name="curated_pairs_suite",
    blocking=True,
    description="GX suite of the curated pair table.",
)
def curated_pairs_suite(
    context: dg.AssetCheckExecutionContext,
    alerts: AlertsResource,
    settings: CurationSettings,
    curated_pairs: StageTable,
) -> dg.AssetCheckResult:
    """The curated pair table meets its data contract."""
    run = SuiteRun("curated_pairs", sample_rows=settings.gx_sample_rows)
    run.add("curated_pairs", curated_pairs)
    result = run.results()["curated_pairs"]
    return _suite_result(
        context, alerts, dg.AssetKey("curated_pairs"), "curated_pairs_suite", result
    )


@dg.asset_check(
    asset="curated_pairs",
    name="row_accounting",
    blocking=True,
    description="rows read = kept + removed-with-reason + quarantined, exactly.",
    additional_ins={
        "source_files": dg.AssetIn("source_files"),
        "quarantine": dg.AssetIn("quarantine"),
        "red_team": dg.AssetIn("red_team"),
        "dedup_removed": dg.AssetIn("dedup_removed"),
        "decontam_removed": dg.AssetIn("decontam_removed"),
    },
)
def row_accounting(
    context: dg.AssetCheckExecutionContext,
    alerts: AlertsResource,
    curated_pairs: StageTable,
    source_files: pa.Table,
    quarantine: pa.Table,
    red_team: pa.Table,
    dedup_removed: pa.Table,
    decontam_removed: pa.Table,
) -> dg.AssetCheckResult:
    """Every row read is accounted for."""
    figures = account_release(
        [json.loads(r) for r in source_files.column("report").to_pylist()],
        pairs=curated_pairs,
        removed=[dedup_removed, decontam_removed],
        quarantine=quarantine,
        red_team=red_team,
    )
    counts = {k: v for k, v in figures.items() if isinstance(v, int) and not isinstance(v, bool)}
    return _result(
        context,
        alerts,
        asset="curated_pairs",
        check="row_accounting",
        passed=figures["ok"],
        severity=dg.AssetCheckSeverity.ERROR,
        counts=counts,
        message="holds" if figures["ok"] else f"broken: {figures['identities']}",
        metadata={**counts, "identities": dg.MetadataValue.json(figures["identities"])},
    )


@dg.asset_check(
    asset="source_files",
    name="upstream_row_counts",
    blocking=False,
    description="WARN when a present upstream file has another number of rows than the real "
    "upstream file (HH-RLHF subsets and the red-team array); a sample or partial copy warns, "
    "never blocks.",
)
def upstream_row_counts(
    context: dg.AssetCheckExecutionContext, alerts: AlertsResource, source_files: pa.Table
) -> dg.AssetCheckResult:
    """Rows read per present file against the published upstream sizes (WARN only)."""
    reports = [json.loads(r) for r in source_files.column("report").to_pylist()]
    differences = upstream_row_differences(reports)
    compared = sum(
        1 for r in reports if r["present"] and f"{r['dataset']}/{r['relpath']}" in UPSTREAM_ROWS
    )
    fewer = all(d["rows"] < d["upstream"] for d in differences)
    kind = "a sample or partial copy (fewer rows)" if fewer else "not the upstream files"
    lines = [
        f"- `{d['file']}`: {d['rows']:,} rows, upstream {d['upstream']:,}" for d in differences
    ]
    return _result(
        context,
        alerts,
        asset="source_files",
        check="upstream_row_counts",
        passed=not differences,
        severity=dg.AssetCheckSeverity.WARN,
        counts={"files_compared": compared, "files_differing": len(differences)},
        message=f"{compared} present files match the upstream row counts"
        if not differences
        else f"{len(differences)} of {compared} present files differ from upstream: {kind}",
        metadata={
            "files_compared": compared,
            "files_differing": len(differences),
            "differences": dg.MetadataValue.md("\n".join(lines) or "_none_"),
        },
    )


def _metadata_text(materialization: dg.AssetMaterialization, key: str) -> str | None:
    value = (materialization.metadata or {}).get(key)
    value = getattr(value, "value", value)
    return str(value) if value else None


@dg.asset_check(
    asset=RELEASE_KEY,
    name="release_verified",
    blocking=False,
    description="The release the latest materialization published, read back from its store "
    "(`Release.verify`, docs/releases.md): every file's size and sha256 against the manifest, "
    "no unlisted file, the manifest's digests and id, row counts in the parquet footers, "
    "read = kept + removed + quarantined. Runs after each publish; execute it from this tab "
    "to re-check a published release at any time. The checks that gate publishing sit on "
    "`curated_pairs` (`curated_pairs_suite`, `row_accounting`).",
)
def release_verified(
    context: dg.AssetCheckExecutionContext, alerts: AlertsResource, store: StoreResource
) -> dg.AssetCheckResult:
    """The published release of the latest ``release`` materialization verifies."""
    event = context.instance.get_latest_materialization_event(RELEASE_KEY)
    materialization = event.asset_materialization if event is not None else None
    if materialization is None:
        raise dg.Failure("no release has been published yet: nothing to verify")
    release_id = _metadata_text(materialization, "release_id")
    store_uri = _metadata_text(materialization, "store_uri") or store.uri
    try:
        release = open_release(store_uri, release_id, store.aws.storage_options(store_uri))
        problems = release.verify()
    except (ReleaseError, StoreError) as exc:
        problems, unreadable = [], str(exc)
    else:
        unreadable = ""
    lines = [f"- `{p.path}` {p.kind}: {p.message}" for p in problems[:50]]
    if unreadable:
        lines = [f"- {unreadable}"]
    ok = not lines
    return _result(
        context,
        alerts,
        asset=RELEASE_KEY,
        check="release_verified",
        passed=ok,
        severity=dg.AssetCheckSeverity.ERROR,
        counts={"problems": len(problems) or int(bool(unreadable))},
        message=f"release {release_id} in {store_uri}: "
        + ("verifies" if ok else unreadable or f"{len(problems)} problems"),
        metadata={
            "release_id": release_id or "",
            "store_uri": store_uri,
            "problems": len(problems) or int(bool(unreadable)),
            "details": dg.MetadataValue.md("\n".join(lines) or "_none_"),
        },
    )


def build_checks() -> list:
    """Every check of the definitions: the ingest checks of the registered datasets' files and
    the checks of the later assets."""
    return [build_ingest_checks(), *ALL_CHECKS[1:]]


ingest_checks = build_ingest_checks()
"""The ingest checks of the built-in datasets (the definitions build their own)."""
ALL_CHECKS = [
    ingest_checks,
    curated_pairs_suite,
    row_accounting,
    upstream_row_counts,
    release_verified,
]
