"""Single-machine runs of ``full_refresh``: in process, without keeping step outputs in memory.

``JobDefinition.execute_in_process`` captures every step output in memory (so that
``result.output_for_node`` works); on the full corpus that kept every stage table of the run alive
until the end (peak RSS 8-9 GB at scale 1.0, see ``docs/benchmarks.md``). ``rlhf-curate run``,
``rlhf-curate refresh`` and the benchmark therefore launch the job with ``dg.execute_job`` on a
reconstructable job whose executor is the in-process executor: steps run one after another in
this process, outputs go to the IO manager and are dropped, and the run is recorded in the
instance like any other run.
"""

import dataclasses
import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import psycopg2
from filelock import FileLock

from assets.resources import settings_from_mapping
from curation.validate.gx_validate import warm_up
from pipelines.definitions import build_definitions
from pipelines.settings import Environment, PostgresSettings, instance_postgres

if TYPE_CHECKING:  # the result class is not exported by ``dagster``
    from dagster._core.execution.api import ExecuteJobResult


def in_process_full_refresh(settings_json: str = "{}", config_path: str = "") -> dg.JobDefinition:
    """``full_refresh`` on the in-process executor, built from the process environment, the
    run's settings (JSON of ``CurationSettings`` fields: the code versions follow them, so a
    later ``refresh`` with the same settings finds nothing out of date) and the settings file
    whose datasets it curates (``config_path``; default ``$CURATION_CONFIG``)."""
    environment = Environment.from_env()
    if config_path:
        environment = dataclasses.replace(environment, config_path=config_path)
    return _in_process_job(environment, settings_json)


@cache
def _in_process_job(environment: Environment, settings_json: str) -> dg.JobDefinition:
    """Built once per environment: ``execute_job`` reconstructs the job several times per run."""
    fields = json.loads(settings_json)
    settings = settings_from_mapping(fields) if fields else None
    defs = build_definitions(environment, dg.in_process_executor, settings=settings)
    return defs.resolve_job_def("full_refresh")


def run_settings(run_config: Mapping | None) -> dict:
    """The ``CurationSettings`` fields a run config sets (``resources.settings.config``)."""
    resources = (run_config or {}).get("resources") or {}
    return dict(((resources.get("settings") or {}).get("config")) or {})


#: Held while the persistent instance is opened (and, on first use, its SQLite files created).
INSTANCE_LOCK = ".instance.lock"
#: Seconds to wait for the instance's PostgreSQL to answer before saying it cannot be reached.
CONNECT_TIMEOUT = 5


class InstanceUnavailable(RuntimeError):
    """The instance's database cannot be reached; the message is one line."""


def check_reachable(pg: PostgresSettings, dagster_home: Path) -> None:
    """Connect once to the instance's PostgreSQL (Dagster would retry for ~15 s, then print a
    long traceback); :class:`InstanceUnavailable` with one line if it does not answer."""
    try:
        psycopg2.connect(
            host=pg.host,
            port=pg.port,
            user=pg.user,
            password=pg.password,
            dbname=pg.db,
            connect_timeout=CONNECT_TIMEOUT,
        ).close()
    except psycopg2.OperationalError as exc:
        reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        raise InstanceUnavailable(
            f"cannot reach the PostgreSQL of {dagster_home / 'dagster.yaml'} "
            f"({pg.user}@{pg.host}:{pg.port}/{pg.db}): {reason}; is `make prod` running?"
        ) from None


@contextmanager
def persistent_instance(dagster_home: Path) -> Iterator[dg.DagsterInstance]:
    """The instance in ``dagster_home``, opened under a file
    lock so that two processes starting at once do not both create its SQLite schema (one of
    them failed with ``table secondary_indexes already exists``). The storages are created or
    migrated while the lock is held; the lock (an OS file lock) dies with its process. An
    instance on PostgreSQL (``make prod``'s home) is checked to answer first
    (:class:`InstanceUnavailable`)."""
    postgres = instance_postgres(dagster_home)
    if postgres is not None:
        check_reachable(postgres, dagster_home)
    with FileLock(dagster_home / INSTANCE_LOCK, timeout=120):
        instance = dg.DagsterInstance.from_config(str(dagster_home))
        instance.get_runs(limit=1)  # run storage (and its secondary indexes)
        instance.get_latest_materialization_event(dg.AssetKey("release"))  # event log index
        instance.all_instigator_state()  # schedule storage
    with instance:
        yield instance


@contextmanager
def run_full_refresh(
    instance: dg.DagsterInstance,
    run_config: Mapping | None = None,
    asset_selection: Iterable[dg.AssetKey] | None = None,
    tags: Mapping[str, str] | None = None,
    config_path: str | None = None,
) -> Iterator["ExecuteJobResult"]:
    """Execute ``full_refresh`` (or the given subset of assets and their checks) in this process
    (``config_path``: the settings file whose datasets it curates, default ``$CURATION_CONFIG``).

    Great Expectations (~3 s to import and set up) is loaded on a background thread meanwhile,
    so that the checks do not wait for it after ingest.
    """
    warm_up()
    job = dg.build_reconstructable_job(
        __name__,
        in_process_full_refresh.__name__,
        reconstructable_kwargs={
            "settings_json": json.dumps(run_settings(run_config), sort_keys=True),
            "config_path": config_path or "",
        },
    )
    if asset_selection is not None:
        job = job.get_subset(asset_selection=set(asset_selection))
    with dg.execute_job(
        job,
        instance=instance,
        run_config=dict(run_config or {}),
        tags=dict(tags or {}),
        raise_on_error=False,
    ) as result:
        yield result
