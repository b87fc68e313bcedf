"""Errors arrive early and clearly; killed processes leave nothing that blocks or lingers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest

from assets.io import EXECUTING
from curation.core.store import Store, StoreError
from curation.publish.release import LATEST_KEY, RELEASES_DIR, publish_release
from pipelines.definitions import ALL_ASSETS, build_resources
from pipelines.orphans import HOST_TAG, PROCESS_TAG, fail_orphaned_runs, process_identity
from pipelines.settings import REPO
from tests.cli_helpers import CLI, cli_env
from tests.pipeline_helpers import environment
from tests.test_release import SOURCES, make_tables


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "rlhf-curate"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipelines.cli"]


def publish(store: Store | str, config: dict, **kw):
    return publish_release(
        store,
        make_tables(),
        sources=SOURCES,
        config=config,
        code_version="test-1",
        counts={},
        checks={},
        **kw,
    )


def test_preflight_names_every_problem_before_the_run(
    tmp_path: Path, s3_env: dict[str, str]
) -> None:
    """A missing bucket and a mistyped source root: one line each, exit 2, no run started."""
    env = {**os.environ, **s3_env, "DAGSTER_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [
            *_cli(),
            "run",
            "--store",
            "s3://no-such-bucket-here/x",
            "--hh",
            str(tmp_path / "hh-typo"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "error: store s3://no-such-bucket-here/x: bucket 'no-such-bucket-here' does not exist",
        f"error: source hh-rlhf {tmp_path / 'hh-typo'}: no such folder",
    ]
    assert not (tmp_path / "home").exists()  # no Dagster run was launched
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in done.stderr + done.stdout


def test_permanent_store_error_is_not_retried(tmp_path: Path, s3_env: dict[str, str]) -> None:
    """Run without the CLI's preflight (as the UI would): the release step fails once, with the
    store and the problem in its message, and is not retried."""
    result = dg.materialize(  # the assets without their GX checks: only publishing matters here
        ALL_ASSETS,
        resources=build_resources(environment(tmp_path, "s3://no-such-bucket-here/curated")),
        raise_on_error=False,
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert not result.success
    events = [e for e in result.all_events if e.step_key == "release"]
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in events)
    failures = [e for e in events if e.event_type_value == "STEP_FAILURE"]
    assert len(failures) == 1, [(e.step_key, e.message) for e in result.all_events if e.is_failure]
    data = failures[0].step_failure_data
    message = data.user_failure_data.description if data.user_failure_data else data.error.message
    assert "s3://no-such-bucket-here/curated" in message and "NoSuchBucket" in message


def test_killed_lock_holder_does_not_block(tmp_path: Path) -> None:
    """A process killed while holding the publish lock and a pointer lock: the next publish
    goes ahead at once (OS file locks die with their process)."""
    store = Store(tmp_path / "store")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from filelock import FileLock
                from curation.core.store import Store
                store = Store({str(store.root)!r})
                with store.lock("publish"), FileLock(store._lock_path("latest.json")):
                    print("locked", flush=True)
                    time.sleep(600)
                """
            ),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(StoreError, match="waiting for the 'publish' lock"):
        publish(store, {"v": 1}, lock_timeout=0.5)  # held: refused
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    result = publish(store, {"v": 1}, lock_timeout=0.5)  # the lock files remain, unlocked
    assert result.status == "published"
    assert json.loads(store.get(LATEST_KEY))["release_id"] == result.release_id


