"""The same definitions on Dagster's multiprocess executor: independent steps run in parallel processes.

``execute_job`` on a reconstructable ``full_refresh`` job (each step re-imports the code location
in its own process) against a persistent instance in a temporary DAGSTER_HOME. The 15 source
observations are one step (``upstream_files``), the files' ingest assets one subsettable step
(``ingest_files``, threads inside); the blocking checks gate the next stage, and the two checks
of the curated pairs are independent steps that run side by side (shown by the order of the
run's events, not by timings).
"""

import os
from pathlib import Path

import dagster as dg
import pytest

from assets.keys import INGEST_KEYS
from curation.sources import source_file
from pipelines.definitions import build_definitions

PRESENT = [
    source_file("harmless-base", "train"),
    source_file("harmless-base", "test"),
    source_file("Alpaca-7B", "train"),
    source_file("Alpaca-7B", "test"),
]


def full_refresh_job() -> dg.JobDefinition:
    """The production job, rebuilt from the environment in every step process."""
    return build_definitions().resolve_job_def("full_refresh")


def test_full_refresh_on_the_multiprocess_executor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("CURATED_STORE_URI", str(tmp_path / "store"))
    monkeypatch.setenv("DAGSTER_EXECUTOR", "multiprocess")
    monkeypatch.setenv("DAGSTER_MAX_CONCURRENT", "4")
    job = dg.reconstructable(full_refresh_job)
    with dg.instance_for_test(temp_dir=str(home)) as instance:  # sets DAGSTER_HOME for the steps
        with dg.execute_job(job, instance=instance) as result:
            assert result.success
            events = result.all_events
            run_id = result.run_id
        records = instance.get_records_for_run(run_id, ascending=True).records
    # the multiprocess executor ran the run
    assert any(
        "multiprocess" in (e.message or "") for e in events if e.event_type_value == "ENGINE_EVENT"
    )
    # Where each step's process was launched, started and finished, as positions in the run's
    # event log (storage order): the order of events, not their timestamps, so a loaded machine
    # cannot change the verdict.
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
    # (with one step at a time, each launch follows a success); shown by event order, not timings
    a, b = "curated_pairs_curated_pairs_suite", "curated_pairs_row_accounting"
    assert max(launched[a], launched[b]) < min(succeeded[a], succeeded[b]), (launched, succeeded)
    # ingest depends on the observation: launched only after it finished
    assert launched["ingest_files"] > succeeded["upstream_files"]
    materialized = {e.asset_key for e in events if e.event_type_value == "ASSET_MATERIALIZATION"}
    assert set(INGEST_KEYS) <= materialized and dg.AssetKey("release") in materialized
