"""The code location: assembles every asset, check, resource, job, schedule and sensor.

``workspace.yaml`` and ``dagster dev`` load ``defs`` from here. Secrets are wired as
``dg.EnvVar`` only when the variable is set, so loading needs no credentials. Jobs, schedules,
sensors and the freshness check live in ``pipelines/automation.py``. Runs launched from the UI or
by the daemon use the multiprocess executor (independent steps, e.g. the 15 ingest assets, run in
parallel processes; ``$DAGSTER_MAX_CONCURRENT`` caps them, default: one per CPU).
"""

from __future__ import annotations

import os

import dagster as dg

from assets.alerting import AlertsResource
from assets.checks import ALL_CHECKS
from assets.curate import decontaminate_pairs, deduplicate_pairs
from assets.ingest import SOURCE_ASSETS, ingest_files
from assets.io import OPTIONAL_INPUT_MANAGER, ArrowTableIOManager
from assets.normalize import validate_and_normalize
from assets.publish import release
from assets.resources import AwsCredentials, CurationSettings, SourcesResource, StoreResource
from pipelines.automation import (
    build_schedules,
    build_sensors,
    full_refresh_job,
    observe_sources_job,
    release_freshness,
    release_freshness_job,
    with_operations,
)
from pipelines.settings import Environment

ALL_ASSETS = with_operations(
    [
        ingest_files,
        validate_and_normalize,
        deduplicate_pairs,
        decontaminate_pairs,
        release,
    ]
)
"""Every computed asset, with code versions and the release freshness policy."""

__all__ = ["ALL_ASSETS", "SOURCE_ASSETS", "build_definitions", "defs", "full_refresh_job"]


def executor() -> dg.ExecutorDefinition:
    """The multiprocess executor, at most ``$DAGSTER_MAX_CONCURRENT`` step processes (0: CPUs)."""
    return dg.multiprocess_executor.configured(
        {"max_concurrent": int(os.environ.get("DAGSTER_MAX_CONCURRENT") or 0)}
    )


def _env_or_none(name: str) -> dg.EnvVar | None:
    return dg.EnvVar(name) if os.environ.get(name) else None


def build_resources(environment: Environment) -> dict[str, object]:
    """The resources for ``environment`` (the IO manager keeps stage tables in its Dagster home)."""
    aws = AwsCredentials(
        endpoint_url=_env_or_none("AWS_ENDPOINT_URL"),
        access_key_id=_env_or_none("AWS_ACCESS_KEY_ID"),
        secret_access_key=_env_or_none("AWS_SECRET_ACCESS_KEY"),
        region=_env_or_none("AWS_DEFAULT_REGION"),
    )
    tables = environment.stage_store_uri or str(environment.dagster_home / "tables")
    return {
        "aws": aws,
        "sources": SourcesResource(
            hh_rlhf_uri=environment.hh_rlhf_uri,
            pku_saferlhf_uri=environment.pku_saferlhf_uri,
            hh_rlhf_revision=environment.hh_rlhf_revision,
            pku_saferlhf_revision=environment.pku_saferlhf_revision,
            aws=aws,
        ),
        "store": StoreResource(uri=environment.store_uri, aws=aws),
        "settings": CurationSettings(),
        "alerts": AlertsResource(webhook_url=_env_or_none("ALERT_WEBHOOK_URL")),
        "io_manager": ArrowTableIOManager(base_dir=tables),
        OPTIONAL_INPUT_MANAGER: ArrowTableIOManager(base_dir=tables, allow_missing=True),
    }


def build_definitions(
    environment: Environment | None = None, executor_def: dg.ExecutorDefinition | None = None
) -> dg.Definitions:
    """Definitions for ``environment`` (default: read from the process environment).

    ``executor_def`` replaces the multiprocess executor (``pipelines.local_run`` passes the
    in-process one).
    """
    environment = environment or Environment.from_env()
    return dg.Definitions(
        assets=[*SOURCE_ASSETS, *ALL_ASSETS],
        asset_checks=[*ALL_CHECKS, release_freshness],
        jobs=[full_refresh_job, observe_sources_job, release_freshness_job],
        schedules=build_schedules(),
        sensors=build_sensors([*SOURCE_ASSETS, *ALL_ASSETS]),
        resources=build_resources(environment),
        executor=executor_def or executor(),
    )


defs = build_definitions()
