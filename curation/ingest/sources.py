"""Source mirrors: which upstream files exist, where they live, and how to read their bytes.

A source is a URI to a mirror in the upstream file layout (local path, ``file://``, ``s3://``,
``hf://datasets/<org>/<name>``, ``https://``) plus an optional pinned revision. For ``hf://``
the revision goes into the path (``hf://datasets/org/name@<rev>/...``) as huggingface_hub's
filesystem expects; for other schemes it is recorded in the manifest only.

What a mirror may contain (:class:`ReadPolicy`): a local file, or a folder on its path, may be a
symbolic link only when it resolves inside the mirror root (unless
``allow_links_outside_mirror``); only regular files are read; no file decompresses to more than
``max_decompressed_bytes``, and decompression stops there.

The URIs handled here are the redacted ones (``curation.core.redact``): credentials of a mirror
travel as fsspec storage options only (:func:`mirror_storage_options`: the user info and query
string of the source URI as configured, ``SOURCES_HTTP_HEADERS``), so a file's URI can be
recorded as it is, and read errors are scrubbed of every secret in the options.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import json
import logging
import os
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
from isal import igzip, igzip_lib

from curation.core.redact import (
    query_params,
    redact_uri,
    scrub,
    split_userinfo,
    uri_secrets,
    userinfo,
)
from curation.core.source_file import SourceFile

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"

#: The default bound on the bytes one source file may decompress to. The largest upstream file,
#: HH-RLHF ``helpful-rejection-sampled/train`` (52,421 rows), is ~200 MB decompressed at
#: ``bench.synth``'s full scale (19.9 MB at scale 0.1; its pseudo-words make longer rows than the
#: real ones, so the real file is smaller); at that scale the largest PKU-SafeRLHF file is ~85 MB
#: and the red-team array ~91 MB. 1 GiB is five times the largest; a gzip bomb fails after at most
#: 1 GiB decompressed, and a file under the bound ingests in about 3x its size (valid rows; up to
#: ~5x for one giant malformed line, docs/operations.md, "Security").
MAX_DECOMPRESSED_BYTES = 1 << 30
#: The highest bound that may be set: a quarantined line is kept whole in an Arrow string column,
#: and one string array holds at most 2**31 - 2 bytes (32-bit offsets); a file no larger than this
#: can never fill one.
DECOMPRESSED_BYTES_CEILING = 2**31 - 2


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
    ``curation.ingest.upstream.is_transient``).
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
class ReadPolicy:
    """What a source file may be (``CurationSettings.read_policy``; ``docs/operations.md``,
    "Security").

    ``max_decompressed_bytes``: a file decompressing (or, uncompressed, weighing) more fails,
    naming it. ``allow_links_outside_mirror``: read a local file even when it, or a folder on its
    path, is a symbolic link resolving outside the mirror root (by default an error naming the
    link, before anything is read).
    """

    max_decompressed_bytes: int = MAX_DECOMPRESSED_BYTES
    allow_links_outside_mirror: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.max_decompressed_bytes <= DECOMPRESSED_BYTES_CEILING:
            raise ValueError(
                f"max_decompressed_bytes={self.max_decompressed_bytes}: must be between 1 and "
                f"{DECOMPRESSED_BYTES_CEILING}"
            )


DEFAULT_POLICY = ReadPolicy()


def all_files() -> list[SourceFile]:
    """Every upstream file of every registered dataset (:func:`curation.datasets.all_files`;
    imported when called: the registry imports polars, the ``releases`` commands must not)."""
    from curation.datasets import all_files as registered_files

    return registered_files()


def source_file(subset: str, split: str | None = None) -> SourceFile:
    """The upstream file of ``subset`` (of any dataset) and ``split`` (``None`` for a file
    without split); KeyError if there is none."""
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

    uri: str  # redacted (curation.core.redact): no credentials
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

    def decompress(self, max_bytes: int = MAX_DECOMPRESSED_BYTES) -> bytes:
        """The whole decompressed content (every gzip member), at most ``max_bytes`` of it.

        Decompression streams into one buffer and stops after ``max_bytes + 1`` bytes: a file
        that decompresses to more raises :class:`SourceError` naming it, having held no more than
        that. A corrupt or truncated gzip raises :class:`SourceError`.
        """
        if self.compression == "none":
            if self.uri.endswith(".gz"):
                log.warning(
                    "%s: named .gz but not gzip-compressed; reading it as plain text", self.uri
                )
            _check_bound(self.uri, len(self.raw), max_bytes)
            return self.raw
        try:
            # ISA-L (~2.3x zlib's speed, same format). A buffered read of max_bytes + 1 fills one
            # bytes object in place (pages are touched only as they fill), then shrinks it: half
            # the peak of igzip.decompress (a 188-MiB file: +188 MiB against +376 MiB).
            with igzip.GzipFile(fileobj=io.BytesIO(self.raw)) as stream:
                data = stream.read(max_bytes + 1)
        except (EOFError, OSError, zlib.error, igzip_lib.IsalError) as exc:
            raise SourceError(f"{self.uri}: corrupt or truncated gzip stream: {exc}") from exc
        _check_bound(self.uri, len(data), max_bytes, "decompresses to")
        return data


def _check_bound(uri: str, size: int, max_bytes: int, what: str = "holds") -> None:
    """Raise :class:`SourceError` naming ``uri`` when ``size`` exceeds ``max_bytes``."""
    if size > max_bytes:
        raise SourceError(
            f"{redact_uri(uri)}: {what} more than {max_bytes:,} bytes, the bound on one source file "
            "(max_decompressed_bytes; docs/operations.md, Security)"
        )


def read_raw(
    uri: str,
    storage_options: dict | None = None,
    *,
    root: str | None = None,
    policy: ReadPolicy = DEFAULT_POLICY,
) -> RawFile | None:
    """Read a source file's stored bytes; ``None`` only when nothing exists at ``uri``.

    A path that exists but cannot be read is a :class:`SourceError` naming it: a dangling
    symlink, a permission error (also on a parent folder), a folder or a special file (FIFO,
    device) where the file should be, a file larger than ``policy.max_decompressed_bytes``, and,
    with the mirror ``root`` given, a symbolic link on its path that resolves outside the root
    (unless ``policy.allow_links_outside_mirror``). All of these are found before the file is
    opened.
    """
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    info = _info(fs, path, uri, root, policy, storage_options)
    if info is None:
        return None
    bound = policy.max_decompressed_bytes
    if isinstance(info.get("size"), int):  # refused unread (a gzip is no larger than its
        _check_bound(uri, info["size"], bound, "is")  # content, but for ~0.03 % of overhead)
    try:
        with fs.open(path, "rb") as handle:
            raw = handle.read(bound + 1)  # bounded even when the size above was unknown
    except Exception as exc:  # OSError, or an HTTP client's error (it may quote the URL)
        raise read_error(uri, "cannot read", exc, storage_options) from None
    _check_bound(uri, len(raw), bound, "is")
    return RawFile(uri=redact_uri(uri), raw=raw, sha256=hashlib.sha256(raw).hexdigest())


def is_present(
    uri: str,
    storage_options: dict | None = None,
    *,
    root: str | None = None,
    policy: ReadPolicy = DEFAULT_POLICY,
) -> bool:
    """Whether a source file exists, without reading it; raises :class:`SourceError` like
    :func:`read_raw` for a path that exists but cannot be read."""
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    return _info(fs, path, uri, root, policy, storage_options) is not None


def _info(
    fs: fsspec.AbstractFileSystem,
    path: str,
    uri: str,
    root: str | None,
    policy: ReadPolicy,
    storage_options: Mapping | None = None,
) -> dict | None:
    """The file's fsspec info, ``None`` when nothing is there; :class:`SourceError` when
    something is there that may not be read."""
    local = _is_local(fs)
    if local and os.path.islink(path) and not os.path.exists(path):
        raise SourceError(f"{uri}: dangling symlink (to {os.readlink(path)})")
    if local and root is not None and not policy.allow_links_outside_mirror:
        check_inside_mirror(path, root, uri)
    try:
        info = fs.info(path)
    except FileNotFoundError as exc:
        failure = http_failure(exc)
        if failure is not None:
            raise read_error(uri, "cannot read", failure, storage_options) from None
        return None
    except Exception as exc:  # permission denied on the file or a parent, I/O errors
        raise read_error(uri, "cannot read", exc, storage_options) from None
    if info.get("type") == "directory":
        raise SourceError(f"{redact_uri(uri)}: is a folder, not a file")
    if local and info.get("type") != "file":
        raise SourceError(f"{redact_uri(uri)}: not a regular file (a FIFO, socket or device)")
    return info


def local_path(root: str) -> str | None:
    """The local folder of a mirror ``root`` (a path or ``file://``), ``None`` for other schemes."""
    if root.startswith("file://"):
        return root.removeprefix("file://")
    return None if "://" in root else root


def link_outside_mirror(path: str, root: str) -> str | None:
    """The first symbolic link on ``path`` (the file or a folder between it and the local
    mirror folder ``root``) that resolves outside ``root``, or ``None`` when ``path`` stays inside.

    The root itself may be a link (a mirror on another disk): paths are compared after resolving
    it. Links inside the mirror (a hf-style ``blobs/`` folder that the layout links into) are fine.
    """
    real_root = os.path.realpath(root)
    if _inside(os.path.realpath(path), real_root):
        return None
    top = os.path.abspath(root)
    relative = os.path.relpath(os.path.abspath(path), top).split(os.sep)
    for depth in range(1, len(relative) + 1):
        step = os.path.join(top, *relative[:depth])
        if not _inside(os.path.realpath(step), real_root):
            return step
    return os.path.abspath(path)  # not reached: the full path is the last step


def _inside(real: str, real_root: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def check_inside_mirror(path: str, root: str, uri: str) -> None:
    """Raise :class:`SourceError` naming the link when the local ``path`` (of ``uri``) leads
    outside the mirror folder ``root`` through a symbolic link; nothing is opened."""
    folder = local_path(root)
    if folder is None:
        return
    link = link_outside_mirror(path, folder)
    if link is not None:
        which = "a symbolic link" if link == os.path.abspath(path) else f"{link} is a symbolic link"
        raise SourceError(
            f"{uri}: {which} to {os.path.realpath(link)}, outside the mirror {root}; not read "
            "(set allow_links_outside_mirror to read it)"
        )


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


def check_layout(
    root: str, files: Sequence[SourceFile], storage_options: dict | None = None
) -> None:
    """Fail with a :class:`SourceError` naming ``root`` when it holds none of ``files`` (the
    layout of one dataset, e.g. its ``files()``): the mirror of another dataset, or a folder
    above or below the mirror root. Nothing is read (one existence check per file, stopping at
    the first found). A path that cannot be checked (permission denied) or a dangling link
    counts as found: reading it fails naming it.

    ``hf://`` and ``http(s)://`` roots are not checked (their files are checked when read).
    """
    if not files or root.startswith(("hf://", "http://", "https://")):
        return
    fs, base = fsspec.core.url_to_fs(root, **(storage_options or {}))
    if any(
        matching_files(root, f.relpath, None, storage_options)
        if is_glob(f.relpath)
        else _may_exist(fs, f"{base.rstrip('/')}/{f.relpath}")
        for f in files
    ):
        return
    expected = ", ".join(f.relpath for f in files[:3])
    raise SourceError(
        f"{redact_uri(root)}: no recognisable {files[0].dataset} files in this mirror "
        f"(expected e.g. {expected})"
    )


#: Characters that make a source file's relative path a glob (a declared dataset's split).
GLOB_CHARS = frozenset("*?[")
#: The most files one glob may match (each is read whole): bounded input.
MAX_GLOB_FILES = 1_000


def is_glob(relpath: str) -> bool:
    """Whether a source file's relative path is a glob matching any number of files."""
    return bool(GLOB_CHARS & set(relpath))


def matching_files(
    root: str,
    pattern: str,
    revision: str | None = None,
    storage_options: dict | None = None,
    *,
    limit: int = MAX_GLOB_FILES,
) -> list[str]:
    """The relative paths of the files under the mirror ``root`` that ``pattern`` matches,
    sorted (``[pattern]`` when it is no glob). A listing error is a :class:`SourceError` naming
    the redacted root; more than ``limit`` matches too."""
    if not is_glob(pattern):
        return [pattern]
    if is_http(root):
        raise SourceError(
            f"{redact_uri(root)}: an http(s) mirror cannot be listed; name the files of "
            f"{pattern!r} one by one"
        )
    base = file_uri(root, "", revision).rstrip("/")
    try:
        fs, base_path = fsspec.core.url_to_fs(base, **(storage_options or {}))
        fs.invalidate_cache()
        found = fs.glob(f"{base_path.rstrip('/')}/{pattern}", detail=True)
    except FileNotFoundError:
        return []
    except Exception as exc:  # a client's error may quote the URL and its query
        raise read_error(base, "cannot list", exc, storage_options) from None
    prefix = base_path.rstrip("/") + "/"
    names = sorted(
        path[len(prefix) :]
        for path, info in found.items()
        if path.startswith(prefix) and info.get("type") != "directory"
    )
    if len(names) > limit:
        raise SourceError(
            f"{redact_uri(base)}: {pattern!r} matches {len(names):,} files, more than the "
            f"{limit:,} one split may read"
        )
    return names


def _may_exist(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    """False only when ``path`` is known to be absent (not found, or a parent is not a folder)."""
    try:
        if _is_local(fs):
            os.lstat(path)
        else:
            fs.info(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True
    return True
