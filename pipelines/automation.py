"""Operations: what starts runs, what watches them, and the incremental refresh.

- ``daily_full_refresh`` (schedule, ``$REFRESH_CRON``, default 03:00 UTC daily): the
  ``full_refresh`` job, every asset of the graph.
- ``hh_rlhf_source_sensor`` / ``pku_saferlhf_source_sensor``: fingerprint every upstream file
  of the mirror (sha256 for local files, ETag+size on S3/HTTP, the repo commit on ``hf://``);
  the cursor keeps the fingerprints; when one changes the sensor records the new data version of
  the file's observable source asset and requests a run of exactly what depends on it (the
  changed files' ingest assets and everything downstream), otherwise it skips.
- The ``release`` asset carries a :class:`dagster.FreshnessPolicy` (fail after
  ``$RELEASE_MAX_AGE_HOURS``, default 36 h; warn after two thirds of that), which Dagster's
  freshness daemon evaluates and the UI shows; the ``release_freshness`` asset check applies the
  same window and posts a data-quality alert when it fails. The ``release_freshness_schedule``
  runs it hourly (job ``check_release_freshness``).
- ``run_failure_alert``: every failed run of this code location posts an ERROR alert (asset =
  job, check = ``run``) with the run id and a link to it.
- :func:`refresh` (``python -m pipelines.automation refresh``): observe the sources, ask Dagster
  which assets are stale (new source data version or code version) or missing, and materialize
  only those and what is downstream of them; with nothing changed it launches no run at all.

Schedules and source sensors start STOPPED (turn them on in the UI or with ``dagster schedule
start`` / ``dagster sensor start``); the run-failure alert sensor starts RUNNING.
"""

import argparse
import hashlib
import json
import os
import sys
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import dagster as dg

from assets.alerting import AlertsResource
from assets.ingest import (
    SOURCE_ASSETS,
    hf_commit,
    ingest_asset_key,
    source_fingerprint,
    upstream_asset_key,
)
from assets.resources import AwsCredentials, SourcesResource
from curation.schema import HH_DATASET, PKU_DATASET
from curation.sources import SourceFile, hh_files, pku_files
from curation.version import code_version

DEFAULT_REFRESH_CRON = "0 3 * * *"
DEFAULT_RELEASE_MAX_AGE_HOURS = 36.0
DEFAULT_SOURCE_SENSOR_INTERVAL_SECONDS = 600
RELEASE_KEY = dg.AssetKey("release")
DATA_VERSION_TAG = "dagster/data_version"
DATASET_FILES: dict[str, list[SourceFile]] = {HH_DATASET: hh_files(), PKU_DATASET: pku_files()}
SOURCE_KEYS = [a.key for a in SOURCE_ASSETS]


# --- settings read from the environment ----------------------------------------------------------


def refresh_cron(env: Mapping[str, str] | None = None) -> str:
    """Cron of the daily full refresh: ``$REFRESH_CRON`` or 03:00 every day."""
    return (os.environ if env is None else env).get("REFRESH_CRON") or DEFAULT_REFRESH_CRON


def release_max_age(env: Mapping[str, str] | None = None) -> timedelta:
    """How old the latest release may get before it fails freshness: ``$RELEASE_MAX_AGE_HOURS``."""
    raw = (os.environ if env is None else env).get("RELEASE_MAX_AGE_HOURS")
    return timedelta(hours=float(raw) if raw else DEFAULT_RELEASE_MAX_AGE_HOURS)


def source_sensor_interval(env: Mapping[str, str] | None = None) -> int:
    """Seconds between source-sensor ticks: ``$SOURCE_SENSOR_INTERVAL_SECONDS`` (default 600)."""
    raw = (os.environ if env is None else env).get("SOURCE_SENSOR_INTERVAL_SECONDS")
    return int(raw) if raw else DEFAULT_SOURCE_SENSOR_INTERVAL_SECONDS


# --- code versions and the freshness policy on the asset definitions -----------------------------


def release_freshness_policy(max_age: timedelta | None = None) -> dg.FreshnessPolicy:
    """FAIL once the latest ``release`` materialization is older than ``max_age``, WARN at 2/3."""
    max_age = max_age or release_max_age()
    warn = max_age * 2 / 3
    return dg.FreshnessPolicy.time_window(
        fail_window=max_age, warn_window=warn if warn >= timedelta(minutes=1) else None
    )


