"""Stage 4, publish: write an immutable, content-addressed release to the curated store."""

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pyarrow as pa

from assets.alerting import AlertsResource
from assets.keys import RELEASE_KEY
from assets.metadata import column_schema, counts_markdown
from assets.resources import CurationSettings, StoreResource
from curation.core.schema import REMOVED
from curation.core.stage_table import StageTable
from curation.core.store import StoreError
from curation.core.version import code_version
from curation.ingest.ingest import manifest_sources
from curation.match.references import manifest_references
from curation.publish.accounting import account_release, reason_counts, sum_counts
from curation.publish.drift import CHECK_DESCRIPTIONS, CHECKS, ERROR, PASS, CheckResult, Finding
from curation.publish.profile import pair_keys, profile_release
from curation.publish.release import ReleaseError, publish_release, schema_from_b64

PUBLISH_GROUP = "publish"


def run_created_at(context: dg.AssetExecutionContext) -> datetime:
    """When this run was created (launched): ``latest.json`` follows the newest run."""
    record = context.instance.get_run_record_by_id(context.run_id)
    if record is None:
        return datetime.now(UTC)
    created = record.create_timestamp
    return created if created.tzinfo else created.replace(tzinfo=UTC)


def _check_keys(context: dg.AssetExecutionContext) -> list[dg.AssetCheckKey]:
    """Every asset check key of the code location, or, where the run has no repository
    (``dg.materialize``), those this run evaluated."""
    try:
        keys = set(context.repository_def.asset_checks_defs_by_key)
    except dg.DagsterInvariantViolationError:
        keys = set()
    except Exception:  # no repository behind an ephemeral job (dagster's CheckError)
        keys = set()
    records = context.instance.get_records_for_run(
        context.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        data = event.event_specific_data if event is not None else None
        if isinstance(data, dg.AssetCheckEvaluation):
            keys.add(data.asset_check_key)
    return sorted(keys, key=str)


def check_evaluations(context: dg.AssetExecutionContext) -> dict[str, dict[str, Any]]:
    """The latest evaluation of every other asset check (this run's, or an earlier run's for
    assets this run did not recompute), WARNs included: what the manifest's ``checks`` and the
    card list."""
    out: dict[str, dict[str, Any]] = {}
    for key in _check_keys(context):
        if key.asset_key == context.asset_key:
            continue  # the release's own checks are the drift checks, in ``changes``
        record = context.instance.get_latest_asset_check_evaluation_record(key)
        event = record.event.dagster_event if record is not None and record.event else None
        evaluation = event.event_specific_data if event is not None else None
        if not isinstance(evaluation, dg.AssetCheckEvaluation):
            continue
        out[f"{key.asset_key.to_user_string()}:{key.name}"] = {
            "passed": evaluation.passed,
            "severity": evaluation.severity.value,
            "description": evaluation.description or "",
            "run_id": record.run_id,
        }
    return out


def drift_check_results(manifest: Mapping[str, Any]) -> list[dg.AssetCheckResult]:
    """The release's asset checks from its manifest's ``changes`` (:mod:`curation.publish.drift`)."""
    results = []
    by_name = {c["check"]: c for c in (manifest.get("changes") or {}).get("checks", [])}
    for name in CHECKS:
        found = by_name.get(name)
        if found is None:
            continue
        check = CheckResult(found["check"], found["severity"], compared=found["compared"])
        check.baseline = found["baseline"]
        check.findings = [Finding(**f) for f in found["findings"]]
        results.append(
            dg.AssetCheckResult(
                check_name=name,
                passed=check.passed,
                severity=dg.AssetCheckSeverity.ERROR
                if check.severity == ERROR
                else dg.AssetCheckSeverity.WARN,
                description=check.description(),
                metadata={
                    "previous_release": (manifest.get("changes") or {}).get("previous_release")
                    or "",
                    "findings": len(check.findings),
                    "compared": check.compared,
                    "details": dg.MetadataValue.json([f.__dict__ for f in check.findings][:50]),
                },
            )
        )
    return results


def drift_alert(result: Any, alerts: AlertsResource, run_id: str) -> None:
    """One alert for a newly published release whose drift checks fired: every finding with its
    previous and new value, both release ids, and whether ``latest`` was held."""
    changes = result.manifest.get("changes") or {}
    severity = changes.get("severity", PASS)
    if result.status != "published" or severity == PASS:
        return
    findings = [
        Finding(**f) for check in changes.get("checks", []) for f in check.get("findings", [])
    ]
    previous = changes.get("previous_release")
    lines = [f.line() for f in findings[:20]]
    if len(findings) > 20:
        lines.append(f"... and {len(findings) - 20} more (see the card)")
    if result.held:
        lines.append(
            f"latest stays on {previous} (what consumers have); to accept {result.release_id}: "
            f"rlhf-curate releases promote {result.release_id} --reason '...'"
        )
    alerts.send(
        asset=RELEASE_KEY.to_user_string(),
        check="release_drift",
        severity=severity,
        counts={
            "findings": len(findings),
            "previous_release": previous,
            "release": result.release_id,
            "held": result.held,
        },
        run_id=run_id,
        message=f"release {result.release_id} against {previous}: " + "; ".join(lines),
    )


def published_schema(manifest: dict, table: str) -> pa.Schema:
    """The Arrow schema ``table`` was published with (the manifest's, as its parquet files have
    it: no stage-only column such as ``prompt_normalized``; descriptions in field metadata)."""
    return schema_from_b64(manifest["tables"][table]["arrow_schema"])


@dg.asset(
    group_name=PUBLISH_GROUP,
    kinds={"s3", "parquet"},
    owners=["team:data-curation"],
    description="A new immutable release (pairs, quarantine, removed, red_team + manifest and card) "
    "in the curated store; compared with the release `latest` named (drift checks, Checks tab); "
    "`latest` moves to it last, unless an ERROR drift holds it. Its check `release_verified` "
    "reads the published release back; the checks that must pass before it is published are on "
    "[curated_pairs](/assets/curated_pairs?view=checks) (`curated_pairs_suite`, "
    "`row_accounting`, blocking).",
    # Retries only help transient store errors; permanent ones fail at once (see below).
    pool="rlhf_release",
    retry_policy=dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL),
    check_specs=[
        dg.AssetCheckSpec(name, asset=RELEASE_KEY, description=CHECK_DESCRIPTIONS[name])
        for name in CHECKS
    ],
)
def release(
    context: dg.AssetExecutionContext,
    store: StoreResource,
    settings: CurationSettings,
    alerts: AlertsResource,
    curated_pairs: StageTable,
    quarantine: pa.Table,
    red_team: pa.Table,
    dedup_removed: pa.Table,
    decontam_removed: pa.Table,
    paraphrases: pa.Table,
    source_files: pa.Table,
    reference_files: pa.Table,
) -> dg.MaterializeResult:
    """Publish the curated tables with a manifest; report 'unchanged' when nothing changed."""
    reports = [json.loads(r) for r in source_files.column("report").to_pylist()]
    removed = pa.concat_tables([REMOVED.empty_table(), dedup_removed, decontam_removed])
    accounting = account_release(
        reports,
        pairs=curated_pairs,
        removed=[dedup_removed, decontam_removed],
        quarantine=quarantine,
        red_team=red_team,
    )
    if not accounting["ok"]:
        raise dg.Failure(
            description=f"row accounting does not hold: {accounting['identities']}",
            metadata={"accounting": accounting},
            allow_retries=False,
        )
    counts = {
        "quarantine_by_reason": sum_counts(reports, "quarantine_by_reason"),
        "warnings_by_reason": sum_counts(reports, "warnings_by_reason"),
        "removed_by_reason": reason_counts(removed),
        "accounting": accounting,
    }
    sources = manifest_sources(reports)
    timings = {}
    started = time.perf_counter()
    profile = profile_release({"pairs": curated_pairs, "removed": removed}, sources)
    timings["profile_seconds"] = time.perf_counter() - started
    keys = pair_keys(curated_pairs)
    timings["pair_keys_seconds"] = time.perf_counter() - started - sum(timings.values())
    checks = check_evaluations(context)
    timings["check_results_seconds"] = time.perf_counter() - started - sum(timings.values())
    try:
        result = publish_release(
            store.uri,
            {
                "pairs": curated_pairs,
                "quarantine": quarantine,
                "removed": removed,
                "red_team": red_team,
                "paraphrases": paraphrases,
            },
            sources=sources,
            references=manifest_references(reference_files),
            config=settings.release_config(),
            code_version=context.assets_def.code_versions_by_key[context.asset_key]
            or code_version(),
            counts=counts,
            checks=checks,
            profile=profile,
            pair_keys=keys,
            drift=settings.drift_config(),
            allowed_missing=tuple(settings.allow_missing_files),
            storage_options=store.storage_options(),
            run_started_at=run_created_at(context),
        )
    except (StoreError, ReleaseError) as exc:
        if isinstance(exc, StoreError) and exc.transient:
            raise  # the retry policy tries again
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    context.log.info(f"release {result.release_id} {result.status} at {result.uri}")
    drift_alert(result, alerts, context.run_id)
    changes = result.manifest.get("changes") or {}
    return dg.MaterializeResult(
        metadata={
            "release_id": result.release_id,
            "status": result.status,
            "release_uri": result.uri,
            "dagster/uri": result.uri,
            "dagster/column_schema": column_schema(published_schema(result.manifest, "pairs")),
            "card": dg.MetadataValue.path(f"{result.uri}/README.md"),
            "pairs": curated_pairs.num_rows,
            "quarantined_rows": quarantine.num_rows,
            "removed_pairs": removed.num_rows,
            "removed_by_reason": counts_markdown(counts["removed_by_reason"]),
            "paraphrase_links": paraphrases.num_rows,
            "quarantine_by_reason": counts_markdown(counts["quarantine_by_reason"]),
            "previous_release": changes.get("previous_release") or "",
            "drift": changes.get("severity", PASS),
            "held": result.held,
            **{k: round(v, 3) for k, v in timings.items()},  # what the comparison costs
            "publish_seconds": round(time.perf_counter() - started - sum(timings.values()), 3),
            **store.describe(),
        },
        check_results=drift_check_results(result.manifest),
    )
