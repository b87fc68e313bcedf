"""The stage-table IO manager: per-run folders, subset runs reading earlier runs, clean-up; and
the production job on Dagster's multiprocess executor with stage tables on S3.

``execute_job`` on a reconstructable ``full_refresh`` job (each step re-imports the code location
in its own process) against a persistent instance in a temporary DAGSTER_HOME. The 15 source
observations are one step (``upstream_files``), the files' ingest assets one subsettable step
(``ingest_files``, threads inside); the blocking checks gate the next stage, and the two checks
of the curated pairs are independent steps that run side by side (shown by the order of the
run's events, not by timings).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from assets.io import ArrowTableIOManager
from assets.keys import INGEST_KEYS
from curation.core.stage_table import StageTable


@dg.asset
def numbers() -> pa.Table:
    return pa.table({"n": [1, 2, 3]})


@dg.asset
def doubled(numbers: pa.Table) -> pa.Table:
    return pa.table({"n": [2 * v for v in numbers.column("n").to_pylist()]})


@dg.asset
def tripled(numbers: StageTable) -> pa.Table:
    """Reads its input as a handle, batch by batch, one column."""
    assert isinstance(numbers, StageTable)
    values = [v for b in numbers.to_batches(["n"]) for v in b.column(0).to_pylist()]
    return pa.table({"n": [3 * v for v in values]})


def _files(base: Path) -> dict[str, set[str]]:
    """``run_id -> {table file names}`` under the stage store."""
    runs = base / "runs"
    if not runs.exists():
        return {}
    return {d.name: {f.name for f in d.glob("*.arrow")} for d in runs.iterdir()}


def test_run_folders_subset_runs_and_clean_up(tmp_path: Path) -> None:
    base = tmp_path / "tables"
    resources = {"io_manager": ArrowTableIOManager(base_dir=str(base))}
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:

        def run(selection):
            result = dg.materialize(
                [numbers, doubled], selection=selection, resources=resources, instance=instance
            )
            assert result.success
            return result

        first = run([numbers, doubled])
        assert _files(base) == {first.run_id: {"numbers.arrow", "doubled.arrow"}}
        # A subset run reads `numbers` from the run that materialized it last.
        second = run([doubled])
        assert second.output_for_node("doubled").column("n").to_pylist() == [2, 4, 6]
        assert _files(base) == {
            first.run_id: {"numbers.arrow", "doubled.arrow"},
            second.run_id: {"doubled.arrow"},
        }
        # The next run removes what no asset's latest materialization points at any more.
        third = run([numbers, doubled])
        assert _files(base) == {
            first.run_id: {"numbers.arrow"},  # still the latest `numbers` when `third` started
            second.run_id: {"doubled.arrow"},
            third.run_id: {"numbers.arrow", "doubled.arrow"},
        }
        fourth = run([numbers])
        assert _files(base) == {
            third.run_id: {"numbers.arrow", "doubled.arrow"},
            fourth.run_id: {"numbers.arrow"},
        }


def full_refresh_job() -> dg.JobDefinition:
    """The production job on the multiprocess executor, rebuilt from the environment in every
    step process (so every step reads STAGE_STORE_URI itself)."""
    from pipelines.definitions import build_definitions

    return build_definitions().resolve_job_def("full_refresh")


def assert_one_process_per_step(
    events: list[dg.DagsterEvent], records: list[dg.EventLogRecord]
) -> None:
    """The multiprocess executor ran the run: one process per step (none of them this one),
    independent steps side by side and dependent ones in order.

    Where each step's process was launched, started and finished, as positions in the run's
    event log (storage order): the order of events, not their timestamps, so a loaded machine
    cannot change the verdict.
    """
    assert any(
        "multiprocess" in (e.message or "") for e in events if e.event_type_value == "ENGINE_EVENT"
    )
    launched: dict[str, int] = {}
    succeeded: dict[str, int] = {}
    pids: dict[str, int] = {}
    for position, record in enumerate(records):
        event = record.event_log_entry.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_WORKER_STARTING":  # the executor launches the process
            launched[event.step_key] = position
        elif event.event_type_value == "STEP_START":  # sent by the step's own process
            pids[event.step_key] = event.pid
        elif event.event_type_value == "STEP_SUCCESS":
            succeeded[event.step_key] = position
    steps = set(launched)
    assert {"upstream_files", "ingest_files", "ingest_checks", "release"} <= steps, steps
    assert set(launched) == set(pids) == set(succeeded), (launched, pids, succeeded)
    assert len(set(pids.values())) == len(steps)  # one process per step...
    assert os.getpid() not in pids.values()  # ...none of them this one
    # the two checks of the curated pairs are independent: both launched before either finished
    # (with one step at a time, each launch follows a success)
    a, b = "curated_pairs_curated_pairs_suite", "curated_pairs_row_accounting"
    assert max(launched[a], launched[b]) < min(succeeded[a], succeeded[b]), (launched, succeeded)
    # ingest depends on the observation: launched only after it finished
    assert launched["ingest_files"] > succeeded["upstream_files"]
    materialized = {e.asset_key for e in events if e.event_type_value == "ASSET_MATERIALIZATION"}
    assert set(INGEST_KEYS) <= materialized and dg.AssetKey("release") in materialized


def _table_files(store: Path, release_id: str) -> dict[str, str]:
    manifest = json.loads((store / "releases" / release_id / "manifest.json").read_text())
    return {
        f"{name}/{f['path']}": f["sha256"]
        for name, info in manifest["tables"].items()
        for f in info["files"]
    }


def test_stage_tables_on_s3_with_the_multiprocess_executor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_env: dict[str, str], s3_client
) -> None:
    """The whole job, one process per step, stage tables only on a moto S3 endpoint (zstd
    Arrow IPC; loads copy to a private temp file and memory-map it): the release is identical
    to the one an in-process run with local stage tables publishes."""
    from pipelines.definitions import build_definitions
    from tests.pipeline_helpers import environment, release_metadata

    # the reference: the same definitions (per-stage code versions name the release), in process,
    # with local stage tables
    local_env = environment(tmp_path / "local", str(tmp_path / "local_store"))
    local = (
        build_definitions(local_env)
        .resolve_job_def("full_refresh")
        .execute_in_process(instance=dg.DagsterInstance.ephemeral())
    )
    assert local.success
    local_id = release_metadata(local)["release_id"]

    s3_client.create_bucket(Bucket="stage-tables")
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("STAGE_STORE_URI", "s3://stage-tables/stage")
    monkeypatch.setenv("CURATED_STORE_URI", str(tmp_path / "s3_run_store"))
    monkeypatch.setenv("DAGSTER_MAX_CONCURRENT", "2")
    monkeypatch.setenv("DAGSTER_EXECUTOR", "multiprocess")  # the default is in process
    with (
        dg.instance_for_test(temp_dir=str(home)) as instance,
        dg.execute_job(dg.reconstructable(full_refresh_job), instance=instance) as result,
    ):
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        run_id = result.run_id
        records = instance.get_records_for_run(run_id, ascending=True).records
        assert_one_process_per_step(result.all_events, records)
        engine = [
            e.message or "" for e in result.all_events if e.event_type_value == "ENGINE_EVENT"
        ]
        metadata = {
            k: v.value
            for m in result.asset_materializations_for_node("release")
            for k, v in m.metadata.items()
        }
    assert any("multiprocess" in m for m in engine)
    stored = s3_client.list_objects_v2(Bucket="stage-tables", Prefix=f"stage/runs/{run_id}/")
    names = {o["Key"].rsplit("/", 1)[-1] for o in stored.get("Contents", [])}
    assert {"curated_pairs.arrow", "source_files.arrow", "quarantine.arrow"} <= names
    assert not list(home.rglob("*.arrow"))  # nothing shared through the local disk
    body = s3_client.get_object(
        Bucket="stage-tables", Key=f"stage/runs/{run_id}/curated_pairs.arrow"
    )["Body"].read()
    reader = pa.ipc.open_file(pa.py_buffer(body))
    assert reader.num_record_batches > 0
    assert metadata["release_id"] == local_id
    assert _table_files(tmp_path / "s3_run_store", local_id) == _table_files(
        tmp_path / "local_store", local_id
    )


@pytest.mark.parametrize("where", ["local", "s3"])
def test_inputs_annotated_stage_table_get_a_handle(
    where: str, tmp_path: Path, s3_env: dict[str, str], s3_client
) -> None:
    """A step that annotates its input ``StageTable`` reads it on demand; others get the table.
    On S3 the handle reads a private local copy that is deleted with the handle."""
    if where == "s3":
        s3_client.create_bucket(Bucket="handles")
        base = "s3://handles/stage"
    else:
        base = str(tmp_path / "tables")
    resources = {"io_manager": ArrowTableIOManager(base_dir=base, scratch_dir=str(tmp_path))}
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        result = dg.materialize([numbers, doubled, tripled], resources=resources, instance=instance)
    assert result.success
    assert result.output_for_node("tripled").column("n").to_pylist() == [3, 6, 9]
    assert result.output_for_node("doubled").column("n").to_pylist() == [2, 4, 6]
    assert not list(tmp_path.glob("stage-*.arrow"))  # scratch copies are gone


def test_stage_table_reads_columns_and_batches(tmp_path: Path) -> None:
    from assets.io import write_table

    table = pa.table(
        {"a": list(range(200_000)), "b": [str(i) for i in range(200_000)]},
        metadata={b"k": b"v"},
    )
    write_table(table, tmp_path / "t.arrow")
    handle = StageTable(tmp_path / "t.arrow")
    assert handle.num_rows == 200_000 and handle.column_names == ["a", "b"]
    assert handle.read_all().equals(table)
    assert handle.select(["b"]).schema.metadata == {b"k": b"v"}
    assert handle.column("a").to_pylist() == list(range(200_000))
    batches = list(handle.to_batches(["b"], max_chunksize=50_000))
    assert {b.num_rows for b in batches} <= {50_000, 200_000 - 3 * 65_536, 65_536 - 50_000}
    assert sum(b.num_rows for b in batches) == 200_000
    assert all(b.schema.names == ["b"] for b in batches)
    with pytest.raises(KeyError, match="no column"):
        handle.column("c")
