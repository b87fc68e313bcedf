"""Helpers to materialize the real asset graph in tests."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from assets.checks import ALL_CHECKS
from assets.resources import CurationSettings
from pipelines.definitions import ALL_ASSETS, build_resources
from pipelines.settings import SAMPLE, Environment


def environment(tmp_path: Path, store_uri: str, **changes) -> Environment:
    """An environment reading the bundled sample and writing to ``store_uri``."""
    values = {
        "hh_rlhf_uri": str(SAMPLE / "hh-rlhf"),
        "pku_saferlhf_uri": str(SAMPLE / "PKU-SafeRLHF"),
        "hh_rlhf_revision": None,
        "pku_saferlhf_revision": None,
        "store_uri": store_uri,
        "dagster_home": tmp_path / "dagster_home",
    }
    values.update(changes)
    return Environment(**values)


def materialize(
    env: Environment,
    settings: CurationSettings | None = None,
    *,
    instance: dg.DagsterInstance | None = None,
    **resource_overrides,
) -> dg.ExecuteInProcessResult:
    """Materialize every asset and check of the graph in process (in ``instance``, default a new
    ephemeral one)."""
    resources = build_resources(env)
    if settings is not None:
        resources["settings"] = settings
    resources.update(resource_overrides)
    return dg.materialize(
        [*ALL_ASSETS, *ALL_CHECKS],
        resources=resources,
        raise_on_error=False,
        instance=instance or dg.DagsterInstance.ephemeral(),
    )


def release_metadata(result: dg.ExecuteInProcessResult) -> dict:
    """The metadata of the release materialization of a run (empty when it did not happen)."""
    for mat in result.asset_materializations_for_node("release"):
        return {k: v.value for k, v in mat.metadata.items()}
    return {}


def check_results(
    result: dg.ExecuteInProcessResult,
) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    """Asset check evaluations of a run by (asset, check name)."""
    out = {}
    for event in result.get_asset_check_evaluations():
        out[(event.asset_key.to_user_string(), event.check_name)] = event
    return out
