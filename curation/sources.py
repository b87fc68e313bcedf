"""Source mirrors: which upstream files exist, where they live, and how to read their bytes.

A source is a URI to a mirror in the upstream file layout (local path, ``file://``, ``s3://``,
``hf://datasets/<org>/<name>``, ``https://``) plus an optional pinned revision. For ``hf://``
the revision goes into the path (``hf://datasets/org/name@<rev>/...``) as huggingface_hub's
filesystem expects; for other schemes it is recorded in the manifest only.

The URIs handled here are the redacted ones (``curation.redact``): credentials of a mirror
travel as fsspec storage options only (:func:`mirror_storage_options`: the user info and query
string of the source URI as configured, ``SOURCES_HTTP_HEADERS``), so a file's URI can be
recorded as it is, and read errors are scrubbed of every secret in the options.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import logging
import os
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import fsspec
from isal import igzip

from curation.redact import (
    query_params,
    redact_uri,
    scrub,
    split_userinfo,
    uri_secrets,
    userinfo,
)
from curation.schema import (
    HH_DATASET,
    HH_RED_TEAM_SUBSET,
    HH_SUBSETS,
    PKU_CONFIGS,
    PKU_DATASET,
    SPLITS,
)

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"


#: The environment variable (read by ``pipelines.settings`` only) holding HTTP headers, as a JSON
#: object, sent with every request to an http(s) source mirror.
HTTP_HEADERS_ENV = "SOURCES_HTTP_HEADERS"
#: Read errors that no retry cures (the rest of ``OSError``: connection resets, timeouts).
_NOT_TRANSIENT = (
    gzip.BadGzipFile,
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


class SourceError(RuntimeError):
    """A source file or mirror that cannot be read; the message names the URI and the problem.

    ``transient`` says whether a retry may cure it (``None``: judged from ``__cause__``,
    ``curation.upstream.is_transient``).
    """

    def __init__(self, message: str, transient: bool | None = None):
        super().__init__(message)
        self.transient = transient


def is_transient_error(exc: BaseException) -> bool:
    """Whether a read error is worth retrying: an HTTP 429 or 5xx, or an ``OSError`` other than
    a missing file, a permission error or a bad gzip stream (connection reset, timeout)."""
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        return status == 429 or status >= 500
    return isinstance(exc, OSError) and not isinstance(exc, _NOT_TRANSIENT)


def http_failure(exc: FileNotFoundError) -> BaseException | None:
    """The HTTP error behind a ``FileNotFoundError`` of fsspec's HTTP filesystem, unless it is a
    404/410: that filesystem reports every failure (401, 403, 5xx) as not found, which would make
    a mirror that refuses the credentials look empty."""
    cause = exc.__cause__
    status = getattr(cause, "status", None)
    return cause if isinstance(status, int) and status not in (404, 410) else None


def read_error(
    uri: str, problem: str, exc: BaseException, storage_options: Mapping | None
) -> SourceError:
    """A :class:`SourceError` ``"<uri>: <problem>: <exc>"`` whose text is scrubbed of every URI
    credential and every secret in ``storage_options``; raise it ``from None`` (a chained
    exception would carry the unscrubbed text into the run's event log)."""
    secrets = option_secrets(storage_options) + uri_secrets(uri)
    detail = scrub(f"{redact_uri(uri)}: {problem}: {exc}", secrets)
    return SourceError(detail, transient=is_transient_error(exc))


@dataclass(frozen=True)
class SourceFile:
    """One upstream file of a mirror: which dataset/subset/split it holds and its relative path."""

    dataset: str
    subset: str
    split: str | None
    relpath: str
    kind: str  # "hh_preference" | "hh_red_team" | "pku"

    @property
    def key(self) -> str:
        """A short identifier usable as a Dagster asset name suffix."""
        parts = [self.dataset, self.subset] + ([self.split] if self.split else [])
        return "__".join(p.lower().replace("-", "_") for p in parts)


def hh_files() -> list[SourceFile]:
    """Every file of the HH-RLHF upstream layout (4 preference subsets × 2 splits + red team)."""
    files = [
        SourceFile(HH_DATASET, subset, split, f"{subset}/{split}.jsonl.gz", "hh_preference")
        for subset in HH_SUBSETS
        for split in SPLITS
    ]
    files.append(
        SourceFile(
            HH_DATASET,
            HH_RED_TEAM_SUBSET,
            None,
            f"{HH_RED_TEAM_SUBSET}/red_team_attempts.jsonl.gz",
            "hh_red_team",
        )
    )
    return files


def pku_files() -> list[SourceFile]:
    """Every file of the PKU-SafeRLHF upstream layout (3 configs × 2 splits)."""
    return [
        SourceFile(PKU_DATASET, config, split, f"data/{config}/{split}.jsonl", "pku")
        for config in PKU_CONFIGS
        for split in SPLITS
    ]


def all_files() -> list[SourceFile]:
    """All upstream files of both datasets."""
    return hh_files() + pku_files()


def source_file(subset: str, split: str | None = None) -> SourceFile:
    """The upstream file of ``subset`` (an HH subset or a PKU config) and ``split`` (``None`` for
    the red-team file); KeyError if there is none."""
    for f in all_files():
        if f.subset == subset and f.split == split:
            return f
    raise KeyError(f"no upstream file for subset {subset!r}, split {split!r}")


def file_uri(root: str, relpath: str, revision: str | None = None) -> str:
    """The URI of ``relpath`` inside the mirror at ``root`` (pinning ``hf://`` to ``revision``)."""
    root = root.rstrip("/")
    if root.startswith("hf://") and revision and "@" not in root.split("/", 5)[-1]:
        root = f"{root}@{revision}"
    return f"{root}/{relpath}"


def parse_http_headers(text: str | None) -> dict[str, str]:
    """``SOURCES_HTTP_HEADERS``: a JSON object of header names to string values (``{}`` when
    unset). A malformed value is a ``ValueError`` that never quotes it (it holds secrets)."""
    if not text:
        return {}
    expected = 'a JSON object of header names to strings, e.g. {"Authorization": "Bearer ..."}'
    try:
        headers = json.loads(text)
    except ValueError as exc:
        line, column = getattr(exc, "lineno", "?"), getattr(exc, "colno", "?")
        raise ValueError(
            f"{HTTP_HEADERS_ENV}: not JSON (line {line}, column {column}); expected {expected}"
        ) from None
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ValueError(f"{HTTP_HEADERS_ENV}: expected {expected}")
    return headers


def is_http(uri: str) -> bool:
    """Whether ``uri`` is an ``http://`` or ``https://`` URI."""
    return uri.startswith(("http://", "https://"))


def credential_options(uri: str) -> dict[str, Any]:
    """fsspec storage options carrying the credentials written into the source URI ``uri``, to
    read its redacted form and the files under it: for http(s) the user info as an
    ``Authorization: Basic`` header and the query string as request ``params``; for ``s3://``
    the user info as ``key``/``secret``. Other schemes take no credentials in the URI
    (:class:`SourceError` naming the redacted URI)."""
    scheme = uri.split("://", 1)[0].lower()
    params = query_params(uri)
    if scheme in ("http", "https"):
        _, headers = split_userinfo(uri)
        options: dict[str, Any] = {"headers": headers} if headers else {}
        if params:
            options["params"] = params
        return options
    user, password = userinfo(uri)
    if scheme in ("s3", "s3a") and not params:
        return {"key": user, "secret": password} if user or password else {}
    raise SourceError(
        f"{redact_uri(uri)}: credentials in a {scheme}:// source URI are not supported; give "
        "them in the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for s3://, HF_TOKEN "
        "for hf://)"
    )


def mirror_storage_options(
    uri: str, configured: Iterable[str | None] = (), http_headers: str | None = None
) -> dict[str, Any]:
    """The storage options with the credentials that reading ``uri`` (a redacted mirror root or
    a file under it) needs: those of each source URI in ``configured`` (as set, credentials
    included) whose redacted form is ``uri`` or a folder above it, and for http(s) the headers
    of ``SOURCES_HTTP_HEADERS`` (``http_headers``, JSON; the URI's own user info wins)."""
    options: dict[str, Any] = {}
    for full in filter(None, configured):
        root = redact_uri(full).rstrip("/")
        if uri == root or uri.startswith(f"{root}/"):
            options = credential_options(full)
            break
    if is_http(uri) and http_headers:
        options["headers"] = {**parse_http_headers(http_headers), **options.get("headers", {})}
    return options


def option_secrets(storage_options: Mapping[str, Any] | None) -> list[str]:
    """Every secret in fsspec storage options, as it may appear in an error message: header and
    query values, ``key``/``secret``/``token``/``password``, and the user and password inside
    an ``Authorization: Basic`` header."""
    options = storage_options or {}
    secrets = [str(options[k]) for k in ("key", "secret", "token", "password") if options.get(k)]
    secrets += [str(value) for value in (options.get("headers") or {}).values()]
    secrets += [str(value) for _, value in options.get("params") or []]
    for value in (options.get("headers") or {}).values():
        scheme, _, token = str(value).partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(token).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                continue
            secrets += [user, password, token]
        elif token:
            secrets.append(token)
    return [s for s in secrets if s]


@dataclass(frozen=True)
class RawFile:
    """The stored bytes of a source file plus what the manifest records about it."""

    uri: str  # redacted (curation.redact): no credentials
    raw: bytes
    sha256: str

    @property
    def size(self) -> int:
        """Byte size of the file as stored."""
        return len(self.raw)

    @property
    def compression(self) -> str:
        """``gzip`` or ``none``, from the magic bytes (not the file name)."""
        return "gzip" if self.raw[:2] == GZIP_MAGIC else "none"

    def decompress(self) -> bytes:
        """The whole decompressed content; a corrupt or truncated gzip raises SourceError."""
        if self.compression == "none":
            if self.uri.endswith(".gz"):
                log.warning(
                    "%s: named .gz but not gzip-compressed; reading it as plain text", self.uri
                )
            return self.raw
        try:
            return igzip.decompress(self.raw)  # ISA-L: ~2.3x zlib's speed, same format
        except (EOFError, OSError, zlib.error) as exc:
            raise SourceError(f"{self.uri}: corrupt or truncated gzip stream: {exc}") from exc


def read_raw(uri: str, storage_options: dict | None = None) -> RawFile | None:
    """Read a source file's stored bytes; ``None`` only when nothing exists at ``uri``.

    A path that exists but cannot be read is a :class:`SourceError` naming it: a dangling
    symlink, a permission error (also on a parent folder), a folder where the file should be.
    """
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    if not _exists(fs, path, uri, storage_options):
        return None
    try:
        with fs.open(path, "rb") as handle:
            raw = handle.read()
    except Exception as exc:  # OSError, or an HTTP client's error (it may quote the URL)
        raise read_error(uri, "cannot read", exc, storage_options) from None
    return RawFile(uri=redact_uri(uri), raw=raw, sha256=hashlib.sha256(raw).hexdigest())


def is_present(uri: str, storage_options: dict | None = None) -> bool:
    """Whether a source file exists, without reading it; raises :class:`SourceError` like
    :func:`read_raw` for a path that exists but cannot be read."""
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    return _exists(fs, path, uri, storage_options)


def _exists(
    fs: fsspec.AbstractFileSystem, path: str, uri: str, storage_options: Mapping | None
) -> bool:
    if _is_local(fs) and os.path.islink(path) and not os.path.exists(path):
        raise SourceError(f"{uri}: dangling symlink (to {os.readlink(path)})")
    try:
        info = fs.info(path)
    except FileNotFoundError as exc:
        failure = http_failure(exc)
        if failure is not None:
            raise read_error(uri, "cannot read", failure, storage_options) from None
        return False
    except Exception as exc:  # permission denied on the file or a parent, I/O errors
        raise read_error(uri, "cannot read", exc, storage_options) from None
    if info.get("type") == "directory":
        raise SourceError(f"{redact_uri(uri)}: is a folder, not a file")
    return True


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else fs.protocol
    return any(p in ("file", "local") for p in protocols)


def check_root(root: str, storage_options: dict | None = None) -> None:
    """Fail with a :class:`SourceError` naming ``root`` when the mirror root is not a readable
    folder (e.g. a typo in ``HH_RLHF_URI``): otherwise every file of it would look absent.

    ``hf://`` and ``http(s)://`` roots are not listed (their files are checked when read).
    """
    if root.startswith(("hf://", "http://", "https://")):
        return
    fs, path = fsspec.core.url_to_fs(root, **(storage_options or {}))
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise SourceError(
            f"{redact_uri(root)}: mirror root does not exist (check the source URI)"
        ) from None
    except Exception as exc:
        raise read_error(root, "mirror root cannot be read", exc, storage_options) from None
    if info.get("type") != "directory":
        raise SourceError(f"{redact_uri(root)}: mirror root is not a folder")
    if _is_local(fs) and not os.access(path, os.R_OK | os.X_OK):
        raise SourceError(f"{redact_uri(root)}: mirror root cannot be read: permission denied")
