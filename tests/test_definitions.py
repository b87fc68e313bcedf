"""The code location loads with no credentials and no network, and has the whole graph."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

LOAD = """
import dagster as dg
from pipelines.definitions import defs
repo = defs.get_repository_def()
keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
assert "release" in keys and "curated_pairs" in keys and "raw_hh_rlhf__harmless_base__train" in keys, keys
assert len([k for k in keys if k.startswith("raw_")]) == 15
checks = {c.name for c in repo.asset_graph.asset_check_keys}
assert {"schema_suite", "quarantine_rate", "row_accounting", "curated_pairs_suite"} <= checks, checks
defs.resolve_job_def("full_refresh")
print("loaded", len(keys))
"""


def test_definitions_load_without_secrets():
    env = {"PATH": "/usr/bin:/bin", "HOME": str(REPO), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", LOAD], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loaded" in proc.stdout


def test_workspace_yaml_points_at_the_definitions():
    text = (REPO / "workspace.yaml").read_text()
    assert "pipelines.definitions" in text
