"""The incremental refresh: observe the sources, then run what the automation conditions request.

``rlhf-curate refresh`` is one tick of the same declarative automation the daemon's
``rlhf_automation`` sensor runs, executed in process: it observes every upstream file (one
step), evaluates the computed assets' conditions with ``dg.evaluate_automation_conditions``
against the instance and the cursor of its previous tick (kept in the instance's key-value store),
and runs exactly the requested assets, if any. On a day with no change that is the observation
run alone: nothing is ingested, recomputed or published. The cursor is kept only after the
computation succeeded, so a failed run is requested again by the next refresh.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from assets.keys import UPSTREAM_KEYS
from pipelines.local_run import run_full_refresh

CURSOR_KEY = "rlhf_curation/refresh_cursor"


@dataclass
class RefreshResult:
    """What a refresh did: the observation run, what the conditions requested, the run of it."""

    observe_run_id: str
    requested: list[str] = field(default_factory=list)
    run_id: str | None = None
    success: bool = True
    result: Any = None  # ExecuteInProcessResult or ExecuteJobResult

    @property
    def stale(self) -> list[str]:
        """Alias of :attr:`requested` (what the previous refresh implementation called it)."""
        return self.requested


def load_cursor(instance: dg.DagsterInstance) -> Any:
    """The automation cursor of the previous refresh in ``instance`` (None before the first).

    Kept serialized (a string, Dagster's public ``serialize_value``): the cursor's class is not
    public API, and the conditions that decide what is out of date do not depend on it
    (``pipelines.automation.out_of_date``).
    """
    raw = instance.run_storage.get_cursor_values({CURSOR_KEY}).get(CURSOR_KEY)
    return dg.deserialize_value(raw) if raw else None


def save_cursor(instance: dg.DagsterInstance, cursor: Any) -> None:
    """Keep ``cursor`` (``evaluate_automation_conditions``' ``result.cursor``) for the next refresh."""
    instance.run_storage.set_cursor_values({CURSOR_KEY: dg.serialize_value(cursor)})


def requested_keys(defs: dg.Definitions, instance: dg.DagsterInstance) -> tuple[list, Any]:
    """Computed assets the automation conditions request now, and the new cursor."""
    graph = defs.resolve_asset_graph()
    computed = dg.AssetSelection.all() - dg.AssetSelection.assets(*UPSTREAM_KEYS)
    result = dg.evaluate_automation_conditions(
        defs, instance, asset_selection=computed, cursor=load_cursor(instance)
    )
    keys = [k for k in graph.materializable_asset_keys if result.get_num_requested(k)]
    return sorted(keys, key=lambda k: k.to_user_string()), result.cursor


def _execute(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    keys: Sequence[dg.AssetKey],
    run_config: Mapping | None,
    tags: Mapping[str, str] | None,
    from_environment: bool,
):
    """Run ``keys`` (and their checks) of ``full_refresh``; the result of the run."""
    if from_environment:
        with run_full_refresh(instance, run_config, keys, tags=tags) as result:
            return result
    return defs.resolve_job_def("full_refresh").execute_in_process(
        instance=instance,
        run_config=dict(run_config or {}),
        asset_selection=list(keys),
        tags=dict(tags or {}),
        raise_on_error=False,
    )


def refresh(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    run_config: Mapping | None = None,
    *,
    tags: Mapping[str, str] | None = None,
    from_environment: bool = False,
) -> RefreshResult:
    """Observe the sources, then materialize what the automation conditions request.

    ``defs`` should be built with ``keep_release_fresh=False`` (the release's cron re-publish is
    the daemon's business). ``from_environment``: ``defs`` were built from the process
    environment, so the requested assets run through :func:`pipelines.local_run.run_full_refresh`
    (outputs not kept in memory) instead of ``execute_in_process`` on ``defs``.
    """
    observed = _execute(defs, instance, UPSTREAM_KEYS, run_config, tags, from_environment)
    if not observed.success:
        return RefreshResult(observe_run_id=observed.run_id, success=False, result=observed)
    keys, cursor = requested_keys(defs, instance)
    out = RefreshResult(
        observe_run_id=observed.run_id, requested=[k.to_user_string() for k in keys]
    )
    if keys:
        result = _execute(defs, instance, keys, run_config, tags, from_environment)
        out.run_id, out.success, out.result = result.run_id, result.success, result
    if out.success:
        save_cursor(instance, cursor)
    return out
