"""Declarative automation: when observations and computations run, and what watches them.

- Upstream files (``assets/upstream.py``, one observation step for all 15): observed
  ``on_cron($REFRESH_CRON)`` (default 03:00 UTC daily). An observation records each file's
  fingerprint as its data version; only a *new* data version counts as an update.
- Computed assets: :func:`computed_condition`, ``eager()`` (a dependency updated, or the asset is
  newly missing) or-ed with ``code_version_changed()`` (per-stage code versions,
  ``pipelines/versions.py``) and with :func:`out_of_date` (:class:`OutOfDate`: the state-based
  decision of :mod:`pipelines.staleness`, the one ``rlhf-curate refresh`` runs), and gated on the
  blocking checks of every dependency.
- ``release`` also re-publishes once per ``$REFRESH_CRON`` tick so that it stays inside its
  freshness window (:func:`release_freshness_policy`, ``dg.FreshnessPolicy.time_window``) on
  days without changes; release ids are content-addressed, so that costs one cheap publish
  reporting ``unchanged``.
- ``rlhf_automation`` (:class:`dg.AutomationConditionSensorDefinition`, RUNNING by default)
  evaluates the conditions in the daemon and submits the runs to the instance's run queue, tagged
  with the store and source URIs.
- ``run_failure_alert`` (RUNNING): an ERROR alert for every failed run in the instance (also the
  in-process runs of ``rlhf-curate run`` / ``refresh``, which are recorded in the same instance).
- ``release_freshness_alert`` (RUNNING): one alert when the latest release crosses its fail
  window, not one per tick.

No module here imports ``pipelines.definitions``; the refresh command is ``pipelines.refresh``.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import dagster as dg

from assets.alerting import AlertsResource
from assets.keys import RELEASE_KEY, upstream_keys
from assets.resources import CurationSettings
from curation.core.redact import redact_uri
from pipelines.settings import Environment
from pipelines.staleness import Decision, decide, failed_at_error
from pipelines.versions import STAGE_OF_OP, stage_versions

log = logging.getLogger(__name__)

AUTOMATION_SENSOR = "rlhf_automation"
CODE_VERSION_TAG = "dagster/code_version"
_READY = (
    ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
)


# --- conditions -----------------------------------------------------------------------------------


class UpstreamChecksAllow(dg.AutomationCondition):
    """True unless a dependency's blocking check last failed at ERROR severity (and the
    dependency is not requested again in this tick, which re-runs its checks).

    Dagster's ``all_deps_blocking_checks_passed()`` is false for a WARN-severity failure too, and
    the sample's real quarantine rates sit in the WARN band, so it would hold normalize back
    forever; within a run Dagster blocks only on ERROR failures, and this applies the same rule
    across ticks. A check never evaluated does not block. Python evaluated in the code location
    (the automation sensor runs with ``use_user_code_server=True``); as a direct operand of the
    asset's condition it makes the condition non-serializable, so the UI gets its snapshot.
    """

    @property
    def name(self) -> str:
        return "no_blocking_check_error_upstream"

    def evaluate(self, context):  # AutomationContext[AssetKey] -> AutomationResult
        graph, instance = context.asset_graph, context.asset_graph_view.instance
        requested = context.request_subsets_by_key
        for parent in graph.get(context.key).parent_keys:
            if parent in requested and not requested[parent].is_empty:
                continue  # re-materialized (with its checks) in this tick's run
            for check_key in getattr(graph.get(parent), "check_keys", ()):
                if graph.get(check_key).blocking and failed_at_error(instance, check_key):
                    empty = context.get_empty_subset()
                    return dg.AutomationResult(context=context, true_subset=empty)
        return dg.AutomationResult(context=context, true_subset=context.candidate_subset)


class MaterializedWithOtherCode(dg.AutomationCondition):
    """True when the asset's latest materialization was made with another code version.

    ``code_version_changed()`` compares with the previous *tick*, so a first evaluation (a new
    sensor, the first ``rlhf-curate refresh`` of a home) cannot see a change made before it;
    the code version recorded on the materialization can.
    """

    @property
    def name(self) -> str:
        return "materialized_with_other_code"

    def evaluate(self, context):  # AutomationContext[AssetKey] -> AutomationResult
        current = context.asset_graph.get(context.key).code_version
        event = context.asset_graph_view.instance.get_latest_materialization_event(context.key)
        recorded = (
            (event.asset_materialization.tags or {}).get(CODE_VERSION_TAG)
            if event is not None and event.asset_materialization is not None
            else None
        )
        differs = recorded is not None and current is not None and recorded != current
        subset = context.candidate_subset if differs else context.get_empty_subset()
        return dg.AutomationResult(context=context, true_subset=subset)


class OutOfDate(dg.AutomationCondition):
    """True for the assets :func:`pipelines.staleness.decide` requests: out of date by the state
    of the instance and the store (never materialized, another code version, a changed upstream
    file, a parent materialized since or recomputed, the release gone from the store), not held
    by a run in progress or a blocking check. The same decision ``rlhf-curate refresh`` runs;
    computed once per evaluation (a tick evaluates every asset)."""

    _last: tuple[Any, Decision] | None = None

    def __init__(self, store_uri: str | None = None) -> None:
        self.store_uri = store_uri

    @property
    def name(self) -> str:
        return "out_of_date"

    def evaluate(self, context):  # AutomationContext[AssetKey] -> AutomationResult
        tick = (id(context.asset_graph), context.evaluation_time, self.store_uri)
        cached = OutOfDate._last
        if cached is None or cached[0] != tick:
            decision = decide(
                context.asset_graph, context.asset_graph_view.instance, self.store_uri
            )
            OutOfDate._last = cached = (tick, decision)
        requested = context.key in cached[1].requested
        subset = context.candidate_subset if requested else context.get_empty_subset()
        return dg.AutomationResult(context=context, true_subset=subset)


def out_of_date(store_uri: str | None = None) -> dg.AutomationCondition:
    """:class:`OutOfDate`, newly true (so a failed run is not relaunched on every tick), until
    the asset is requested or updated; and, in the same tick, everything below an asset
    requested by it (eager's ``will_be_requested``, which its reset drops on a first tick)."""
    dep_requested = dg.AutomationCondition.any_deps_match(
        dg.AutomationCondition.will_be_requested()
    )
    handled = dg.AutomationCondition.newly_requested() | dg.AutomationCondition.newly_updated()
    trigger = OutOfDate(store_uri).newly_true() | dep_requested
    return (trigger.since(handled) & _READY).with_label("out_of_date")


def observation_condition(cron: str) -> dg.AutomationCondition:
    """Observe the upstream files once per ``cron`` tick."""
    return dg.AutomationCondition.on_cron(cron)


def computed_condition(store_uri: str | None = None) -> dg.AutomationCondition:
    """``eager()``, a new code version or :func:`out_of_date`, and no dependency's blocking check
    failed (ERROR). ``eager()`` sees what changed since the previous tick; ``out_of_date`` what
    the instance and the store say, so a first tick (no cursor) misses nothing."""
    code_changed = (
        (
            dg.AutomationCondition.code_version_changed().since_last_handled()
            | MaterializedWithOtherCode().newly_true()  # also seen on a first evaluation
        )
        & _READY
    ).with_label("code_version_changed")
    triggers = dg.AutomationCondition.eager() | code_changed | out_of_date(store_uri)
    return (triggers & UpstreamChecksAllow()).with_label("eager_or_code_version_changed")


def release_condition(
    cron: str, keep_fresh: bool = True, store_uri: str | None = None
) -> dg.AutomationCondition:
    """:func:`computed_condition` (with the release's presence in ``store_uri``), plus one
    re-publish per ``cron`` tick when ``keep_fresh``."""
    if not keep_fresh:
        return computed_condition(store_uri)
    republish = (
        dg.AutomationCondition.cron_tick_passed(cron).since_last_handled()
        & _READY
        & UpstreamChecksAllow()
    ).with_label(f"republish_on_cron({cron})")
    return (computed_condition(store_uri) | republish).with_label("release")


def release_freshness_policy(max_age: timedelta) -> dg.FreshnessPolicy:
    """FAIL once the latest ``release`` materialization is older than ``max_age``, WARN at 2/3."""
    warn = max_age * 2 / 3
    return dg.FreshnessPolicy.time_window(
        fail_window=max_age, warn_window=warn if warn >= timedelta(minutes=1) else None
    )


def with_operations(
    assets: Iterable[dg.AssetsDefinition],
    environment: Environment,
    settings: CurationSettings | None = None,
    *,
    keep_release_fresh: bool = True,
) -> list[dg.AssetsDefinition]:
    """The computed assets with their stage's code version, automation condition, and the
    freshness policy on ``release``."""
    versions = stage_versions(settings)
    policy = release_freshness_policy(environment.release_max_age)
    computed = computed_condition()
    release = release_condition(environment.refresh_cron, keep_release_fresh, environment.store_uri)
    tables = (environment.dagster_home / "tables").as_posix()
    out = []
    for asset in assets:
        version = versions[STAGE_OF_OP[asset.node_def.name]]

        def spec_fn(spec: dg.AssetSpec, version: str = version) -> dg.AssetSpec:
            is_release = spec.key == RELEASE_KEY
            spec = spec.replace_attributes(
                code_version=version, automation_condition=release if is_release else computed
            )
            if not is_release:  # where the IO manager keeps the stage table
                path = "/".join(spec.key.path)
                return spec.merge_attributes(metadata={"dagster/uri": f"{tables}/{path}.arrow"})
            tags = {k: v for k, v in spec.tags.items() if not k.startswith("dagster/kind/")}
            spec = spec.replace_attributes(tags=tags, kinds=release_kinds(environment.store_uri))
            return dg.apply_freshness_policy(spec, policy)

        out.append(asset.map_asset_specs(spec_fn))
    return out


def release_kinds(store_uri: str) -> set[str]:
    """Kinds of the ``release`` asset: parquet, on S3 or in a local folder."""
    return {"parquet", "s3" if store_uri.startswith(("s3://", "s3a://")) else "file"}


#: Run tag of each source setting (:meth:`Environment.sources_config`).
SOURCE_TAGS = {
    "hh_rlhf_uri": "rlhf/hh_uri",
    "pku_saferlhf_uri": "rlhf/pku_uri",
    "hh_rlhf_revision": "rlhf/hh_revision",
    "pku_saferlhf_revision": "rlhf/pku_revision",
}


def run_tags(environment: Environment) -> dict[str, str]:
    """Tags every run carries: the store and the sources (and pinned revisions), redacted."""
    sources = environment.sources_config()
    return {
        "rlhf/store": redact_uri(environment.store_uri),
        **{SOURCE_TAGS[name]: redact_uri(value) for name, value in sources.items()},
    }


# --- sensors ----------------------------------------------------------------------------------


def automation_sensor(environment: Environment) -> dg.AutomationConditionSensorDefinition:
    """Evaluates every automation condition of the location; RUNNING by default."""
    with warnings.catch_warnings():  # use_user_code_server is "beta" in Dagster 1.13
        warnings.simplefilter("ignore", dg.BetaWarning)
        return _automation_sensor(environment)


def _automation_sensor(environment: Environment) -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR,
        target=dg.AssetSelection.all() | dg.AssetSelection.assets(*upstream_keys()),
        default_status=dg.DefaultSensorStatus.RUNNING,
        run_tags=run_tags(environment),
        use_user_code_server=True,  # UpstreamChecksAllow is Python of this code location
        description="Observes the upstream files on $REFRESH_CRON; recomputes what a new data "
        "version or code version made out of date once blocking checks allow; re-publishes the "
        "release once per cron tick to keep it fresh.",
    )


