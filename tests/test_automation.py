"""Operations: the schedule, source sensors (local files and S3), release freshness, the run-failure
alert, retry policies, and the incremental refresh that recomputes only what a source change made
stale."""

import asyncio
import gzip
import json
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID

import assets.ingest as ingest_module
from assets.alerting import AlertsResource
from assets.ingest import (
    INGEST_KEYS,
    SOURCE_ASSETS,
    ingest_asset_key,
    source_fingerprint,
    upstream_asset_key,
)
from assets.resources import AwsCredentials, SourcesResource
from curation.sources import SourceError, hh_files, pku_files
from pipelines import automation
from pipelines.automation import (
    DATA_VERSION_TAG,
    RELEASE_KEY,
    build_schedules,
    build_source_sensor,
    refresh,
    release_freshness,
    release_freshness_job,
    run_failure_alert,
    with_operations,
)
from pipelines.definitions import ALL_ASSETS, build_definitions, build_resources
from pipelines.settings import SAMPLE
from tests.pipeline_helpers import environment

GRAPH = [*SOURCE_ASSETS, *ALL_ASSETS]
HH_TEST = next(f for f in hh_files() if f.subset == "harmless-base" and f.split == "test")
PKU_TEST = next(f for f in pku_files() if f.subset == "Alpaca-7B" and f.split == "test")
DOWNSTREAM = {"normalized_pairs", "curated_pairs", "release", "source_files", "quarantine"}


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    """A writable copy of the bundled sample mirrors."""
    root = tmp_path / "mirror"
    shutil.copytree(SAMPLE / "hh-rlhf", root / "hh-rlhf")
    shutil.copytree(SAMPLE / "PKU-SafeRLHF", root / "PKU-SafeRLHF")
    return root


@pytest.fixture
def instance(tmp_path: Path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as inst:
        yield inst


def drop_first_line(path: Path) -> None:
    """Change a mirror file (gzip or plain JSON Lines) by removing its first line."""
    if path.suffix == ".gz":
        lines = gzip.decompress(path.read_bytes()).splitlines(keepends=True)
        path.write_bytes(gzip.compress(b"".join(lines[1:])))
    else:
        lines = path.read_bytes().splitlines(keepends=True)
        path.write_bytes(b"".join(lines[1:]))


def names(keys) -> set[str]:
    return {k.to_user_string() for k in keys}


def mark_all_ingested(instance: dg.DagsterInstance) -> None:
    """Pretend every ingest asset was materialized once (so only changes are requested)."""
    for key in INGEST_KEYS:
        instance.report_runless_asset_event(dg.AssetMaterialization(key))


def tick(sensor: dg.SensorDefinition, instance, resources, cursor=None):
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=resources, sensor_name=sensor.name
    ) as context:
        return sensor.evaluate_tick(context)


# --- schedule -------------------------------------------------------------------------------------


def test_daily_schedule_requests_a_full_refresh(monkeypatch: pytest.MonkeyPatch):
    schedule = next(s for s in build_schedules() if s.name == "daily_full_refresh")
    assert schedule.cron_schedule == "0 3 * * *"
    data = schedule.evaluate_tick(dg.build_schedule_context())
    assert len(data.run_requests) == 1
    assert schedule.job_name == "full_refresh"
    assert data.run_requests[0].asset_selection is None  # the whole job
    monkeypatch.setenv("REFRESH_CRON", "30 5 * * 1")
    assert build_schedules()[0].cron_schedule == "30 5 * * 1"


def test_definitions_register_operations():
    defs = build_definitions(environment(Path("/tmp"), "/tmp/unused-store"))
    assert {s.name for s in defs.sensors} == {
        "hh_rlhf_source_sensor",
        "pku_saferlhf_source_sensor",
        "run_failure_alert",
    }
    assert {s.name for s in defs.schedules} == {"daily_full_refresh", "release_freshness_schedule"}
    graph = defs.resolve_asset_graph()
    assert all(graph.get(k).code_version for a in ALL_ASSETS for k in a.keys)
    ingest = graph.get(ingest_asset_key(HH_TEST))
    assert ingest.parent_keys == {upstream_asset_key(HH_TEST)}
    policy = graph.get(RELEASE_KEY).freshness_policy
    assert policy.fail_window.to_timedelta().total_seconds() == 36 * 3600


# --- source sensors: local files ------------------------------------------------------------------


def local_resources(mirror: Path) -> dict:
    aws = AwsCredentials()
    return {
        "sources": SourcesResource(
            hh_rlhf_uri=str(mirror / "hh-rlhf"),
            pku_saferlhf_uri=str(mirror / "PKU-SafeRLHF"),
            aws=aws,
        ),
        "aws": aws,
    }


