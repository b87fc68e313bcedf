"""``rlhf-curate run`` and ``rlhf-curate refresh``: build the run config, run, report.

CLI flags and ``--config FILE.yaml`` become **run config** (``resources.sources``,
``resources.store``, ``resources.settings``), never environment variables, so what a run used is
in the run's config in the UI. A ``--config`` file holds :class:`assets.resources.CurationSettings`
fields (``dedup: {prompt_dedup: true}``), or the same in the launchpad's shape
(``resources: {settings: {config: {...}}}``); either is read and validated before any work
starts (``pipelines/config_file.py``: every problem on its own line, exit code 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from assets.alerting import alert_records
from assets.io import OPTIONAL_INPUT_MANAGER
from assets.resources import CREDENTIALS_HINT, settings_from_mapping
from curation.core.redact import has_credentials, redact_uri
from curation.core.store import STORE_CREDENTIALS_HINT
from curation.datasets import REGISTRY
from curation.ingest.preflight import preflight
from curation.publish.alerts import Delivery
from pipelines.automation import run_tags
from pipelines.config_file import ConfigError, load_config
from pipelines.definitions import build_definitions, build_resources
from pipelines.local_run import InstanceUnavailable, persistent_instance, run_full_refresh
from pipelines.orphans import fail_orphaned_runs, process_tags
from pipelines.progress import follow_run
from pipelines.refresh import refresh
from pipelines.settings import Environment, console_run_config

if TYPE_CHECKING:
    from dagster._core.execution.api import ExecuteJobResult


#: The URI flags of ``rlhf-curate run`` and the settings they replace.
URI_FLAGS = {"hh": "hh_rlhf_uri", "pku": "pku_saferlhf_uri", "store": "store_uri"}


def environment_of(args: argparse.Namespace) -> Environment:
    """The process environment with the ``--hh``/``--pku``/``--store`` flags applied.

    A flag's URI goes into the run config and the run tags, so one with credentials in it is
    a problem (``Environment.problems``), kept only in its redacted form."""
    environment = Environment.from_env()
    changes, problems = {}, []
    for flag, name in URI_FLAGS.items():
        value = getattr(args, flag, None)
        if not value:
            continue
        changes[name] = redact_uri(value)
        if has_credentials(value):
            hint = STORE_CREDENTIALS_HINT if flag == "store" else CREDENTIALS_HINT
            problems.append(
                f"--{flag} {redact_uri(value)}: credentials on the command line are refused "
                f"(they would be recorded and are visible to other users); {hint}"
            )
    return dataclasses.replace(
        environment, **changes, problems=environment.problems + tuple(problems)
    )


def run_config_for(environment: Environment, settings: dict, verbose: bool) -> dict:
    """Run config carrying the sources, store, stage-table folder and settings of this run."""
    tables = environment.stage_tables
    resources = {
        "sources": {"config": environment.sources_config()},
        "store": {"config": {"uri": environment.store_uri}},
        "io_manager": {"config": {"base_dir": tables}},
        OPTIONAL_INPUT_MANAGER: {
            "config": {"base_dir": tables, "allow_missing": True, "handles": True}
        },
    }
    if settings:
        resources["settings"] = {"config": settings}
    return {**console_run_config(verbose), "resources": resources}


def preflight_ok(environment: Environment, declared: dict[str, str] | None = None) -> bool:
    """Check the settings, the store and the source roots (``declared``: those of the datasets
    the settings file declares, by name) before anything runs (with the resources a run gets,
    credentials included); one line per problem."""
    for problem in environment.problems:
        print(f"error: {problem}", file=sys.stderr)
    if environment.problems:
        return False
    resources = build_resources(environment)
    needed = ("aws", "source_credentials", "sources", "store")
    with dg.build_resources({k: resources[k] for k in needed}) as built:
        checks = preflight(
            environment.store_uri,
            {d.name: getattr(environment, d.uri_field) for d in REGISTRY} | (declared or {}),
            store_options=built.store.storage_options(),
            source_options=built.sources.storage_options,
        )
    for check in checks:
        if not check.ok:
            print(f"error: {check.what}: {check.detail}", file=sys.stderr)
    return all(check.ok for check in checks)


def _quiet(verbose: bool) -> None:
    if not verbose:  # alerts are still posted; the run summary says what became of them
        for name in ("curation.publish.alerts", "assets.alerting"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        warnings.simplefilter("ignore")


def _prepare(args: argparse.Namespace) -> tuple[Environment, dict, Path] | None:
    """The checks both commands make before any work: the ``--config`` file, the store and the
    source roots. ``None`` (after printing why) when one fails."""
    environment = environment_of(args)
    path = getattr(args, "config", None) or environment.config_path
    try:
        settings, declarations = load_config(path)
    except ConfigError as exc:
        for line in str(exc).splitlines():  # one line per problem, each naming the file
            print(f"error: {line}", file=sys.stderr)
        return None
    environment = dataclasses.replace(environment, config_path=path)
    if not preflight_ok(environment, {d.name: d.uri for d in declarations}):
        return None
    home = environment.prepare_dagster_home()
    _quiet(args.verbose)
    return environment, settings, home


def unavailable(exc: InstanceUnavailable) -> int:
    """Say in one line that the instance cannot be reached; the exit code of a bad setting."""
    print(f"error: {exc}", file=sys.stderr)
    return 2


def run_command(args: argparse.Namespace) -> int:
    """``rlhf-curate run``: the whole graph in process, recorded in the persistent instance."""
    prepared = _prepare(args)
    if prepared is None:
        return 2
    environment, settings, home = prepared
    try:
        return _run(args, environment, settings, home)
    except InstanceUnavailable as exc:
        return unavailable(exc)


def _run(args: argparse.Namespace, environment: Environment, settings: dict, home: Path) -> int:
    run_config = run_config_for(environment, settings, args.verbose)
    with persistent_instance(home) as instance:
        report_orphans(instance)
        tags = {**run_tags(environment), **process_tags()}
        with (
            follow_run(instance, warnings=not args.verbose) as token,
            run_full_refresh(
                instance,
                run_config,
                tags={**tags, **token},
                config_path=environment.config_path,
            ) as result,
        ):
            alerts = alert_records(instance, result.run_id)
    return report(result, environment.store_uri, alerts)


def report_orphans(instance: dg.DagsterInstance) -> None:
    """Fail the runs of this host whose process is gone (``kill -9``); say so in one line."""
    failed = fail_orphaned_runs(instance)
    if failed:
        print(
            f"marked {len(failed)} run(s) whose process is gone as failed: {', '.join(failed)}",
            file=sys.stderr,
        )


def failure_text(event: dg.DagsterEvent) -> str:
    """What went wrong, for the console: a ``dg.Failure``'s description, else the error and the
    errors that caused it, one per line (Dagster's own log of it shows only with ``-v``)."""
    data = event.step_failure_data if event.is_step_failure else None
    if data is None:
        return event.message or ""
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description
    lines, error = [], data.error
    while error is not None:
        lines.append(error.message.strip())
        error = error.cause
    return "\n    caused by: ".join(lines) or (event.message or "")


def alert_lines(records: list[dict]) -> list[str]:
    """The run's alert deliveries (:func:`assets.alerting.alert_records`) as lines: how many
    were delivered, in how long against the budget, and each one that was not, with why."""
    deliveries = [d for record in records for d in record["deliveries"]]
    if not deliveries:
        return []
    delivered = sum(d["delivered"] for d in deliveries)
    seconds = sum(record["seconds"] for record in records)
    lines = [
        f"alerts: {delivered} of {len(deliveries)} delivered to {records[-1]['target']} "
        f"in {seconds:.1f} s (budget {records[-1]['budget_seconds']:g} s)"
    ]
    missed = [Delivery(**d) for d in deliveries if not d["delivered"]]
    if missed:
        lines.append("  not delivered:")
        lines += [f"    {d.describe()}" for d in missed]
    return lines


def report(result: ExecuteJobResult, store_uri: str, alerts: list[dict] | None = None) -> int:
    """Print the outcome of a run (with what became of its alerts); the process exit code."""
    alerts = alert_lines(alerts or [])
    if not result.success:
        for event in (e for e in result.all_events if e.is_failure):
            print(f"FAILED {event.step_key or 'run'}: {failure_text(event)}", file=sys.stderr)
        for line in alerts:
            print(line, file=sys.stderr)
        print(
            f"run {result.run_id} failed; see `make dev` (Dagster UI) for details", file=sys.stderr
        )
        return 1
    metadata = {}
    for materialization in result.asset_materializations_for_node("release"):
        metadata = {k: v.value for k, v in materialization.metadata.items()}
    print(f"run {result.run_id} succeeded")
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            print(
                f"  check {evaluation.severity.value}: {evaluation.asset_key.to_user_string()}"
                f" {evaluation.check_name}: {evaluation.description}"
            )
    if metadata:
        print(f"release {metadata.get('release_id')} ({metadata.get('status')})")
        print(f"  location: {metadata.get('release_uri')}")
        print(
            f"  pairs: {metadata.get('pairs')}, quarantined rows: "
            f"{metadata.get('quarantined_rows')}, removed pairs: {metadata.get('removed_pairs')}"
        )
        print(f"  latest pointer: {store_uri.rstrip('/')}/latest.json")
    for line in alerts:
        print(line)
    return 0


def refresh_command(args: argparse.Namespace) -> int:
    """``rlhf-curate refresh``: observe; run only what the automation conditions request."""
    prepared = _prepare(args)
    if prepared is None:
        return 2
    environment, settings, home = prepared
    try:
        return _refresh(args, environment, settings, home)
    except InstanceUnavailable as exc:
        return unavailable(exc)


def _refresh(args: argparse.Namespace, environment: Environment, settings: dict, home: Path) -> int:
    start = time.perf_counter()
    defs = build_definitions(  # code versions follow the settings, as in `run`
        environment,
        keep_release_fresh=False,
        settings=settings_from_mapping(settings) if settings else None,
    )
    run_config = run_config_for(environment, settings, args.verbose)
    with persistent_instance(home) as instance:
        report_orphans(instance)
        with follow_run(instance, warnings=not args.verbose) as token:
            outcome = refresh(
                defs,
                instance,
                run_config,
                tags={**run_tags(environment), **process_tags(), **token},
                from_environment=True,
                config_path=environment.config_path,
            )
            alerts = alert_records(instance, outcome.result.run_id) if outcome.result else []
    elapsed = time.perf_counter() - start
    if not outcome.success:
        why = outcome.error or f"run {outcome.run_id}"
        print(f"refresh FAILED in {elapsed:.1f} s: {why}", file=sys.stderr)
        return 1
    if not outcome.requested:
        print(f"nothing changed: observed the sources, no computation launched ({elapsed:.1f} s)")
        return 0
    print(f"refresh succeeded in {elapsed:.1f} s: {len(outcome.requested)} assets recomputed")
    print(f"  run {outcome.run_id}: {', '.join(outcome.requested)}")
    for reason in sorted(set(outcome.reasons.values())):
        print(f"  because: {reason}")
    return report(outcome.result, environment.store_uri, alerts) if outcome.result else 0
