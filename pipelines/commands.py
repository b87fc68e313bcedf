"""``rlhf-curate run`` and ``rlhf-curate refresh``: build the run config, run, report.

CLI flags and ``--config FILE.yaml`` become **run config** (``resources.sources``,
``resources.store``, ``resources.settings``), never environment variables, so what a run used is
in the run's config in the UI. A ``--config`` file holds :class:`assets.resources.CurationSettings`
fields (``dedup: {prompt_dedup: true}``), or the same in the launchpad's shape
(``resources: {settings: {config: {...}}}``); either is validated before any work starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import yaml

from assets.io import OPTIONAL_INPUT_MANAGER
from assets.resources import settings_from_mapping
from curation.preflight import preflight
from pipelines.automation import run_tags
from pipelines.definitions import build_definitions
from pipelines.local_run import persistent_instance, run_full_refresh
from pipelines.orphans import fail_orphaned_runs, process_tags
from pipelines.progress import follow_run
from pipelines.refresh import refresh
from pipelines.settings import Environment, console_run_config

if TYPE_CHECKING:
    from dagster._core.execution.api import ExecuteJobResult


class ConfigError(ValueError):
    """A ``--config`` file that cannot be used; the message names the file and the problem."""


def settings_config(path: str | None) -> dict[str, Any]:
    """The ``CurationSettings`` fields of a ``--config`` YAML file, validated (``{}`` if none).

    Accepts the plain form (top-level ``CurationSettings`` keys) and the launchpad form
    (``resources: {settings: {config: {...}}}``, nothing else).
    """
    if not path:
        return {}
    try:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read YAML: {exc}") from None
    if isinstance(loaded, dict) and "resources" in loaded:
        extra = sorted(set(loaded) - {"resources"}) + sorted(
            set(loaded["resources"] or {}) - {"settings"}
        )
        if extra:
            raise ConfigError(f"{path}: only resources.settings may be set here, not {extra}")
        loaded = ((loaded["resources"] or {}).get("settings") or {}).get("config") or {}
    try:
        settings_from_mapping(loaded)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return loaded


def environment_of(args: argparse.Namespace) -> Environment:
    """The process environment with the ``--hh``/``--pku``/``--store`` flags applied."""
    environment = Environment.from_env()
    changes = {
        "hh_rlhf_uri": getattr(args, "hh", None),
        "pku_saferlhf_uri": getattr(args, "pku", None),
        "store_uri": getattr(args, "store", None),
    }
    return dataclasses.replace(environment, **{k: v for k, v in changes.items() if v})


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


def preflight_ok(environment: Environment) -> bool:
    """Check the store and the source roots before anything runs; one line per problem."""
    checks = preflight(
        environment.store_uri,
        {"hh-rlhf": environment.hh_rlhf_uri, "pku-saferlhf": environment.pku_saferlhf_uri},
    )
    for check in checks:
        if not check.ok:
            print(f"error: {check.what}: {check.detail}", file=sys.stderr)
    return all(check.ok for check in checks)


def _quiet(verbose: bool) -> None:
    if not verbose:  # alerts are still posted; the CLI prints a one-line summary instead
        logging.getLogger("curation.alerts").setLevel(logging.CRITICAL)
        warnings.simplefilter("ignore")


def _prepare(args: argparse.Namespace) -> tuple[Environment, dict, Path] | None:
    """The checks both commands make before any work: the ``--config`` file, the store and the
    source roots. ``None`` (after printing why) when one fails."""
    try:
        settings = settings_config(getattr(args, "config", None))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    environment = environment_of(args)
    if not preflight_ok(environment):
        return None
    home = environment.prepare_dagster_home()
    _quiet(args.verbose)
    return environment, settings, home


def run_command(args: argparse.Namespace) -> int:
    """``rlhf-curate run``: the whole graph in process, recorded in the persistent instance."""
    prepared = _prepare(args)
    if prepared is None:
        return 2
    environment, settings, home = prepared
    run_config = run_config_for(environment, settings, args.verbose)
    with persistent_instance(home) as instance:
        report_orphans(instance)
        tags = {**run_tags(environment), **process_tags()}
        with (
            follow_run(instance, warnings=not args.verbose) as token,
            run_full_refresh(instance, run_config, tags={**tags, **token}) as result,
        ):
            pass
    return report(result, environment.store_uri)


def report_orphans(instance) -> None:
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


def report(result: ExecuteJobResult, store_uri: str) -> int:
    """Print the outcome of a run; the process exit code."""
    if not result.success:
        for event in (e for e in result.all_events if e.is_failure):
            print(f"FAILED {event.step_key or 'run'}: {failure_text(event)}", file=sys.stderr)
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
    if not metadata:
        return 0
    print(f"release {metadata.get('release_id')} ({metadata.get('status')})")
    print(f"  location: {metadata.get('release_uri')}")
    print(
        f"  pairs: {metadata.get('pairs')}, quarantined rows: {metadata.get('quarantined_rows')}, "
        f"removed pairs: {metadata.get('removed_pairs')}"
    )
    print(f"  latest pointer: {store_uri.rstrip('/')}/latest.json")
    return 0


def refresh_command(args: argparse.Namespace) -> int:
    """``rlhf-curate refresh``: observe; run only what the automation conditions request."""
    prepared = _prepare(args)
    if prepared is None:
        return 2
    environment, settings, home = prepared
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
            )
    elapsed = time.perf_counter() - start
    if not outcome.success:
        print(f"refresh FAILED in {elapsed:.1f} s (run {outcome.run_id or outcome.observe_run_id})")
        return 1
    if not outcome.requested:
        print(f"nothing changed: observed the sources, no computation launched ({elapsed:.1f} s)")
        return 0
    print(f"refresh succeeded in {elapsed:.1f} s: {len(outcome.requested)} assets recomputed")
    print(f"  run {outcome.run_id}: {', '.join(outcome.requested)}")
    return report(outcome.result, environment.store_uri) if outcome.result else 0
