"""The ``rlhf-curate`` console script: parse the arguments, then import what the command needs.

``run`` and ``refresh`` import Dagster and the pipeline (:mod:`pipelines.commands`); ``releases``
imports only ``curation/`` (:mod:`pipelines.cli_releases`); ``--help`` and ``--version`` import
neither (``tests/test_cli.py`` checks which modules each command loads). A closed output pipe
(``rlhf-curate releases diff --json | head``) ends the command quietly.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from pipelines.cli_parser import parse_args

#: Exit status after the reader of our output went away (what a shell reports for SIGPIPE).
BROKEN_PIPE_EXIT = 141


def dispatch(argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run the chosen command; its exit status."""
    args = parse_args(None if argv is None else list(argv))
    if args.command == "run":
        from pipelines.commands import run_command

        return run_command(args)
    if args.command == "refresh":
        from pipelines.commands import refresh_command

        return refresh_command(args)
    from pipelines.cli_releases import run_releases_command

    return run_releases_command(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rlhf-curate`` console script."""
    try:
        try:
            return dispatch(argv)  # (argparse's --help and errors leave by SystemExit)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
    except BrokenPipeError:
        # Python's recipe: point stdout at /dev/null so the final flush at exit cannot fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE_EXIT


if __name__ == "__main__":
    sys.exit(main())
