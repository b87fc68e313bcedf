"""Stage 4, publish: write an immutable, content-addressed release to the curated store."""

import json
from datetime import UTC, datetime

import dagster as dg
import pyarrow as pa

from assets.metadata import column_schema, counts_markdown
from assets.resources import CurationSettings, StoreResource
from curation.accounting import account_release, reason_counts, sum_counts
from curation.ingest import manifest_sources
from curation.references import manifest_references
from curation.release import ReleaseError, publish_release, schema_from_b64
from curation.schema import REMOVED
from curation.stage_table import StageTable
from curation.store import StoreError
from curation.version import code_version

PUBLISH_GROUP = "publish"


def run_created_at(context: dg.AssetExecutionContext) -> datetime:
    """When this run was created (launched): ``latest.json`` follows the newest run."""
    record = context.instance.get_run_record_by_id(context.run_id)
    if record is None:
        return datetime.now(UTC)
    created = record.create_timestamp
    return created if created.tzinfo else created.replace(tzinfo=UTC)


def published_schema(manifest: dict, table: str) -> pa.Schema:
    """The Arrow schema ``table`` was published with (the manifest's, as its parquet files have
    it: no stage-only column such as ``prompt_normalized``; descriptions in field metadata)."""
    return schema_from_b64(manifest["tables"][table]["arrow_schema"])


@dg.asset(
    group_name=PUBLISH_GROUP,
    kinds={"s3", "parquet"},
    owners=["team:data-curation"],
    description="A new immutable release (pairs, quarantine, removed, red_team + manifest and card) "
    "in the curated store; `latest.json` moves to it last. Its check `release_verified` reads "
    "the published release back (Checks tab); the checks that must pass before it is published "
    "are on [curated_pairs](/assets/curated_pairs?view=checks) (`curated_pairs_suite`, "
    "`row_accounting`, blocking).",
    # Retries only help transient store errors; permanent ones fail at once (see below).
    pool="rlhf_release",
    retry_policy=dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL),
)
def release(
    context: dg.AssetExecutionContext,
    store: StoreResource,
    settings: CurationSettings,
    curated_pairs: StageTable,
    quarantine: pa.Table,
    red_team: pa.Table,
    dedup_removed: pa.Table,
    decontam_removed: pa.Table,
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
    try:
        result = publish_release(
            store.uri,
            {
                "pairs": curated_pairs,
                "quarantine": quarantine,
                "removed": removed,
                "red_team": red_team,
            },
            sources=sources,
            references=manifest_references(reference_files),
            config=settings.release_config(),
            code_version=context.assets_def.code_versions_by_key[context.asset_key]
            or code_version(),
            counts=counts,
            checks={"accounting": "passed"},
            storage_options=store.storage_options(),
            run_started_at=run_created_at(context),
        )
    except (StoreError, ReleaseError) as exc:
        if isinstance(exc, StoreError) and exc.transient:
            raise  # the retry policy tries again
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    context.log.info(f"release {result.release_id} {result.status} at {result.uri}")
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
            "quarantine_by_reason": counts_markdown(counts["quarantine_by_reason"]),
            **store.describe(),
        }
    )
