"""``rlhf-curate``: run the pipeline, and inspect releases.

``rlhf-curate run`` materializes the whole asset graph in process against a persistent Dagster
instance (``DAGSTER_HOME``, default ``.dagster_home`` in the repo), so the run shows up in
``dagster dev`` afterwards, and prints where the release is.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pipelines.cli_releases import add_release_commands, run_releases_command

if TYPE_CHECKING:
    from dagster._core.execution.api import ExecuteJobResult


def _run(args: argparse.Namespace) -> int:
    overrides = {
        "HH_RLHF_URI": args.hh,
        "PKU_SAFERLHF_URI": args.pku,
        "CURATED_STORE_URI": args.store,
    }
    for name, value in overrides.items():
        if value:
            os.environ[name] = value
    from pipelines.settings import Environment, console_run_config

    environment = Environment.from_env()
    if not _preflight(environment):
        return 2
    environment.activate_dagster_home()
    if not args.verbose:  # alerts are still posted; the CLI prints a one-line summary instead
        logging.getLogger("curation.alerts").setLevel(logging.CRITICAL)

    from pipelines.local_run import persistent_instance, run_full_refresh

    with (
        persistent_instance(environment.dagster_home) as instance,
        run_full_refresh(instance, console_run_config(args.verbose)) as result,
    ):
        return _report(result, environment.store_uri)


def _preflight(environment) -> bool:
    """Check the store and the source roots before anything runs; one line each."""
    from curation.preflight import preflight

    checks = preflight(
        environment.store_uri,
        {"hh-rlhf": environment.hh_rlhf_uri, "pku-saferlhf": environment.pku_saferlhf_uri},
    )
    for check in checks:
        if not check.ok:
            print(f"error: {check.what}: {check.detail}", file=sys.stderr)
    return all(check.ok for check in checks)


def _report(result: ExecuteJobResult, store_uri: str) -> int:
    if not result.success:
        failures = [e for e in result.all_events if e.is_failure]
        for event in failures:
            print(f"FAILED {event.step_key}: {event.message}", file=sys.stderr)
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
    print(f"release {metadata.get('release_id')} ({metadata.get('status')})")
    print(f"  location: {metadata.get('release_uri')}")
    print(
        f"  pairs: {metadata.get('pairs')}, quarantined rows: {metadata.get('quarantined_rows')}, "
        f"removed pairs: {metadata.get('removed_pairs')}"
    )
    print(f"  latest pointer: {store_uri.rstrip('/')}/latest.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``rlhf-curate``."""
    parser = argparse.ArgumentParser(prog="rlhf-curate", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    run = sub.add_parser("run", help="run the whole pipeline and publish a release")
    run.add_argument("--hh", help="HH-RLHF mirror URI (default: $HH_RLHF_URI or the sample)")
    run.add_argument(
        "--pku", help="PKU-SafeRLHF mirror URI (default: $PKU_SAFERLHF_URI or the sample)"
    )
    run.add_argument(
        "--store", help="curated store URI (default: $CURATED_STORE_URI or ./warehouse)"
    )
    run.add_argument("-v", "--verbose", action="store_true", help="show Dagster's step logs")
    refresh = sub.add_parser(
        "refresh",
        help="incremental refresh: observe the sources, re-run only what changed (nothing if nothing did)",
    )
    refresh.add_argument("-v", "--verbose", action="store_true", help="show Dagster's step logs")
    add_release_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rlhf-curate`` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return _run(args)
    if args.command == "refresh":
        from pipelines.automation import run_refresh

        return run_refresh(args.verbose)
    return run_releases_command(args)


if __name__ == "__main__":
    sys.exit(main())
