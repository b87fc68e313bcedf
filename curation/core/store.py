"""Object-store abstraction over a *store URI*: a local folder (``/path``, ``file:///path``) or
``s3://bucket/prefix``.

:class:`Store` is one implementation over an fsspec filesystem (``LocalFileSystem`` or ``s3fs``;
s3fs picks ``AWS_ENDPOINT_URL`` and the credentials up from the environment, or from an explicit
``storage_options`` dict with ``endpoint_url``/``key``/``secret``/``token``/``client_kwargs``/
``config_kwargs``): reading, listing, deleting and streaming are the same code for both. Only what
fsspec cannot express portably is delegated to a small backend (:class:`_LocalAtomic` or
:class:`_S3Atomic`), the atomic primitives the release protocol needs (``docs/releases.md``):

* :meth:`Store.put_if_absent` - create-only write. S3: ``PutObject`` with ``If-None-Match: *``;
  local: a temporary file in the same folder hard-linked to the final name (``link(2)`` fails if
  the name exists), or created with ``O_EXCL`` where hard links are unsupported.
* :meth:`Store.compare_and_swap` - replace an object only if its current ETag is the one read
  before. S3: ``PutObject`` with ``If-Match: <etag>`` (``If-None-Match: *`` when no object is
  expected); local: under an OS file lock (:mod:`filelock`), the content hash (the local "ETag")
  is re-checked and the new bytes are put in place with ``os.replace``.
* :meth:`Store.open_output` - an object that appears whole or not at all (temp file + rename;
  S3: an upload that is aborted on failure).
* :meth:`Store.lock` - a store-wide named lock (OS file lock; an S3 lease by conditional writes).

Keys are ``/``-separated paths relative to the store root. Errors (:class:`StoreError`) name the
store URI and the key; credentials are never logged or put into messages.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

import fsspec
from filelock import FileLock
from filelock import Timeout as FileLockTimeout

from curation.core.redact import has_credentials, redact_uri

log = logging.getLogger(__name__)

#: Default botocore settings: fail fast on a dead endpoint instead of retrying for ~10 s.
_DEFAULT_BOTO_CONFIG = {
    "retries": {"max_attempts": 3, "mode": "standard"},
    "connect_timeout": 10,
    "read_timeout": 120,
}
_LOCK_TIMEOUT_S = 30.0
#: Folder of the store's named locks (``Store.lock``).
LOCKS_DIR = ".locks"
#: How long an S3 lock lease lasts without renewal (a killed holder frees it after this).
LEASE_S = 60.0
_CHUNK = 1 << 20
_CLIENTS: dict[tuple[str, str], Any] = {}
_CLIENTS_LOCK = threading.Lock()


class StoreError(RuntimeError):
    """An object-store operation failed; the message names the store URI and the key.

    ``transient`` is true for failures worth retrying (connection errors, timeouts, throttling,
    5xx); a missing bucket, refused credentials or a full disk are permanent.
    """

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


#: S3 error codes that a retry may cure.
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "500",
    "502",
    "503",
    "504",
}


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (from boto3, s3fs or the OS) is a failure worth retrying."""
    if isinstance(exc, StoreError):
        return exc.transient
    code = str((getattr(exc, "response", None) or {}).get("Error", {}).get("Code", ""))
    if code:
        return code in _TRANSIENT_CODES
    name = type(exc).__name__
    if name in (
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ClientConnectorError",
        "ServerDisconnectedError",
    ):
        return True
    return isinstance(exc, ConnectionError | TimeoutError)


#: Where a store's credentials go instead of its URI.
STORE_CREDENTIALS_HINT = "give them as AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead"


def credentials_refused(uri: str) -> StoreError:
    """The error for a store URI with credentials in it (user info, a query string): they would
    be printed and recorded wherever the URI is, so they are refused, never used."""
    return StoreError(
        f"{redact_uri(uri)}: credentials in a store URI are refused (they would be printed and "
        f"recorded); {STORE_CREDENTIALS_HINT}"
    )


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _clean_key(key: str) -> str:
    key = key.replace("\\", "/").strip("/")
    parts = key.split("/") if key else []
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid store key {key!r}")
    return key


