"""Overlapping ``rlhf-curate run`` processes that share a Dagster home and a store.

Two real OS processes start at the same moment: one on the bundled sample, one on a copy of the
HH files whose responses all end with " ZZB". Every run that exits 0 must have published exactly
its own inputs: the manifest of the release it names lists the sha256 of its own files, and its
pairs carry (or do not carry) the marker. Several trials, the first on a fresh Dagster home (two
processes creating the instance at once), the second on the home the first left. Then the same
inputs again, one after the other: each run reports its release unchanged and ``latest`` names
the release of the run that ended last.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from pipelines.settings import SAMPLE

TRIALS = 2  # the first on a fresh Dagster home, the second on the home it left
MARKER = " ZZB"


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "rlhf-curate"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipelines.cli"]


def _marked_copy(dest: Path) -> Path:
    """A copy of the sample's HH mirror whose chosen and rejected responses end with MARKER."""
    shutil.copytree(SAMPLE / "hh-rlhf", dest)
    for path in dest.glob("harmless-base/*.jsonl.gz"):  # (red-team: one JSON array)
        rows = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
        for row in rows:
            row["chosen"] += MARKER
            row["rejected"] += MARKER
        path.write_bytes(
            gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode(), mtime=0)
        )
    return dest


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _expected_files(root: Path) -> dict[str, str]:
    """``relative path -> sha256`` of every file of a mirror."""
    return {
        p.relative_to(root).as_posix(): _sha256(p)
        for p in root.rglob("*")
        if p.is_file() and p.suffix in (".gz", ".jsonl")
    }


def _assert_published_own_inputs(store: Path, stdout: str, hh: Path, pku: Path) -> None:
    found = re.search(r"^release ([0-9a-f]{16}) ", stdout, re.M)
    assert found, stdout
    release = store / "releases" / found.group(1)
    manifest = json.loads((release / "manifest.json").read_text())
    roots = {"hh-rlhf": hh, "pku-saferlhf": pku}
    for source in manifest["sources"]:
        root = roots[source["name"]]
        listed = {f["path"]: f["sha256"] for f in source["files"] if f["present"]}
        assert listed == _expected_files(root), f"{found.group(1)} lists other files than {root}"
    responses = ds.dataset(release / "pairs", format="parquet").to_table(
        columns=["dataset", "chosen"]
    )
    hh_chosen = [c for d, c in zip(*responses.to_pydict().values(), strict=True) if d == "hh-rlhf"]
    marked = {c.endswith(MARKER.strip()) for c in hh_chosen}
    assert marked == {hh.name == "hh-marked"}, f"pairs of {found.group(1)} are not from {hh}"


@pytest.mark.timeout(1200)
def test_overlapping_runs_publish_their_own_inputs(tmp_path: Path) -> None:
    marked = _marked_copy(tmp_path / "hh-marked")
    store = tmp_path / "store"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CURATED_", "HH_"))}
    env.pop("PKU_SAFERLHF_URI", None)
    env["DAGSTER_HOME"] = str(tmp_path / "dagster_home")  # shared by every run, fresh at first
    runs = {"sample": SAMPLE / "hh-rlhf", "marked": marked}
    succeeded = 0
    for trial in range(TRIALS):
        procs = {
            name: subprocess.Popen(
                [*_cli(), "run", "--hh", str(hh), "--store", str(store)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name, hh in runs.items()
        }
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=600)
            assert "Traceback" not in stderr, f"trial {trial} {name}:\n{stderr[-3000:]}"
            if proc.returncode == 0:
                succeeded += 1
                _assert_published_own_inputs(store, stdout, runs[name], SAMPLE / "PKU-SafeRLHF")
            else:  # a run may fail clearly, never with a crash or the wrong data
                assert "FAILED" in stderr or "error" in stderr, stderr[-3000:]
    assert succeeded == 2 * TRIALS  # overlapping runs wait for each other; none has to fail
    releases = {p.name for p in (store / "releases").iterdir() if p.is_dir()}
    assert len(releases) == 2, releases  # one per input, whatever the trials' order
    # one after the other: unchanged releases, and latest names the one of the last run
    for name in ("marked", "sample"):
        done = subprocess.run(
            [*_cli(), "run", "--hh", str(runs[name]), "--store", str(store)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        _assert_published_own_inputs(store, done.stdout, runs[name], SAMPLE / "PKU-SafeRLHF")
        release_id, status = re.search(
            r"^release ([0-9a-f]{16}) \((\w+)\)", done.stdout, re.M
        ).groups()
        assert status == "unchanged"
        assert json.loads((store / "latest.json").read_text())["release_id"] == release_id
