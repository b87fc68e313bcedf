"""What is out of date, from the state of the instance and the store: the one decision that
``rlhf-curate refresh`` runs and the daemon's automation evaluates (``pipelines/automation.py``,
:class:`OutOfDate`).

An asset is out of date when, in this order:

1. it was never materialized;
2. its latest materialization was made with another code version (code, suites, data files,
   settings and library versions of its stage: ``pipelines/versions.py``);
3. (ingest assets) its upstream file's latest observed data version differs from the
   ``fingerprint`` its latest ingest recorded;
4. a computed parent was materialized after it (a run that stopped half-way);
5. a parent is out of date (it will be recomputed, so must everything below it);
6. (``release``) the release its latest materialization published is not in the store (pruned,
   deleted, or the store changed).

It is not requested while a run that may materialize it is in progress, or while a parent's
blocking check last failed at ERROR severity and the parent is not requested itself (Dagster
blocks only on ERROR within a run; this applies the same rule across runs). A multi-asset that
cannot be subset is requested whole.

It compares state, not ticks: whatever a cursor holds (none on a home that only ever ran
``rlhf-curate run``, a new daemon sensor), a change since the last materialization is seen. One
query fetches every latest materialization; the rest is one query per upstream file and per
blocking check that matters, so a no-change refresh decides in well under a second.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg

from assets.keys import FINGERPRINT, RELEASE_KEY, upstream_keys
from curation.core.store import Store, StoreError
from curation.publish.release import manifest_key

log = logging.getLogger(__name__)

CODE_VERSION_TAG = "dagster/code_version"


def upstream_set() -> frozenset[dg.AssetKey]:
    """The observable upstream files of the registered datasets."""
    return frozenset(upstream_keys())


_IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dataclass(frozen=True)
class Decision:
    """The assets to materialize now and why (``{key: reason}``), and those held back."""

    requested: dict[dg.AssetKey, str]
    held: dict[dg.AssetKey, str]

    @property
    def keys(self) -> list[dg.AssetKey]:
        return sorted(self.requested, key=lambda k: k.to_user_string())


def _value(event: dg.EventLogEntry | None, key: str):
    materialization = event.asset_materialization if event is not None else None
    if materialization is None:
        return None
    value = (materialization.metadata or {}).get(key)
    return getattr(value, "value", value)


def _code_version(event: dg.EventLogEntry | None) -> str | None:
    materialization = event.asset_materialization if event is not None else None
    return (materialization.tags or {}).get(CODE_VERSION_TAG) if materialization else None


def observed_versions(instance: dg.DagsterInstance) -> dict[dg.AssetKey, str | None]:
    """The data version of each upstream file's latest observation."""
    out = {}
    for key in upstream_keys():
        records = instance.fetch_observations(key, limit=1).records
        out[key] = records[0].asset_observation.data_version if records else None
    return out


def failed_at_error(instance: dg.DagsterInstance, check_key: dg.AssetCheckKey) -> bool:
    """The latest evaluation of ``check_key`` failed at ERROR severity."""
    record = instance.get_latest_asset_check_evaluation_record(check_key)
    event = record.event.dagster_event if record is not None and record.event else None
    evaluation = event.event_specific_data if event is not None else None
    return (
        isinstance(evaluation, dg.AssetCheckEvaluation)
        and not evaluation.passed
        and evaluation.severity == dg.AssetCheckSeverity.ERROR
    )


def release_exists(store_uri: str, release_id: str) -> bool:
    """Whether ``release_id`` has a manifest in the store (True when the store cannot be read:
    an unreachable store is not taken for a missing release; the run would fail on it)."""
    try:
        return Store(store_uri).exists(manifest_key(release_id))
    except (StoreError, OSError) as exc:
        log.warning("cannot check release %s in the store: %s", release_id, exc)
        return True


def _in_progress(instance: dg.DagsterInstance) -> set[dg.AssetKey]:
    """Assets a queued or running run may materialize."""
    keys: set[dg.AssetKey] = set()
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=_IN_PROGRESS)):
        keys |= set(run.asset_selection or ())
    return keys


def _reason(
    key: dg.AssetKey,
    node,
    latest: Mapping[dg.AssetKey, dg.EventLogEntry | None],
    observed: Mapping[dg.AssetKey, str | None],
    stale: Mapping[dg.AssetKey, str],
    store_uri: str | None,
) -> str | None:
    """Why ``key`` is out of date (the module docstring's order), or None."""
    event = latest.get(key)
    if event is None:
        return "never materialized"
    recorded = _code_version(event)
    if recorded is not None and node.code_version is not None and recorded != node.code_version:
        return "code version changed"
    parents = node.parent_keys
    fingerprint = _value(event, FINGERPRINT)
    for parent in parents & upstream_set():
        version = observed.get(parent)
        if fingerprint is not None and version is not None and version != fingerprint:
            return f"source changed ({parent.to_user_string()})"
    for parent in sorted(parents - upstream_set(), key=str):
        if parent in stale:
            return f"{parent.to_user_string()} is recomputed"
        other = latest.get(parent)
        if other is not None and other.timestamp > event.timestamp:
            return f"{parent.to_user_string()} materialized since"
    if key == RELEASE_KEY and store_uri is not None:
        release_id = _value(event, "release_id")
        if release_id and not release_exists(store_uri, str(release_id)):
            return f"release {release_id} is not in the store"
    return None


def _blocked(
    instance: dg.DagsterInstance, graph, key: dg.AssetKey, stale: Mapping[dg.AssetKey, str]
) -> str | None:
    """A parent not recomputed now whose blocking check last failed at ERROR, or None."""
    for parent in sorted(graph.get(key).parent_keys - upstream_set(), key=str):
        if parent in stale:
            continue  # re-materialized with its checks in the same run
        for check_key in getattr(graph.get(parent), "check_keys", ()):
            if graph.get(check_key).blocking and failed_at_error(instance, check_key):
                return f"{check_key.to_user_string()} failed at ERROR"
    return None


def decide(graph, instance: dg.DagsterInstance, store_uri: str | None = None) -> Decision:
    """What to materialize now (see the module docstring). ``graph``: the asset graph
    (``Definitions.resolve_asset_graph()``, or the automation context's)."""
    upstream = upstream_set()
    computed = [
        k
        for k in graph.toposorted_asset_keys
        if graph.get(k).is_materializable and k not in upstream
    ]
    latest = instance.get_latest_materialization_events(computed)
    observed = observed_versions(instance)
    busy = _in_progress(instance)
    stale: dict[dg.AssetKey, str] = {}
    held: dict[dg.AssetKey, str] = {}
    for key in computed:
        node = graph.get(key)
        reason = _reason(key, node, latest, observed, stale, store_uri)
        if reason is None:
            continue
        blocked = "a run in progress may materialize it" if key in busy else None
        blocked = blocked or _blocked(instance, graph, key, stale)
        if blocked:
            held[key] = blocked
            continue
        stale[key] = reason
    for key in list(stale):  # a multi-asset that cannot be subset runs whole
        for sibling in graph.get(key).execution_set_asset_keys - set(stale):
            if sibling not in held:
                stale[sibling] = f"runs with {key.to_user_string()}"
    return Decision(stale, held)
