"""The one place where the environment is read: defaults, env variables, and the Dagster home.

No other module reads ``os.environ``; nothing writes it. CLI flags and ``--config`` files
become run config (``pipelines.commands``), not environment variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from curation.core.redact import has_credentials, redact_uri
from curation.core.store import credentials_refused
from curation.ingest.sources import HTTP_HEADERS_ENV, parse_http_headers
from curation.publish.alerts import DEFAULT_BUDGET_SECONDS

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"
DEFAULT_REFRESH_CRON = "0 3 * * *"
DEFAULT_RELEASE_MAX_AGE_HOURS = 36.0
#: Variables handed to resources as ``dg.EnvVar`` (secrets or endpoints), only when set.
SECRET_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "ALERT_WEBHOOK_URL",
    HTTP_HEADERS_ENV,
)
#: Settings a local Dagster home's ``dagster.yaml`` gets when it does not set them (a local tool:
#: no usage telemetry, no first-visit "Join the Dagster community" dialog, Dagster's ``nux``).
LOCAL_INSTANCE_SETTINGS = {
    "telemetry": "telemetry:\n  enabled: false\n",
    "nux": "nux:\n  enabled: false\n",
}
#: Variables holding a URI. A URI is recorded (run config, run tags, metadata, the release), so
#: :class:`Environment` keeps only its redacted form (``curation.core.redact.redact_uri``); a variable
#: whose value carried credentials is in ``secrets_set`` and reaches its resource as
#: ``dg.EnvVar``. Source mirrors read with those credentials; stores refuse them (``problems``).
URI_VARIABLES = ("HH_RLHF_URI", "PKU_SAFERLHF_URI", "CURATED_STORE_URI", "STAGE_STORE_URI")


@dataclass(frozen=True)
class Environment:
    """Settings resolved from environment variables, with the embedded defaults."""

    hh_rlhf_uri: str
    pku_saferlhf_uri: str
    hh_rlhf_revision: str | None
    pku_saferlhf_revision: str | None
    store_uri: str
    dagster_home: Path
    refresh_cron: str = DEFAULT_REFRESH_CRON
    release_max_age_hours: float = DEFAULT_RELEASE_MAX_AGE_HOURS
    max_concurrent: int = 0
    executor: str = "in_process"
    secrets_set: frozenset[str] = field(default_factory=frozenset)
    stage_store_uri: str | None = None  # stage tables; None: $DAGSTER_HOME/tables
    alert_budget_seconds: float = DEFAULT_BUDGET_SECONDS
    #: The settings file of the code location (``$CURATION_CONFIG``; ``rlhf-curate --config``
    #: replaces it): its ``datasets:`` are registered when the definitions are built, its
    #: settings are the runs' defaults (``pipelines.definitions.build_definitions``).
    config_path: str | None = None
    #: Settings that stop a run before any work, one line each (credentials in a store URI, a
    #: malformed SOURCES_HTTP_HEADERS); never quoting a secret.
    problems: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Environment:
        """Read ``HH_RLHF_URI``, ``PKU_SAFERLHF_URI``, ``*_REVISION``, ``CURATED_STORE_URI``,
        ``DAGSTER_HOME``, ``REFRESH_CRON``, ``RELEASE_MAX_AGE_HOURS``, ``DAGSTER_EXECUTOR``,
        ``DAGSTER_MAX_CONCURRENT``, ``ALERT_BUDGET_SECONDS``, ``CURATION_CONFIG``
        and which of :data:`SECRET_VARIABLES` are set (their values stay in the environment and
        reach resources through ``dg.EnvVar``). The URIs of :data:`URI_VARIABLES` are kept
        redacted; those that carried credentials are in ``secrets_set`` too."""
        env = os.environ if env is None else env
        age = env.get("RELEASE_MAX_AGE_HOURS")
        credentialed = {name for name in URI_VARIABLES if has_credentials(env.get(name) or "")}

        def uri(name: str, default: str | None = None) -> str | None:
            value = env.get(name) or default
            return redact_uri(value) if value else None

        dagster_home = Path(env.get("DAGSTER_HOME") or REPO / ".dagster_home")
        return cls(
            hh_rlhf_uri=uri("HH_RLHF_URI", str(SAMPLE / "hh-rlhf")),
            pku_saferlhf_uri=uri("PKU_SAFERLHF_URI", str(SAMPLE / "PKU-SafeRLHF")),
            hh_rlhf_revision=env.get("HH_RLHF_REVISION") or None,
            pku_saferlhf_revision=env.get("PKU_SAFERLHF_REVISION") or None,
            store_uri=uri("CURATED_STORE_URI", str(REPO / "warehouse")),
            dagster_home=dagster_home,
            refresh_cron=env.get("REFRESH_CRON") or DEFAULT_REFRESH_CRON,
            release_max_age_hours=float(age) if age else DEFAULT_RELEASE_MAX_AGE_HOURS,
            max_concurrent=int(env.get("DAGSTER_MAX_CONCURRENT") or 0),
            executor=_executor(env.get("DAGSTER_EXECUTOR")),
            secrets_set=frozenset(name for name in SECRET_VARIABLES if env.get(name))
            | credentialed,
            stage_store_uri=uri("STAGE_STORE_URI"),
            alert_budget_seconds=_alert_budget(env.get("ALERT_BUDGET_SECONDS")),
            config_path=env.get("CURATION_CONFIG") or None,
            problems=_problems(env, credentialed, dagster_home),
        )

    def sources_config(self) -> dict[str, str]:
        """The source URIs and the revisions pinned (only those set), by ``SourcesResource``
        field: ``hh_rlhf_uri``, ``pku_saferlhf_uri``, ``hh_rlhf_revision``,
        ``pku_saferlhf_revision``. Run config and run tags both come from it."""
        values = {
            "hh_rlhf_uri": self.hh_rlhf_uri,
            "pku_saferlhf_uri": self.pku_saferlhf_uri,
            "hh_rlhf_revision": self.hh_rlhf_revision,
            "pku_saferlhf_revision": self.pku_saferlhf_revision,
        }
        return {name: value for name, value in values.items() if value}

    @property
    def stage_tables(self) -> str:
        """Where stage tables go: ``STAGE_STORE_URI``, else ``$DAGSTER_HOME/tables``."""
        return self.stage_store_uri or str(self.dagster_home / "tables")

    @property
    def release_max_age(self) -> timedelta:
        """How old the latest release may get before it fails freshness."""
        return timedelta(hours=self.release_max_age_hours)

    def prepare_dagster_home(self) -> Path:
        """Create the persistent Dagster home and return it (no env writes); its
        ``dagster.yaml`` gets :data:`LOCAL_INSTANCE_SETTINGS` it lacks, appended (what it sets
        itself, and its comments, are kept)."""
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        add_local_instance_settings(self.dagster_home / "dagster.yaml")
        return self.dagster_home


def add_local_instance_settings(instance_yaml: Path) -> None:
    """Append to ``instance_yaml`` (created if absent) each of :data:`LOCAL_INSTANCE_SETTINGS`
    whose top-level key it does not have."""
    text = instance_yaml.read_text() if instance_yaml.exists() else ""
    try:
        config = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError:  # left as it is: instance_problems and Dagster name the error
        return
    present = set(config) if isinstance(config, dict) else set()
    missing = [block for key, block in LOCAL_INSTANCE_SETTINGS.items() if key not in present]
    if missing:
        separator = "\n" if text and not text.endswith("\n") else ""
        instance_yaml.write_text(text + separator + "".join(missing))


def _env_references(config: Any) -> list[str]:
    """The variables a Dagster instance config reads with ``{env: NAME}``, in order."""
    if isinstance(config, dict):
        if set(config) == {"env"} and isinstance(config["env"], str):
            return [config["env"]]
        return [name for value in config.values() for name in _env_references(value)]
    if isinstance(config, list):
        return [name for value in config for name in _env_references(value)]
    return []


def instance_problems(dagster_home: Path, env: Mapping[str, str]) -> tuple[str, ...]:
    """One line if the home's ``dagster.yaml`` reads variables (``env: DAGSTER_PG_USER``, as
    ``deploy/dagster.yaml`` does) that are not set: Dagster would stop with a long traceback."""
    instance_yaml = dagster_home / "dagster.yaml"
    if not instance_yaml.is_file():
        return ()
    try:
        config = yaml.safe_load(instance_yaml.read_text())
    except yaml.YAMLError as exc:
        return (f"{instance_yaml}: not valid YAML: {' '.join(str(exc).split())[:200]}",)
    unset = [name for name in dict.fromkeys(_env_references(config)) if name not in env]
    if not unset:
        return ()
    return (
        f"{instance_yaml} reads {', '.join(unset)} from the environment, not set here: "
        "run `make prod` (it writes its PostgreSQL connection into its home) or set them "
        '(docs/operations.md, "The CLI on the production instance")',
    )


def _problems(
    env: Mapping[str, str], credentialed: set[str], dagster_home: Path
) -> tuple[str, ...]:
    """One line per setting that must stop a run before any work: a store URI with credentials
    in it (stores take them from ``AWS_*`` only), a malformed ``SOURCES_HTTP_HEADERS``, a
    Dagster home whose instance config reads variables that are not set."""
    lines = [*instance_problems(dagster_home, env)]
    lines += [
        f"{name}: {credentials_refused(env[name])}"
        for name in ("CURATED_STORE_URI", "STAGE_STORE_URI")
        if name in credentialed
    ]
    try:
        parse_http_headers(env.get(HTTP_HEADERS_ENV))
    except ValueError as exc:
        lines.append(str(exc))
    return tuple(lines)


EXECUTORS = ("in_process", "multiprocess")


def _alert_budget(value: str | None) -> float:
    """``$ALERT_BUDGET_SECONDS``: total seconds a run may spend delivering alerts (> 0)."""
    if not value:
        return DEFAULT_BUDGET_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"ALERT_BUDGET_SECONDS={value!r}: expected a number of seconds > 0")
    return seconds


def _executor(value: str | None) -> str:
    """``$DAGSTER_EXECUTOR``: ``in_process`` (default) or ``multiprocess``."""
    value = (value or "in_process").strip().lower().replace("-", "_")
    if value not in EXECUTORS:
        raise ValueError(f"DAGSTER_EXECUTOR={value!r}: expected one of {EXECUTORS}")
    return value


def console_run_config(verbose: bool) -> dict:
    """Run config for in-process runs from the CLI: Dagster's console log only when verbose
    (otherwise the CLI prints the steps' warnings itself, as plain lines: ``pipelines.progress``)."""
    level = "INFO" if verbose else "CRITICAL"
    return {"loggers": {"console": {"config": {"log_level": level}}}}


#: The PostgreSQL connection of the production instance; ``deploy/dagster.yaml`` reads them itself
#: (``env:``), this module names them for ``make prod`` (``pipelines/prod.py``) and the tests.
POSTGRES_ENV_VARS = (
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_USER",
    "DAGSTER_PG_PASSWORD",
    "DAGSTER_PG_DB",
)


@dataclass(frozen=True)
class PostgresSettings:
    """Where the production instance's PostgreSQL is (``DAGSTER_PG_*``); the password is a secret."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    db: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PostgresSettings | None:
        """The server named by ``DAGSTER_PG_*``, or ``None`` when ``DAGSTER_PG_HOST`` is unset.

        Defaults: port 5432, user ``postgres``, empty password, database ``dagster``.
        """
        env = os.environ if env is None else env
        if not env.get("DAGSTER_PG_HOST"):
            return None
        return cls(
            host=env["DAGSTER_PG_HOST"],
            port=int(env.get("DAGSTER_PG_PORT") or 5432),
            user=env.get("DAGSTER_PG_USER") or "postgres",
            password=env.get("DAGSTER_PG_PASSWORD") or "",
            db=env.get("DAGSTER_PG_DB") or "dagster",
        )

    def as_env(self) -> dict[str, str]:
        """The ``DAGSTER_PG_*`` variables for a child process (all five, as the profile needs)."""
        values = (self.host, str(self.port), self.user, self.password, self.db)
        return dict(zip(POSTGRES_ENV_VARS, values, strict=True))


def instance_postgres(
    dagster_home: Path, env: Mapping[str, str] | None = None
) -> PostgresSettings | None:
    """The PostgreSQL the instance config in ``dagster_home`` stores its runs in (its
    ``storage.postgres.postgres_db``, ``env:`` references resolved from ``env``), or ``None``
    when it stores them elsewhere or a value is missing (:func:`instance_problems` says which)."""
    env = os.environ if env is None else env
    try:
        config = yaml.safe_load((dagster_home / "dagster.yaml").read_text())
        db = config["storage"]["postgres"]["postgres_db"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None

    def value(name: str, default: Any = None) -> Any:
        raw = db.get(name, default)
        if isinstance(raw, dict) and "env" in raw:
            return env.get(raw["env"])
        return raw

    fields = {
        "host": value("hostname"),
        "port": value("port", 5432),
        "user": value("username"),
        "password": value("password", ""),
        "db": value("db_name"),
    }
    if any(v is None for v in fields.values()):
        return None
    try:
        fields["port"] = int(fields["port"])
    except ValueError:
        return None
    return PostgresSettings(**{k: v if k == "port" else str(v) for k, v in fields.items()})


def process_environment() -> dict[str, str]:
    """A copy of this process's environment, for the child processes of ``make prod`` (the one
    place that hands the environment on; it is read, never written). A relative
    ``CURATION_CONFIG`` is made absolute: the children may run in another folder."""
    env = dict(os.environ)
    if env.get("CURATION_CONFIG"):
        env["CURATION_CONFIG"] = str(Path(env["CURATION_CONFIG"]).resolve())
    return env
