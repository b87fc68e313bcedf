"""The one place where the environment is read: defaults, env variables, and the Dagster home."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"


@dataclass(frozen=True)
class Environment:
    """Settings resolved from environment variables, with the embedded defaults."""

    hh_rlhf_uri: str
    pku_saferlhf_uri: str
    hh_rlhf_revision: str | None
    pku_saferlhf_revision: str | None
    store_uri: str
    dagster_home: Path
    stage_store_uri: str | None = None  # stage tables; None: $DAGSTER_HOME/tables

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Environment:
        """Read ``HH_RLHF_URI``, ``PKU_SAFERLHF_URI``, ``*_REVISION``, ``CURATED_STORE_URI``..."""
        env = os.environ if env is None else env
        return cls(
            hh_rlhf_uri=env.get("HH_RLHF_URI") or str(SAMPLE / "hh-rlhf"),
            pku_saferlhf_uri=env.get("PKU_SAFERLHF_URI") or str(SAMPLE / "PKU-SafeRLHF"),
            hh_rlhf_revision=env.get("HH_RLHF_REVISION") or None,
            pku_saferlhf_revision=env.get("PKU_SAFERLHF_REVISION") or None,
            store_uri=env.get("CURATED_STORE_URI") or str(REPO / "warehouse"),
            dagster_home=Path(env.get("DAGSTER_HOME") or REPO / ".dagster_home"),
            stage_store_uri=env.get("STAGE_STORE_URI") or None,
        )

    def activate_dagster_home(self) -> Path:
        """Create the persistent Dagster home (telemetry off) and point ``DAGSTER_HOME`` at it."""
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        instance_yaml = self.dagster_home / "dagster.yaml"
        if not instance_yaml.exists():
            instance_yaml.write_text("telemetry:\n  enabled: false\n")
        os.environ["DAGSTER_HOME"] = str(self.dagster_home)
        return self.dagster_home


def console_run_config(verbose: bool) -> dict:
    """Run config for in-process runs from the CLI: Dagster's step logs only when verbose."""
    level = "INFO" if verbose else "WARNING"
    return {"loggers": {"console": {"config": {"log_level": level}}}}
