"""Declarative automation on the real sample files: observations (local sha256, S3 ETag through
moto, hf commit), the conditions driven with ``dg.evaluate_automation_conditions`` (unchanged
sources, one changed file, a code-version change, blocking checks, cron ticks), the incremental
refresh, release freshness, the run-failure alert, per-stage code versions, and retries."""

import datetime
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
import curation.core.version as version_module
from assets.alerting import AlertsResource
from assets.keys import (
    INGEST_KEYS,
    RELEASE_KEY,
    UPSTREAM_KEYS,
    ingest_asset_key,
    upstream_asset_key,
)
from assets.resources import AwsCredentials, SourceCredentials, SourcesResource
from assets.upstream import observe_files
from curation.ingest.sources import SourceError, source_file
from curation.ingest.upstream import hf_commit, source_fingerprint
from curation.validate.gx_validate import warm_up
from pipelines.automation import (
    AUTOMATION_SENSOR,
    freshness_state,
    release_freshness_alert,
    run_failure_alert,
    run_tags,
)
from pipelines.definitions import build_definitions
from pipelines.refresh import refresh
from pipelines.settings import SAMPLE
from tests.pipeline_helpers import environment

HH_TEST = source_file("harmless-base", "test")
PKU_TEST = source_file("Alpaca-7B", "test")
#: The assets after ingest, in the order a run materializes them.
AFTER_INGEST = [
    "normalized_pairs",
    "quarantine",
    "red_team",
    "source_files",
    "deduplicated_pairs",
    "dedup_removed",
    "curated_pairs",
    "decontam_removed",
    "paraphrases",
    "reference_files",
    "release",
]
AFTER_NORMALIZE = set(AFTER_INGEST)
AFTER_DECONTAM = {"curated_pairs", "decontam_removed", "paraphrases", "reference_files", "release"}


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    """A writable copy of the bundled sample mirrors."""
    root = tmp_path / "mirror"
    shutil.copytree(SAMPLE / "hh-rlhf", root / "hh-rlhf")
    shutil.copytree(SAMPLE / "PKU-SafeRLHF", root / "PKU-SafeRLHF")
    return root


@pytest.fixture(autouse=True)
def gx_imported():
    """Finish the background Great Expectations import (``warm_up``, started by the checks)
    before a test touches the instance: a half-imported sqlalchemy in another thread breaks it."""
    warm_up().join()


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


def mirror_env(tmp_path: Path, mirror: Path):
    return environment(
        tmp_path,
        str(tmp_path / "store"),
        hh_rlhf_uri=str(mirror / "hh-rlhf"),
        pku_saferlhf_uri=str(mirror / "PKU-SafeRLHF"),
    )


def requested(result) -> set[str]:
    """Asset keys an ``evaluate_automation_conditions`` result requested."""
    keys = [*UPSTREAM_KEYS, *INGEST_KEYS, *(dg.AssetKey(k) for k in AFTER_NORMALIZE)]
    return {k.to_user_string() for k in keys if result.get_num_requested(k)}


def latest_release(store: Path) -> str:
    return json.loads((store / "latest.json").read_text())["release_id"]


# --- the definitions ------------------------------------------------------------------------------


