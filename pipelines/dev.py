"""``make dev``: the Dagster UI, daemon and code server on the local instance (``dagster dev``).

``python -m pipelines.dev [--host H] [--port P]`` prepares the Dagster home (``$DAGSTER_HOME``,
default ``.dagster_home``: the instance ``rlhf-curate run`` records in), with usage telemetry and
the first-visit "Join the Dagster community" dialog off (``pipelines.settings.
LOCAL_INSTANCE_SETTINGS``), then becomes ``dagster dev`` on this repo's code location
(``[tool.dagster]`` in pyproject.toml).

Dagster 1.13 marks ``dagster dev`` as superseded by ``dg dev``, which lives in the
``dagster-dg-cli`` package (about twenty more dependencies, among them the Dagster+ cloud CLI and
GitHub clients) and expects a ``dg`` project layout. ``dagster dev`` is still supported and does
everything needed here, so this one warning (``SupersessionWarning``, a ``FutureWarning``, about
``dev_command``) is filtered by its message; every other warning still shows.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from pipelines.settings import REPO, Environment, process_environment

#: The ``-W`` filter for the one warning ``dagster dev`` prints at start (its message, exactly).
SUPERSEDED_WARNING = "ignore:Function `dev_command` is superseded:FutureWarning"


def dev_command(host: str, port: int) -> list[str]:
    """The ``dagster dev`` command line, in this environment's interpreter."""
    return [
        *(sys.executable, "-W", SUPERSEDED_WARNING, "-m", "dagster", "dev"),
        *("--host", host, "--port", str(port)),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Prepare the Dagster home, then replace this process with ``dagster dev``."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.dev", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1", help="UI host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=3000, help="UI port (default 3000)")
    args = parser.parse_args(argv)
    home = Environment.from_env().prepare_dagster_home()
    env = {**process_environment(), "DAGSTER_HOME": str(home)}
    os.chdir(REPO)  # where pyproject.toml names the code location
    command = dev_command(args.host, args.port)
    os.execve(command[0], command, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