class Store:
    """A local folder or an S3 prefix, addressed by ``/``-separated keys.

    ``Store("s3://bucket/prefix", storage_options={"endpoint_url": ...})`` or ``Store("./warehouse")``.
    """

    def __init__(
        self, uri: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
    ):
        raw = os.fspath(uri)
        if has_credentials(raw):
            raise credentials_refused(raw)
        self.storage_options: dict[str, Any] = dict(storage_options or {})
        parsed = urlparse(raw)
        if parsed.scheme in ("s3", "s3a"):
            if not parsed.netloc:
                raise StoreError(f"{raw}: S3 store URI needs a bucket (s3://bucket/prefix)")
            self.is_s3 = True
            self.bucket = parsed.netloc
            self.prefix = parsed.path.strip("/")
            self.uri = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
            self.root = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
        elif parsed.scheme in ("", "file") or (len(parsed.scheme) == 1 and os.name == "nt"):
            path = parsed.path if parsed.scheme == "file" else raw
            self.is_s3 = False
            self.bucket = None
            self.prefix = ""
            self.root = str(Path(path).expanduser().resolve())
            self.uri = self.root
        else:
            raise StoreError(
                f"{raw}: unsupported store URI scheme {parsed.scheme!r} (use a path or s3://)"
            )
        self._fs: Any = None
        self._client: Any = None
        self._init_lock = threading.Lock()
        self._atomic: _LocalAtomic | _S3Atomic = (
            _S3Atomic(self) if self.is_s3 else _LocalAtomic(self)
        )

    # ------------------------------------------------------------------ plumbing

    def __repr__(self) -> str:  # never show storage_options (credentials)
        return f"Store({self.uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Store) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    @classmethod
    def of(
        cls, store: Store | str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
    ) -> Store:
        """``store`` itself if it is a :class:`Store`, else a new one for that URI."""
        return store if isinstance(store, Store) else cls(store, storage_options)

    def _cache_key(self, kind: str) -> tuple[str, str]:
        """Clients are shared between Stores with the same storage options (creating one costs
        ~0.3 s). Only a digest of the options is kept, never the secrets themselves.

        The options are the whole configuration this module gives a client: the pipeline passes
        the endpoint and credentials it read from the environment (``pipelines.settings``,
        ``AwsCredentials``) as options. A store opened without options gets a client that
        botocore configures from its own sources (``AWS_*``, ``~/.aws``) when it is created, and
        keeps for the process."""
        blob = json.dumps(self.storage_options, sort_keys=True, default=str)
        return kind, hashlib.sha256(blob.encode()).hexdigest()

    @property
    def fs(self) -> Any:
        """The fsspec filesystem (s3fs or local); paths are :meth:`path` values."""
        if self._fs is None:
            with self._init_lock:
                if self._fs is None:
                    self._fs = self._make_fs() if self.is_s3 else fsspec.filesystem("file")
        return self._fs

    def _make_fs(self) -> Any:
        key = self._cache_key("s3fs")
        with _CLIENTS_LOCK:
            if key not in _CLIENTS:
                opts = dict(self.storage_options)
                opts.setdefault("config_kwargs", dict(_DEFAULT_BOTO_CONFIG))
                retries = int(opts.pop("retries", 3))  # s3fs: an attribute, not a kwarg
                # No instance/listings caches: other publishers change the store under us.
                opts["skip_instance_cache"] = True
                opts["use_listings_cache"] = False
                fs = fsspec.filesystem("s3", **opts)
                fs.retries = retries
                _CLIENTS[key] = fs
            return _CLIENTS[key]

    @property
    def client(self) -> Any:
        """A boto3 S3 client with the same endpoint/credentials as :attr:`fs` (S3 stores only)."""
        if not self.is_s3:
            raise StoreError(f"{self.uri}: not an S3 store")
        if self._client is None:
            with self._init_lock:
                if self._client is None:
                    key = self._cache_key("boto3")
                    with _CLIENTS_LOCK:
                        if key not in _CLIENTS:
                            _CLIENTS[key] = self._make_client()
                        self._client = _CLIENTS[key]
        return self._client

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        opts = self.storage_options
        client_kwargs = dict(opts.get("client_kwargs") or {})
        cfg = dict(_DEFAULT_BOTO_CONFIG)
        cfg.update(opts.get("config_kwargs") or {})
        if opts.get("anon"):
            from botocore import UNSIGNED

            cfg["signature_version"] = UNSIGNED
        kwargs: dict[str, Any] = {"config": Config(**cfg)}
        endpoint = opts.get("endpoint_url") or client_kwargs.get("endpoint_url")
        if endpoint:
            kwargs["endpoint_url"] = endpoint
        region = client_kwargs.get("region_name") or opts.get("region_name")
        if region:
            kwargs["region_name"] = region
        for ours, theirs in (
            ("key", "aws_access_key_id"),
            ("secret", "aws_secret_access_key"),
            ("token", "aws_session_token"),
        ):
            if opts.get(ours):
                kwargs[theirs] = opts[ours]
        # A private session: the default boto3 session is not thread-safe.
        session = boto3.session.Session(profile_name=opts.get("profile"))
        return session.client("s3", **kwargs)

    def path(self, key: str = "") -> str:
        """The filesystem path of ``key`` for :attr:`fs` (``bucket/prefix/key`` or ``/abs/key``)."""
        key = _clean_key(key)
        if not key:
            return self.root
        return f"{self.root}/{key}" if self.is_s3 else os.path.join(self.root, *key.split("/"))

    def url(self, key: str = "") -> str:
        """A full URI of ``key``: ``s3://bucket/prefix/key`` or an absolute local path."""
        return ("s3://" + self.path(key)) if self.is_s3 else self.path(key)

    def _s3_key(self, key: str) -> str:
        key = _clean_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _err(self, action: str, key: str, exc: BaseException | None = None) -> StoreError:
        detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        transient = exc is not None and is_transient(exc)
        return StoreError(f"{self.uri}: {action} {key!r} failed{detail}", transient)

    @staticmethod
    def _s3_code(exc: BaseException) -> str:
        response = getattr(exc, "response", None) or {}
        return str(response.get("Error", {}).get("Code", ""))

    # ------------------------------------------------------------------ small objects

    def get(self, key: str) -> bytes:
        """The whole object; :class:`FileNotFoundError` if missing."""
        found = self.get_with_etag(key)
        if found is None:
            raise FileNotFoundError(f"{self.uri}: no object {key!r}")
        return found[0]

    def get_with_etag(self, key: str) -> tuple[bytes, str] | None:
        """``(bytes, etag)`` of ``key``, or ``None`` if it does not exist.

        The ETag is S3's (quoted) ETag, or the sha256 of the content for local stores; pass it to
        :meth:`compare_and_swap` unchanged.
        """
        try:
            return self._atomic.get_with_etag(key)
        except StoreError:
            raise
        except Exception as exc:
            raise self._err("get", key, exc) from exc

    def put(self, key: str, data: bytes) -> None:
        """Unconditional (atomic, whole-object) write."""
        with self.open_output(key) as fh:
            fh.write(data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` with ``data`` only if it does not exist; ``False`` if it already did."""
        return self._atomic.put_if_absent(key, data)

    def compare_and_swap(self, key: str, data: bytes, expected_etag: str | None) -> bool:
        """Replace ``key`` with ``data`` iff its current ETag is ``expected_etag``.

        ``expected_etag=None`` means "only if it does not exist". Returns ``False`` when the
        object changed (or appeared) since the ETag was read; the caller re-reads and retries.
        """
        return self._atomic.compare_and_swap(key, data, expected_etag)

    # ------------------------------------------------------------------ checks & clean-up

    def preflight(self) -> None:
        """Check that the store can be used before any work starts: the bucket exists, and a
        probe object can be written, read back and deleted. Raises :class:`StoreError` with one
        line saying what is wrong (no bucket, refused credentials, read-only folder...)."""
        self._atomic.check_root()
        probe = f"{LOCKS_DIR}/preflight-{uuid.uuid4().hex}"
        payload = b"rlhf-curation preflight"
        self.put(probe, payload)
        try:
            if self.get(probe) != payload:
                raise StoreError(f"{self.uri}: a probe object read back different bytes")
        finally:
            self.delete(probe)

    def clean_temp(self, prefix: str = "") -> list[str]:
        """Delete what killed writers left under ``prefix``: temporary files (local) and
        unfinished multipart uploads (S3: invisible, but stored and billed). Only call while
        holding the ``publish`` lock, so that no live writer's upload is removed. Returns the
        keys."""
        found = [k for k in self._find(prefix) if _is_temp_file(k.rsplit("/", 1)[-1])]
        for key in found:
            self.delete(key)
        return found + self._atomic.abort_uploads(prefix)

    # ------------------------------------------------------------------ locks

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float = 1800.0) -> Iterator[None]:
        """Hold the store-wide lock ``name`` (e.g. ``"publish"``) for the block.

        Local: an OS file lock (:mod:`filelock`, ``flock``) on ``.locks/<name>.lock``; the kernel
        releases it when the holder dies, so a killed process never blocks the next one. S3: a
        lease object ``.locks/<name>.json`` created with ``If-None-Match: *``, renewed with
        ``If-Match`` every ``LEASE_S / 3`` seconds, taken over with ``If-Match`` once it has
        expired (a killed holder stops renewing), deleted on exit. Waits at most ``timeout``
        seconds, then raises :class:`StoreError` naming the store and the lock.
        """
        with self._atomic.lock(name, timeout):
            yield

    def _lock_path(self, key: str) -> str:
        """The OS lock file guarding local writes of ``key`` (kept out of the data folders; a
        left-over file is not a lock: ``flock`` locks die with their process)."""
        path = self.path(f"{LOCKS_DIR}/{_clean_key(key).replace('/', '__')}.lock")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    # ------------------------------------------------------------------ streams

    def open_input(self, key: str) -> IO[bytes]:
        """A readable binary file object (use as a context manager)."""
        try:
            return self.fs.open(self.path(key), "rb")
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.uri}: no object {key!r}") from None
        except Exception as exc:
            raise self._err("open for reading", key, exc) from exc

    @contextlib.contextmanager
    def open_output(self, key: str) -> Iterator[IO[bytes]]:
        """A writable binary file; the object appears (atomically) only if the block succeeds.

        Local: a temporary file in the same folder, ``os.replace``\\ d on success. S3: an s3fs
        upload that is completed on success and aborted (multipart) / never sent on failure.
        """
        with self._atomic.open_output(key) as fh:
            yield fh

    # ------------------------------------------------------------------ listing & metadata

    def _info(self, key: str) -> dict[str, Any] | None:
        try:
            info = self.fs.info(self.path(key))
        except FileNotFoundError:
            return None
        except Exception as exc:
            if self._s3_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._err("head", key, exc) from exc
        return info if info.get("type") == "file" else None

    def exists(self, key: str) -> bool:
        """Whether the object ``key`` exists (a folder is not an object)."""
        return self._info(key) is not None

    def size(self, key: str) -> int:
        """Size in bytes; :class:`FileNotFoundError` if missing."""
        info = self._info(key)
        if info is None:
            raise FileNotFoundError(f"{self.uri}: no object {key!r}")
        return int(info["size"])

    def sha256(self, key: str, progress: Any = None) -> str:
        """Streaming sha256 of an object; ``progress.update(n)`` is called per chunk if given."""
        digest = hashlib.sha256()
        with self.open_input(key) as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
                if progress is not None:
                    progress.update(len(chunk))
        return digest.hexdigest()

    def _find(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (temporary files included), sorted."""
        try:
            found = self.fs.find(self.path(prefix))
        except FileNotFoundError:
            return []
        except Exception as exc:
            raise self._err("list", prefix, exc) from exc
        return sorted(self._rel(p) for p in found)

    def list(self, prefix: str = "") -> list[str]:
        """All object keys under ``prefix`` (recursive, sorted), relative to the store root;
        temporary files of writers in progress are not listed."""
        return [k for k in self._find(prefix) if not _is_tmp(k.rsplit("/", 1)[-1])]

    def list_dirs(self, prefix: str = "") -> list[str]:
        """Names of the immediate sub-folders of ``prefix`` (sorted)."""
        try:
            entries = self.fs.ls(self.path(prefix), detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except Exception as exc:
            raise self._err("list", prefix, exc) from exc
        return sorted(
            e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "directory"
        )

    def list_files(self, prefix: str = "") -> list[str]:
        """Names of the objects directly in ``prefix`` (not in its sub-folders; sorted)."""
        try:
            entries = self.fs.ls(self.path(prefix), detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except Exception as exc:
            raise self._err("list", prefix, exc) from exc
        names = (e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e["type"] == "file")
        return sorted(n for n in names if not _is_tmp(n))

    def delete(self, key: str) -> None:
        """Delete one object (no error if it is missing)."""
        try:
            self.fs.rm_file(self.path(key))
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise self._err("delete", key, exc) from exc

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix`` (a folder); returns how many were deleted."""
        if not _clean_key(prefix):
            raise StoreError(f"{self.uri}: refusing to delete the whole store")
        keys = self._find(prefix)
        try:
            if keys:
                self.fs.rm(self.path(prefix), recursive=True)
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise self._err("delete", prefix, exc) from exc
        return len([k for k in keys if not _is_tmp(k.rsplit("/", 1)[-1])])

    def _rel(self, path: str) -> str:
        path = path.replace("\\", "/")
        root = self.root.replace("\\", "/").rstrip("/") + "/"
        return path[len(root) :] if path.startswith(root) else path


# ---------------------------------------------------------------------------- backends


def _tmp_name(final: str) -> str:
    head, tail = os.path.split(final)
    return os.path.join(head, f".{tail}.tmp-{uuid.uuid4().hex}")


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


class _LocalAtomic:
    """The atomic primitives on a local folder: temp file + ``link``/``rename``, OS file locks."""

    def __init__(self, store: Store):
        self.store = store

    def abort_uploads(self, prefix: str) -> list[str]:
        return []  # local writes have no uploads (their temp files are files)

    def check_root(self) -> None:
        try:
            os.makedirs(self.store.root, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"{self.store.uri}: cannot create the folder: {exc.strerror}"
            ) from None

    def get_with_etag(self, key: str) -> tuple[bytes, str] | None:
        try:
            with open(self.store.path(key), "rb") as fh:
                data = fh.read()
        except (FileNotFoundError, IsADirectoryError):
            return None
        return data, sha256_bytes(data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        final = self.store.path(key)
        tmp = _tmp_name(final)
        try:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            _write_file(tmp, data)
            try:
                os.link(tmp, final)
                return True
            except FileExistsError:
                return False
            except OSError:  # no hard links here (some FUSE/SMB mounts): exclusive create
                try:
                    fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                return True
        except OSError as exc:
            raise self.store._err("create-only put", key, exc) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def compare_and_swap(self, key: str, data: bytes, expected_etag: str | None) -> bool:
        final = self.store.path(key)
        try:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            with FileLock(self.store._lock_path(key), timeout=_LOCK_TIMEOUT_S):
                current = self.get_with_etag(key)
                if expected_etag is None:
                    if current is not None:
                        return False
                elif current is None or current[1] != expected_etag:
                    return False
                tmp = _tmp_name(final)
                try:
                    _write_file(tmp, data)
                    os.replace(tmp, final)
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)
                return True
        except FileLockTimeout:
            raise StoreError(
                f"{self.store.uri}: timed out waiting for the lock on {key!r}"
            ) from None
        except OSError as exc:  # e.g. ENOSPC writing the temp file or creating the lock
            raise self.store._err("compare-and-swap", key, exc) from exc

    @contextlib.contextmanager
    def open_output(self, key: str) -> Iterator[IO[bytes]]:
        final = self.store.path(key)
        tmp = _tmp_name(final)
        try:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            fh = open(tmp, "wb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise self.store._err("open for writing", key, exc) from exc
        try:
            try:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            finally:
                fh.close()
            os.replace(tmp, final)
        except OSError as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise self.store._err("write", key, exc) from exc
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float) -> Iterator[None]:
        try:
            with FileLock(self.store._lock_path(name), timeout=timeout):
                yield
        except FileLockTimeout:
            raise StoreError(
                f"{self.store.uri}: timed out after {timeout:.0f} s waiting for the {name!r} lock"
            ) from None


class _S3Atomic:
    """The atomic primitives on S3: conditional ``PutObject`` (boto3), s3fs uploads, leases."""

    def __init__(self, store: Store):
        self.store = store

    def abort_uploads(self, prefix: str) -> list[str]:
        """Abort the unfinished multipart uploads under ``prefix``; returns their keys."""
        store = self.store
        full = (
            store._s3_key(prefix) + "/" if prefix else (f"{store.prefix}/" if store.prefix else "")
        )
        aborted = []
        try:
            pages = store.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=store.bucket, Prefix=full
            )
            for page in pages:
                for upload in page.get("Uploads") or []:
                    store.client.abort_multipart_upload(
                        Bucket=store.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted.append(store._rel(f"{store.bucket}/{upload['Key']}"))
        except Exception as exc:
            raise store._err("abort uploads", prefix, exc) from exc
        return aborted

    def check_root(self) -> None:
        store = self.store
        try:
            store.client.head_bucket(Bucket=store.bucket)
        except Exception as exc:
            code = store._s3_code(exc)
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise StoreError(f"{store.uri}: bucket {store.bucket!r} does not exist") from None
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise StoreError(
                    f"{store.uri}: access to bucket {store.bucket!r} denied ({code}): "
                    "check the AWS credentials"
                ) from None
            raise StoreError(
                f"{store.uri}: checking bucket {store.bucket!r} failed: {type(exc).__name__}: {exc}",
                is_transient(exc),
            ) from exc

    def get_with_etag(self, key: str) -> tuple[bytes, str] | None:
        store = self.store
        try:
            resp = store.client.get_object(Bucket=store.bucket, Key=store._s3_key(key))
            return resp["Body"].read(), resp["ETag"]
        except Exception as exc:
            if store._s3_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise

    def conditional_put(
        self, key: str, data: bytes, expected_etag: str | None, action: str
    ) -> bool:
        """``PutObject`` with ``If-None-Match: *`` (``expected_etag=None``) or ``If-Match``;
        ``False`` when the condition failed."""
        store = self.store
        cond = {"IfNoneMatch": "*"} if expected_etag is None else {"IfMatch": expected_etag}
        try:
            store.client.put_object(Bucket=store.bucket, Key=store._s3_key(key), Body=data, **cond)
            return True
        except Exception as exc:
            code = store._s3_code(exc)
            # 412 PreconditionFailed: exists / changed; 409 ConditionalRequestConflict: a
            # concurrent conditional write to the same key is in flight (it wins or has won).
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return False
            if code in ("NoSuchKey", "404") and expected_etag is not None:
                return False  # If-Match on a deleted object
            raise store._err(action, key, exc) from exc

    def put_if_absent(self, key: str, data: bytes) -> bool:
        return self.conditional_put(key, data, None, "create-only put")

    def compare_and_swap(self, key: str, data: bytes, expected_etag: str | None) -> bool:
        return self.conditional_put(key, data, expected_etag, "compare-and-swap")

    @contextlib.contextmanager
    def open_output(self, key: str) -> Iterator[IO[bytes]]:
        store = self.store
        try:
            fh = store.fs.open(store.path(key), "wb")
        except Exception as exc:
            raise store._err("open for writing", key, exc) from exc
        try:
            yield fh
        except BaseException:
            with contextlib.suppress(Exception):
                fh.discard()
            fh.closed = True  # do not let close() commit a partial object
            raise
        try:
            fh.close()
        except Exception as exc:
            raise store._err("write", key, exc) from exc

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float) -> Iterator[None]:
        with _S3Lease(self, f"{LOCKS_DIR}/{name}.json", timeout):
            yield


class _S3Lease:
    """A lock on S3 built from conditional writes (see :meth:`Store.lock`)."""

    def __init__(self, backend: _S3Atomic, key: str, timeout: float):
        self.backend, self.store, self.key, self.timeout = backend, backend.store, key, timeout
        self.token = f"{os.getpid()}-{uuid.uuid4().hex}"
        self.etag: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps({"owner": self.token, "expires": time.time() + LEASE_S}).encode()

    def _try_acquire(self) -> bool:
        if self.backend.conditional_put(self.key, self._body(), None, "lock"):
            return True
        found = self.store.get_with_etag(self.key)
        if found is None:
            return False  # released meanwhile: try again
        try:
            expires = float(json.loads(found[0])["expires"])
        except (ValueError, KeyError, TypeError):
            expires = 0.0  # unreadable lease: treat as expired
        if expires > time.time():
            return False
        log.warning("%s: taking over the expired lock %r", self.store.uri, self.key)
        return self.backend.conditional_put(self.key, self._body(), found[1], "lock")

    def _current_etag(self) -> str | None:
        found = self.store.get_with_etag(self.key)
        if found is None or json.loads(found[0]).get("owner") != self.token:
            return None
        return found[1]

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_S / 3):
            etag = self._current_etag()
            if etag is None or not self.backend.conditional_put(
                self.key, self._body(), etag, "lock renewal"
            ):
                log.error("%s: lost the lock %r", self.store.uri, self.key)
                return

    def __enter__(self) -> _S3Lease:
        deadline = time.monotonic() + self.timeout
        while not self._try_acquire():
            if time.monotonic() > deadline:
                raise StoreError(
                    f"{self.store.uri}: timed out after {self.timeout:.0f} s waiting for the "
                    f"lock {self.key!r}"
                )
            time.sleep(random.uniform(0.05, 0.25))
        self._renewer = threading.Thread(target=self._renew, daemon=True)
        self._renewer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if self._current_etag() is not None:
            self.store.delete(self.key)


def _is_temp_file(name: str) -> bool:
    """A writer's temporary file (``.<name>.tmp-<uuid>``); never a lock file, which must not be
    deleted while held (a new file would let a second holder in)."""
    return name.startswith(".") and ".tmp-" in name


def _is_tmp(name: str) -> bool:
    return (name.startswith(".") and ".tmp-" in name) or name.endswith(".lock")