def test_local_sensor_requests_changed_file_and_downstream_only(mirror: Path, instance):
    resources = local_resources(mirror)
    hh_sensor = build_source_sensor("hh-rlhf", GRAPH)
    pku_sensor = build_source_sensor("pku-saferlhf", GRAPH)
    mark_all_ingested(instance)

    first = tick(hh_sensor, instance, resources)  # nothing observed before: everything is new
    assert len(first.run_requests) == 1
    assert {f"raw_{f.key}" for f in hh_files()} <= names(first.run_requests[0].asset_selection)
    hh_cursor = first.cursor
    pku_cursor = tick(pku_sensor, instance, resources).cursor

    unchanged = tick(hh_sensor, instance, resources, hh_cursor)
    assert not unchanged.run_requests and "unchanged" in unchanged.skip_message
    assert unchanged.cursor == hh_cursor

    drop_first_line(mirror / "hh-rlhf" / HH_TEST.relpath)
    changed = tick(hh_sensor, instance, resources, hh_cursor)
    assert len(changed.run_requests) == 1
    selected = names(changed.run_requests[0].asset_selection)
    assert f"raw_{HH_TEST.key}" in selected and selected >= DOWNSTREAM
    assert not any(s.startswith("raw_") and s != f"raw_{HH_TEST.key}" for s in selected)
    assert not any(s.startswith("upstream_") for s in selected)
    assert changed.cursor != hh_cursor
    [observation] = changed.asset_events
    assert observation.asset_key == upstream_asset_key(HH_TEST)
    expected = source_fingerprint(str(mirror / "hh-rlhf"), HH_TEST.relpath)
    assert observation.tags[DATA_VERSION_TAG] == expected and expected.startswith("sha256:")

    # the other source did not change: its sensor skips
    other = tick(pku_sensor, instance, resources, pku_cursor)
    assert not other.run_requests and other.skip_message
    # a touch (new mtime, same bytes) is not a change for local files
    path = mirror / "PKU-SafeRLHF" / PKU_TEST.relpath
    path.write_bytes(path.read_bytes())
    assert not tick(pku_sensor, instance, resources, pku_cursor).run_requests


def test_first_tick_after_a_run_compares_with_the_recorded_observations(mirror: Path, instance):
    """No cursor yet, but the last run observed the same files: nothing to do."""
    resources = local_resources(mirror)
    mark_all_ingested(instance)
    for source in pku_files():
        fingerprint = source_fingerprint(str(mirror / "PKU-SafeRLHF"), source.relpath)
        instance.report_runless_asset_event(
            dg.AssetObservation(upstream_asset_key(source), tags={DATA_VERSION_TAG: fingerprint})
        )
    sensor = build_source_sensor("pku-saferlhf", GRAPH)
    assert not tick(sensor, instance, resources).run_requests


# --- source sensors: S3 (moto) ---------------------------------------------------------------------


def test_s3_sensor_sees_a_changed_object(s3_env: dict, s3_client, s3_bucket: str, instance):
    client = s3_client
    for local_root, prefix in ((SAMPLE / "hh-rlhf", "hh"), (SAMPLE / "PKU-SafeRLHF", "pku")):
        for path in local_root.rglob("*.*"):
            key = f"{prefix}/{path.relative_to(local_root)}"
            client.put_object(Bucket=s3_bucket, Key=key, Body=path.read_bytes())
    aws = AwsCredentials(
        endpoint_url=s3_env["AWS_ENDPOINT_URL"],
        access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
        secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"],
        region=s3_env["AWS_DEFAULT_REGION"],
    )
    resources = {
        "sources": SourcesResource(
            hh_rlhf_uri=f"s3://{s3_bucket}/hh", pku_saferlhf_uri=f"s3://{s3_bucket}/pku", aws=aws
        ),
        "aws": aws,
    }
    mark_all_ingested(instance)
    hh_sensor = build_source_sensor("hh-rlhf", GRAPH)
    pku_sensor = build_source_sensor("pku-saferlhf", GRAPH)
    hh_cursor = tick(hh_sensor, instance, resources).cursor
    pku_cursor = tick(pku_sensor, instance, resources).cursor
    fingerprints = json.loads(pku_cursor)
    assert fingerprints[PKU_TEST.relpath].startswith("etag:")
    assert fingerprints["data/Alpaca2-7B/test.jsonl"] == "absent"

    assert not tick(pku_sensor, instance, resources, pku_cursor).run_requests
    body = (SAMPLE / "PKU-SafeRLHF" / PKU_TEST.relpath).read_bytes()
    client.put_object(Bucket=s3_bucket, Key=f"pku/{PKU_TEST.relpath}", Body=body.split(b"\n", 1)[1])
    changed = tick(pku_sensor, instance, resources, pku_cursor)
    assert len(changed.run_requests) == 1
    selected = names(changed.run_requests[0].asset_selection)
    assert f"raw_{PKU_TEST.key}" in selected and "release" in selected
    assert {s for s in selected if s.startswith("raw_")} == {f"raw_{PKU_TEST.key}"}
    assert json.loads(changed.cursor)[PKU_TEST.relpath] != fingerprints[PKU_TEST.relpath]
    # a new file appearing in the mirror is a change too
    client.put_object(Bucket=s3_bucket, Key="pku/data/Alpaca2-7B/test.jsonl", Body=body)
    appeared = tick(pku_sensor, instance, resources, changed.cursor)
    assert "raw_pku_saferlhf__alpaca2_7b__test" in names(appeared.run_requests[0].asset_selection)
    # HH did not change
    unchanged = tick(hh_sensor, instance, resources, hh_cursor)
    assert not unchanged.run_requests and "unchanged" in unchanged.skip_message


