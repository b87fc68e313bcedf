"""The code location: assembles every asset, check, resource, job and sensor.

``workspace.yaml`` and ``dagster dev`` load ``defs`` from here. Secrets are wired as
``dg.EnvVar`` only when the variable is set, so loading needs no credentials; so is a URI
variable with credentials in it (``pipelines.settings.URI_VARIABLES``), whose redacted form is
what the run config, the run tags and the asset metadata get. Automation
conditions, code versions and sensors come from ``pipelines/automation.py``. Runs launched from
the UI or by the daemon run every step in the run's process by default (on the sample a process
per step cost more than twice the work); ``DAGSTER_EXECUTOR=multiprocess`` gives a process per
step (``$DAGSTER_MAX_CONCURRENT`` at once, default one per CPU).
"""

from __future__ import annotations

import dagster as dg

# Fully imported here, in the main thread, before any step starts Great Expectations' warm-up
# thread (curation.validate.gx_validate.warm_up), which imports sqlalchemy.orm too: two threads importing
# it at once left "partially initialized module 'sqlalchemy.orm.exc'" errors in ingest_checks.
import sqlalchemy.orm  # noqa: F401

from assets.alerting import AlertsResource
from assets.checks import build_checks
from assets.curate import decontaminate_pairs, deduplicate_pairs
from assets.ingest import build_ingest_files
from assets.io import OPTIONAL_INPUT_MANAGER, ArrowTableIOManager
from assets.normalize import build_validate_and_normalize
from assets.publish import release
from assets.resources import (
    AwsCredentials,
    CurationSettings,
    SourceCredentials,
    SourcesResource,
    StoreResource,
    settings_from_mapping,
)
from assets.upstream import build_upstream_files
from curation.datasets import REGISTRY, use_declared
from pipelines.automation import (
    full_refresh_job,
    observation_condition,
    sensors,
    with_operations,
)
from pipelines.config_file import load_config
from pipelines.settings import Environment


def computed_assets() -> list[dg.AssetsDefinition]:
    """Every computed asset, as the asset modules define them (no code versions or conditions),
    over the files of the registered datasets."""
    return [
        build_ingest_files(),
        build_validate_and_normalize(),
        deduplicate_pairs,
        decontaminate_pairs,
        release,
    ]


__all__ = ["ALL_ASSETS", "UPSTREAM_FILES", "build_definitions", "build_resources", "defs"]


def executor(environment: Environment) -> dg.ExecutorDefinition:
    """``$DAGSTER_EXECUTOR``: ``in_process`` (default: every step in the run's process) or
    ``multiprocess`` (a process per step, at most ``$DAGSTER_MAX_CONCURRENT``, 0: CPUs)."""
    if environment.executor == "multiprocess":
        return dg.multiprocess_executor.configured({"max_concurrent": environment.max_concurrent})
    return dg.in_process_executor


def build_resources(
    environment: Environment, settings: CurationSettings | None = None
) -> dict[str, object]:
    """The resources for ``environment`` (the IO manager keeps stage tables in its Dagster home)."""

    def secret(name: str) -> dg.EnvVar | None:
        return dg.EnvVar(name) if name in environment.secrets_set else None

    aws = AwsCredentials(
        endpoint_url=secret("AWS_ENDPOINT_URL"),
        access_key_id=secret("AWS_ACCESS_KEY_ID"),
        secret_access_key=secret("AWS_SECRET_ACCESS_KEY"),
        region=secret("AWS_DEFAULT_REGION"),
    )
    credentials = SourceCredentials(
        **{d.uri_field: secret(d.uri_variable) for d in REGISTRY},
        http_headers=secret("SOURCES_HTTP_HEADERS"),
    )
    # a URI variable with credentials in it: the resource gets the variable, never its value
    # (a store refuses it when it starts, with the redacted URI)
    tables = secret("STAGE_STORE_URI") or environment.stage_tables
    return {
        "aws": aws,
        "source_credentials": credentials,
        "sources": SourcesResource(
            **environment.sources_config(), aws=aws, credentials=credentials
        ),
        "store": StoreResource(uri=secret("CURATED_STORE_URI") or environment.store_uri, aws=aws),
        "settings": settings or CurationSettings(),
        "alerts": AlertsResource(
            webhook_url=secret("ALERT_WEBHOOK_URL"),
            budget_seconds=environment.alert_budget_seconds,
        ),
        "io_manager": ArrowTableIOManager(base_dir=tables),
        OPTIONAL_INPUT_MANAGER: ArrowTableIOManager(
            base_dir=tables, allow_missing=True, handles=True
        ),
    }


def build_assets(
    environment: Environment,
    settings: CurationSettings | None = None,
    *,
    keep_release_fresh: bool = True,
) -> list[dg.AssetsDefinition]:
    """The observable upstream files and the computed assets, with versions and conditions."""
    return [
        build_upstream_files(observation_condition(environment.refresh_cron)),
        *with_operations(
            computed_assets(), environment, settings, keep_release_fresh=keep_release_fresh
        ),
    ]


def build_definitions(
    environment: Environment | None = None,
    executor_def: dg.ExecutorDefinition | None = None,
    *,
    settings: CurationSettings | None = None,
    keep_release_fresh: bool = True,
) -> dg.Definitions:
    """Definitions for ``environment`` (default: read from the process environment).

    ``executor_def`` replaces the multiprocess executor (``pipelines.local_run`` passes the
    in-process one); ``settings`` replaces the default :class:`CurationSettings` (code versions
    follow it); ``keep_release_fresh=False`` drops the release's cron re-publish condition
    (``rlhf-curate refresh`` computes only what changed).
    """
    environment = environment or Environment.from_env()
    file_settings, declarations = load_config(environment.config_path)
    use_declared(declarations)  # the asset graph, suites and card follow the registry
    if settings is None and file_settings:
        settings = settings_from_mapping(file_settings)
    resources = build_resources(environment, settings)
    return dg.Definitions(
        assets=build_assets(environment, settings, keep_release_fresh=keep_release_fresh),
        asset_checks=build_checks(),
        jobs=[full_refresh_job(environment)],
        sensors=sensors(environment),
        resources=resources,
        executor=executor_def or executor(environment),
    )


defs = build_definitions()
ALL_ASSETS = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and not a.is_observable]
"""The computed assets of ``defs``, with code versions, conditions and the freshness policy."""
UPSTREAM_FILES = next(
    a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.is_observable
)
"""The observable source asset of the 15 upstream files, with its observation condition."""
