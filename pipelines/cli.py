"""``rlhf-curate``: run the pipeline, and inspect releases.

``rlhf-curate run`` materializes the whole asset graph in process against a persistent Dagster
instance (``DAGSTER_HOME``, default ``.dagster_home`` in the repo), so the run shows up in
``dagster dev`` afterwards, and prints where the release is.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipelines.cli_releases import add_release_commands, run_releases_command
from pipelines.commands import refresh_command, run_command

CONFIG_HELP = (
    "YAML file of CurationSettings fields, e.g. `dedup: {prompt_dedup: true}` (or the same under "
    "`resources: {settings: {config: ...}}`, as in the UI launchpad); checked before any work"
)


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
    run.add_argument("--config", metavar="FILE.yaml", help=CONFIG_HELP)
    run.add_argument("-v", "--verbose", action="store_true", help="show Dagster's step logs")
    refresh = sub.add_parser(
        "refresh",
        help="incremental refresh: observe the sources, re-run only what changed (nothing if nothing did)",
    )
    refresh.add_argument("--config", metavar="FILE.yaml", help=CONFIG_HELP)
    refresh.add_argument("-v", "--verbose", action="store_true", help="show Dagster's step logs")
    add_release_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rlhf-curate`` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return run_command(args)
    if args.command == "refresh":
        return refresh_command(args)
    return run_releases_command(args)


if __name__ == "__main__":
    sys.exit(main())