@dg.run_failure_sensor(
    name="run_failure_alert",
    default_status=dg.DefaultSensorStatus.RUNNING,
    monitor_all_code_locations=True,  # also runs executed in process by the CLI (no origin)
    description="Posts an ERROR alert (asset = job, check = run) with the run id and a link "
    "for every failed run of the instance, whoever launched it.",
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


def freshness_state(
    instance: dg.DagsterInstance, max_age: timedelta, now: float | None = None
) -> tuple[str, float | None, str]:
    """(``PASS`` | ``WARN`` | ``FAIL``, age in hours, run id) of the latest release, as the
    policy judges it (WARN after 2/3 of the window)."""
    event = instance.get_latest_materialization_event(RELEASE_KEY)
    if event is None:
        return "FAIL", None, ""
    age = (now or time.time()) - event.timestamp
    if age > max_age.total_seconds():
        state = "FAIL"
    else:
        state = "WARN" if age > max_age.total_seconds() * 2 / 3 else "PASS"
    return state, age / 3600, event.run_id


def release_freshness_alert(environment: Environment) -> dg.SensorDefinition:
    """Alerts once when the release's freshness turns FAIL (and logs the recovery)."""
    max_age = environment.release_max_age

    @dg.sensor(
        name="release_freshness_alert",
        minimum_interval_seconds=600,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="One ERROR alert when the latest release gets older than "
        "$RELEASE_MAX_AGE_HOURS (or none was ever published); silent while the state holds.",
    )
    def _sensor(context: dg.SensorEvaluationContext, alerts: AlertsResource) -> dg.SkipReason:
        state, age, run_id = freshness_state(context.instance, max_age)
        previous = json.loads(context.cursor)["state"] if context.cursor else None
        context.update_cursor(json.dumps({"state": state}))
        hours = max_age.total_seconds() / 3600
        message = (
            "no release has ever been published"
            if age is None
            else f"latest release is {age:.1f} h old ({state}; fail window {hours:g} h)"
        )
        if state == "FAIL" and previous != "FAIL":
            alerts.send(
                asset=RELEASE_KEY.to_user_string(),
                check="release_freshness",
                severity="ERROR",
                counts={
                    "age_hours": round(age, 2) if age is not None else None,
                    "max_age_hours": hours,
                },
                run_id=run_id,  # the run that published the stale release ("" if none)
                message=message,
            )
            return dg.SkipReason(f"alerted: {message}")
        return dg.SkipReason(message)

    return _sensor


def sensors(environment: Environment) -> list:
    """Every sensor of the location."""
    return [automation_sensor(environment), run_failure_alert, release_freshness_alert(environment)]


def full_refresh_job(environment: Environment) -> dg.UnresolvedAssetJobDefinition:
    """Observe every upstream file, then compute and publish everything (``rlhf-curate run``)."""
    return dg.define_asset_job(
        "full_refresh",
        selection=dg.AssetSelection.all() | dg.AssetSelection.assets(*upstream_keys()),
        tags=run_tags(environment),
        description="Observe every upstream file, then ingest, validate, normalize, "
        "deduplicate, decontaminate, publish.",
    )