def with_operations(
    assets: Iterable[dg.AssetsDefinition | dg.SourceAsset], max_age: timedelta | None = None
) -> list[dg.AssetsDefinition | dg.SourceAsset]:
    """The assets with a code version on every computed asset and the freshness policy on ``release``.

    Assets without their own ``code_version`` get :func:`curation.version.code_version` (a digest
    of the curation library and the expectation suites): with code versions, re-running an asset
    on unchanged inputs gives the same data version, and a code change marks the asset stale.
    """
    policy = release_freshness_policy(max_age)

    def spec_fn(spec: dg.AssetSpec) -> dg.AssetSpec:
        if spec.code_version is None:
            spec = spec.replace_attributes(code_version=code_version())
        if spec.key == RELEASE_KEY:
            spec = dg.apply_freshness_policy(spec, policy)
        return spec

    return [
        a.map_asset_specs(spec_fn) if isinstance(a, dg.AssetsDefinition) and a.is_executable else a
        for a in assets
    ]


# --- freshness check on the published release -----------------------------------------------------


@dg.asset_check(
    asset=RELEASE_KEY,
    name="release_freshness",
    description="The latest release is at most $RELEASE_MAX_AGE_HOURS (default 36) hours old; "
    "alerts when it is older or when nothing was ever published.",
)
def release_freshness(
    context: dg.AssetCheckExecutionContext, alerts: AlertsResource
) -> dg.AssetCheckResult:
    """Age of the latest ``release`` materialization against the freshness window."""
    max_age = release_max_age()
    event = context.instance.get_latest_materialization_event(RELEASE_KEY)
    now = time.time()
    if event is None:
        passed, age, message = False, None, "no release has ever been published"
    else:
        age = now - event.timestamp
        passed = age <= max_age.total_seconds()
        message = (
            f"latest release is {age / 3600:.1f} h old "
            f"({'within' if passed else 'over'} the {max_age.total_seconds() / 3600:g} h window)"
        )
    counts = {"age_hours": round(age / 3600, 2) if age is not None else None}
    counts["max_age_hours"] = max_age.total_seconds() / 3600
    if not passed:
        alerts.send(
            asset=RELEASE_KEY.to_user_string(),
            check="release_freshness",
            severity="ERROR",
            counts=counts,
            run_id=context.run.run_id,
            message=message,
        )
    metadata: dict = {"max_age_hours": counts["max_age_hours"]}
    if event is not None:
        metadata["dagster/last_updated_timestamp"] = dg.MetadataValue.timestamp(event.timestamp)
        metadata["age_hours"] = counts["age_hours"]
    return dg.AssetCheckResult(
        passed=passed, severity=dg.AssetCheckSeverity.ERROR, description=message, metadata=metadata
    )


# --- jobs ---------------------------------------------------------------------------------------

full_refresh_job = dg.define_asset_job(
    "full_refresh",
    selection=(dg.AssetSelection.all() | dg.AssetSelection.assets(*SOURCE_KEYS))
    - dg.AssetSelection.checks(release_freshness),
    description="Observe every upstream file, then ingest every source, validate, normalize, "
    "deduplicate, decontaminate, publish.",
)

observe_sources_job = dg.define_asset_job(
    "observe_sources",
    selection=dg.AssetSelection.assets(*SOURCE_KEYS),
    description="Record the fingerprint (data version) of every upstream file; computes nothing.",
)

release_freshness_job = dg.define_asset_job(
    "check_release_freshness",
    selection=dg.AssetSelection.checks(release_freshness),
    description="Evaluate the release freshness check (alerts when it fails).",
)

# --- schedules ------------------------------------------------------------------------------------


def build_schedules() -> list[dg.ScheduleDefinition]:
    """The daily full refresh (``$REFRESH_CRON``) and the hourly release freshness check."""
    return [
        dg.ScheduleDefinition(
            name="daily_full_refresh",
            job=full_refresh_job,
            cron_schedule=refresh_cron(),
            default_status=dg.DefaultScheduleStatus.STOPPED,
            description="Full refresh of every asset (also keeps the release fresh).",
        ),
        dg.ScheduleDefinition(
            name="release_freshness_schedule",
            job=release_freshness_job,
            cron_schedule="17 * * * *",
            default_status=dg.DefaultScheduleStatus.STOPPED,
            description="Hourly: is the latest release within its freshness window?",
        ),
    ]


# --- source sensors -----------------------------------------------------------------------------


def dataset_fingerprints(
    files: Sequence[SourceFile],
    root: str,
    revision: str | None = None,
    storage_options: dict | None = None,
) -> dict[str, str]:
    """``{relpath: fingerprint}`` of every file of a mirror (one Hub call for ``hf://``)."""
    if root.startswith("hf://"):
        commit = f"hf-commit:{hf_commit(root, revision)}"
        return {f.relpath: commit for f in files}
    return {
        f.relpath: source_fingerprint(root, f.relpath, revision, storage_options) for f in files
    }