def test_definitions_use_declarative_automation():
    defs = build_definitions(environment(Path("/tmp"), "/tmp/unused-store"))
    assert not defs.schedules
    sensors = {s.name: s for s in defs.sensors}
    assert set(sensors) == {AUTOMATION_SENSOR, "run_failure_alert", "release_freshness_alert"}
    assert isinstance(sensors[AUTOMATION_SENSOR], dg.AutomationConditionSensorDefinition)
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in sensors.values())
    graph = defs.resolve_asset_graph()
    # one observation step for the 15 upstream files, each with an on_cron condition
    [observer] = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.is_observable]
    assert set(observer.keys) == set(UPSTREAM_KEYS) and len(UPSTREAM_KEYS) == 15
    assert "on_cron(0 3 * * *" in graph.get(UPSTREAM_KEYS[0]).automation_condition.get_label()
    for key in [*INGEST_KEYS, dg.AssetKey("curated_pairs")]:
        node = graph.get(key)
        assert node.automation_condition.get_label() == "eager_or_code_version_changed"
        assert node.code_version
    assert graph.get(ingest_asset_key(HH_TEST)).parent_keys == {upstream_asset_key(HH_TEST)}
    assert graph.get(RELEASE_KEY).kinds == {"parquet", "file"}  # a local store
    assert graph.get(dg.AssetKey("curated_pairs")).kinds == {"python", "arrow"}
    assert (
        graph.get(dg.AssetKey("curated_pairs"))
        .metadata["dagster/uri"]
        .endswith("tables/curated_pairs.arrow")
    )
    s3_graph = build_definitions(
        environment(Path("/tmp"), "s3://bucket/curated")
    ).resolve_asset_graph()
    assert s3_graph.get(RELEASE_KEY).kinds == {"parquet", "s3"}
    policy = graph.get(RELEASE_KEY).freshness_policy
    assert isinstance(policy, dg.FreshnessPolicy)
    assert policy.fail_window.to_timedelta().total_seconds() == 36 * 3600
    # concurrency pools and run tags
    job = defs.resolve_job_def("full_refresh")
    pools = {node.name: node.definition.pool for node in job.graph.nodes}
    assert pools["release"] == "rlhf_release"
    assert {
        pools[n] for n in ("ingest_files", "validate_and_normalize", "decontaminate_pairs")
    } == {"rlhf_stage"}
    assert job.tags["rlhf/store"] == "/tmp/unused-store"
    assert job.tags["rlhf/hh_uri"].endswith("hh-rlhf")
    assert sensors[AUTOMATION_SENSOR].run_tags["rlhf/store"] == "/tmp/unused-store"


def test_refresh_cron_and_freshness_window_come_from_settings():
    env = environment(Path("/tmp"), "/tmp/s", refresh_cron="30 5 * * 1", release_max_age_hours=12)
    graph = build_definitions(env).resolve_asset_graph()
    assert "on_cron(30 5 * * 1" in graph.get(UPSTREAM_KEYS[0]).automation_condition.get_label()
    policy = graph.get(RELEASE_KEY).freshness_policy
    assert policy.fail_window.to_timedelta().total_seconds() == 12 * 3600


# --- observations: the data version of each upstream file -------------------------------------------


def local_sources(mirror: Path) -> SourcesResource:
    return SourcesResource(
        hh_rlhf_uri=str(mirror / "hh-rlhf"),
        pku_saferlhf_uri=str(mirror / "PKU-SafeRLHF"),
        aws=AwsCredentials(),
        credentials=SourceCredentials(),
    )


def versions_of(results) -> dict[str, str]:
    return {r.asset_key.to_user_string(): r.data_version.value for r in results}


def test_local_observation_is_the_content_sha256(mirror: Path):
    before = versions_of(observe_files(local_sources(mirror), set(UPSTREAM_KEYS)))
    assert len(before) == 15
    key = upstream_asset_key(HH_TEST).to_user_string()
    assert before[key] == source_fingerprint(str(mirror / "hh-rlhf"), HH_TEST.relpath)
    assert before[key].startswith("sha256:")
    assert before["pku_saferlhf/upstream/alpaca2_7b_test"] == "absent"
    path = mirror / "PKU-SafeRLHF" / PKU_TEST.relpath
    path.write_bytes(path.read_bytes())  # a touch is not a change
    drop_first_line(mirror / "hh-rlhf" / HH_TEST.relpath)
    after = versions_of(observe_files(local_sources(mirror), set(UPSTREAM_KEYS)))
    assert {k for k in after if after[k] != before[k]} == {key}


