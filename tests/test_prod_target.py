"""The CLI against ``make prod``'s Dagster home, without PostgreSQL: the home ``make prod``
writes names its server (never its password) and keeps its port across restarts; a home whose
instance config needs variables that are not set, or whose server does not answer, stops the
CLI with one line instead of a traceback. (A real run on such a home:
``tests/test_postgres_deploy.py``.)"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import dagster as dg
import yaml

from pipelines.prod import PROFILE, instance_config, is_free, prepare_home, previous_port
from pipelines.settings import PostgresSettings, instance_postgres, instance_problems
from tests.conftest import REPO

PG_VARIABLES = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_DB")


def cli(home: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``rlhf-curate`` with ``DAGSTER_HOME=home`` and no ``DAGSTER_PG_*``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_PG_")}
    env.update(DAGSTER_HOME=str(home), CURATED_STORE_URI=str(tmp_path / "store"))
    return subprocess.run(
        [str(Path(sys.executable).with_name("rlhf-curate")), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the socket is


def test_the_home_names_the_server_but_never_its_password(tmp_path: Path):
    pg = PostgresSettings("127.0.0.1", 54329, "curator", "s3cret-pw", "dagster_prod")
    home = prepare_home(tmp_path / "home", pg)
    text = (home / "dagster.yaml").read_text()
    assert "s3cret-pw" not in text
    config = yaml.safe_load(text)
    db = config["storage"]["postgres"]["postgres_db"]
    assert db["hostname"] == "127.0.0.1" and db["port"] == 54329 and db["db_name"] == "dagster_prod"
    assert db["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    # the rest is deploy/dagster.yaml
    profile = yaml.safe_load(PROFILE.read_text())
    assert {k: v for k, v in config.items() if k != "storage"} == {
        k: v for k, v in profile.items() if k != "storage"
    }
    # what the CLI reads back from it: the server, the password from the environment
    assert instance_postgres(home, {"DAGSTER_PG_PASSWORD": "s3cret-pw"}) == pg
    assert instance_problems(home, {"DAGSTER_PG_PASSWORD": "x"}) == ()
    assert "DAGSTER_PG_PASSWORD" in instance_problems(home, {})[0]
    # Dagster itself loads it as a PostgreSQL instance config
    embedded = PostgresSettings("127.0.0.1", 54329, "postgres", "", "dagster")
    assert "password: ''" in instance_config(embedded)


def test_make_prod_reuses_the_port_of_its_previous_start(tmp_path: Path):
    home = tmp_path / "home"
    assert previous_port(home) is None
    port = closed_port()
    prepare_home(home, PostgresSettings("127.0.0.1", port, "postgres", "", "dagster"))
    assert previous_port(home) == port and is_free(port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert not is_free(port)  # taken by someone else: make prod picks another one


def test_unset_dagster_pg_variables_stop_the_cli_in_one_line(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(PROFILE, home / "dagster.yaml")  # as deployed: every value from DAGSTER_PG_*
    done = cli(home, tmp_path, "run")
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert all(name in lines[0] for name in PG_VARIABLES), lines[0]
    assert "make prod" in lines[0]


def test_an_unreachable_instance_database_stops_the_cli_in_one_line(tmp_path: Path):
    port = closed_port()
    home = prepare_home(
        tmp_path / "home", PostgresSettings("127.0.0.1", port, "postgres", "", "dagster")
    )
    done = cli(home, tmp_path, "refresh")
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert f"127.0.0.1:{port}" in lines[0] and "make prod" in lines[0], lines[0]
    assert not list(home.rglob("*.db"))


def test_a_local_home_gets_no_telemetry_and_no_community_dialog(tmp_path: Path):
    """``make run``/``make dev``'s home: the settings are added to what the file already says."""
    from pipelines.settings import Environment

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("# mine\ntelemetry:\n  enabled: true\n")
    environment = Environment.from_env({"DAGSTER_HOME": str(home)})
    environment.prepare_dagster_home()
    text = (home / "dagster.yaml").read_text()
    assert text.startswith("# mine\n")  # kept as written
    config = yaml.safe_load(text)
    assert config == {"telemetry": {"enabled": True}, "nux": {"enabled": False}}
    environment.prepare_dagster_home()  # idempotent
    assert (home / "dagster.yaml").read_text() == text
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.nux_enabled is False and instance.telemetry_enabled is True