def recorded_fingerprints(
    instance: dg.DagsterInstance, files: Sequence[SourceFile]
) -> dict[str, str]:
    """The data versions last observed for the files' source assets (what runs were based on)."""
    out = {}
    for source in files:
        records = instance.fetch_observations(upstream_asset_key(source), limit=1).records
        if records:
            observation = records[0].asset_observation
            version = (observation.tags or {}).get(DATA_VERSION_TAG) if observation else None
            if version:
                out[source.relpath] = version
    return out


def never_materialized(instance: dg.DagsterInstance, keys: Iterable[dg.AssetKey]) -> list:
    """Keys without any materialization in ``instance``."""
    return [k for k in keys if instance.get_latest_materialization_event(k) is None]


def downstream_keys(
    assets: Sequence[dg.AssetsDefinition | dg.SourceAsset], roots: Iterable[dg.AssetKey]
) -> list[dg.AssetKey]:
    """``roots`` and every materializable asset downstream of them, sorted."""
    roots = list(roots)
    if not roots:
        return []
    keys = dg.AssetSelection.assets(*roots).downstream().resolve(assets)
    materializable = {
        k for a in assets if isinstance(a, dg.AssetsDefinition) and a.is_executable for k in a.keys
    }
    return sorted(keys & materializable, key=lambda k: k.to_user_string())


def _slug(dataset: str) -> str:
    return dataset.replace("-", "_")


def build_source_sensor(
    dataset: str,
    assets: Sequence[dg.AssetsDefinition | dg.SourceAsset],
    job=full_refresh_job,
) -> dg.SensorDefinition:
    """A sensor that starts a run of what depends on ``dataset``'s mirror when a file changes."""
    files = DATASET_FILES[dataset]
    sensor_name = f"{_slug(dataset)}_source_sensor"
    all_ingest = [ingest_asset_key(f) for files_ in DATASET_FILES.values() for f in files_]

    @dg.sensor(
        name=sensor_name,
        job=job,
        minimum_interval_seconds=source_sensor_interval(),
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"Fingerprints every upstream file of the {dataset} mirror (sha256, ETag or "
        "hf commit); on a change, records the new data versions and runs the changed files' "
        "ingest assets and everything downstream.",
    )
    def _sensor(
        context: dg.SensorEvaluationContext, sources: SourcesResource, aws: AwsCredentials
    ) -> dg.SensorResult:
        root, revision = sources.root(dataset)
        current = dataset_fingerprints(files, root, revision, aws.storage_options(root))
        if context.cursor:
            previous = json.loads(context.cursor)
        else:  # first tick: compare with what the last runs observed
            previous = recorded_fingerprints(context.instance, files)
        changed = [f for f in files if previous.get(f.relpath) != current[f.relpath]]
        cursor = json.dumps(current, sort_keys=True)
        if not changed:
            return dg.SensorResult(
                skip_reason=dg.SkipReason(f"{dataset}: {len(files)} upstream files unchanged"),
                cursor=cursor,
            )
        roots = [ingest_asset_key(f) for f in changed]
        roots += [k for k in never_materialized(context.instance, all_ingest) if k not in roots]
        selection = downstream_keys(assets, roots)
        digest = hashlib.sha256(cursor.encode()).hexdigest()[:16]
        observations = [
            dg.AssetObservation(
                asset_key=upstream_asset_key(f),
                tags={DATA_VERSION_TAG: current[f.relpath]},
                metadata={"fingerprint": current[f.relpath], "sensor": sensor_name},
            )
            for f in changed
        ]
        context.log.info(
            f"{dataset}: {len(changed)} file(s) changed "
            f"({', '.join(f.relpath for f in changed)}); requesting {len(selection)} assets"
        )
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"{_slug(dataset)}-{digest}",
                    asset_selection=selection,
                    tags={
                        "rlhf_curation/trigger": f"{_slug(dataset)}_source_change",
                        "rlhf_curation/changed_files": str(len(changed)),
                    },
                )
            ],
            asset_events=observations,
            cursor=cursor,
        )

    return _sensor


# --- run-failure alert ----------------------------------------------------------------------------


@dg.run_failure_sensor(
    name="run_failure_alert",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts an ERROR alert (asset = job, check = run) with the run id and a link "
    "for every failed run of this code location.",
)
def run_failure_alert(context: dg.RunFailureSensorContext, alerts: AlertsResource) -> None:
    """Send the failed run's job, failed steps and first error to the alert webhook."""
    run = context.dagster_run
    steps = context.get_step_failure_events()
    details = []
    for event in steps[:5]:
        error = event.step_failure_data.error if event.step_failure_data else None
        reason = error.message.strip().splitlines()[0] if error and error.message else ""
        details.append(f"{event.step_key}: {reason}"[:300])
    message = f"run of job `{run.job_name}` failed"
    if details:
        message += ": " + "; ".join(details)
    elif context.failure_event.message:
        message += f": {context.failure_event.message}"[:300]
    alerts.send(
        asset=run.job_name,
        check="run",
        severity="ERROR",
        counts={"failed_steps": len(steps)},
        run_id=run.run_id,
        message=message,
    )