def test_s3_observation_is_the_etag(s3_env: dict, s3_client, s3_bucket: str):
    for local_root, prefix in ((SAMPLE / "hh-rlhf", "hh"), (SAMPLE / "PKU-SafeRLHF", "pku")):
        for path in local_root.rglob("*.*"):
            key = f"{prefix}/{path.relative_to(local_root)}"
            s3_client.put_object(Bucket=s3_bucket, Key=key, Body=path.read_bytes())
    aws = AwsCredentials(
        endpoint_url=s3_env["AWS_ENDPOINT_URL"],
        access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
        secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"],
        region=s3_env["AWS_DEFAULT_REGION"],
    )
    sources = SourcesResource(
        hh_rlhf_uri=f"s3://{s3_bucket}/hh",
        pku_saferlhf_uri=f"s3://{s3_bucket}/pku",
        aws=aws,
        credentials=SourceCredentials(),
    )
    before = versions_of(observe_files(sources, set(UPSTREAM_KEYS)))
    key = upstream_asset_key(PKU_TEST).to_user_string()
    assert before[key].startswith("etag:")
    assert before["pku_saferlhf/upstream/alpaca2_7b_test"] == "absent"
    body = (SAMPLE / "PKU-SafeRLHF" / PKU_TEST.relpath).read_bytes()
    s3_client.put_object(
        Bucket=s3_bucket, Key=f"pku/{PKU_TEST.relpath}", Body=body.split(b"\n", 1)[1]
    )
    s3_client.put_object(Bucket=s3_bucket, Key="pku/data/Alpaca2-7B/test.jsonl", Body=body)
    after = versions_of(observe_files(sources, set(UPSTREAM_KEYS)))
    assert {k for k in after if after[k] != before[k]} == {
        key,
        "pku_saferlhf/upstream/alpaca2_7b_test",
    }


def test_hf_observation_is_the_repo_commit(monkeypatch: pytest.MonkeyPatch):
    import huggingface_hub

    asked = []

    class FakeApi:  # the real call needs the network
        def dataset_info(self, repo_id, revision=None):
            asked.append((repo_id, revision))
            return type("Info", (), {"sha": "a" * 40})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    aws = AwsCredentials()
    sources = SourcesResource(
        hh_rlhf_uri="hf://datasets/Anthropic/hh-rlhf",
        pku_saferlhf_uri="hf://datasets/PKU-Alignment/PKU-SafeRLHF",
        aws=aws,
        credentials=SourceCredentials(),
    )
    found = versions_of(observe_files(sources, set(UPSTREAM_KEYS)))
    assert set(found.values()) == {"hf-commit:" + "a" * 40}
    assert sorted(asked) == [("Anthropic/hh-rlhf", None), ("PKU-Alignment/PKU-SafeRLHF", None)]
    assert hf_commit("hf://datasets/Anthropic/hh-rlhf", "c" * 40) == "c" * 40  # pinned: no call


# --- the conditions, evaluated like the daemon does ------------------------------------------------------


def observe(defs: dg.Definitions, instance) -> None:
    result = defs.resolve_job_def("full_refresh").execute_in_process(
        instance=instance, asset_selection=UPSTREAM_KEYS
    )
    assert result.success


def test_conditions_on_real_files_unchanged_changed_and_code_change(
    tmp_path: Path, mirror: Path, instance, monkeypatch: pytest.MonkeyPatch
):
    env = mirror_env(tmp_path, mirror)
    defs = build_definitions(env, keep_release_fresh=False)
    assert defs.resolve_job_def("full_refresh").execute_in_process(instance=instance).success
    first = dg.evaluate_automation_conditions(defs, instance)
    assert requested(first) == set()

    observe(defs, instance)  # same bytes: same data versions, not an update
    unchanged = dg.evaluate_automation_conditions(defs, instance, cursor=first.cursor)
    assert requested(unchanged) == set()

    drop_first_line(mirror / "PKU-SafeRLHF" / PKU_TEST.relpath)
    observe(defs, instance)
    changed = dg.evaluate_automation_conditions(defs, instance, cursor=unchanged.cursor)
    assert requested(changed) == {ingest_asset_key(PKU_TEST).to_user_string()} | AFTER_NORMALIZE
    idle = dg.evaluate_automation_conditions(defs, instance, cursor=changed.cursor)
    assert requested(idle) == set()  # requested once, not again on the next tick

    # a decontamination code change: decontamination and publish, not ingest, normalize, dedup
    real = version_module.source_bytes
    monkeypatch.setattr(
        version_module,
        "source_bytes",
        lambda p: real(p) + (b"\n# changed\n" if p == "curation/match/decontam.py" else b""),
    )
    new_defs = build_definitions(env, keep_release_fresh=False)
    code = dg.evaluate_automation_conditions(new_defs, instance, cursor=idle.cursor)
    assert requested(code) == AFTER_DECONTAM
    after = dg.evaluate_automation_conditions(new_defs, instance, cursor=code.cursor)
    assert requested(after) == set()  # requested once, not on every tick
    # a first evaluation (new sensor, first refresh of a home) sees it through the code version
    # recorded on the materializations, and the changed test file, never ingested, through its
    # observation (the ticks above only evaluated, nothing ran)
    first_tick = dg.evaluate_automation_conditions(new_defs, instance)
    assert requested(first_tick) == {ingest_asset_key(PKU_TEST).to_user_string()} | AFTER_NORMALIZE


