"""Publishing protocol: layout, idempotence, fault injection, concurrency, monotonic latest.

Every store-level test runs against a local folder and the moto S3 server from conftest.
The synthetic table builders here are also used by ``test_reader.py``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.core import schema as S
from curation.core import store as store_module
from curation.core.stage_table import StageTable
from curation.core.store import Store, StoreError
from curation.core.version import release_libraries
from curation.datasets import hh_rlhf, pku_saferlhf
from curation.publish.card import HARM_CHART, REMOVALS_CHART, render_card
from curation.publish.reader import list_releases, open_release
from curation.publish.release import (
    FORMAT_VERSION,
    LATEST_KEY,
    ReleaseError,
    advance_latest,
    compute_release_id,
    manifest_key,
    publish_release,
    read_latest,
    read_manifest,
)

# ---------------------------------------------------------------------------- synthetic data


def make_pairs(n: int = 30, prefix: str = "p", text: str = "") -> pa.Table:
    rows = []
    for i in range(n):
        pku = i % 2 == 1
        rows.append(
            {
                "pair_id": f"{prefix}{i:04d}",
                "dataset": pku_saferlhf.NAME if pku else hh_rlhf.NAME,
                "subset": pku_saferlhf.CONFIGS[i % 3] if pku else hh_rlhf.SUBSETS[i % 4],
                "split": "test" if i % 5 == 0 else "train",
                "source_file": "pku/train.jsonl" if pku else "hh/train.jsonl.gz",
                "source_line": i,
                "dimension": S.DIMENSIONS[(i // 2) % 2],
                "prompt": f"prompt {i}{text}",
                "prompt_turns": [{"role": "user", "text": f"prompt {i}{text}"}],
                "chosen": f"chosen {i}",
                "rejected": f"rejected {i}",
                "chosen_is_safe": True if pku else None,
                "rejected_is_safe": (i % 3 == 0) if pku else None,
                "chosen_severity": 0 if pku else None,
                "rejected_severity": (i % 3) + 1 if pku else None,
                "chosen_harm_categories": [] if pku else None,
                "rejected_harm_categories": [S.HARM_CATEGORIES[i % 19]] if pku else None,
            }
        )
    return pa.Table.from_pylist(rows, schema=S.PAIRS)


def make_removed(reasons: dict[str, int] | None = None) -> pa.Table:
    reasons = reasons if reasons is not None else {"exact_duplicate": 3, "test_contamination": 2}
    rows = []
    for reason, n in reasons.items():
        for i in range(n):
            rows.append(
                {
                    "pair_id": f"r-{reason}-{i}",
                    "dataset": hh_rlhf.NAME,
                    "subset": "helpful-base",
                    "split": "train" if i % 2 else "test",
                    "source_file": "hh/train.jsonl.gz",
                    "source_line": 1000 + i,
                    "dimension": "helpful",
                    "reason": reason,
                    "method": "sha256" if "duplicate" in reason else "13-gram",
                    "score": 1.0,
                    "matched_pair_id": f"p{i:04d}",
                    "matched_dataset": hh_rlhf.NAME,
                    "matched_subset": "helpful-base",
                    "matched_split": "train",
                    "matched_source_file": "hh/train.jsonl.gz",
                    "matched_source_line": i,
                }
            )
    return pa.Table.from_pylist(rows, schema=S.REMOVED)


def make_quarantine(n: int = 3) -> pa.Table:
    rows = [
        {
            "dataset": pku_saferlhf.NAME,
            "subset": "Alpaca-7B",
            "split": "train",
            "source_file": "pku/train.jsonl",
            "source_line": 500 + i,
            "reasons": ["empty_response"] + (["bad_json"] if i % 2 else []),
            "raw_line": "{" * (i + 1),
        }
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=S.QUARANTINE)


def make_red_team(n: int = 4) -> pa.Table:
    rows = [
        {
            "transcript_id": f"t{i}",
            "source_file": "hh/red_team_attempts.jsonl.gz",
            "source_line": i,
            "transcript": f"\n\nHuman: attempt {i}\n\nAssistant: no",
            "turns": [
                {"role": "user", "text": f"attempt {i}"},
                {"role": "assistant", "text": "no"},
            ],
            "min_harmlessness_score_transcript": -1.5,
            "num_params": "52B",
            "model_type": "context distillation",
            "rating": float(i % 5),
            "task_description": "test",
            "task_description_harmlessness_score": 0.5,
            "red_team_member_id": str(i),
            "is_upworker": bool(i % 2),
            "tags": ["a"] if i % 2 else None,
        }
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=S.RED_TEAM)


def make_tables(n_pairs: int = 30, **kw: pa.Table) -> dict[str, pa.Table]:
    tables = {
        "pairs": make_pairs(n_pairs),
        "removed": make_removed(),
        "quarantine": make_quarantine(),
        "red_team": make_red_team(),
    }
    tables.update(kw)
    return tables


SOURCES = [
    {
        "name": "hh-rlhf",
        "uri": "hf://datasets/Anthropic/hh-rlhf",
        "revision": "09be8c5",
        "files": [
            {"path": "harmless-base/train.jsonl.gz", "size": 10, "sha256": "aa" * 32, "rows": 30}
        ],
    },
    {
        "name": "pku-saferlhf",
        "uri": "hf://datasets/PKU-Alignment/PKU-SafeRLHF",
        "revision": "ff7ba91",
        "files": [
            {"path": "data/Alpaca-7B/train.jsonl", "size": 20, "sha256": "bb" * 32, "rows": 40}
        ],
    },
]


def publish(store, tables=None, *, config=None, **kw):
    """publish_release with defaults; ``config`` decides the release id."""
    return publish_release(
        store,
        tables if tables is not None else make_tables(),
        sources=kw.pop("sources", SOURCES),
        config=config if config is not None else {"dedup": {"threshold": 0.9}},
        code_version=kw.pop("code_version", "test-1"),
        counts=kw.pop("counts", {"removed_by_reason": {"exact_duplicate": 3}}),
        checks=kw.pop("checks", {"schema": "pass"}),
        **kw,
    )


class Clock:
    """Deterministic, strictly increasing clock."""

    def __init__(self, start: datetime | None = None):
        self.t = start or datetime(2026, 1, 1, tzinfo=UTC)
        self.lock = threading.Lock()

    def __call__(self) -> datetime:
        with self.lock:
            self.t += timedelta(seconds=1)
            return self.t


# ---------------------------------------------------------------------------- fixtures


REAL_CHARTS = {"test_publish_layout_manifest_and_read_back", "test_card_contents_and_charts"}


@pytest.fixture(autouse=True)
def _charts(request: pytest.FixtureRequest) -> None:
    """Placeholder charts (``fast_charts`` in conftest) except in the tests of ``REAL_CHARTS``."""
    if getattr(request.node, "originalname", request.node.name) not in REAL_CHARTS:
        request.getfixturevalue("fast_charts")


def snapshot(store: Store) -> dict[str, str]:
    """Every key with its content hash (detects any write)."""
    return {k: store.get_with_etag(k)[1] for k in store.list()}


def release_ids(store: Store) -> list[str]:
    return [r["release_id"] for r in list_releases(store)]


def latest_id(store: Store) -> str | None:
    pointer = read_latest(store)
    return pointer["release_id"] if pointer else None


# ---------------------------------------------------------------------------- layout & reading


def test_publish_layout_manifest_and_read_back(store: Store, tmp_path) -> None:
    tables = make_tables()
    result = publish(store, tables, max_rows_per_part=10, clock=Clock())
    rid = result.release_id
    assert result.status == "published" and result.latest_moved
    assert len(rid) == 16 and int(rid, 16) >= 0
    assert result.uri == store.url(f"releases/{rid}")

    keys = set(store.list(f"releases/{rid}"))
    pre = f"releases/{rid}"
    assert {
        f"{pre}/manifest.json",
        f"{pre}/README.md",
        f"{pre}/{REMOVALS_CHART}",
        f"{pre}/{HARM_CHART}",
    } <= keys
    # 24 train pairs / 10 per part -> 3 parts; 6 test pairs -> 1 part; red_team has no split level
    assert {
        f"{pre}/pairs/train/part-00000.parquet",
        f"{pre}/pairs/train/part-00002.parquet",
        f"{pre}/pairs/test/part-00000.parquet",
        f"{pre}/red_team/part-00000.parquet",
        f"{pre}/quarantine/train/part-00000.parquet",
        f"{pre}/removed/test/part-00000.parquet",
    } <= keys
    assert f"{pre}/pairs/train/part-00003.parquet" not in keys

    m = read_manifest(store, rid)
    assert m == result.manifest
    assert m["format_version"] == FORMAT_VERSION
    assert m["release_id"] == rid and m["sequence"] == 1 and m["parent_release_id"] is None
    assert m["created_at"] == "2026-01-01T00:00:01.000000Z"
    assert m["sources"] == SOURCES and m["code_version"] == "test-1"
    assert m["counts"]["removed_by_reason"] == {"exact_duplicate": 3}
    assert m["checks"] == {"schema": "pass"}
    pairs_info = m["tables"]["pairs"]
    assert pairs_info["rows"] == 30 and pairs_info["splits"] == {"test": 6, "train": 24}
    assert [f["name"] for f in pairs_info["schema"]] == S.PAIRS.names
    assert pairs_info["schema"][8] == {
        "name": "prompt_turns",
        "type": str(S.PAIRS.field(8).type),
        "nullable": True,
    }
    for f in pairs_info["files"]:
        assert f["rows"] <= 10 and f["bytes"] == store.size(f"{pre}/{f['path']}")
        assert f["sha256"] == store.sha256(f"{pre}/{f['path']}")
    assert {a["path"] for a in m["assets"]} == {"README.md", REMOVALS_CHART, HARM_CHART}
    assert json.loads(store.get(LATEST_KEY))["release_id"] == rid

    # Files: zstd, one schema per table.
    first = f"{pre}/{pairs_info['files'][0]['path']}"
    with store.open_input(first) as fh:
        meta = pq.ParquetFile(fh).metadata
        assert meta.row_group(0).column(0).compression == "ZSTD"
    release = open_release(store)
    assert release.release_id == rid
    for name, schema in [
        ("pairs", S.PAIRS),
        ("removed", S.REMOVED),
        ("quarantine", S.QUARANTINE),
        ("red_team", S.RED_TEAM),
    ]:
        assert release.table(name).schema.equals(schema), name
        assert release.table(name).num_rows == tables[name].num_rows
    assert release.table("pairs", "test").column("pair_id").to_pylist() == [
        f"p{i:04d}" for i in range(0, 30, 5)
    ]
    assert release.verify() == []

    # Third-party readers, straight from the files.
    import duckdb
    import pandas as pd
    import polars as pl

    base = result.uri
    expected_ids = sorted(tables["pairs"].column("pair_id").to_pylist())
    if store.is_s3:
        endpoint = store.client.meta.endpoint_url
        opts = {"endpoint_url": endpoint}
        df = pd.read_parquet(f"{base}/pairs", storage_options=opts)
        pl_opts = {
            "aws_endpoint_url": endpoint,
            "aws_allow_http": "true",
            "aws_region": "us-east-1",
            "aws_access_key_id": "testing-key-id",
            "aws_secret_access_key": "testing-secret-key",
        }
        pldf = pl.scan_parquet(f"{base}/pairs/*/*.parquet", storage_options=pl_opts).collect()
        con = duckdb.connect()
        con.register_filesystem(store.fs)  # no httpfs download offline: go through s3fs
    else:
        df = pd.read_parquet(f"{base}/pairs")
        pldf = pl.read_parquet(f"{base}/pairs/*/*.parquet")
        con = duckdb.connect()
    assert sorted(df["pair_id"]) == expected_ids
    assert list(df.columns) == S.PAIRS.names
    assert sorted(pldf["pair_id"].to_list()) == expected_ids
    rows = con.sql(
        f"SELECT split, count(*) FROM read_parquet('{base}/pairs/*/*.parquet') GROUP BY split ORDER BY split"
    ).fetchall()
    assert rows == [("test", 6), ("train", 24)]
    red = con.sql(f"SELECT count(*) FROM read_parquet('{base}/red_team/*.parquet')").fetchall()
    assert red == [(4,)]


def test_hf_datasets_loads_the_files(tmp_path) -> None:
    datasets = pytest.importorskip("datasets")
    result = publish(Store(tmp_path / "s"))
    ds = datasets.load_dataset(
        "parquet",
        data_files={s: f"{result.uri}/pairs/{s}/*.parquet" for s in ("train", "test")},
        cache_dir=str(tmp_path / "hf"),
    )
    assert ds["train"].num_rows == 24 and ds["test"].num_rows == 6


def test_empty_tables_and_custom_split_column(tmp_path) -> None:
    store = Store(tmp_path / "s")
    tables = make_tables(quarantine=S.empty(S.QUARANTINE), removed=S.empty(S.REMOVED))
    result = publish(store, tables, split_column={"red_team": "model_type"})
    m = result.manifest
    assert m["tables"]["quarantine"] == {
        **m["tables"]["quarantine"],
        "rows": 0,
        "files": [],
        "splits": {},
    }
    assert m["tables"]["red_team"]["splits"] == {"context_distillation": 4}
    release = open_release(store)
    assert release.table("quarantine").schema.equals(S.QUARANTINE)
    assert release.table("quarantine").num_rows == 0
    assert release.table("red_team", "context_distillation").num_rows == 4
    assert "No pairs were removed" in release.read_asset().decode()


def test_nonconforming_table_is_rejected(tmp_path) -> None:
    bad = make_pairs().drop_columns(["prompt"])
    with pytest.raises(Exception, match="prompt"):
        publish(Store(tmp_path / "s"), make_tables(pairs=bad))
    assert release_ids(Store(tmp_path / "s")) == []


# ---------------------------------------------------------------------------- ids & idempotence


def test_release_id_is_content_derived() -> None:
    base = compute_release_id(SOURCES, {"a": 1, "b": [1, 2]}, "v1")
    assert base == compute_release_id(list(reversed(SOURCES)), {"b": [1, 2], "a": 1}, "v1")
    assert base != compute_release_id(SOURCES, {"a": 2, "b": [1, 2]}, "v1")
    assert base != compute_release_id(SOURCES, {"a": 1, "b": [1, 2]}, "v2")
    changed = json.loads(json.dumps(SOURCES))
    changed[0]["files"][0]["sha256"] = "cc" * 32
    assert base != compute_release_id(changed, {"a": 1, "b": [1, 2]}, "v1")


def test_republish_is_unchanged_and_writes_nothing(store: Store) -> None:
    first = publish(store, clock=Clock())
    before = snapshot(store)
    again = publish(store, clock=Clock(datetime(2030, 1, 1, tzinfo=UTC)))
    assert again.status == "unchanged" and not again.latest_moved
    assert again.release_id == first.release_id
    assert again.manifest == first.manifest
    assert snapshot(store) == before


def test_changed_config_gives_new_release_and_moves_latest(store: Store) -> None:
    clock = Clock()
    first = publish(store, clock=clock)
    second = publish(store, config={"dedup": {"threshold": 0.8}}, clock=clock)
    assert second.status == "published" and second.release_id != first.release_id
    assert second.manifest["sequence"] == 2
    assert second.manifest["parent_release_id"] == first.release_id
    assert latest_id(store) == second.release_id
    assert release_ids(store) == [first.release_id, second.release_id]
    # both complete and intact
    for rid in release_ids(store):
        assert open_release(store, rid).verify() == []


# ---------------------------------------------------------------------------- faults


class Boom(RuntimeError):
    pass


def _fail_open_output_after(store: Store, monkeypatch: pytest.MonkeyPatch, n_ok: int) -> list[str]:
    written: list[str] = []
    real = store.open_output

    def flaky(key: str):
        if len(written) >= n_ok:
            raise Boom(f"injected failure before writing {key}")
        written.append(key)
        return real(key)

    monkeypatch.setattr(store, "open_output", flaky)
    return written


def _assert_still_on(store: Store, good: str) -> None:
    assert latest_id(store) == good
    assert release_ids(store) == [good]
    assert open_release(store).release_id == good


def test_fault_after_some_data_files(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    good = publish(store, clock=Clock()).release_id
    written = _fail_open_output_after(store, monkeypatch, 2)
    with pytest.raises(
        ReleaseError, match=r"writing pairs/train/part-00000\.parquet failed: injected"
    ):
        publish(store, config={"v": 2}, max_rows_per_part=5)
    assert len(written) == 2
    bad_id = compute_release_id(SOURCES, {"v": 2}, "test-1", [], release_libraries())
    assert not store.exists(manifest_key(bad_id))
    assert len(store.list(f"releases/{bad_id}")) == 2  # invisible leftovers
    _assert_still_on(store, good)

    monkeypatch.undo()
    # Re-run (with another part size: stale leftover parts must not survive).
    rerun = publish(store, config={"v": 2}, max_rows_per_part=100)
    assert rerun.status == "published" and rerun.release_id == bad_id
    assert latest_id(store) == bad_id
    assert open_release(store).verify() == []


def test_fault_before_manifest(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    good = publish(store, clock=Clock()).release_id

    def boom(key, data):
        raise Boom(f"injected failure creating {key}")

    monkeypatch.setattr(store, "put_if_absent", boom)
    with pytest.raises(Boom):
        publish(store, config={"v": 2})
    bad_id = compute_release_id(SOURCES, {"v": 2}, "test-1", [], release_libraries())
    assert store.exists(f"releases/{bad_id}/README.md")  # everything but the manifest
    assert not store.exists(manifest_key(bad_id))
    _assert_still_on(store, good)

    monkeypatch.undo()
    rerun = publish(store, config={"v": 2})
    assert rerun.status == "published" and latest_id(store) == bad_id
    assert open_release(store).verify() == []


def test_fault_before_pointer_swap(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    good = publish(store, clock=Clock()).release_id
    real = store.compare_and_swap

    def boom(key, data, etag):
        if key == LATEST_KEY:
            raise Boom(f"injected failure swapping {key}")
        return real(key, data, etag)

    monkeypatch.setattr(store, "compare_and_swap", boom)
    with pytest.raises(Boom):
        publish(store, config={"v": 2})
    bad_id = compute_release_id(SOURCES, {"v": 2}, "test-1", [], release_libraries())
    # The release itself is complete (manifest written) but latest was not moved.
    assert latest_id(store) == good
    assert open_release(store).release_id == good
    assert release_ids(store) == [good, bad_id]
    assert open_release(store, bad_id).verify() == []

    monkeypatch.undo()
    rerun = publish(store, config={"v": 2})
    assert rerun.status == "unchanged" and rerun.latest_moved
    assert latest_id(store) == bad_id


def test_moto_server_stopped_mid_upload(
    s3_env, monkeypatch: pytest.MonkeyPatch, free_port: int
) -> None:
    """A private moto server dies after two data files; restarted, it shows the old state.

    The dead publish cannot delete its lock lease, so the rerun waits for the lease to expire:
    shortened here from 60 s to 5 s."""
    from moto.server import ThreadedMotoServer

    monkeypatch.setattr(store_module, "LEASE_S", 5.0)

    port = free_port
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    servers = [server]
    try:
        bucket = f"private-{uuid.uuid4().hex[:10]}"
        boto3.session.Session().client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        opts = {
            "endpoint_url": endpoint,
            "config_kwargs": {
                "retries": {"max_attempts": 1},
                "connect_timeout": 2,
                "read_timeout": 5,
            },
            "retries": 1,
        }
        uri = f"s3://{bucket}/curated"
        good = publish(uri, storage_options=opts, clock=Clock()).release_id

        store = Store(uri, storage_options=opts)
        real = store.open_output
        calls = []

        def dying(key: str):
            calls.append(key)
            if len(calls) == 3:
                server.stop()  # the endpoint goes away mid-publish
            return real(key)

        monkeypatch.setattr(store, "open_output", dying)
        with pytest.raises((StoreError, OSError)) as info:
            publish(store, config={"v": 2}, max_rows_per_part=5)
        assert uri in str(info.value) or endpoint in str(info.value)

        restarted = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        restarted.start()
        servers.append(restarted)
        fresh = Store(uri, storage_options=opts)
        _assert_still_on(fresh, good)
        bad_id = compute_release_id(SOURCES, {"v": 2}, "test-1", [], release_libraries())
        assert len(fresh.list(f"releases/{bad_id}")) == 2  # two parts, no manifest

        rerun = publish(fresh, config={"v": 2}, max_rows_per_part=5)
        assert rerun.status == "published" and latest_id(fresh) == bad_id
        assert open_release(fresh).verify() == []
    finally:
        for s in servers:
            s.stop()


# ---------------------------------------------------------------------------- concurrency & ordering


def _run_threads(targets) -> list:
    barrier = threading.Barrier(len(targets))
    results: list = [None] * len(targets)

    def run(i, fn):
        barrier.wait()
        try:
            results[i] = fn()
        except BaseException as exc:  # surfaced below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


def test_concurrent_publishes_of_different_releases(store: Store) -> None:
    base = publish(store, clock=Clock()).release_id
    results = _run_threads(
        [
            lambda: publish(Store(store.uri), config={"v": 2}),
            lambda: publish(Store(store.uri), config={"v": 3}),
        ]
    )
    assert [r.status for r in results] == ["published", "published"]
    ids = {r.release_id for r in results}
    assert set(release_ids(store)) == ids | {base}
    manifests = [read_manifest(store, rid) for rid in ids]
    newest = max(manifests, key=lambda m: (m["sequence"], m["created_at"], m["release_id"]))
    assert latest_id(store) == newest["release_id"]
    for rid in ids:
        assert open_release(store, rid).verify() == []


def test_concurrent_publishes_of_the_same_release(store: Store) -> None:
    results = _run_threads([lambda: publish(Store(store.uri), config={"v": 9}) for _ in range(2)])
    assert sorted(r.status for r in results) == ["published", "unchanged"]
    assert results[0].release_id == results[1].release_id
    assert results[0].manifest == results[1].manifest
    assert latest_id(store) == results[0].release_id
    assert open_release(store).verify() == []


def test_losing_the_manifest_race_reports_unchanged(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic race: another publisher of the same release creates the manifest between
    our data files and our create-only manifest write (and a stray writer clobbers the card)."""
    real = store.put_if_absent
    other: list = []

    def racing(key: str, data: bytes) -> bool:
        if key.endswith("manifest.json") and not other:
            other.append(
                publish(  # a writer that does not take the publish lock
                    Store(store.uri),
                    config={"v": 7},
                    clock=Clock(datetime(2027, 1, 1, tzinfo=UTC)),
                    lock=False,
                )
            )
            store.put(f"releases/{other[0].release_id}/README.md", b"clobbered by a racing writer")
        return real(key, data)

    monkeypatch.setattr(store, "put_if_absent", racing)
    ours = publish(store, config={"v": 7}, clock=Clock())
    assert other[0].status == "published"
    assert ours.status == "unchanged" and ours.release_id == other[0].release_id
    assert ours.manifest == other[0].manifest  # the winner's manifest
    assert ours.manifest["created_at"].startswith("2027-")
    assert latest_id(store) == ours.release_id
    assert open_release(store).verify() == []  # card repaired from the winner's manifest


