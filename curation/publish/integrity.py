"""Integrity of a published release: its files against its manifest, its manifest against what
can be recomputed from the files, and against digests kept outside the release folder.

Used by ``releases verify`` (:meth:`curation.publish.reader.Release.verify`) and by the publisher before
it adopts a release that already exists (``curation.publish.release``), so a re-run never re-points
``latest`` at a damaged release. What each check catches is listed in ``docs/releases.md``,
"Verifying a release".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow.parquet as pq

from curation.core.store import Store
from curation.publish.accounting import account
from curation.publish.layout import (
    LATEST_KEY,
    MANIFEST_NAME,
    digest_key,
    manifest_key,
    release_id_of,
    release_prefix,
)


@dataclass(frozen=True)
class Problem:
    """One verification failure."""

    release_id: str
    path: str  # relative to the release folder (or to the store for the digest)
    kind: str  # missing | size | sha256 | unlisted | manifest | rows | accounting | digest | id
    message: str

    def __str__(self) -> str:
        return f"{self.release_id}/{self.path}: {self.kind}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def sha256_hex(data: bytes) -> str:
    """The sha256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def data_files(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The parquet files the manifest lists, each with its ``table``."""
    return [
        {**entry, "table": name}
        for name, info in sorted((manifest.get("tables") or {}).items())
        for entry in info.get("files") or []
    ]


def listed_entries(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every file the manifest lists with its size and sha256: data files, card and charts."""
    return data_files(manifest) + list(manifest.get("assets") or [])


def listed_paths(manifest: Mapping[str, Any]) -> set[str]:
    """Paths (relative to the release folder) of every file the release consists of."""
    return {MANIFEST_NAME, *(entry["path"] for entry in listed_entries(manifest))}


def file_problems(
    store: Store,
    manifest: Mapping[str, Any],
    entries: Iterable[Mapping[str, Any]] | None = None,
    progress: Any = None,
) -> list[Problem]:
    """Listed files (default: all of them) that are missing or whose size or sha256 differs from
    the manifest. Sizes are checked first, so only files of the right size are hashed."""
    rid = str(manifest["release_id"])
    prefix = release_prefix(rid)
    entries = list(listed_entries(manifest) if entries is None else entries)
    problems: list[Problem] = []
    to_hash = []
    for entry in entries:
        try:
            size = store.size(f"{prefix}/{entry['path']}")
        except FileNotFoundError:
            problems.append(Problem(rid, entry["path"], "missing", f"not found in {store.uri}"))
            continue
        if size != int(entry["bytes"]):
            problems.append(
                Problem(rid, entry["path"], "size", f"{size} bytes, manifest says {entry['bytes']}")
            )
            continue
        to_hash.append(entry)
    if progress is not None:
        progress.total = sum(int(e["bytes"]) for e in to_hash)
    for entry in to_hash:
        digest = store.sha256(f"{prefix}/{entry['path']}", progress=progress)
        if digest != entry["sha256"]:
            problems.append(
                Problem(
                    rid,
                    entry["path"],
                    "sha256",
                    f"sha256 {digest[:16]}..., manifest says {entry['sha256'][:16]}...",
                )
            )
    return problems


def unlisted_problems(store: Store, manifest: Mapping[str, Any]) -> list[Problem]:
    """Files in the release folder the manifest does not list (glob readers would see them)."""
    rid = str(manifest["release_id"])
    prefix = release_prefix(rid)
    listed = listed_paths(manifest)
    return [
        Problem(
            rid, key[len(prefix) + 1 :], "unlisted", "in the release folder, not in the manifest"
        )
        for key in store.list(prefix)
        if key[len(prefix) + 1 :] not in listed
    ]


def id_problems(manifest: Mapping[str, Any]) -> list[Problem]:
    """The id recomputed from the manifest's recorded inputs (sources' sha256s, references,
    config, code version, libraries) must be the release's id."""
    rid = str(manifest["release_id"])
    recomputed = release_id_of(manifest)
    if recomputed == rid:
        return []
    return [
        Problem(
            rid,
            MANIFEST_NAME,
            "id",
            f"the inputs recorded in the manifest name release {recomputed}, not {rid} "
            "(sources, references, config, code_version or libraries were edited)",
        )
    ]


def table_count_problems(manifest: Mapping[str, Any]) -> list[Problem]:
    """Within the manifest: each table's rows = the sum of its files' rows = the sum of its
    splits' rows, and each split's rows = the sum of its files' rows."""
    rid = str(manifest["release_id"])
    problems = []
    for name, info in sorted((manifest.get("tables") or {}).items()):
        files = info.get("files") or []
        total = sum(int(f["rows"]) for f in files)
        if total != int(info.get("rows", -1)):
            problems.append(
                Problem(rid, name, "manifest", f"table rows {info.get('rows')} != files {total}")
            )
        splits = info.get("splits") or {}
        for split, rows in splits.items():
            in_files = sum(int(f["rows"]) for f in files if f.get("split") == split)
            if in_files != int(rows):
                problems.append(
                    Problem(
                        rid, f"{name}/{split}", "manifest", f"split rows {rows} != files {in_files}"
                    )
                )
        if splits and sum(int(r) for r in splits.values()) != int(info.get("rows", -1)):
            problems.append(
                Problem(rid, name, "manifest", f"table rows {info.get('rows')} != sum of splits")
            )
    return problems


def parquet_rows(
    store: Store, manifest: Mapping[str, Any], skip: Iterable[str] = ()
) -> tuple[dict[str, int], list[Problem]]:
    """``{path: rows}`` of the listed data files (except ``skip``), read from their parquet
    footers (a small read each), and a problem for each file whose footer cannot be read."""
    rid = str(manifest["release_id"])
    prefix = release_prefix(rid)
    skipped = set(skip)
    rows, problems = {}, []
    for entry in data_files(manifest):
        if entry["path"] in skipped:
            continue
        try:
            with store.open_input(f"{prefix}/{entry['path']}") as handle:
                rows[entry["path"]] = pq.read_metadata(handle).num_rows
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            problems.append(Problem(rid, entry["path"], "rows", f"unreadable footer: {exc}"))
    return rows, problems


def row_problems(
    manifest: Mapping[str, Any], rows: Mapping[str, int], checked: Iterable[str] = ()
) -> list[Problem]:
    """Data files whose row count (from the parquet footer) differs from the manifest; files in
    ``checked`` are skipped (already reported by :func:`file_problems`)."""
    rid = str(manifest["release_id"])
    skip = set(checked)
    return [
        Problem(rid, e["path"], "rows", f"{rows[e['path']]} rows, manifest says {e['rows']}")
        for e in data_files(manifest)
        if e["path"] in rows and e["path"] not in skip and rows[e["path"]] != int(e["rows"])
    ]


def accounting_problems(
    manifest: Mapping[str, Any], rows: Mapping[str, int] | None = None
) -> list[Problem]:
    """read = kept + removed-with-reason + quarantined, recomputed from the files' rows (``rows``
    from :func:`parquet_rows`; default: the manifest's file rows) and the sources' file reports,
    and the identity's figures recorded in the manifest must be those."""
    rid = str(manifest["release_id"])
    tables = manifest.get("tables") or {}
    recorded = (manifest.get("counts") or {}).get("accounting")
    if not recorded or not {"pairs", "removed", "quarantine", "red_team"} <= set(tables):
        return []  # not a pipeline release (a library caller's own tables, no accounting)

    def table_rows(name: str) -> int:
        files = tables[name].get("files") or []
        return sum(int(rows[f["path"]]) if rows else int(f["rows"]) for f in files)

    reports = [
        {
            "dataset": src.get("dataset") or src.get("name"),
            "subset": f.get("subset"),
            "rows_read": int(f.get("rows") or 0),
            "rows_quarantined": int(f.get("rows_quarantined") or 0),
        }
        for src in manifest.get("sources") or []
        for f in src.get("files") or []
    ]
    result = account(
        reports,
        pairs_kept=table_rows("pairs"),
        pairs_removed=table_rows("removed"),
        quarantine_rows=table_rows("quarantine"),
        red_team_rows=table_rows("red_team"),
    )
    problems = [
        Problem(rid, "tables", "accounting", f"{name} does not hold: {_figures(result)}")
        for name, holds in result["identities"].items()
        if not holds
    ]
    for key in ("rows_read", "rows_quarantined", "pairs_kept", "pairs_removed", "red_team_rows"):
        if key in recorded and int(recorded[key]) != result[key]:
            problems.append(
                Problem(
                    rid,
                    MANIFEST_NAME,
                    "accounting",
                    f"counts.accounting.{key} is {recorded[key]}, the files give {result[key]}",
                )
            )
    return problems


def _figures(result: Mapping[str, Any]) -> str:
    keys = ("rows_read", "rows_quarantined", "pairs_emitted", "pairs_kept", "pairs_removed")
    return ", ".join(f"{k}={result[k]}" for k in keys)


def stored_digest(store: Store, release_id: str) -> str | None:
    """The manifest digest recorded beside the release folder (None when there is none)."""
    found = store.get_with_etag(digest_key(release_id))
    return found[0].decode().strip() if found is not None else None


def digest_problems(
    store: Store, release_id: str, manifest_bytes: bytes, pointer: Mapping[str, Any] | None
) -> list[Problem]:
    """The manifest's bytes against the digests recorded where an editor of the release folder
    does not write: ``releases/<id>.sha256`` (create-only) and, when ``latest.json`` names this
    release, its ``manifest_sha256``."""
    actual = sha256_hex(manifest_bytes)
    problems = []
    recorded = stored_digest(store, release_id)
    if recorded is None:
        problems.append(
            Problem(release_id, digest_key(release_id), "digest", "no manifest digest recorded")
        )
    elif recorded != actual:
        problems.append(
            Problem(
                release_id,
                MANIFEST_NAME,
                "digest",
                f"sha256 {actual[:16]}... differs from {digest_key(release_id)} "
                f"({recorded[:16]}...): the manifest was edited",
            )
        )
    if pointer and pointer.get("release_id") == release_id:
        expected = pointer.get("manifest_sha256")
        if expected and expected != actual:
            problems.append(
                Problem(
                    release_id,
                    MANIFEST_NAME,
                    "digest",
                    f"sha256 {actual[:16]}... differs from {LATEST_KEY}'s manifest_sha256 "
                    f"({str(expected)[:16]}...): the manifest was edited",
                )
            )
    return problems


def manifest_bytes(store: Store, release_id: str) -> bytes:
    """The stored bytes of the release's manifest."""
    return store.get(manifest_key(release_id))


def parse_manifest(data: bytes) -> dict[str, Any]:
    """A manifest's bytes as a dict (``ValueError`` if they are not a JSON object)."""
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("manifest is not a JSON object")
    return value