# --- source sensors: hf:// (the Hub API faked: no network) -----------------------------------------


def test_hf_sensor_follows_the_dataset_commit(monkeypatch: pytest.MonkeyPatch, instance):
    import huggingface_hub

    commits = iter(["a" * 40, "a" * 40, "b" * 40])
    asked = []

    class FakeApi:
        def dataset_info(self, repo_id, revision=None):
            asked.append((repo_id, revision))
            return type("Info", (), {"sha": next(commits)})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    aws = AwsCredentials()
    resources = {
        "sources": SourcesResource(
            hh_rlhf_uri="hf://datasets/Anthropic/hh-rlhf",
            pku_saferlhf_uri="hf://datasets/PKU-Alignment/PKU-SafeRLHF",
            aws=aws,
        ),
        "aws": aws,
    }
    mark_all_ingested(instance)
    sensor = build_source_sensor("hh-rlhf", GRAPH)
    first = tick(sensor, instance, resources)
    assert set(json.loads(first.cursor).values()) == {"hf-commit:" + "a" * 40}
    assert not tick(sensor, instance, resources, first.cursor).run_requests
    moved = tick(sensor, instance, resources, first.cursor)
    selected = names(moved.run_requests[0].asset_selection)
    assert {s for s in selected if s.startswith("raw_")} == {f"raw_{f.key}" for f in hh_files()}
    assert asked == [("Anthropic/hh-rlhf", None)] * 3  # one Hub call per tick, not per file
    # a pinned commit needs no call at all
    assert automation.hf_commit("hf://datasets/Anthropic/hh-rlhf", "c" * 40) == "c" * 40


# --- release freshness -------------------------------------------------------------------------------


def record_release(instance: dg.DagsterInstance, hours_ago: float) -> None:
    event = DagsterEvent(
        DagsterEventType.ASSET_MATERIALIZATION.value,
        job_name=RUNLESS_JOB_NAME,
        event_specific_data=StepMaterializationData(dg.AssetMaterialization(RELEASE_KEY)),
    )
    instance.report_dagster_event(
        event, run_id=RUNLESS_RUN_ID, timestamp=time.time() - hours_ago * 3600
    )


def run_freshness_check(tmp_path: Path, instance, url: str) -> dg.AssetCheckEvaluation:
    resources = build_resources(environment(tmp_path, str(tmp_path / "store")))
    resources["alerts"] = AlertsResource(webhook_url=url, retries=0)
    defs = dg.Definitions(
        assets=GRAPH,
        asset_checks=[release_freshness],
        jobs=[release_freshness_job],
        resources=resources,
    )
    result = defs.resolve_job_def("check_release_freshness").execute_in_process(
        instance=instance, raise_on_error=False
    )
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation


def policy_state(instance: dg.DagsterInstance) -> str:
    """What Dagster's freshness daemon (and so the UI) computes for the release's policy."""
    from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
    from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
    from dagster._core.definitions.freshness_evaluator import TimeWindowFreshnessPolicyEvaluator
    from dagster._time import get_current_datetime

    graph = AssetGraph.from_assets(GRAPH)
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=graph,
    )
    evaluator = TimeWindowFreshnessPolicyEvaluator()
    return asyncio.run(evaluator.evaluate_freshness(view, graph.get(RELEASE_KEY))).value


def test_stale_release_fails_freshness_and_alerts(tmp_path: Path, instance, webhook):
    url, received = webhook
    record_release(instance, hours_ago=40)
    assert policy_state(instance) == "FAIL"
    evaluation = run_freshness_check(tmp_path, instance, url)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert "40.0 h old" in evaluation.description
    [alert] = received
    assert alert["asset"] == "release" and alert["check"] == "release_freshness"
    assert alert["severity"] == "ERROR" and alert["counts"]["max_age_hours"] == 36


def test_fresh_release_passes_freshness(tmp_path: Path, instance, webhook):
    url, received = webhook
    record_release(instance, hours_ago=30)
    assert policy_state(instance) == "WARN"  # past 2/3 of the window
    record_release(instance, hours_ago=1)
    assert policy_state(instance) == "PASS"
    evaluation = run_freshness_check(tmp_path, instance, url)
    assert evaluation.passed
    assert received == []