def test_leftovers_of_a_killed_publish_are_removed(tmp_path: Path) -> None:
    """A publisher killed (SIGKILL) after some data files: its release folder has no manifest
    and a temp file; the next publish removes both, and so does prune."""
    store = Store(tmp_path / "store")
    script = textwrap.dedent(
        f"""
        import os, signal
        import curation.publish.release as release
        from tests.test_run_errors import publish
        real = release._write_part
        written = []
        def write_then_die(store, key, data):
            if len(written) == 2:  # die in the middle of the third file
                folder = os.path.dirname(store.path(key))
                os.makedirs(folder, exist_ok=True)
                with open(os.path.join(folder, ".part.tmp-killed"), "wb") as fh:
                    fh.write(b"half")
                os.kill(os.getpid(), signal.SIGKILL)
            written.append(key)
            return real(store, key, data)
        release._write_part = write_then_die
        publish({str(store.root)!r}, {{"v": "killed"}}, max_rows_per_part=3)
        """
    )
    killed = subprocess.run([sys.executable, "-c", script], cwd=REPO, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    (orphan,) = store.list_dirs(RELEASES_DIR)
    leftovers = sorted(p.name for p in (store.path(RELEASES_DIR) / Path(orphan)).rglob("*.*"))
    assert ".part.tmp-killed" in leftovers and len(leftovers) == 3

    result = publish(store, {"v": "next"})
    assert store.list_dirs(RELEASES_DIR) == [result.release_id]
    assert not list(Path(store.root).rglob("*.tmp-*"))

    killed = subprocess.run([sys.executable, "-c", script], cwd=REPO, timeout=300)
    assert len(store.list_dirs(RELEASES_DIR)) == 2
    from curation.publish.reader import prune

    assert prune(store, keep=5) == []
    assert store.list_dirs(RELEASES_DIR) == [result.release_id]


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


def test_full_disk_at_the_pointer_swap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real full file system (a small tmpfs) when latest.json is replaced: the error names
    the store and the key; once space is back the next publish completes without waiting."""
    mount = tmp_path / "small"
    if not _mount_tmpfs(mount, "2m"):
        pytest.skip("cannot mount a tmpfs here (needs root): full-disk test not run")
    try:
        store = Store(mount / "store")
        publish(store, {"v": 1})
        filler = mount / "filler"
        real = store.compare_and_swap

        def fill_then_swap(key, data, etag):
            if key == LATEST_KEY:
                with open(filler, "wb") as fh, pytest.raises(OSError):
                    while True:
                        fh.write(b"\0" * 65536)
                        fh.flush()
                        os.fsync(fh.fileno())
            return real(key, data, etag)

        monkeypatch.setattr(store, "compare_and_swap", fill_then_swap)
        with pytest.raises(StoreError) as failed:
            publish(store, {"v": 2})
        message = str(failed.value)
        assert message.startswith(f"{store.uri}: ") and "'latest.json'" in message
        assert "No space left on device" in message
        monkeypatch.undo()
        filler.unlink()
        again = publish(store, {"v": 2}, lock_timeout=5)
        assert again.status == "unchanged" and again.latest_moved
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_unfinished_s3_uploads_are_aborted_by_the_next_publish(
    s3_env: dict[str, str], s3_bucket: str, s3_client
) -> None:
    """A writer killed in the middle of a multipart upload leaves an invisible, billed upload;
    the next publish (under the publish lock) aborts it. Uploads outside the store are kept."""
    store = Store(f"s3://{s3_bucket}/curated")
    for key in ("curated/releases/0123456789abcdef/pairs/train/part-00000.parquet", "other/x"):
        upload = s3_client.create_multipart_upload(Bucket=s3_bucket, Key=key)
        s3_client.upload_part(
            Bucket=s3_bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 1024
        )
    publish(store, {"v": 1})
    left = s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads") or []
    assert [u["Key"] for u in left] == ["other/x"]


def test_a_killed_cli_run_is_marked_failed_and_clean_up_resumes(tmp_path: Path) -> None:
    """``kill -9`` of ``rlhf-curate run`` during ingest leaves a STARTED run; the next
    ``rlhf-curate refresh`` on the same home marks it failed (the reason in its event log) and
    the killed run's stage tables are cleaned up again."""
    env = cli_env(tmp_path)
    runs_dir = tmp_path / "home" / "tables" / "runs"
    victim = subprocess.Popen(
        [str(CLI), "run"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 300
        while not any(runs_dir.glob("*/*/raw/*.arrow")) and time.monotonic() < deadline:
            assert victim.poll() is None, victim.stdout.read().decode()[-2000:]
            time.sleep(0.2)
        assert any(runs_dir.glob("*/*/raw/*.arrow")), "ingest never wrote a table"
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=60)
    [killed] = [p.name for p in runs_dir.iterdir()]
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        assert instance.get_run_by_id(killed).status == dg.DagsterRunStatus.STARTED
        assert executing_runs(instance) == [killed]  # what switches stage-table clean-up off

    after = subprocess.run(
        [str(CLI), "refresh"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert after.returncode == 0, after.stderr[-3000:]
    assert f"whose process is gone as failed: {killed}" in after.stderr
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        run = instance.get_run_by_id(killed)
        assert run.status == dg.DagsterRunStatus.FAILURE
        last = instance.all_logs(killed)[-1]
        assert "no longer exists (killed or crashed)" in last.message
        # clean-up is no longer switched off: no run of the home counts as executing (the
        # killed run's tables that are still some asset's latest, reused by refresh, stay)
        assert executing_runs(instance) == []


def executing_runs(instance: dg.DagsterInstance) -> list[str]:
    """Runs that keep the IO manager from cleaning up stage tables (``assets/io.py``)."""
    return [r.run_id for r in instance.get_runs(filters=dg.RunsFilter(statuses=EXECUTING))]


def test_only_runs_whose_process_is_gone_are_failed(tmp_path: Path) -> None:
    """A run of a live process (this one) stays STARTED; a run of a dead process, and one
    whose pid was recycled by another process (another start time), is failed."""
    sleeper = subprocess.Popen(["sleep", "60"])
    dead_identity = process_identity(sleeper.pid)
    sleeper.kill()
    sleeper.wait()
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:

        @dg.asset
        def a() -> int:
            return 1

        defs = dg.Definitions(assets=[a], jobs=[dg.define_asset_job("j", selection=[a])])
        job = defs.resolve_job_def("j")
        ids = {}
        for name, identity in [
            ("alive", process_identity()),
            ("dead", dead_identity),
            ("recycled", f"{os.getpid()}:1"),
        ]:
            run = instance.create_run_for_job(
                job, tags={HOST_TAG: socket.gethostname(), PROCESS_TAG: identity}
            )
            instance.handle_run_event(
                run.run_id,
                dg.DagsterEvent(dg.DagsterEventType.RUN_START.value, job_name=run.job_name),
            )
            ids[name] = run.run_id
        assert sorted(fail_orphaned_runs(instance)) == sorted([ids["dead"], ids["recycled"]])
        status = {name: instance.get_run_by_id(rid).status for name, rid in ids.items()}
        assert status == {
            "alive": dg.DagsterRunStatus.STARTED,
            "dead": dg.DagsterRunStatus.FAILURE,
            "recycled": dg.DagsterRunStatus.FAILURE,
        }
