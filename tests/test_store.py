"""Store abstraction: both backends, the two atomic primitives, and moto's conditional writes."""

from __future__ import annotations

import threading
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from curation.core.store import Store, StoreError, sha256_bytes

# ---------------------------------------------------------------------------- moto itself


def test_moto_honours_conditional_puts(s3_env: dict[str, str], s3_bucket: str) -> None:
    """The S3 semantics the protocol relies on, checked against the moto server directly."""
    client = boto3.session.Session().client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"])
    first = client.put_object(Bucket=s3_bucket, Key="k", Body=b"1", IfNoneMatch="*")
    with pytest.raises(ClientError) as exists:
        client.put_object(Bucket=s3_bucket, Key="k", Body=b"2", IfNoneMatch="*")
    assert exists.value.response["Error"]["Code"] == "PreconditionFailed"
    with pytest.raises(ClientError) as wrong:
        client.put_object(Bucket=s3_bucket, Key="k", Body=b"2", IfMatch='"0123456789abcdef"')
    assert wrong.value.response["Error"]["Code"] == "PreconditionFailed"
    second = client.put_object(Bucket=s3_bucket, Key="k", Body=b"2", IfMatch=first["ETag"])
    with pytest.raises(ClientError) as stale:  # the first ETag is stale now
        client.put_object(Bucket=s3_bucket, Key="k", Body=b"3", IfMatch=first["ETag"])
    assert stale.value.response["Error"]["Code"] == "PreconditionFailed"
    assert client.get_object(Bucket=s3_bucket, Key="k")["Body"].read() == b"2"
    assert second["ETag"] != first["ETag"]


# ---------------------------------------------------------------------------- URIs


def test_uri_parsing(tmp_path: Path) -> None:
    local = Store(f"file://{tmp_path}/x")
    assert not local.is_s3 and local.uri == str(tmp_path / "x")
    assert Store(tmp_path / "x") == local
    s3 = Store("s3://bucket/a/b/")
    assert s3.is_s3 and s3.bucket == "bucket" and s3.prefix == "a/b" and s3.uri == "s3://bucket/a/b"
    assert s3.url("releases/x/manifest.json") == "s3://bucket/a/b/releases/x/manifest.json"
    assert Store("s3://bucket").url("k") == "s3://bucket/k"
    with pytest.raises(StoreError, match="unsupported"):
        Store("gs://bucket/x")
    with pytest.raises(ValueError, match="invalid store key"):
        local.path("../escape")


def test_credentials_never_in_repr_or_errors(s3_env: dict[str, str]) -> None:
    secret = "SUPER-SECRET-VALUE-123"
    store = Store(
        "s3://no-such-bucket-xyz/p",
        storage_options={
            "key": "AKIDEXAMPLE",
            "secret": secret,
            "endpoint_url": s3_env["AWS_ENDPOINT_URL"],
        },
    )
    assert secret not in repr(store) and secret not in str(store)
    with pytest.raises(StoreError) as info:
        store.put("a/b.json", b"{}")
    message = str(info.value)
    assert "s3://no-such-bucket-xyz/p" in message and "a/b.json" in message
    assert secret not in message


# ---------------------------------------------------------------------------- primitives


def test_put_if_absent(store: Store) -> None:
    assert store.put_if_absent("releases/r1/manifest.json", b"first") is True
    assert store.put_if_absent("releases/r1/manifest.json", b"second") is False
    assert store.get("releases/r1/manifest.json") == b"first"


def test_compare_and_swap(store: Store) -> None:
    assert store.get_with_etag("latest.json") is None
    assert store.compare_and_swap("latest.json", b"v1", None) is True
    assert store.compare_and_swap("latest.json", b"v1b", None) is False  # exists already
    data, etag = store.get_with_etag("latest.json")
    assert data == b"v1"
    assert store.compare_and_swap("latest.json", b"bad", '"not-the-etag"') is False
    assert store.compare_and_swap("latest.json", b"v2", etag) is True
    assert store.compare_and_swap("latest.json", b"v3", etag) is False  # stale etag
    assert store.get("latest.json") == b"v2"
    assert store.compare_and_swap("missing.json", b"x", etag) is False
    if not store.is_s3:
        assert store.get_with_etag("latest.json")[1] == sha256_bytes(b"v2")
        assert not Path(store.path("latest.json.lock")).exists()


def test_concurrent_compare_and_swap_loses_no_update(store: Store) -> None:
    """Four threads increment a counter 8 times each with read + CAS retry loops."""
    store.put("counter", b"0")

    def worker() -> None:
        for _ in range(8):
            while True:
                data, etag = store.get_with_etag("counter")
                if store.compare_and_swap("counter", str(int(data) + 1).encode(), etag):
                    break

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert store.get("counter") == b"32"


