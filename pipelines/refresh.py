"""The incremental refresh: observe the sources, then run what is out of date.

``rlhf-curate refresh``: every upstream file is observed (its fingerprint recorded as an
observation of its source asset, in the instance, without a run), then
:func:`pipelines.staleness.decide` says what is out of date, from the state of the instance and
the store (the same function the daemon's automation condition evaluates, ``OutOfDate`` in
``pipelines/automation.py``), and exactly those assets run. On a day with no change nothing
runs. Nothing is kept between refreshes (no cursor): a failed run is requested again by the next
refresh because its assets are still out of date.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from assets.keys import upstream_keys
from assets.upstream import observe_files
from pipelines.local_run import run_full_refresh
from pipelines.staleness import decide

#: The resources an observation needs (the sources and their credentials).
OBSERVATION_RESOURCES = ("sources", "aws", "credentials")


@dataclass
class RefreshResult:
    """What a refresh did: what it observed, what was out of date (and why), the run of it."""

    observed: dict[str, str] = field(default_factory=dict)  # {asset: data version}
    requested: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None
    success: bool = True
    result: Any = None  # ExecuteInProcessResult or ExecuteJobResult
    error: str | None = None


def observe(defs: dg.Definitions, instance: dg.DagsterInstance) -> dict[str, str]:
    """Observe every upstream file with the definitions' source resources and record each
    fingerprint as an observation (data version) of its source asset; ``{asset: version}``."""
    resources = {k: v for k, v in (defs.resources or {}).items() if k in OBSERVATION_RESOURCES}
    with dg.build_resources(resources) as built:
        results = observe_files(built.sources, set(upstream_keys()))
    observed = {}
    for result in results:
        version = result.data_version.value if result.data_version else None
        instance.report_runless_asset_event(
            dg.AssetObservation(
                asset_key=result.asset_key,
                metadata=result.metadata,
                tags={"dagster/data_version": version} if version else None,
            )
        )
        observed[result.asset_key.to_user_string()] = version
    return observed


def _execute(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    keys: Sequence[dg.AssetKey],
    run_config: Mapping | None,
    tags: Mapping[str, str] | None,
    from_environment: bool,
    config_path: str | None = None,
):
    """Run ``keys`` (and their checks) of ``full_refresh``; the result of the run."""
    if from_environment:
        with run_full_refresh(
            instance, run_config, keys, tags=tags, config_path=config_path
        ) as result:
            return result
    return defs.resolve_job_def("full_refresh").execute_in_process(
        instance=instance,
        run_config=dict(run_config or {}),
        asset_selection=list(keys),
        tags=dict(tags or {}),
        raise_on_error=False,
    )


def store_uri_of(defs: dg.Definitions) -> str | None:
    """The curated store the definitions publish to."""
    store = (defs.resources or {}).get("store")
    return getattr(store, "uri", None)


def refresh(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    run_config: Mapping | None = None,
    *,
    tags: Mapping[str, str] | None = None,
    from_environment: bool = False,
    config_path: str | None = None,
) -> RefreshResult:
    """Observe the sources, then materialize what is out of date (:func:`decide`).

    ``from_environment``: ``defs`` were built from the process environment, so the requested
    assets run through :func:`pipelines.local_run.run_full_refresh` (outputs not kept in memory)
    instead of ``execute_in_process`` on ``defs``.
    """
    try:
        observed = observe(defs, instance)
    except Exception as exc:  # an unreadable mirror: the refresh fails, saying which
        return RefreshResult(success=False, error=f"observing the sources failed: {exc}")
    decision = decide(defs.resolve_asset_graph(), instance, store_uri_of(defs))
    out = RefreshResult(
        observed=observed,
        requested=[k.to_user_string() for k in decision.keys],
        reasons={k.to_user_string(): v for k, v in decision.requested.items()},
    )
    if decision.keys:
        result = _execute(
            defs, instance, decision.keys, run_config, tags, from_environment, config_path
        )
        out.run_id, out.success, out.result = result.run_id, result.success, result
    return out