def test_never_published_fails_freshness(tmp_path: Path, instance, webhook):
    url, received = webhook
    assert not run_freshness_check(tmp_path, instance, url).passed
    assert received[0]["message"] == "no release has ever been published"


def test_freshness_window_is_configurable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RELEASE_MAX_AGE_HOURS", "12")
    [release_def] = [a for a in with_operations(ALL_ASSETS) if RELEASE_KEY in a.keys]
    policy = release_def.specs_by_key[RELEASE_KEY].freshness_policy
    assert policy.fail_window.to_timedelta().total_seconds() == 12 * 3600
    assert automation.release_max_age().total_seconds() == 12 * 3600


# --- run-failure alert and retries ------------------------------------------------------------------


def run_ingest(tmp_path: Path, instance, source, **env_changes) -> dg.ExecuteInProcessResult:
    defs = build_definitions(environment(tmp_path, str(tmp_path / "store"), **env_changes))
    return defs.resolve_job_def("full_refresh").execute_in_process(
        instance=instance, asset_selection=[ingest_asset_key(source)], raise_on_error=False
    )


def event_types(result: dg.ExecuteInProcessResult) -> list[str]:
    return [e.event_type_value for e in result.all_events]


def test_run_failure_sensor_posts_an_error_alert(tmp_path: Path, mirror: Path, instance, webhook):
    url, received = webhook
    path = mirror / "hh-rlhf" / HH_TEST.relpath
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated gzip
    result = run_ingest(tmp_path, instance, HH_TEST, hh_rlhf_uri=str(mirror / "hh-rlhf"))
    assert not result.success
    # a corrupt file is a validation failure: no retry
    assert "STEP_UP_FOR_RETRY" not in event_types(result)

    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert",
        dagster_event=result.get_run_failure_event(),
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        resources={"alerts": AlertsResource(webhook_url=url, retries=0)},
    ).for_run_failure()
    run_failure_alert(context)
    [alert] = received
    assert alert["asset"] == "full_refresh" and alert["check"] == "run"
    assert alert["severity"] == "ERROR" and alert["run_id"] == result.run_id
    assert alert["run_url"].endswith(f"/runs/{result.run_id}")
    assert "corrupt or truncated gzip" in alert["message"]
    assert alert["counts"] == {"failed_steps": 1}


def test_transient_read_error_is_retried(tmp_path: Path, instance, monkeypatch: pytest.MonkeyPatch):
    real = ingest_module.ingest_file
    calls = []

    def flaky(source, root, **kwargs):
        calls.append(source.key)
        if len(calls) == 1:
            raise SourceError(f"{root}: cannot read: connection reset") from ConnectionResetError()
        return real(source, root, **kwargs)

    monkeypatch.setattr(ingest_module, "ingest_file", flaky)
    result = run_ingest(tmp_path, instance, PKU_TEST)
    assert result.success, event_types(result)
    assert len(calls) == 2
    assert "STEP_UP_FOR_RETRY" in event_types(result)


# --- incremental refresh ----------------------------------------------------------------------------


def test_refresh_recomputes_only_what_a_change_made_stale(tmp_path: Path, mirror: Path, instance):
    store = tmp_path / "store"
    env = environment(
        tmp_path,
        str(store),
        hh_rlhf_uri=str(mirror / "hh-rlhf"),
        pku_saferlhf_uri=str(mirror / "PKU-SafeRLHF"),
    )
    defs = build_definitions(env)
    full = defs.resolve_job_def("full_refresh").execute_in_process(instance=instance)
    assert full.success
    first_release = json.loads((store / "latest.json").read_text())["release_id"]
    runs_before = len(instance.get_runs())

    nothing = refresh(defs, instance)
    assert nothing.success and nothing.stale == [] and nothing.run_id is None
    assert len(instance.get_runs()) == runs_before + 1  # the observation run only
    assert len(list((store / "releases").iterdir())) == 1

    drop_first_line(mirror / "PKU-SafeRLHF" / PKU_TEST.relpath)
    changed = refresh(defs, instance)
    assert changed.success and changed.run_id
    assert changed.stale == [f"raw_{PKU_TEST.key}"]
    assert {s for s in changed.selected if s.startswith("raw_")} == {f"raw_{PKU_TEST.key}"}
    assert "release" in changed.selected
    materialized = names(
        e.asset_key for e in changed.result.all_events if e.is_step_materialization
    )
    assert f"raw_{PKU_TEST.key}" in materialized and f"raw_{HH_TEST.key}" not in materialized
    assert json.loads((store / "latest.json").read_text())["release_id"] != first_release

    again = refresh(defs, instance)
    assert again.stale == [] and again.run_id is None
