"""``rlhf-curate`` end to end in real subprocesses: run with a --config file, refresh, releases.

Each command is the installed console script, with a temporary DAGSTER_HOME and store, and no
credentials. Checks what the user sees (a line per stage, the release), what the instance
records (run tags), and that a bad --config stops before any work.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import dagster as dg
import pytest
import yaml

from assets.keys import UPSTREAM_KEYS
from pipelines.cli_releases import _default_store
from pipelines.config_file import settings_config
from pipelines.definitions import defs
from pipelines.progress import StepPrinter
from pipelines.settings import REPO, SAMPLE, Environment
from tests.cli_helpers import cli, cli_env


class TerminalOutput(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


LAUNCHPAD = {"resources": {"settings": {"config": {"dedup": {"prompt_dedup": True}}}}}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return cli_env(tmp_path)


def test_run_refresh_and_releases(tmp_path: Path, env: dict[str, str]):
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump(LAUNCHPAD))  # the launchpad's shape works here too
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    run = cli(["run", "--config", str(config)], env, elsewhere)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.splitlines()
    steps = {line.split()[0]: line for line in lines if line.startswith("  ") and line.split()}
    for step in ("upstream_files", "ingest_files", "validate_and_normalize", "release"):
        assert step in steps, run.stdout
    assert steps["ingest_files"].endswith("2,477 rows read from 5 of 15 files")
    assert (
        "2,389 pairs, 119 red-team, 14 quarantined from 2,477 rows read"
        in steps["validate_and_normalize"]
    )
    assert steps["decontaminate_pairs"].endswith("pairs, 65 removed, 20 paraphrase links")
    # the sample lacks 10 of the 15 upstream files: one plain line under the ingest step
    warning = lines[lines.index(steps["ingest_files"]) + 1]
    assert warning.startswith("    warning: 10 upstream files absent"), run.stdout
    assert " - dagster - " not in run.stdout + run.stderr  # no Dagster log line in the table
    release_id = next(line.split()[1] for line in lines if line.startswith("release "))
    assert f"release {release_id} (published)" in run.stdout
    store = tmp_path / "store"
    manifest = json.loads((store / "releases" / release_id / "manifest.json").read_text())
    assert manifest["config"]["dedup"]["prompt_dedup"] is True  # the --config file took effect

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        [record] = instance.get_runs()
        assert record.tags["rlhf/store"] == str(store)
        assert record.tags["rlhf/hh_uri"] == str(SAMPLE / "hh-rlhf")
        assert record.tags["rlhf/pku_uri"] == str(SAMPLE / "PKU-SafeRLHF")
        assert record.run_config["resources"]["settings"] == LAUNCHPAD["resources"]["settings"]
        # on a terminal the same events also drive a progress bar over the 15 ingested files
        tty = TerminalOutput()
        printer = StepPrinter(tty, tty=tty.isatty())
        for entry in instance.all_logs(record.run_id):
            printer.handle_entry(entry)
        shown = tty.getvalue()
        assert "\r  ingest_files:" in shown and "/15 [" in shown  # the bar (files done / 15)
        assert "rows read from 5 of 15 files" in shown  # and the stage line after it

    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runs_before_refresh = [r.run_id for r in instance.get_runs()]
    # the store as a flag (without it, refresh would observe for the default store)
    no_store_env = {k: v for k, v in env.items() if k != "CURATED_STORE_URI"}
    refresh = cli(
        ["refresh", "--config", str(config), "--store", str(store)], no_store_env, elsewhere
    )
    assert refresh.returncode == 0, refresh.stderr[-3000:]
    assert "nothing changed" in refresh.stdout
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert len(instance.get_runs()) == 1  # observed without a run, nothing launched
        for key in UPSTREAM_KEYS:  # each file observed again, with its fingerprint
            [record] = instance.fetch_observations(key, limit=1).records
            assert record.run_id != runs_before_refresh[0]
            assert record.asset_observation.data_version

    listed = cli(["releases", "list"], env, elsewhere)  # no --store: the same store as `run`
    assert listed.returncode == 0 and release_id in listed.stdout, listed.stderr
    shown = cli(["releases", "show", "latest"], env, elsewhere)
    assert shown.returncode == 0 and release_id in shown.stdout
    verified = cli(["releases", "verify", "latest", "--no-progress"], env, elsewhere)
    assert verified.returncode == 0 and "OK" in verified.stdout, verified.stdout


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("dedup: {prompt_dedupe: true}\n", "prompt_dedupe"),
        ("decontam: {ngram_n: thirteen}\n", "decontam.ngram_n"),
        ("dedupp: {prompt_dedup: true}\n", "dedupp"),
        ("quarantine_error_rate: lots\n", "quarantine_error_rate"),
        ("rule_levels: {sha256_mismatch: loud}\n", "loud"),
        ("resources: {store: {config: {uri: /x}}}\n", "store"),
    ],
)
def test_bad_config_stops_before_any_work(tmp_path: Path, env: dict[str, str], text, named):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    proc = cli(["run", "--config", str(config)], env, tmp_path)
    assert proc.returncode == 2
    assert str(config) in proc.stderr and named in proc.stderr, proc.stderr
    assert not Path(env["DAGSTER_HOME"]).exists() and not Path(env["CURATED_STORE_URI"]).exists()


def test_config_file_forms(tmp_path: Path):
    plain = tmp_path / "plain.yaml"
    plain.write_text("dedup:\n  prompt_dedup: true\ndecontam: {max_matches: 5}\n")
    launchpad = tmp_path / "launchpad.yaml"
    launchpad.write_text(yaml.safe_dump(LAUNCHPAD))
    assert settings_config(str(plain)) == {
        "dedup": {"prompt_dedup": True},
        "decontam": {"max_matches": 5},
    }
    assert settings_config(str(launchpad)) == {"dedup": {"prompt_dedup": True}}
    # the launchpad shape is valid run config of the job the UI launches
    dg.validate_run_config(defs.resolve_job_def("full_refresh"), LAUNCHPAD)


def test_releases_default_store_is_the_run_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("CURATED_STORE_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert _default_store() == Environment.from_env().store_uri == str(REPO / "warehouse")
    monkeypatch.setenv("CURATED_STORE_URI", "s3://bucket/curated")
    assert _default_store() == "s3://bucket/curated"
    assert os.getcwd() == str(tmp_path)
