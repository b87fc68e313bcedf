"""What names a release and where its objects live in the store.

A release id is a function of every input that can change a release's bytes (see
``docs/releases.md``, "Release id"): the source files' contents, the extra reference files'
contents, the curation config, the code version (the code of every stage, its data files and
suites, :mod:`curation.core.version`) and the versions of the libraries and interpreter that encode
the output. The manifest records each of them, so the id can be recomputed from a manifest
(:func:`release_id_of`): a manifest whose inputs were edited no longer matches its id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

RELEASES_DIR = "releases"
LATEST_KEY = "latest.json"
SEQUENCE_KEY = "sequence.json"
MANIFEST_NAME = "manifest.json"
CARD_NAME = "README.md"
ID_LENGTH = 16
#: Manifest format: 2 adds ``references`` and ``libraries`` (hashed into the id) and file
#: ``fingerprint`` s; format 1 ids cover the sources, the config and the code version only.
FORMAT_VERSION = 2


def release_prefix(release_id: str) -> str:
    """The release's folder, relative to the store root."""
    return f"{RELEASES_DIR}/{release_id}"


def manifest_key(release_id: str) -> str:
    """The release's manifest (create-only: the release exists iff it exists)."""
    return f"{release_prefix(release_id)}/{MANIFEST_NAME}"


def digest_key(release_id: str) -> str:
    """The sha256 of the manifest's bytes, create-only, beside (not inside) the release folder:
    someone editing the release folder does not rewrite it."""
    return f"{RELEASES_DIR}/{release_id}.sha256"


def promotion_key(release_id: str) -> str:
    """Who accepted a release that was held (ERROR drift), when and why: create-only, beside
    the release folder (``rlhf-curate releases promote``)."""
    return f"{RELEASES_DIR}/{release_id}.promotion.json"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, set | frozenset):
        return sorted(obj, key=str)
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "__fspath__"):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def canonical_json(obj: Any) -> bytes:
    """Canonical JSON (sorted keys, no whitespace, UTF-8) used for hashing."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default
    ).encode()


def pretty_json(obj: Any) -> bytes:
    """The JSON of the files people read (manifest, pointer): indented, keys in given order."""
    return (
        json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False, default=_json_default) + "\n"
    ).encode()


def _source_files(sources: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    fingerprint = []
    for src in sources:
        files = sorted(
            (str(f.get("path", "")), str(f.get("sha256", ""))) for f in (src.get("files") or [])
        )
        fingerprint.append({"name": src.get("name") or src.get("dataset"), "files": files})
    fingerprint.sort(key=canonical_json)
    return fingerprint


def release_inputs(
    sources: Iterable[Mapping[str, Any]],
    config: Mapping[str, Any],
    code_version: str,
    references: Iterable[Mapping[str, Any]] | None = None,
    libraries: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The inputs a release id hashes. ``references`` and ``libraries`` ``None``: the format-1
    id (sources, config and code version only), kept so that old manifests still verify."""
    payload: dict[str, Any] = {
        "code_version": code_version,
        "config": config,
        "sources": _source_files(sources),
    }
    if references is not None:
        payload["references"] = sorted(
            [str(r.get("name", "")), str(r.get("field", "")), str(r.get("sha256", ""))]
            for r in references
        )
    if libraries is not None:
        payload["libraries"] = dict(libraries)
    return payload


def compute_release_id(
    sources: Iterable[Mapping[str, Any]],
    config: Mapping[str, Any],
    code_version: str,
    references: Iterable[Mapping[str, Any]] | None = None,
    libraries: Mapping[str, str] | None = None,
) -> str:
    """Content-derived id: the first 16 hex digits of sha256 over :func:`release_inputs`."""
    inputs = release_inputs(sources, config, code_version, references, libraries)
    return hashlib.sha256(canonical_json(inputs)).hexdigest()[:ID_LENGTH]


def release_id_of(manifest: Mapping[str, Any]) -> str:
    """The id ``manifest`` 's recorded inputs name (equal to its ``release_id`` unless edited)."""
    modern = int(manifest.get("format_version") or 1) >= 2
    return compute_release_id(
        manifest.get("sources") or [],
        manifest.get("config") or {},
        str(manifest.get("code_version") or ""),
        (manifest.get("references") or []) if modern else None,
        (manifest.get("libraries") or {}) if modern else None,
    )