def test_conditions_with_an_s3_mirror(
    tmp_path: Path, s3_env: dict, s3_client, s3_bucket: str, instance
):
    """Observations through moto's S3: a replaced object requests its file and what follows."""
    for local_root, prefix in ((SAMPLE / "hh-rlhf", "hh"), (SAMPLE / "PKU-SafeRLHF", "pku")):
        for path in local_root.rglob("*.*"):
            key = f"{prefix}/{path.relative_to(local_root)}"
            s3_client.put_object(Bucket=s3_bucket, Key=key, Body=path.read_bytes())
    env = environment(
        tmp_path,
        str(tmp_path / "store"),
        hh_rlhf_uri=f"s3://{s3_bucket}/hh",
        pku_saferlhf_uri=f"s3://{s3_bucket}/pku",
        secrets_set=frozenset(s3_env),
    )
    defs = build_definitions(env, keep_release_fresh=False)
    observe(defs, instance)
    for key in [*INGEST_KEYS, *(dg.AssetKey(k) for k in AFTER_INGEST)]:  # in run order
        instance.report_runless_asset_event(dg.AssetMaterialization(key))
    first = dg.evaluate_automation_conditions(defs, instance)
    observe(defs, instance)
    unchanged = dg.evaluate_automation_conditions(defs, instance, cursor=first.cursor)
    assert requested(unchanged) == set()
    body = (SAMPLE / "PKU-SafeRLHF" / PKU_TEST.relpath).read_bytes()
    s3_client.put_object(
        Bucket=s3_bucket, Key=f"pku/{PKU_TEST.relpath}", Body=body.split(b"\n", 1)[1]
    )
    observe(defs, instance)
    changed = dg.evaluate_automation_conditions(defs, instance, cursor=unchanged.cursor)
    assert requested(changed) == {ingest_asset_key(PKU_TEST).to_user_string()} | AFTER_NORMALIZE


def test_blocking_check_failure_holds_back_downstream(tmp_path: Path, instance):
    defs = build_definitions(
        environment(tmp_path, str(tmp_path / "store")), keep_release_fresh=False
    )
    for key in [*INGEST_KEYS, *(dg.AssetKey(k) for k in AFTER_INGEST)]:  # in run order
        instance.report_runless_asset_event(dg.AssetMaterialization(key))
    tick = dg.evaluate_automation_conditions(defs, instance)
    assert requested(tick) == set()
    raw = INGEST_KEYS[0]
    instance.report_runless_asset_event(dg.AssetMaterialization(raw))
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=raw,
            check_name="schema_suite",
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
        )
    )
    held = dg.evaluate_automation_conditions(defs, instance, cursor=tick.cursor)
    assert requested(held) == set()  # normalize waits for the failed blocking check
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(asset_key=raw, check_name="schema_suite", passed=True)
    )
    released = dg.evaluate_automation_conditions(defs, instance, cursor=held.cursor)
    assert requested(released) == AFTER_NORMALIZE


def test_cron_tick_observes_sources_and_republishes_the_release(tmp_path: Path, instance):
    defs = build_definitions(environment(tmp_path, str(tmp_path / "store")))
    for key in [*INGEST_KEYS, *(dg.AssetKey(k) for k in AFTER_INGEST)]:  # in run order
        instance.report_runless_asset_event(dg.AssetMaterialization(key))
    day = datetime.datetime(2026, 11, 30, tzinfo=datetime.UTC)
    before = dg.evaluate_automation_conditions(
        defs, instance, evaluation_time=day + datetime.timedelta(hours=2, minutes=59)
    )
    assert requested(before) == set()
    tick = dg.evaluate_automation_conditions(
        defs,
        instance,
        cursor=before.cursor,
        evaluation_time=day + datetime.timedelta(hours=3, minutes=1),
    )
    assert requested(tick) == {k.to_user_string() for k in UPSTREAM_KEYS} | {"release"}
    later = dg.evaluate_automation_conditions(
        defs,
        instance,
        cursor=tick.cursor,
        evaluation_time=day + datetime.timedelta(hours=3, minutes=5),
    )
    assert "release" not in requested(later)


