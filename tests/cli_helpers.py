"""The installed ``rlhf-curate`` console script, run in a subprocess as a user would, with a
temporary Dagster home and store and no other environment (no credentials)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CLI = Path(sys.executable).parent / "rlhf-curate"


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment with only the console script on ``PATH``, ``HOME``, a Dagster home and a
    store under ``tmp_path``, plus ``extra``."""
    return {
        "PATH": f"{CLI.parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DAGSTER_HOME": str(tmp_path / "home"),
        "CURATED_STORE_URI": str(tmp_path / "store"),
        **extra,
    }


def cli(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``rlhf-curate ARGS`` in ``cwd`` with ``env``, its output captured as text."""
    return subprocess.run(
        [str(CLI), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
