"""Upstream files: fingerprints that change when a file changes, and which read errors are transient.

A fingerprint is the Dagster data version of an upstream file (see ``assets/upstream.py``):

- ``hf://datasets/<org>/<name>``: the dataset repo's commit (one Hub call per dataset);
- object stores and HTTP: the ETag plus the size;
- local files: the content sha256 (a ``touch`` is not a change), except a file that is not
  read (a symbolic link out of the mirror, a FIFO or device: ``curation.ingest.sources.ReadPolicy``),
  which gets its size and mtime;
- anything else: size and mtime; a missing file is ``absent``.
"""

from __future__ import annotations

import hashlib
import re

import fsspec

from curation.ingest.sources import (
    SourceError,
    file_uri,
    http_failure,
    is_glob,
    is_transient_error,
    link_outside_mirror,
    local_path,
    matching_files,
    read_error,
)

ABSENT = "absent"
_HF_REPO = re.compile(r"^hf://datasets/([^/@]+/[^/@]+)(?:@([^/]+))?")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def hf_commit(root: str, revision: str | None = None) -> str:
    """The commit the ``hf://datasets/<org>/<name>[@rev]`` mirror resolves to now (network)."""
    match = _HF_REPO.match(root)
    if not match:
        raise ValueError(f"{root}: not an hf://datasets/<org>/<name> URI")
    repo, pinned = match.group(1), match.group(2) or revision
    if pinned and _COMMIT.match(pinned):
        return pinned
    from huggingface_hub import HfApi

    return HfApi().dataset_info(repo, revision=pinned).sha


def sha256_file(fs, path: str) -> str:
    """The sha256 hex digest of ``path`` on the fsspec filesystem ``fs``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with fs.open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def fingerprint_is_content(uri: str, root: str) -> bool:
    """Whether the observation of the file ``uri`` of the mirror ``root`` is the sha256 of its
    bytes: a local file reached without a symbolic link out of the mirror. Ingest then records
    the sha256 of the bytes it read; otherwise it asks :func:`source_fingerprint` first."""
    folder, path = local_path(root), local_path(uri)
    return folder is not None and path is not None and link_outside_mirror(path, folder) is None


def content_fingerprint(sha256: str) -> str:
    """The fingerprint of a local file whose bytes have this sha256 (see :func:`source_fingerprint`)."""
    return f"sha256:{sha256}"


def source_fingerprint(
    root: str, relpath: str, revision: str | None = None, storage_options: dict | None = None
) -> str:
    """A short string that changes whenever the upstream file changes (its Dagster data version).

    Cached listings are dropped first, so a long-running process sees the current state.
    """
    if root.startswith("hf://"):
        return f"hf-commit:{hf_commit(root, revision)}"
    uri = file_uri(root, relpath, revision)
    fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    fs.invalidate_cache()
    try:
        info = fs.info(path)
    except FileNotFoundError as exc:
        failure = http_failure(exc)
        if failure is not None:
            raise read_error(uri, "cannot observe", failure, storage_options) from None
        return ABSENT
    except Exception as exc:  # an HTTP client's error may quote the URL and its query
        raise read_error(uri, "cannot observe", exc, storage_options) from None
    if info.get("type") == "directory":
        return ABSENT
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return f"etag:{str(etag).strip(chr(34))}:size:{info.get('size')}"
    if "file" in fs.protocol or "local" in fs.protocol:
        if _readable_local(path, root, info):
            return content_fingerprint(sha256_file(fs, path))
        return f"unread:size:{info.get('size')}:mtime:{info.get('mtime')}"
    mtime = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
    return f"size:{info.get('size')}:mtime:{mtime}"


def group_fingerprint(fingerprints: dict[str, str]) -> str:
    """The fingerprint of a glob source: its matched files and theirs (``absent`` for none);
    a file added, removed or changed changes it."""
    if not fingerprints:
        return ABSENT
    text = "".join(f"{name}\t{fp}\n" for name, fp in sorted(fingerprints.items()))
    return f"files:{len(fingerprints)}:{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def glob_fingerprint(
    root: str, pattern: str, revision: str | None = None, storage_options: dict | None = None
) -> str:
    """:func:`group_fingerprint` of the files ``pattern`` matches under ``root`` now."""
    names = matching_files(root, pattern, revision, storage_options)
    return group_fingerprint(
        {n: source_fingerprint(root, n, revision, storage_options) for n in names}
    )


def _readable_local(path: str, root: str, info: dict) -> bool:
    """Whether observing may hash the local file: a regular file reached without a symbolic link
    out of the mirror (ingest refuses the others by name; observing never reads them)."""
    folder = local_path(root)
    if folder is not None and link_outside_mirror(path, folder) is not None:
        return False
    return info.get("type") == "file"


def dataset_fingerprints(
    relpaths: list[str],
    root: str,
    revision: str | None = None,
    storage_options: dict | None = None,
) -> dict[str, str]:
    """``{relpath: fingerprint}`` of files of one mirror (one Hub call for ``hf://``)."""
    if root.startswith("hf://"):
        commit = f"hf-commit:{hf_commit(root, revision)}"
        return {
            p: group_fingerprint(
                dict.fromkeys(matching_files(root, p, revision, storage_options), commit)
            )
            if is_glob(p)
            else commit
            for p in relpaths
        }
    return {
        p: (glob_fingerprint if is_glob(p) else source_fingerprint)(
            root, p, revision, storage_options
        )
        for p in relpaths
    }


def is_transient(exc: BaseException) -> bool:
    """A read that failed on I/O (connection reset, timeout, throttling): worth retrying.

    ``curation.ingest.sources`` wraps read errors in a ``SourceError`` that says whether it is
    transient (:func:`curation.ingest.sources.is_transient_error`); otherwise the cause decides.
    Corrupt content (bad or truncated gzip, empty file, malformed JSON) is not retried.
    """
    if isinstance(exc, SourceError) and exc.transient is not None:
        return exc.transient
    cause = exc.__cause__
    return cause is not None and not isinstance(cause, SourceError) and is_transient_error(cause)