def test_latest_names_the_newest_runs_release(store: Store) -> None:
    """a, then b, then a run on a's inputs again: latest names a's (existing) release, and the
    sequence numbers keep increasing for new releases."""
    clock = Clock()
    a = publish(store, config={"v": "a"}, clock=clock, run_started_at=clock())
    b = publish(store, config={"v": "b"}, clock=clock, run_started_at=clock())
    assert latest_id(store) == b.release_id
    again = publish(store, config={"v": "a"}, clock=clock, run_started_at=clock())
    assert again.status == "unchanged" and again.latest_moved
    assert latest_id(store) == a.release_id
    assert json.loads(store.get(LATEST_KEY))["sequence"] == 1
    c = publish(store, config={"v": "c"}, clock=clock, run_started_at=clock())
    assert c.manifest["sequence"] == 3 and c.manifest["parent_release_id"] == a.release_id
    assert latest_id(store) == c.release_id
    # An older run's publish (or a bare advance with a's creation time) does not move it back.
    assert advance_latest(store, a.manifest) is False
    assert latest_id(store) == c.release_id


def test_slow_run_does_not_overtake_a_newer_run(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run X starts first but publishes last (here: it crashes before the swap and is re-tried);
    run Y started later: latest stays on Y. A new run of X's inputs then moves it to X."""
    clock = Clock()
    publish(store, config={"v": 0}, clock=clock, run_started_at=clock())
    x_started, y_started = clock(), clock()
    real = store.compare_and_swap

    def boom(key, data, etag):
        if key == LATEST_KEY:
            raise Boom("crash before swap")
        return real(key, data, etag)

    with monkeypatch.context() as m:
        m.setattr(store, "compare_and_swap", boom)
        with pytest.raises(Boom):
            publish(store, config={"v": "x"}, clock=clock, run_started_at=x_started)
    y = publish(store, config={"v": "y"}, clock=clock, run_started_at=y_started)
    x = publish(store, config={"v": "x"}, clock=clock, run_started_at=x_started)
    assert x.status == "unchanged" and not x.latest_moved
    assert (x.manifest["sequence"], y.manifest["sequence"]) == (2, 3)
    assert latest_id(store) == y.release_id
    newer = publish(store, config={"v": "x"}, clock=clock, run_started_at=clock())
    assert newer.latest_moved and latest_id(store) == x.release_id


def test_pointer_to_missing_or_garbage_is_replaced(tmp_path) -> None:
    store = Store(tmp_path / "s")
    store.put(LATEST_KEY, b"not json")
    result = publish(store)
    assert result.latest_moved and latest_id(store) == result.release_id


# ---------------------------------------------------------------------------- card


def test_card_contents_and_charts(tmp_path) -> None:
    store = Store(tmp_path / "s")
    result = publish(store)
    card = store.get(f"releases/{result.release_id}/README.md").decode()
    assert card.startswith("---\nlicense:")
    assert "path: pairs/train/*.parquet" in card  # HF hub configs
    for needle in (
        "MIT",
        "CC BY-NC 4.0",
        "PKU-Alignment",
        "Anthropic",
        "non-commercial",
        "| exact_duplicate | 3 |",
        "| test_contamination | 2 |",
        "| empty_response | 3 |",
        "| bad_json | 1 |",
        "| hh-rlhf | harmless-base | test | helpful | 2 |",
        "f\"FROM read_parquet('{base}/pairs/*/*.parquet') GROUP BY ALL ORDER BY ALL\"",
        'base = "."  # this release\'s folder',
        f'open_release("path/to/store", "{result.release_id}")',
        'pd.read_parquet(f"{base}/pairs/train")',
        "pl.scan_parquet(",
        'load_dataset("parquet"',
        f"]({REMOVALS_CHART})",
        f"]({HARM_CHART})",
    ):
        assert needle in card, needle
    assert str(tmp_path) not in card  # no path of the publishing machine
    for chart in (REMOVALS_CHART, HARM_CHART):
        assert store.get(f"releases/{result.release_id}/{chart}").startswith(b"\x89PNG\r\n\x1a\n")
    # deterministic: the same manifest renders the same bytes
    body = {k: v for k, v in result.manifest.items() if k != "assets"}
    md1, png1 = render_card(body, make_tables(), base_uri=result.uri)
    md2, png2 = render_card(body, make_tables(), base_uri=result.uri)
    assert md1 == md2 == card and png1 == png2


def test_card_loads_from_the_store_uri_on_s3(s3_bucket: str) -> None:
    store = Store(f"s3://{s3_bucket}/curated")
    rid = publish(store).release_id
    card = store.get(f"releases/{rid}/README.md").decode()
    assert f'base = "s3://{s3_bucket}/curated/releases/{rid}"' in card
    assert f'open_release("s3://{s3_bucket}/curated", "{rid}")' in card
    assert "storage_options={...}" in card


def test_harm_counts_deduplicate_dimensions() -> None:
    from curation.publish.card import harm_severity_counts

    pairs = make_pairs(4)  # PKU rows 1 and 3, one category each on the rejected side
    doubled = pa.concat_tables([pairs, pairs])  # same source rows again (other dimension)
    counts = harm_severity_counts(doubled)
    assert sum(counts.values()) == 2
    assert counts[(S.HARM_CATEGORIES[1], 2)] == 1 and counts[(S.HARM_CATEGORIES[3], 1)] == 1


# ---------------------------------------------------------------------------- stage tables


def _stage_table(table: pa.Table, path, batch_rows: list[int]) -> StageTable:
    """``table`` written as an Arrow IPC file in record batches of ``batch_rows`` rows."""
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        start = 0
        for n in batch_rows:
            part = table.slice(start, n).combine_chunks()
            columns = [c.chunk(0) if c.num_chunks else pa.array([], c.type) for c in part.columns]
            writer.write_batch(pa.record_batch(columns, schema=table.schema))
            start += n
        assert start == table.num_rows
    return StageTable(path)


def test_a_stage_table_publishes_the_same_bytes_as_the_table(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parts written row group by row group from a StageTable equal those written from the whole
    (memory-mapped) table: same files, same bytes, same row groups, whatever the batch layout."""
    import curation.publish.release as R

    monkeypatch.setattr(R, "_ROW_GROUP_ROWS", 7)  # several row groups per part
    sizes = [0, 5, 9, 1, 0, 13, 2, 20, 3, 17, 0, 6, 11, 4, 8, 0, 12, 10, 15, 3, 6]
    pairs = make_pairs(sum(sizes), text=" and some more words")
    pairs = pairs.sort_by([("split", "ascending")])  # splits in runs of rows, as the pipeline
    extra = pa.array([f"norm {i}" for i in range(pairs.num_rows)], pa.large_string())
    pairs = pairs.append_column("prompt_normalized", extra)  # not released
    stage = _stage_table(pairs, tmp_path / "pairs.arrow", sizes)
    mapped = pa.ipc.open_file(pa.memory_map(str(tmp_path / "pairs.arrow"))).read_all()
    results = {}
    for kind, table in (("table", mapped), ("stage", stage)):
        store = Store(tmp_path / kind)
        tables = make_tables(pairs=table)
        results[kind] = publish(store, tables, max_rows_per_part=30, clock=Clock())
    files = {
        kind: {
            f["path"]: (f["rows"], f["sha256"])
            for info in r.manifest["tables"].values()
            for f in info["files"]
        }
        for kind, r in results.items()
    }
    assert files["stage"] == files["table"]
    assert len([p for p in files["stage"] if p.startswith("pairs/")]) >= 5
    first = results["stage"].uri + "/pairs/train/part-00000.parquet"
    assert pq.ParquetFile(first).metadata.num_row_groups == 5  # 30 rows in groups of 7
    # and the bytes pq.write_table gives each part sliced from the whole mapped table
    conformed = mapped.select(S.PAIRS.names).cast(S.PAIRS)
    for split, sub in R._split_slices(conformed, "split"):
        for i, start in enumerate(range(0, sub.num_rows, 30)):
            sink = pa.BufferOutputStream()
            pq.write_table(
                sub.slice(start, 30),
                sink,
                compression="zstd",
                row_group_size=7,
                write_statistics=True,
                write_page_checksum=True,
            )
            digest = hashlib.sha256(sink.getvalue()).hexdigest()
            assert files["stage"][f"pairs/{split}/part-{i:05d}.parquet"][1] == digest
    manifests = {k: {**r.manifest, "assets": None} for k, r in results.items()}
    assert manifests["stage"] == manifests["table"]
    cards = {
        k: Store(tmp_path / k)
        .get(f"releases/{r.release_id}/README.md")
        .decode()
        .replace(str(tmp_path / k), "STORE")
        for k, r in results.items()
    }
    assert cards["stage"] == cards["table"]


def test_the_card_columns_render_the_card_of_the_whole_table(tmp_path) -> None:
    """The card rendered from CARD_PAIR_COLUMNS of a stage table is the card of the whole table."""
    from curation.publish.release import CARD_PAIR_COLUMNS, card_tables

    tables = make_tables(60)
    stage = _stage_table(tables["pairs"], tmp_path / "pairs.arrow", [25, 0, 35])
    narrow = card_tables({**tables, "pairs": stage})
    assert narrow["pairs"].column_names == [
        c for c in tables["pairs"].column_names if c in CARD_PAIR_COLUMNS
    ]
    manifest = publish(Store(tmp_path / "s"), tables).manifest
    body = {k: v for k, v in manifest.items() if k != "assets"}
    assert render_card(body, narrow) == render_card(body, tables)
