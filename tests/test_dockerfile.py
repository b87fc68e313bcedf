"""The image builds from the repo's Dockerfile (only where a Docker daemon is reachable)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from pipelines.settings import REPO


def _docker_works() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.mark.timeout(1800)
def test_image_builds_and_runs_the_cli() -> None:
    if not _docker_works():
        pytest.skip("no reachable Docker daemon here: the image build was not tested")
    tag = "rlhf-curation:test"
    built = subprocess.run(
        ["docker", "build", "-t", tag, str(REPO)], capture_output=True, text=True, timeout=1700
    )
    assert built.returncode == 0, built.stderr[-3000:]
    ran = subprocess.run(
        ["docker", "run", "--rm", tag, "rlhf-curate", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0 and "rlhf-curate" in ran.stdout, ran.stderr[-2000:]