def build_sensors(assets: Sequence[dg.AssetsDefinition | dg.SourceAsset]) -> list:
    """The two source sensors and the run-failure alert sensor."""
    return [
        build_source_sensor(HH_DATASET, assets),
        build_source_sensor(PKU_DATASET, assets),
        run_failure_alert,
    ]


# --- incremental refresh ------------------------------------------------------------------------


def stale_or_missing(defs: dg.Definitions, instance: dg.DagsterInstance) -> list[dg.AssetKey]:
    """Materializable assets Dagster considers STALE (new code or upstream data version) or MISSING.

    This is the same resolver the UI uses for its "stale" badges.
    """
    from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
    from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
    from dagster._time import get_current_datetime

    graph = defs.resolve_asset_graph()
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=graph,
    )
    resolver = CachingStaleStatusResolver(instance, graph, view)
    return sorted(
        (
            key
            for key in graph.materializable_asset_keys
            if resolver.get_status(key) in (StaleStatus.STALE, StaleStatus.MISSING)
        ),
        key=lambda k: k.to_user_string(),
    )


@dataclass
class RefreshResult:
    """What a refresh did: the observation run, what was stale, and the run that recomputed it."""

    observe_run_id: str
    stale: list[str] = field(default_factory=list)
    selected: list[str] = field(default_factory=list)
    run_id: str | None = None
    success: bool = True
    result: Any = None  # ExecuteInProcessResult or ExecuteJobResult


def refresh(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    run_config: Mapping | None = None,
    *,
    from_environment: bool = False,
) -> RefreshResult:
    """Observe the sources, then materialize only what is stale or missing (and its downstream).

    With nothing changed no run is launched: no ingest, nothing recomputed, nothing published.
    ``from_environment``: ``defs`` were built from the process environment, so the stale assets
    are run by :func:`pipelines.local_run.run_full_refresh` (outputs not kept in memory) instead
    of ``execute_in_process`` on ``defs``.
    """
    observed = defs.resolve_job_def("observe_sources").execute_in_process(
        instance=instance, run_config=run_config, raise_on_error=False
    )
    if not observed.success:
        return RefreshResult(observe_run_id=observed.run_id, success=False, result=observed)
    stale = stale_or_missing(defs, instance)
    out = RefreshResult(observe_run_id=observed.run_id, stale=[k.to_user_string() for k in stale])
    if not stale:
        return out
    graph = defs.resolve_asset_graph()
    selection = sorted(
        dg.AssetSelection.assets(*stale).downstream().resolve(graph)
        & graph.materializable_asset_keys,
        key=lambda k: k.to_user_string(),
    )
    if from_environment:
        from pipelines.local_run import run_full_refresh

        with run_full_refresh(instance, run_config, selection) as result:
            pass
    else:
        result = defs.resolve_job_def("full_refresh").execute_in_process(
            instance=instance,
            run_config=run_config,
            asset_selection=selection,
            raise_on_error=False,
        )
    out.selected = [k.to_user_string() for k in selection]
    out.run_id, out.success, out.result = result.run_id, result.success, result
    return out


def run_refresh(verbose: bool = False) -> int:
    """The incremental refresh against ``$DAGSTER_HOME``; prints what it did, returns an exit code."""
    from pipelines.definitions import build_definitions
    from pipelines.settings import Environment, console_run_config

    environment = Environment.from_env()
    environment.activate_dagster_home()
    start = time.perf_counter()
    with warnings.catch_warnings(), dg.DagsterInstance.get() as instance:
        warnings.simplefilter("ignore")
        outcome = refresh(
            build_definitions(environment),
            instance,
            console_run_config(verbose),
            from_environment=True,
        )
    elapsed = time.perf_counter() - start
    if not outcome.stale and outcome.success:
        print(f"nothing changed: no run launched ({elapsed:.1f} s)")
        return 0
    status = "succeeded" if outcome.success else "FAILED"
    print(f"refresh {status} in {elapsed:.1f} s: {len(outcome.stale)} stale/missing assets")
    print(f"  run {outcome.run_id}: materialized {', '.join(outcome.selected)}")
    return 0 if outcome.success else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipelines.automation refresh`` (same as ``rlhf-curate refresh``)."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.automation")
    parser.add_argument("command", choices=["refresh"])
    parser.add_argument("-v", "--verbose", action="store_true", help="show Dagster's step logs")
    return run_refresh(parser.parse_args(argv).verbose)


if __name__ == "__main__":
    sys.exit(main())