# --- the incremental refresh ---------------------------------------------------------------------------


def test_refresh_runs_only_what_changed_and_code_versions_name_releases(
    tmp_path: Path, mirror: Path, instance, monkeypatch: pytest.MonkeyPatch
):
    store = tmp_path / "store"
    env = mirror_env(tmp_path, mirror)
    defs = build_definitions(env, keep_release_fresh=False)
    full = defs.resolve_job_def("full_refresh").execute_in_process(instance=instance)
    assert full.success
    first_release = latest_release(store)
    # every table asset shows its columns; the release says where it is
    for key in [*INGEST_KEYS, *(dg.AssetKey(k) for k in AFTER_NORMALIZE)]:
        metadata = instance.get_latest_materialization_event(key).asset_materialization.metadata
        assert isinstance(metadata["dagster/column_schema"].value, dg.TableSchema), key
    release_metadata = instance.get_latest_materialization_event(RELEASE_KEY)
    uri = release_metadata.asset_materialization.metadata["dagster/uri"].value
    assert uri.endswith(f"releases/{first_release}")
    runs_before = len(instance.get_runs())

    nothing = refresh(defs, instance)
    assert nothing.success and nothing.requested == [] and nothing.run_id is None
    assert len(instance.get_runs()) == runs_before  # observed without a run, nothing launched
    assert set(nothing.observed) == names(UPSTREAM_KEYS)
    assert len([p for p in (store / "releases").iterdir() if p.is_dir()]) == 1

    drop_first_line(mirror / "hh-rlhf" / HH_TEST.relpath)
    changed = refresh(defs, instance)
    assert changed.success and changed.run_id
    assert set(changed.requested) == {ingest_asset_key(HH_TEST).to_user_string()} | AFTER_NORMALIZE
    materialized = names(
        e.asset_key for e in changed.result.all_events if e.is_step_materialization
    )
    assert (
        ingest_asset_key(HH_TEST).to_user_string() in materialized
        and ingest_asset_key(PKU_TEST).to_user_string() not in materialized
    )
    second_release = latest_release(store)
    assert second_release != first_release
    assert refresh(defs, instance).requested == []

    # an edit in assets/ (simulated: the hashed source text of assets/normalize.py changes)
    real = version_module.source_bytes
    monkeypatch.setattr(
        version_module,
        "source_bytes",
        lambda p: real(p) + (b"\n# row order changed\n" if p == "assets/normalize.py" else b""),
    )
    edited_defs = build_definitions(env, keep_release_fresh=False)
    graph, old_graph = edited_defs.resolve_asset_graph(), defs.resolve_asset_graph()
    for key, same in ((INGEST_KEYS[0], True), (dg.AssetKey("normalized_pairs"), False)):
        assert (graph.get(key).code_version == old_graph.get(key).code_version) is same
    assert graph.get(RELEASE_KEY).code_version != old_graph.get(RELEASE_KEY).code_version
    code = refresh(edited_defs, instance)
    assert code.success and set(code.requested) == AFTER_NORMALIZE
    third_release = latest_release(store)
    assert third_release != second_release  # same rows, new code: a new release id
    manifest = json.loads((store / "releases" / third_release / "manifest.json").read_text())
    assert manifest["code_version"] == graph.get(RELEASE_KEY).code_version


# --- freshness and alerts -------------------------------------------------------------------------------


def record_release(instance: dg.DagsterInstance, hours_ago: float) -> None:
    event = DagsterEvent(
        DagsterEventType.ASSET_MATERIALIZATION.value,
        job_name=RUNLESS_JOB_NAME,
        event_specific_data=StepMaterializationData(dg.AssetMaterialization(RELEASE_KEY)),
    )
    instance.report_dagster_event(
        event, run_id=RUNLESS_RUN_ID, timestamp=time.time() - hours_ago * 3600
    )


def freshness_tick(tmp_path: Path, instance, url: str, cursor: str | None = None):
    sensor = release_freshness_alert(environment(tmp_path, str(tmp_path / "store")))
    with dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"alerts": AlertsResource(webhook_url=url, retries=0)},
        sensor_name=sensor.name,
    ) as context:
        data = sensor.evaluate_tick(context)
    return data


