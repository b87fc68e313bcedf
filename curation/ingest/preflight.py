"""Checks run before a pipeline run starts: the store and every source root are usable.

A missing bucket, refused credentials, a read-only folder, a mistyped source URI or the mirror of
the wrong dataset otherwise surface only later in a run (the store at publish, after the whole
pipeline; a root without any file of its dataset after every file was ingested). Each check gives
one line; nothing is retried (these are permanent errors). A line never quotes a credential:
URIs are redacted and errors scrubbed (``curation.core.redact``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import fsspec

from curation.core.redact import redact_uri, scrub
from curation.core.store import Store, StoreError
from curation.ingest.sources import SourceError, all_files, check_layout, option_secrets


@dataclass(frozen=True)
class Check:
    """The outcome of one preflight check."""

    what: str  # e.g. "store /data/curated"
    ok: bool
    detail: str

    def line(self) -> str:
        """One line for the console: ``ok  store ./warehouse (writable)``."""
        return f"{'ok   ' if self.ok else 'FAIL '} {self.what}: {self.detail}"


def check_store(uri: str, storage_options: Mapping[str, Any] | None = None) -> Check:
    """The store's bucket exists (S3) and a probe object can be written, read and deleted."""
    what = f"store {redact_uri(uri)}"
    try:
        store = Store(uri, storage_options)
        store.preflight()
    except StoreError as exc:
        detail = scrub(str(exc), option_secrets(storage_options)).partition(": ")[2]
        return Check(what, False, detail or str(exc))
    return Check(what, True, "readable and writable")


def check_source_root(
    name: str, uri: str, storage_options: Mapping[str, Any] | None = None
) -> Check:
    """The root of a source mirror exists, is a readable folder and, when ``name`` is a dataset
    (``hh-rlhf``, ``pku-saferlhf``), holds at least one file of that dataset's layout."""
    what = f"source {name} {redact_uri(uri)}"
    if "://" not in uri or uri.startswith("file://"):
        path = uri.removeprefix("file://")
        if not os.path.exists(path):
            return Check(what, False, "no such folder")
        if not os.path.isdir(path):
            return Check(what, False, "not a folder")
        if not os.access(path, os.R_OK | os.X_OK):
            return Check(what, False, "folder not readable (permissions)")
        return _check_layout(what, name, uri, None)
    try:
        fs, path = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
        if not fs.isdir(path):
            return Check(what, False, "no such folder (or no access)")
        return _check_layout(what, name, uri, storage_options)
    except Exception as exc:  # one line, whatever the backend raised
        detail = scrub(f"{type(exc).__name__}: {exc}", option_secrets(storage_options))
        return Check(what, False, f"cannot be read: {detail}")


def _check_layout(
    what: str, dataset: str, uri: str, storage_options: Mapping[str, Any] | None
) -> Check:
    """A readable folder: fails when it holds no file of ``dataset``'s layout."""
    layout = [f for f in all_files() if f.dataset == dataset]
    try:
        check_layout(uri, layout, dict(storage_options or {}))
    except SourceError as exc:
        return Check(what, False, str(exc).removeprefix(f"{redact_uri(uri)}: "))
    return Check(what, True, "readable folder" + (f" with {dataset} files" if layout else ""))


def preflight(
    store_uri: str,
    sources: Mapping[str, str],
    store_options: Mapping[str, Any] | None = None,
    source_options: Callable[[str], Mapping[str, Any]] | None = None,
) -> list[Check]:
    """Check the store and every source root (``name -> uri``); one :class:`Check` each.

    ``store_options`` are the store's storage options, ``source_options(uri)`` those of a
    source root (its credentials: ``SourcesResource.storage_options``).
    """
    checks = [check_store(store_uri, store_options)]
    for name, uri in sources.items():
        try:
            options = source_options(uri) if source_options else None
        except (SourceError, ValueError) as exc:  # credentials of a kind the URI cannot take
            shown = redact_uri(uri)
            checks.append(
                Check(f"source {name} {shown}", False, str(exc).removeprefix(f"{shown}: "))
            )
            continue
        checks.append(check_source_root(name, uri, options))
    return checks
