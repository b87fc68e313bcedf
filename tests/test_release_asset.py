"""What the ``release`` asset shows in the Dagster UI, from a real run of the graph on the sample:
its Columns tab is the published parquet's schema with every column described, and its Checks
tab has ``release_verified``, which reads the published release back and fails on a damaged one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from assets.checks import ALL_CHECKS, release_verified
from curation.core.schema import DESCRIPTION, PAIRS
from curation.publish.reader import open_release
from pipelines.definitions import ALL_ASSETS, build_resources
from tests.pipeline_helpers import check_results, environment, materialize, release_metadata


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """One run of the graph on the sample: (environment, instance, result)."""
    tmp = tmp_path_factory.mktemp("release_asset")
    env = environment(tmp, str(tmp / "store"))
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(env, instance=instance)
        assert result.success
        yield env, instance, result


def test_column_schema_is_the_published_parquet_schema_with_descriptions(published):
    env, _, result = published
    metadata = release_metadata(result)
    columns = metadata["dagster/column_schema"].columns
    release = open_release(env.store_uri, metadata["release_id"])
    part = release.paths("pairs")[0]
    parquet = pq.read_schema(part)
    assert [c.name for c in columns] == parquet.names == PAIRS.names
    assert "prompt_normalized" not in parquet.names  # a stage-only column
    # the types as the release's readers get them (a parquet file names list items `element`)
    assert [c.type for c in columns] == [str(f.type) for f in release.schema("pairs")]
    assert release.schema("pairs").equals(parquet)
    # the descriptions are the parquet's own field metadata, for every column
    assert [c.description for c in columns] == [f.metadata[DESCRIPTION].decode() for f in parquet]
    assert all(c.description for c in columns)


def test_stage_tables_describe_their_columns(published):
    _, _, result = published
    for node, name in (("validate_and_normalize", "quarantine"), ("ingest_files", None)):
        for materialization in result.asset_materializations_for_node(node):
            if name and materialization.asset_key != dg.AssetKey(name):
                continue
            columns = materialization.metadata["dagster/column_schema"].value.columns
            described = {c.name for c in columns if c.description}
            assert {"dataset", "source_file", "source_line"} <= described, materialization
            if name == "quarantine":
                assert described == {c.name for c in columns}


def test_release_verified_passes_on_the_published_release(published):
    _, _, result = published
    check = check_results(result)[("release", "release_verified")]
    assert check.passed, check.description
    assert "verifies" in check.description


def test_release_verified_fails_on_a_damaged_release(published):
    env, instance, result = published
    metadata = release_metadata(result)
    part = Path(open_release(env.store_uri, metadata["release_id"]).paths("pairs")[0])
    original = part.read_bytes()
    try:
        part.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # one bit, same size
        again = dg.materialize(
            [*ALL_ASSETS, *ALL_CHECKS],
            selection=dg.AssetSelection.checks(release_verified),
            resources=build_resources(env),
            instance=instance,
            raise_on_error=False,
        )
    finally:
        part.write_bytes(original)
    check = check_results(again)[("release", "release_verified")]
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert "sha256" in check.metadata["details"].value, check.metadata["details"].value
    assert not again.asset_materializations_for_node("release")  # the check ran on its own