def test_stale_release_alerts_once(tmp_path: Path, instance, webhook):
    url, received = webhook
    record_release(instance, hours_ago=40)
    assert freshness_state(instance, datetime.timedelta(hours=36))[0] == "FAIL"
    first = freshness_tick(tmp_path, instance, url)
    [alert] = received
    assert alert["asset"] == "release" and alert["check"] == "release_freshness"
    assert alert["severity"] == "ERROR" and alert["counts"]["max_age_hours"] == 36
    assert "40.0 h old" in alert["message"]
    freshness_tick(tmp_path, instance, url, first.cursor)
    assert len(received) == 1  # the same state does not alert again
    record_release(instance, hours_ago=1)
    recovered = freshness_tick(tmp_path, instance, url, first.cursor)
    assert len(received) == 1 and "PASS" in recovered.skip_message


def test_fresh_release_passes_and_warns_at_two_thirds(tmp_path: Path, instance, webhook):
    url, received = webhook
    record_release(instance, hours_ago=30)
    assert freshness_state(instance, datetime.timedelta(hours=36))[0] == "WARN"
    record_release(instance, hours_ago=1)
    assert freshness_state(instance, datetime.timedelta(hours=36))[0] == "PASS"
    freshness_tick(tmp_path, instance, url)
    assert received == []


def test_never_published_alerts(tmp_path: Path, instance, webhook):
    url, received = webhook
    freshness_tick(tmp_path, instance, url)
    assert received[0]["message"] == "no release has ever been published"


def run_ingest(tmp_path: Path, instance, source, **env_changes) -> dg.ExecuteInProcessResult:
    defs = build_definitions(environment(tmp_path, str(tmp_path / "store"), **env_changes))
    return defs.resolve_job_def("full_refresh").execute_in_process(
        instance=instance, asset_selection=[ingest_asset_key(source)], raise_on_error=False
    )


def event_types(result: dg.ExecuteInProcessResult) -> list[str]:
    return [e.event_type_value for e in result.all_events]


def test_run_failure_alert_covers_runs_made_outside_the_daemon(
    tmp_path: Path, mirror: Path, instance, webhook
):
    url, received = webhook
    defs = build_definitions(mirror_env(tmp_path, mirror))
    resources = {"alerts": AlertsResource(webhook_url=url, retries=0)}

    def tick(cursor=None):
        with dg.build_sensor_context(
            instance=instance,
            cursor=cursor,
            resources=resources,
            repository_def=defs.get_repository_def(),
            sensor_name="run_failure_alert",
        ) as context:
            run_failure_alert.evaluate_tick(context)
            return context.cursor

    cursor = tick()  # the daemon's first tick starts from "now"
    path = mirror / "hh-rlhf" / HH_TEST.relpath
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated gzip
    result = run_ingest(tmp_path, instance, HH_TEST, hh_rlhf_uri=str(mirror / "hh-rlhf"))
    assert not result.success
    assert "STEP_UP_FOR_RETRY" not in event_types(result)  # corrupt input: no retry
    assert result.dagster_run.remote_job_origin is None  # executed in process, not launched
    tick(cursor)
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


@pytest.mark.parametrize(
    "pinned", [{}, {"HH_RLHF_REVISION": "354e5c3", "PKU_SAFERLHF_REVISION": "d79b19b"}]
)
def test_run_tags_and_run_config_name_the_same_sources(pinned: dict[str, str]):
    """Both come from Environment.sources_config: a revision is in both or in neither."""
    from pipelines.commands import run_config_for
    from pipelines.settings import Environment

    env = Environment.from_env({"HH_RLHF_URI": "s3://mirror/hh", **pinned})
    sources = run_config_for(env, {}, False)["resources"]["sources"]["config"]
    tags = run_tags(env)
    assert sources["hh_rlhf_uri"] == tags["rlhf/hh_uri"] == "s3://mirror/hh"
    assert sources["pku_saferlhf_uri"] == tags["rlhf/pku_uri"] == str(SAMPLE / "PKU-SafeRLHF")
    assert (
        sources.get("hh_rlhf_revision")
        == tags.get("rlhf/hh_revision")
        == pinned.get("HH_RLHF_REVISION")
    )
    assert sources.get("pku_saferlhf_revision") == tags.get("rlhf/pku_revision")
    assert len(tags) == len(sources) + 1  # + rlhf/store
