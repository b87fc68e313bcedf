"""The same definitions on Dagster's multiprocess executor: independent steps run in parallel processes.

``execute_job`` on a reconstructable ``full_refresh`` job (each step re-imports the code location
in its own process) against a persistent instance in a temporary DAGSTER_HOME. The 15 source
observations are one step (``upstream_files``), the files' ingest assets one subsettable step
(``ingest_files``, threads inside); the blocking checks gate the next stage, and the two checks
of the curated pairs are independent steps that run side by side.
"""

from pathlib import Path

import dagster as dg
import pytest

from assets.keys import INGEST_KEYS
from curation.sources import hh_files, pku_files
from pipelines.definitions import build_definitions

PRESENT = [
    next(f for f in hh_files() if f.subset == "harmless-base" and f.split == "train"),
    next(f for f in hh_files() if f.subset == "harmless-base" and f.split == "test"),
    next(f for f in pku_files() if f.subset == "Alpaca-7B" and f.split == "train"),
    next(f for f in pku_files() if f.subset == "Alpaca-7B" and f.split == "test"),
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
        records = instance.all_logs(run_id)
    # the multiprocess executor ran the run
    assert any(
        "multiprocess" in (e.message or "") for e in events if e.event_type_value == "ENGINE_EVENT"
    )
    spans: dict[str, list[float]] = {}
    pids: dict[str, int] = {}
    for record in records:
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type_value == "STEP_WORKER_STARTING":  # the executor launches the process
            spans.setdefault(event.step_key, [0.0, 0.0])[0] = record.timestamp
        elif event.event_type_value == "STEP_START":
            spans.setdefault(event.step_key, [record.timestamp, 0.0])
            pids[event.step_key] = event.pid
        elif event.event_type_value == "STEP_SUCCESS":
            spans.setdefault(event.step_key, [0.0, 0.0])[1] = record.timestamp
    assert {"upstream_files", "ingest_files", "ingest_checks", "release"} <= set(spans), spans
    assert len(set(pids.values())) == len(spans)  # one process per step
    a, b = spans["curated_pairs_curated_pairs_suite"], spans["curated_pairs_row_accounting"]
    assert a[0] < b[1] and b[0] < a[1], f"the two checks did not overlap in time: {spans}"
    t0 = min(start for start, _ in spans.values())
    for step, (start, end) in sorted(spans.items()):  # shown with pytest -s
        print(f"{step}: {start - t0:5.2f} s -> {end - t0:5.2f} s (pid {pids[step]})")
    materialized = {e.asset_key for e in events if e.event_type_value == "ASSET_MATERIALIZATION"}
    assert set(INGEST_KEYS) <= materialized and dg.AssetKey("release") in materialized
    assert (home / "tables" / f"raw_{PRESENT[0].key}.arrow").exists()