def test_concurrent_put_if_absent_has_one_winner(store: Store) -> None:
    barrier = threading.Barrier(6)
    wins: list[bool] = []

    def worker(i: int) -> None:
        barrier.wait()
        wins.append(store.put_if_absent("once", f"writer {i}".encode()))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(wins) == [False] * 5 + [True]
    assert store.get("once").startswith(b"writer ")


def test_local_lock_file_without_holder_does_not_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock file left behind (by a killed process) is not a lock: only a live holder is
    waited for, then reported. (A holder killed for real: tests/test_run_errors.py.)"""
    from filelock import FileLock

    from curation.core import store as store_mod

    store = Store(tmp_path)
    store.put("latest.json", b"a")
    lock = Path(store._lock_path("latest.json"))
    lock.write_bytes(b"")  # a 0-byte leftover
    _, etag = store.get_with_etag("latest.json")
    assert store.compare_and_swap("latest.json", b"b", etag) is True
    monkeypatch.setattr(store_mod, "_LOCK_TIMEOUT_S", 0.05)
    with (
        FileLock(str(lock)),  # a live holder
        pytest.raises(StoreError, match=r"timed out waiting for the lock on 'latest\.json'"),
    ):
        store.compare_and_swap("latest.json", b"c", sha256_bytes(b"b"))


# ---------------------------------------------------------------------------- streams & listing


def test_streams_listing_and_delete(store: Store) -> None:
    with store.open_output("r/1/pairs/train/part-00000.parquet") as fh:
        fh.write(b"abc")
    with pytest.raises(KeyError), store.open_output("r/1/pairs/train/part-00001.parquet") as fh:
        fh.write(b"partial")
        raise KeyError("writer died")
    store.put("r/2/manifest.json", b"{}")
    store.put("top.json", b"1")

    assert not store.exists("r/1/pairs/train/part-00001.parquet")  # aborted: never appears
    assert store.exists("r/1/pairs/train/part-00000.parquet")
    assert store.size("r/1/pairs/train/part-00000.parquet") == 3
    assert store.sha256("r/1/pairs/train/part-00000.parquet") == sha256_bytes(b"abc")
    with store.open_input("r/1/pairs/train/part-00000.parquet") as fh:
        assert fh.read() == b"abc"
    assert store.list() == ["r/1/pairs/train/part-00000.parquet", "r/2/manifest.json", "top.json"]
    assert store.list("r/1") == ["r/1/pairs/train/part-00000.parquet"]
    assert store.list_dirs("r") == ["1", "2"]
    assert store.list_dirs("nothing") == [] and store.list("nothing") == []

    with pytest.raises(FileNotFoundError, match="nope"):
        store.size("nope")
    with pytest.raises(FileNotFoundError, match="nope"):
        store.get("nope")
    with pytest.raises(FileNotFoundError, match="nope"):
        store.open_input("nope")

    assert store.delete_prefix("r/1") == 1
    assert store.list() == ["r/2/manifest.json", "top.json"]
    store.delete("top.json")
    store.delete("top.json")  # idempotent
    assert store.list() == ["r/2/manifest.json"]
    with pytest.raises(StoreError, match="whole store"):
        store.delete_prefix("")


def test_large_streamed_upload(store: Store) -> None:
    """Bigger than s3fs's 5 MiB block: exercises multipart on S3."""
    blob = bytes(range(256)) * (6 * 4096 + 7)
    with store.open_output("big.bin") as fh:
        for i in range(0, len(blob), 1 << 20):
            fh.write(blob[i : i + (1 << 20)])
    assert store.size("big.bin") == len(blob)
    assert store.sha256("big.bin") == sha256_bytes(blob)


def test_explicit_storage_options(
    s3_env: dict[str, str], s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Endpoint and credentials can come from storage_options instead of the environment."""
    for var in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    store = Store(
        f"s3://{s3_bucket}/x",
        storage_options={
            "endpoint_url": s3_env["AWS_ENDPOINT_URL"],
            "key": s3_env["AWS_ACCESS_KEY_ID"],
            "secret": s3_env["AWS_SECRET_ACCESS_KEY"],
        },
    )
    assert store.put_if_absent("a", b"1")
    with store.open_output("b") as fh:
        fh.write(b"2")
    assert store.list() == ["a", "b"]


def test_unreachable_endpoint_names_the_bucket(free_port: int) -> None:
    """Nothing listens on the endpoint: the preflight error names the store and the bucket."""
    store = Store(
        "s3://curated-bucket/prefix",
        storage_options={
            "endpoint_url": f"http://127.0.0.1:{free_port}",
            "key": "k",
            "secret": "s",
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
        },
    )
    with pytest.raises(StoreError) as error:
        store.preflight()
    message = str(error.value)
    assert message.startswith("s3://curated-bucket/prefix: checking bucket 'curated-bucket' failed")
    assert "EndpointConnectionError" in message and "''" not in message
    assert error.value.transient
