"""Packaging and the test command: the package builds without a setuptools warning (what
``pip install -e .`` prints on every ``make run`` after a change of pyproject.toml), ships its data
files, and the suite runs with or without pytest-xdist."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

#: What a build is made of (the rest of the repo does not go into the package).
BUILD_INPUTS = ("pyproject.toml", "README.md", "curation", "assets", "pipelines", "expectations")


def test_package_builds_without_warnings_and_ships_its_data(tmp_path: Path):
    """Build the wheel with the setuptools of this environment (as the PEP 517 backend pip
    calls), in a copy of the build inputs, and read the build log and the wheel."""
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} < 77 (pip install -e '.[dev]')")
    source = tmp_path / "src"
    source.mkdir()
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copyfile(REPO / name, source / name)
    build = (
        "import setuptools.build_meta as backend, sys; "
        f"print(backend.build_wheel({str(tmp_path / 'dist')!r}))"
    )
    (tmp_path / "dist").mkdir()
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", build],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "Warning" not in log, log[-3000:]
    wheel = tmp_path / "dist" / done.stdout.strip().splitlines()[-1]
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "curation/match/data/common_en_words.txt" in names
    assert "expectations/curated_pairs.json" in names
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    assert "License-Expression: Apache-2.0" in zipfile.ZipFile(wheel).read(metadata).decode()


@pytest.mark.parametrize("plugin", ["-p no:xdist", "-n 0"])
def test_the_suite_collects_with_and_without_xdist(plugin: str):
    """``pytest -p no:xdist`` (and ``-n 0``) must not trip over xdist options in addopts."""
    if plugin == "-n 0":
        pytest.importorskip("xdist")
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", *plugin.split(), "-p", "no:cacheprovider"),
            *("--collect-only", "-q", "tests/test_packaging.py"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "tests/test_packaging.py" in done.stdout  # collected (the form depends on -q)
