"""Publishing protocol for versioned parquet releases on an object store.

Layout under the store root (see ``docs/releases.md``)::

    latest.json                                   {"release_id", "sequence", "created_at", ...}
    releases/<release_id>/manifest.json           create-only; its existence makes the release visible
    releases/<release_id>/README.md               dataset card (+ its PNG charts next to it)
    releases/<release_id>/<table>/<split>/part-00000.parquet
    releases/<release_id>/red_team/part-00000.parquet          (tables without a split column)
    releases/<release_id>/trl/<split>/part-00000.parquet       (a view of pairs: ``VIEWS``)

Steps of :func:`publish_release`:

1. ``release_id`` = first 16 hex chars of sha256 over the canonical JSON of the sources' file
   paths + sha256s, the code version and the curation config. If ``releases/<id>/manifest.json``
   already exists the release is complete: status ``'unchanged'``, nothing is rewritten (only the
   ``latest`` pointer is advanced if it is behind, e.g. after a crash before the pointer swap).
2. Data files are written (zstd parquet, at most ``max_rows_per_part`` rows each), then the card
   and charts. None of it is visible: readers only follow manifests.
3. ``manifest.json`` is created with a create-only write (``If-None-Match: *``). If another
   publisher created it first, its files are checked against ours and the result is
   ``'unchanged'``.
4. ``latest.json`` is moved with compare-and-swap (``If-Match: <etag>``), retried on conflict.
   It names the release of the newest run (``run_started_at``): a run on inputs that were
   already published re-points it to that existing release, and a slow run that finishes after
   a newer one leaves it alone. ``sequence`` numbers come from the counter ``sequence.json``
   (compare-and-swap), so they only grow.

The whole publish holds the store's ``publish`` lock (:meth:`Store.lock`), so overlapping runs
publish one after another.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import random
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.core import schema as S
from curation.core.parallel import in_threads
from curation.core.source_file import file_name
from curation.core.stage_table import StageTable
from curation.core.store import Store, StoreError
from curation.core.version import release_libraries
from curation.publish.card import CARD_PAIR_COLUMNS, render_card
from curation.publish.drift import (
    ERROR,
    DriftConfig,
    changes_section,
    compare_releases,
    swapped_pairs,
    worst,
)
from curation.publish.integrity import (
    Problem,
    data_files,
    digest_problems,
    file_problems,
    id_problems,
    listed_paths,
    sha256_hex,
    table_count_problems,
)
from curation.publish.layout import (
    CARD_NAME,
    FORMAT_VERSION,
    ID_LENGTH,
    LATEST_KEY,
    MANIFEST_NAME,
    RELEASES_DIR,
    SEQUENCE_KEY,
    canonical_json,
    compute_release_id,
    digest_key,
    manifest_key,
    pretty_json,
    promotion_key,
    release_id_of,
    release_prefix,
)
from curation.publish.trl import SOURCE_COLUMNS as TRL_SOURCE_COLUMNS
from curation.publish.trl import TRL_PREFERENCE, TRL_VIEW, VIEW_OF, ViewError, trl_preference_view

log = logging.getLogger(__name__)

__all__ = [  # the layout names are re-exported: callers import them from here
    "CARD_NAME",
    "FORMAT_VERSION",
    "ID_LENGTH",
    "LATEST_KEY",
    "MANIFEST_NAME",
    "RELEASES_DIR",
    "SEQUENCE_KEY",
    "PublishResult",
    "ReleaseError",
    "advance_latest",
    "canonical_json",
    "compute_release_id",
    "digest_key",
    "format_created_at",
    "is_held",
    "manifest_key",
    "promote_release",
    "promotion_key",
    "publish_release",
    "read_latest",
    "read_manifest",
    "read_promotion",
    "release_id_of",
    "release_prefix",
    "remove_leftovers",
    "stored_pair_keys",
]

#: Which column each known table is split (and foldered) by; ``None`` = no split level.
DEFAULT_SPLIT_COLUMNS: dict[str, str | None] = {
    "pairs": "split",
    "quarantine": "split",
    "removed": "split",
    "red_team": None,
    TRL_VIEW: "split",
    "paraphrases": "split",
}
KNOWN_SCHEMAS: dict[str, pa.Schema] = {
    "pairs": S.PAIRS,
    "quarantine": S.QUARANTINE,
    "removed": S.REMOVED,
    "red_team": S.RED_TEAM,
    TRL_VIEW: TRL_PREFERENCE,
    "paraphrases": S.PARAPHRASES,
}


@dataclass(frozen=True)
class View:
    """A table every release derives from another of its tables, row for row (same order, same
    splits): written, listed, verified and repaired like the others, never passed in."""

    of: str  # the table it is derived from
    columns: tuple[str, ...]  # the columns of that table it reads
    derive: Callable[[pa.Table], pa.Table]


#: The derived tables of a release: the TRL preference view of the pairs (``curation.publish.trl``).
VIEWS: dict[str, View] = {
    TRL_VIEW: View(VIEW_OF, TRL_SOURCE_COLUMNS, trl_preference_view),
}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ROW_GROUP_ROWS = 64 * 1024
_COPY_BYTES = 8 << 20  # chunk size when storing an encoded part

#: A table to publish: in memory, or a stage table read row group by row group while encoding.
ReleaseTable = pa.Table | StageTable
#: Rows ``[offset, offset + length)`` of a table, conformed to its release schema.
RowReader = Callable[[int, int], pa.Table]


class ReleaseError(RuntimeError):
    """A release could not be published or read; the message names the store and release."""


@dataclass(frozen=True)
class PublishResult:
    release_id: str
    status: str  # 'published' | 'unchanged'
    uri: str  # the release folder
    manifest: dict[str, Any] = field(repr=False)
    latest_moved: bool = False  # whether this call moved latest.json to this release
    #: ``latest`` was not moved to this release: an ERROR drift against the release consumers
    #: had, not (yet) accepted with :func:`promote_release`
    held: bool = False


# ---------------------------------------------------------------------------- ordering


def format_created_at(ts: datetime) -> str:
    """UTC, fixed width (so strings sort like times): ``2026-01-02T03:04:05.678901Z``."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def order_key(manifest: Mapping[str, Any]) -> tuple[int, str, str]:
    """Total order of releases: sequence, then created_at, then release_id."""
    return (
        int(manifest.get("sequence") or 0),
        str(manifest.get("created_at") or ""),
        str(manifest.get("release_id") or ""),
    )


def schema_to_json(schema: pa.Schema) -> list[dict[str, Any]]:
    return [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema]


def schema_to_b64(schema: pa.Schema) -> str:
    """Arrow IPC serialization of ``schema`` (lets readers rebuild empty tables exactly)."""
    return base64.b64encode(schema.remove_metadata().serialize().to_pybytes()).decode()


def schema_from_b64(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


# ---------------------------------------------------------------------------- reading state


def read_json(store: Store, key: str) -> dict[str, Any] | None:
    found = store.get_with_etag(key)
    if found is None:
        return None
    try:
        value = json.loads(found[0])
    except ValueError as exc:
        raise ReleaseError(f"{store.uri}: {key} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ReleaseError(f"{store.uri}: {key} is not a JSON object")
    return value


def read_manifest(store: Store, release_id: str) -> dict[str, Any] | None:
    """The manifest of ``release_id`` or ``None`` if the release is not (completely) published."""
    return read_json(store, manifest_key(release_id))


def read_latest(store: Store) -> dict[str, Any] | None:
    """The parsed ``latest.json`` pointer, or ``None``."""
    return read_json(store, LATEST_KEY)


def previous_release_files(store: Store) -> tuple[str, set[str]] | None:
    """The id of the release ``latest.json`` names and the files present in its sources, or
    ``None`` when the store has no release yet."""
    pointer = read_latest(store)
    if not pointer:
        return None
    manifest = read_manifest(store, pointer["release_id"]) or {}
    present = {
        file_name(source["dataset"], f["path"])
        for source in manifest.get("sources", [])
        for f in source.get("files", [])
        if f.get("present")
    }
    return pointer["release_id"], present


def _pointer(manifest: Mapping[str, Any], run_started_at: str, digest: str) -> dict[str, Any]:
    return {
        "release_id": manifest["release_id"],
        "sequence": manifest["sequence"],
        "created_at": manifest["created_at"],
        "manifest": manifest_key(manifest["release_id"]),
        "manifest_sha256": digest,
        "run_started_at": run_started_at,
    }


def _pointer_time(store: Store, pointer: Mapping[str, Any]) -> str:
    """When the run that set ``pointer`` started; for pointers written before this field
    existed, the creation time of the release it names."""
    if pointer.get("run_started_at"):
        return str(pointer["run_started_at"])
    manifest = read_manifest(store, str(pointer["release_id"]))
    return str((manifest or pointer).get("created_at") or "")


def claim_sequence(store: Store, pointer: Mapping[str, Any] | None) -> int:
    """A new release's sequence number: the counter ``sequence.json`` incremented by
    compare-and-swap, so numbers only grow and are never handed out twice, even when ``latest``
    is re-pointed at an older release or a publish crashed after its manifest. (Stores written
    before the counter existed continue from the release ``latest`` names.)"""
    for _ in range(100):
        found = store.get_with_etag(SEQUENCE_KEY)
        last, etag = 0, None
        if found is not None:
            last, etag = int(json.loads(found[0])["last"]), found[1]
        elif pointer is not None:
            manifest = read_manifest(store, str(pointer.get("release_id"))) or {}
            last = int(manifest.get("sequence") or pointer.get("sequence") or 0)
        if store.compare_and_swap(SEQUENCE_KEY, pretty_json({"last": last + 1}), etag):
            return last + 1
        time.sleep(random.uniform(0.005, 0.05))
    raise ReleaseError(f"{store.uri}: could not claim a sequence number ({SEQUENCE_KEY})")


def advance_latest(
    store: Store,
    manifest: Mapping[str, Any],
    run_started_at: str | None = None,
    *,
    max_attempts: int = 100,
) -> bool:
    """Point ``latest.json`` at ``manifest``'s release for a run that started at
    ``run_started_at`` (fixed-width UTC, see :func:`format_created_at`; default: the release's
    ``created_at``), unless the pointer was set by a run that started later.

    ``latest`` thus names the release of the newest run's inputs, even when that release already
    existed (a run on unchanged inputs re-points it); a slow run that finishes after a newer one
    leaves it alone. Compare-and-swap on the ETag just read; on conflict re-read and retry.
    Returns whether the pointer now names this release and did not before. The pointer records
    the sha256 of the manifest's stored bytes (``manifest_sha256``), which ``verify`` checks.
    """
    started = run_started_at or str(manifest["created_at"])
    digest = sha256_hex(store.get(manifest_key(manifest["release_id"])))
    for attempt in range(max_attempts):
        found = store.get_with_etag(LATEST_KEY)
        etag, current = None, None
        if found is not None:
            data, etag = found
            try:
                current = json.loads(data)
                current_id = current["release_id"]
            except (ValueError, KeyError, TypeError):
                current = None
                log.warning("%s: %s is unreadable; replacing it", store.uri, LATEST_KEY)
            if current is not None:
                if read_manifest(store, current_id) is None:
                    log.warning(
                        "%s: latest points at %s which has no manifest", store.uri, current_id
                    )
                elif (set_at := _pointer_time(store, current)) > started or (
                    set_at == started and current_id == manifest["release_id"]
                ):
                    log.info("%s: latest stays on %s (set by a newer run)", store.uri, current_id)
                    return False
        new = _pointer(manifest, started, digest)
        if store.compare_and_swap(LATEST_KEY, pretty_json(new), etag):
            log.info(
                "%s: latest -> %s (sequence %s)", store.uri, new["release_id"], new["sequence"]
            )
            return current is None or current.get("release_id") != new["release_id"]
        time.sleep(min(0.5, 0.005 * (2 ** min(attempt, 6))) * random.uniform(0.5, 1.5))
    raise ReleaseError(
        f"{store.uri}: could not move {LATEST_KEY} to {manifest['release_id']} after "
        f"{max_attempts} attempts"
    )


# ---------------------------------------------------------------------------- writing


#: Folder of the rows whose split is null (the red-team quarantine rows). Not ``_null``: pandas,
#: pyarrow datasets and Spark skip folders starting with ``_`` or ``.``, so their readers would
#: silently miss those rows.
NULL_SPLIT_DIR = S.NO_SPLIT


def _safe_dir(value: Any) -> str:
    """The folder of a split value: every reader must see it (never starts with ``_`` or ``.``)."""
    if value is None:
        return NULL_SPLIT_DIR
    text = re.sub(r"[^A-Za-z0-9._=-]", "_", str(value))
    return text if text and text[0] not in "._" else f"split{text}"


def with_views(tables: Mapping[str, ReleaseTable]) -> dict[str, ReleaseTable]:
    """``tables`` and, for each :data:`VIEWS` entry whose source table is there, the source
    table under the view's name (:func:`_conform` derives the view's rows from it)."""
    out = dict(tables)
    for name, view in VIEWS.items():
        if name in tables:
            raise ReleaseError(f"table {name!r} is derived from {view.of!r}; it cannot be given")
        if view.of in tables:
            out[name] = tables[view.of]
    return out


def _source_columns(name: str, schema: pa.Schema) -> list[str]:
    """The columns of a stage table that table ``name`` is written from."""
    if name in VIEWS:
        return list(VIEWS[name].columns)
    expected = KNOWN_SCHEMAS.get(name)
    return schema.names if expected is None else expected.names


def _conform(name: str, table: pa.Table) -> pa.Table:
    """``table`` with its release schema; for a view, the view's rows derived from its source
    table's rows."""
    view = VIEWS.get(name)
    if view is not None:
        try:
            table = view.derive(table)
        except (ViewError, pa.ArrowException) as exc:
            raise ReleaseError(f"table {name!r} (a view of {view.of!r}): {exc}") from exc
    expected = KNOWN_SCHEMAS.get(name)
    if expected is None or table.schema.equals(expected, check_metadata=False):
        return table.replace_schema_metadata(None)
    missing = [f.name for f in expected if f.name not in table.column_names]
    if missing:
        raise ReleaseError(f"table {name!r} lacks columns {missing} of its schema")
    try:
        return table.select(expected.names).cast(expected)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ReleaseError(f"table {name!r} does not conform to its schema: {exc}") from exc


def _split_slices(table: pa.Table, split_col: str | None) -> list[tuple[str | None, pa.Table]]:
    """The table's rows per split value (sorted; ``None`` last).

    When every split value occupies one contiguous run of rows (the pipeline orders pairs by
    split), the parts are zero-copy slices; otherwise each split is filtered out (a copy).
    """
    if split_col is None:
        return [(None, table)]
    col = table.column(split_col)
    values = _split_values(col)
    runs = _contiguous_runs(col)
    out = []
    for value in values:
        if runs is not None:
            start, stop = runs[value]
            out.append((_safe_dir(value), table.slice(start, stop - start)))
            continue
        mask = pc.is_null(col) if value is None else pc.fill_null(pc.equal(col, value), False)
        out.append((_safe_dir(value), table.filter(mask)))
    return out


def _split_values(col: pa.ChunkedArray) -> list[Any]:
    """The distinct split values (sorted; ``None`` last); their folders must be distinct."""
    values = sorted(pc.unique(col).to_pylist(), key=lambda v: (v is None, str(v)))
    folders = [_safe_dir(v) for v in values]
    if len(set(folders)) != len(folders):
        raise ReleaseError(f"split values {values} do not map to distinct folders {folders}")
    return values


class _StageRows:
    """A stage table's rows read on demand (record batches by position), conformed to the
    table's release schema: encoding a part reads one row group of it at a time.

    A range of rows is built from the stored record batches it overlaps and sliced, so its
    chunks are exactly those of the same slice of the whole (memory-mapped) table: parquet
    files come out byte-identical to those written from the whole table.
    """

    def __init__(self, name: str, stage: StageTable) -> None:
        self.name, self.stage = name, stage
        self.schema = _conform(name, stage.schema.empty_table()).schema  # checks it conforms
        names = _source_columns(name, stage.schema)
        self._columns = sorted(names, key=stage.schema.get_field_index)  # in file order
        self._starts = np.concatenate([[0], np.cumsum(stage.batch_rows, dtype=np.int64)])
        self.num_rows = int(self._starts[-1])

    def read(self, offset: int, length: int) -> pa.Table:
        """Rows ``[offset, offset + length)``, read now into memory."""
        ends, starts = self._starts[1:], self._starts[:-1]
        first = int(np.searchsorted(ends, offset, side="right"))  # first batch ending after offset
        last = int(np.searchsorted(starts, offset + length, side="left"))  # batches starting before
        if length <= 0 or first >= last:
            schema = pa.schema([self.stage.schema.field(c) for c in self._columns])
            return _conform(self.name, schema.empty_table())
        # one mapping per range (StageTable.read_batches): its pages leave the RSS with it
        rows = self.stage.read_batches(first, last, self._columns)
        return _conform(self.name, rows).slice(offset - int(starts[first]), length)

    def column(self, name: str) -> pa.ChunkedArray:
        """One column of every row, read now."""
        return self.stage.column(name)


def _split_readers(
    name: str, table: ReleaseTable, split_col: str | None
) -> tuple[pa.Schema, int, list[tuple[str | None, int, RowReader]]]:
    """``(schema, rows, [(split folder, rows, reader)])`` of a table conformed to its schema.

    A stage table is read lazily when its split values are contiguous runs of rows (as the
    pipeline writes them); otherwise (and for in-memory tables) see :func:`_split_slices`.
    """
    if isinstance(table, StageTable):
        rows = _StageRows(name, table)
        col = None if split_col is None else rows.column(split_col)
        runs = None if col is None else _contiguous_runs(col)
        if split_col is None:
            return rows.schema, rows.num_rows, [(None, rows.num_rows, rows.read)]
        if runs is not None:
            readers = []
            for value in _split_values(col):
                start, stop = runs[value]
                readers.append((_safe_dir(value), stop - start, _offset_reader(rows.read, start)))
            return rows.schema, rows.num_rows, readers
        table = table.read_all()  # scattered splits: filtered copies, as for in-memory tables
    conformed = _conform(name, table)
    slices = _split_slices(conformed, split_col)
    return (
        conformed.schema,
        conformed.num_rows,
        [(split, sub.num_rows, sub.slice) for split, sub in slices],
    )


def _offset_reader(read: RowReader, start: int) -> RowReader:
    """``read`` shifted by ``start`` rows (the reader of one split's run of rows)."""
    return lambda offset, length: read(start + offset, length)


def _contiguous_runs(col: pa.ChunkedArray) -> dict[Any, tuple[int, int]] | None:
    """``value -> (start, stop)`` when each value of ``col`` forms one run of rows, else None."""
    runs: dict[Any, tuple[int, int]] = {}
    base = 0
    for chunk in col.chunks:
        if len(chunk) == 0:
            continue
        encoded = pc.run_end_encode(chunk)
        previous = 0
        for value, end in zip(
            encoded.values.to_pylist(), encoded.run_ends.to_pylist(), strict=True
        ):
            start, stop = base + previous, base + end
            previous = end
            if value in runs:
                first, last = runs[value]
                if last != start:
                    return None
                start = first
            runs[value] = (start, stop)
        base += len(chunk)
    return runs


def _encode(sink: Any, schema: pa.Schema, num_rows: int, read: RowReader) -> None:
    """Write one release data file to ``sink``, reading one row group at a time.

    The same bytes as ``pq.write_table(rows, row_group_size=_ROW_GROUP_ROWS)`` on the whole
    part: that call writes each row group from the same slice of the table.
    """
    with pq.ParquetWriter(
        sink, schema, compression="zstd", write_statistics=True, write_page_checksum=True
    ) as writer:
        for start in range(0, max(num_rows, 1), _ROW_GROUP_ROWS):
            rows = read(start, min(_ROW_GROUP_ROWS, num_rows - start))
            writer.write_table(rows, row_group_size=_ROW_GROUP_ROWS)
            del rows


def _encode_to_file(schema: pa.Schema, num_rows: int, read: RowReader, folder: str) -> str:
    """One release data file encoded into a new file in the local ``folder`` (its name):
    encoded parts waiting to be stored wait in the page cache, not in the process's memory."""
    fd, name = tempfile.mkstemp(prefix="part-", suffix=".parquet", dir=folder)
    os.close(fd)
    try:
        with pa.OSFile(name, "wb") as sink:
            _encode(sink, schema, num_rows, read)
    except BaseException:
        os.unlink(name)
        raise
    return name


def _write_part(store: Store, key: str, data: str) -> tuple[int, str]:
    """Store one data file from the local file ``data`` (deleted afterwards); returns its size
    and sha256."""
    digest, size = hashlib.sha256(), 0
    try:
        with open(data, "rb") as source, store.open_output(key) as raw:
            while chunk := source.read(_COPY_BYTES):
                raw.write(chunk)
                digest.update(chunk)
                size += len(chunk)
    finally:
        os.unlink(data)
    return size, digest.hexdigest()


def _write_table(
    store: Store,
    release_id: str,
    name: str,
    table: ReleaseTable,
    split_col: str | None,
    max_rows: int,
    abort_if_published: Callable[[], None],
    workers: int = 1,
    only: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Write one table's parts. Parts are encoded on ``workers`` threads (zstd dominates and
    releases the GIL) and stored one after another in order, so the store sees the same writes
    in the same order whatever the thread count. A part reads its rows one row group at a time
    (a :class:`StageTable` is never read whole).

    ``only``: repair mode, ``{path: sha256}`` of the parts to rewrite (the rest are not encoded);
    a part is stored only if its new bytes have the manifest's sha256, else ``ReleaseError``.
    """
    files: list[dict[str, Any]] = []
    splits: dict[str, int] = {}
    jobs: list[tuple[str | None, str, int, RowReader]] = []
    try:
        schema, num_rows, readers = _split_readers(name, table, split_col)
    except ReleaseError as exc:
        raise ReleaseError(f"{store.uri}: release {release_id}: {exc}") from exc
    for split, rows, read in readers:
        folder = name if split is None else f"{name}/{split}"
        if split is not None:
            splits[split] = rows
        for i, start in enumerate(range(0, rows, max_rows)):
            if only is not None and f"{folder}/part-{i:05d}.parquet" not in only:
                continue
            jobs.append(
                (
                    split,
                    f"{folder}/part-{i:05d}.parquet",
                    min(max_rows, rows - start),
                    _offset_reader(read, start),
                )
            )

    # encoded parts wait in local files (page cache), not in memory; whatever an aborted
    # publish leaves there goes with the folder
    with tempfile.TemporaryDirectory(prefix="release-parts-", ignore_cleanup_errors=True) as tmp:

        def encode(job: tuple[str | None, str, int, RowReader]) -> str | Exception:
            try:
                return _encode_to_file(schema, job[2], job[3], tmp)
            except Exception as exc:  # reported in order, like a failed write
                return exc

        for (split, rel, part_rows, _read), data in in_threads(encode, jobs, workers):
            abort_if_published()
            try:
                if isinstance(data, Exception):
                    raise data
                if only is not None:
                    _check_repair(store, release_id, rel, data, only[rel])
                nbytes, digest = _write_part(store, f"{release_prefix(release_id)}/{rel}", data)
            except StoreError:
                raise
            except Exception as exc:
                raise ReleaseError(
                    f"{store.uri}: release {release_id}: writing {rel} failed: {exc}"
                ) from exc
            files.append(
                {"path": rel, "split": split, "rows": part_rows, "bytes": nbytes, "sha256": digest}
            )
    entry = {
        "schema": schema_to_json(schema),
        "arrow_schema": schema_to_b64(schema),
        "split_column": split_col,
        "rows": num_rows,
        "splits": splits,
        "files": files,
    }
    return entry | ({"view_of": VIEWS[name].of} if name in VIEWS else {})


class _AlreadyPublished(Exception):
    pass


def _check_repair(store: Store, release_id: str, rel: str, data: str, expected: str) -> None:
    """A re-encoded part may replace a damaged one only if it has the manifest's bytes."""
    digest = hashlib.sha256()
    with open(data, "rb") as handle:
        while chunk := handle.read(_COPY_BYTES):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        os.unlink(data)
        raise ReleaseError(
            f"{store.uri}: release {release_id}: {rel} is damaged and re-encoding it gives other "
            f"bytes (sha256 {digest.hexdigest()[:16]}..., manifest {expected[:16]}...); "
            "cannot repair it: delete the release folder to republish it"
        )


#: The per-pair keys the next release counts swapped pairs with (``curation.publish.profile``); the
#: leading ``_`` keeps it out of every reader's glob of the release folder.
PAIR_KEYS_ASSET = "_profile/pair_keys.parquet"


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", write_page_checksum=True)
    return sink.getvalue().to_pybytes()


def _write_assets(
    store: Store,
    release_id: str,
    card: str,
    charts: Mapping[str, bytes],
    keys: pa.Table | None = None,
) -> list[dict[str, Any]]:
    files = [(CARD_NAME, card.encode(), "text/markdown")]
    files += [(name, png, "image/png") for name, png in sorted(charts.items())]
    if keys is not None:
        files.append((PAIR_KEYS_ASSET, _parquet_bytes(keys), "application/vnd.apache.parquet"))
    assets = []
    for rel, data, media in files:
        store.put(f"{release_prefix(release_id)}/{rel}", data)
        assets.append(
            {
                "path": rel,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "media_type": media,
            }
        )
    return assets


def card_tables(tables: Mapping[str, ReleaseTable]) -> dict[str, pa.Table]:
    """The tables the dataset card is rendered from: a stage table as the columns the card reads
    (:data:`CARD_PAIR_COLUMNS` for ``pairs``; all columns of the other, small, tables)."""
    out = {}
    for name, table in tables.items():
        if name in VIEWS:  # the card reads the tables a view is derived from
            continue
        if isinstance(table, StageTable):
            wanted = CARD_PAIR_COLUMNS if name == "pairs" else table.column_names
            table = table.select([c for c in table.column_names if c in wanted])
        out[name] = table
    return out


def _card_for(
    manifest: Mapping[str, Any], tables: Mapping[str, ReleaseTable], store: Store
) -> tuple[str, dict[str, bytes]]:
    body = {k: v for k, v in manifest.items() if k != "assets"}
    base_uri = store.url(release_prefix(manifest["release_id"]))
    return render_card(body, card_tables(tables), base_uri=base_uri)


def repair_assets(
    store: Store, manifest: Mapping[str, Any], tables: Mapping[str, ReleaseTable] | None
) -> list[str]:
    """Rewrite card/charts whose bytes differ from the manifest (e.g. overwritten by a racing
    publisher of the same release). Cards render deterministically from the manifest, so this
    reproduces the listed bytes. Returns the repaired paths."""
    listed = manifest.get("assets") or []
    if not listed or tables is None:
        return []
    prefix = release_prefix(manifest["release_id"])
    bad = []
    for asset in listed:
        found = store.get_with_etag(f"{prefix}/{asset['path']}")
        if found is None or hashlib.sha256(found[0]).hexdigest() != asset["sha256"]:
            bad.append(asset)
    if not bad:
        return []
    card, charts = _card_for(manifest, tables, store)
    rendered = {CARD_NAME: card.encode(), **charts}
    repaired = []
    for asset in bad:
        data = rendered.get(asset["path"])
        if data is not None and hashlib.sha256(data).hexdigest() == asset["sha256"]:
            store.put(f"{prefix}/{asset['path']}", data)
            repaired.append(asset["path"])
        else:
            log.warning(
                "%s: release %s: cannot reproduce asset %s",
                store.uri,
                manifest["release_id"],
                asset["path"],
            )
    return repaired


def remove_unlisted(store: Store, manifest: Mapping[str, Any]) -> list[str]:
    """Delete files in the release folder that the manifest does not list (leftovers of an
    earlier crashed attempt, e.g. with another part size), so glob-based readers see exactly the
    manifest's files. Only called once the manifest exists. Returns the deleted keys."""
    prefix = release_prefix(manifest["release_id"])
    listed = listed_paths(manifest)
    stale = [k for k in store.list(prefix) if k[len(prefix) + 1 :] not in listed]
    for key in stale:
        log.warning(
            "%s: removing %s (not in the manifest of %s)", store.uri, key, manifest["release_id"]
        )
        store.delete(key)
    return stale


def _check_same_release(
    store: Store,
    ours: Mapping[str, Any],
    theirs: Mapping[str, Any],
    tables: Mapping[str, ReleaseTable],
) -> None:
    """After losing the create-only race: the winner's files must match what we computed."""
    rid = ours["release_id"]
    mine = {
        (t, f["path"]): f["sha256"] for t, info in ours["tables"].items() for f in info["files"]
    }
    winner = {
        (t, f["path"]): f["sha256"]
        for t, info in theirs.get("tables", {}).items()
        for f in info["files"]
    }
    if mine != winner:
        # We may have overwritten the winner's data files with different bytes: check the store.
        prefix = release_prefix(rid)
        broken = [
            path
            for (_t, path), digest in winner.items()
            if not store.exists(f"{prefix}/{path}") or store.sha256(f"{prefix}/{path}") != digest
        ]
        if broken:
            raise ReleaseError(
                f"{store.uri}: release {rid} was published concurrently with different data "
                f"(non-deterministic inputs?); files no longer match its manifest: {broken[:5]}"
            )
    repair_assets(store, theirs, tables)


def publish_release(
    store: Store | str,
    tables: Mapping[str, ReleaseTable],
    *,
    storage_options: Mapping[str, Any] | None = None,
    lock_timeout: float = 1800.0,
    lock: bool = True,
    **options: Any,
) -> PublishResult:
    """Publish ``tables`` as a release (see the module docstring for the protocol).

    Keyword options are those of :func:`_publish`. The whole publish holds the store's
    ``publish`` lock (``Store.lock``: an OS file lock locally, a conditional-write lease on S3),
    so overlapping runs publish one after another; the create-only manifest and the
    compare-and-swap pointer keep the store consistent even for writers that bypass it
    (``lock=False``: tests of the lock-free protocol, which simulate such writers).
    """
    store = Store.of(store, storage_options)
    if not lock:
        return _publish(store, tables, **options)
    with store.lock("publish", timeout=lock_timeout):
        remove_leftovers(store)
        return _publish(store, tables, **options)


def remove_leftovers(store: Store) -> list[str]:
    """Delete what killed publishers left: release folders without a manifest and temporary
    files. Only call while holding the store's ``publish`` lock (no publish is then in
    progress; a re-run of a killed publish rewrites its files anyway). Returns what was deleted.
    """
    removed = store.clean_temp()
    for release_id in store.list_dirs(RELEASES_DIR):
        if not store.exists(manifest_key(release_id)):
            log.warning("%s: removing release folder %s (no manifest)", store.uri, release_id)
            store.delete_prefix(release_prefix(release_id))
            removed.append(release_prefix(release_id))
    for name in store.list_files(RELEASES_DIR):  # digests and promotions of pruned releases
        release_id = name.split(".", 1)[0]
        if name.endswith((".sha256", ".promotion.json")) and not store.exists(
            manifest_key(release_id)
        ):
            store.delete(f"{RELEASES_DIR}/{name}")
            removed.append(f"{RELEASES_DIR}/{name}")
    return removed


def _split_column_of(
    store: Store,
    release_id: str,
    name: str,
    table: ReleaseTable,
    split_cols: Mapping[str, str | None],
) -> str | None:
    """The column ``name``'s files are split by (``None``: no split level); checks the schema."""
    try:
        schema = _conform(name, table.schema.empty_table()).schema
    except ReleaseError as exc:
        raise ReleaseError(f"{store.uri}: release {release_id}: {exc}") from exc
    col = split_cols.get(name, "split" if "split" in schema.names else None)
    if col is not None and col not in schema.names:
        raise ReleaseError(
            f"{store.uri}: release {release_id}: table {name!r} has no split column {col!r}"
        )
    return col


def _new_manifest(store: Store, fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` plus the parent release and the next sequence number, normalised through JSON
    (tuples -> lists, ...) so the card is rendered from exactly what readers will see."""
    try:
        parent = read_latest(store)
    except ReleaseError as exc:  # garbage pointer: publish as if there were none
        log.warning("%s", exc)
        parent = None
    manifest = {
        "format_version": fields["format_version"],
        "release_id": fields["release_id"],
        "parent_release_id": parent["release_id"] if parent else None,
        "sequence": claim_sequence(store, parent),
        **{k: v for k, v in fields.items() if k not in ("format_version", "release_id")},
    }
    return json.loads(pretty_json(manifest))


def _with_changes(
    store: Store,
    manifest: dict[str, Any],
    profile: dict[str, Any],
    config: DriftConfig | None,
    allowed_missing: tuple[str, ...],
    keys: pa.Table | None = None,
) -> dict[str, Any]:
    """``manifest`` with its ``profile``, the release it is compared with (``previous_release``:
    the one ``latest`` named, i.e. consumers had), that release's acceptance if it was promoted,
    and the ``changes`` (:func:`curation.publish.drift.compare_releases`); ``changes.held`` when an
    ERROR drift keeps ``latest`` where it is."""
    previous_id = manifest.get("parent_release_id")
    try:
        previous = read_manifest(store, previous_id) if previous_id else None
    except ReleaseError as exc:  # an unreadable previous manifest: compare with nothing
        log.warning("%s", exc)
        previous = None
    body = {**manifest, "profile": profile}
    old_keys = stored_pair_keys(store, previous) if previous is not None else None
    swaps = swapped_pairs(old_keys, keys) if old_keys is not None and keys is not None else None
    results = compare_releases(previous, body, config, allowed_missing, swaps)
    held = previous is not None and worst(results) == ERROR
    body["previous_release"] = previous_id if previous is not None else None
    body["previous_promotion"] = read_promotion(store, previous_id) if previous_id else None
    body["changes"] = changes_section(previous, body, results, held)
    return json.loads(pretty_json(body))


def stored_pair_keys(store: Store, manifest: Mapping[str, Any]) -> pa.Table | None:
    """The pair keys a release stored (None for releases published before they existed, or
    whose keys cannot be read: the swap count is then skipped, not guessed)."""
    if not any(a["path"] == PAIR_KEYS_ASSET for a in manifest.get("assets") or []):
        return None
    try:
        with store.open_input(f"{release_prefix(manifest['release_id'])}/{PAIR_KEYS_ASSET}") as fh:
            return pq.read_table(fh, page_checksum_verification=True)
    except (OSError, pa.ArrowException) as exc:
        log.warning("%s: pair keys of %s unreadable: %s", store.uri, manifest["release_id"], exc)
        return None


def read_promotion(store: Store | str, release_id: str) -> dict[str, Any] | None:
    """The record of who accepted the held release ``release_id`` (None if nobody did)."""
    return read_json(Store.of(store), promotion_key(release_id))


def is_held(store: Store, manifest: Mapping[str, Any]) -> bool:
    """Whether ``latest`` may not name this release: it was held (ERROR drift) and not
    promoted since."""
    held = bool((manifest.get("changes") or {}).get("held"))
    return held and read_promotion(store, str(manifest["release_id"])) is None


def _point_at(store: Store, manifest: Mapping[str, Any], started: str | None) -> tuple[bool, bool]:
    """Move ``latest`` to ``manifest``'s release unless it is held: ``(moved, held)``."""
    if is_held(store, manifest):
        log.warning(
            "%s: release %s is held (ERROR drift against %s); latest stays",
            store.uri,
            manifest["release_id"],
            (manifest.get("changes") or {}).get("previous_release"),
        )
        return False, True
    return advance_latest(store, manifest, started), False


def promote_release(
    store: Store | str,
    release_id: str,
    *,
    by: str,
    reason: str,
    storage_options: Mapping[str, Any] | None = None,
    clock: Callable[[], datetime] | None = None,
) -> dict[str, Any]:
    """Accept a held release: record who accepted it, when and why (create-only
    ``releases/<id>.promotion.json``, which the next release's manifest quotes as
    ``previous_promotion``) and point ``latest`` at it. Returns the record."""
    store = Store.of(store, storage_options)
    if not reason.strip() or not by.strip():
        raise ReleaseError("a promotion needs who accepts it (--by) and why (--reason)")
    with store.lock("publish"):
        manifest = read_manifest(store, release_id)
        if manifest is None:
            raise ReleaseError(f"{store.uri}: no published release {release_id!r}")
        now = format_created_at((clock or (lambda: datetime.now(UTC)))())
        pointer = read_latest(store)
        record = {
            "release_id": release_id,
            "by": by,
            "reason": reason,
            "at": now,
            "latest_before": pointer.get("release_id") if pointer else None,
            "changes": (manifest.get("changes") or {}).get("severity"),
        }
        if not store.put_if_absent(promotion_key(release_id), pretty_json(record)):
            record = read_promotion(store, release_id) or record
        advance_latest(store, manifest, now)
    return record


def _adopt_concurrent_release(
    store: Store,
    release_id: str,
    manifest: dict[str, Any] | None,
    tables: Mapping[str, ReleaseTable],
    started: str | None,
) -> PublishResult:
    """Another publisher created the manifest first: check (or repair) it and report unchanged."""
    winner = read_manifest(store, release_id)
    if winner is None:
        raise ReleaseError(
            f"{store.uri}: release {release_id}: manifest create failed but no manifest exists"
        )
    if manifest is not None:
        _check_same_release(store, manifest, winner, tables)
    else:
        repair_assets(store, winner, tables)
    _record_digest(store, winner)
    remove_unlisted(store, winner)
    log.info(
        "%s: release %s was published concurrently; reporting unchanged", store.uri, release_id
    )
    moved, held = _point_at(store, winner, started)
    return PublishResult(
        release_id, "unchanged", store.url(release_prefix(release_id)), winner, moved, held
    )


def _record_digest(store: Store, manifest: Mapping[str, Any]) -> None:
    """Create ``releases/<id>.sha256`` if the publisher that created the manifest died before
    writing it (the manifest is checked first: its id must recompute, its counts add up)."""
    rid = str(manifest["release_id"])
    if store.exists(digest_key(rid)):
        return
    problems = id_problems(manifest) + table_count_problems(manifest)
    if problems:
        raise ReleaseError(f"{store.uri}: release {rid}: {'; '.join(map(str, problems))}")
    digest = sha256_hex(store.get(manifest_key(rid)))
    store.put_if_absent(digest_key(rid), digest.encode() + b"\n")
    log.warning("%s: release %s had no manifest digest; recorded %s", store.uri, rid, digest)


def _check_existing(
    store: Store,
    existing: Mapping[str, Any],
    tables: Mapping[str, ReleaseTable],
    counts: Mapping[str, Any],
) -> None:
    """Before a run adopts a release that already exists: its manifest is the one published
    (digests), names itself (id), and describes the tables this run computed (rows, counts).
    A mismatch is an error naming what differs, never a silent re-point of ``latest``."""
    rid = str(existing["release_id"])
    _record_digest(store, existing)
    raw = store.get(manifest_key(rid))
    problems = digest_problems(store, rid, raw, read_latest(store)) + id_problems(existing)
    theirs = {name: int(info.get("rows", -1)) for name, info in existing.get("tables", {}).items()}
    ours = {name: table.num_rows for name, table in tables.items()}
    if theirs != ours:
        problems.append(
            Problem(
                rid, MANIFEST_NAME, "rows", f"this run computed {ours}, the release has {theirs}"
            )
        )
    if canonical_json(existing.get("counts") or {}) != canonical_json(
        json.loads(pretty_json(counts))
    ):
        problems.append(
            Problem(rid, MANIFEST_NAME, "counts", "this run's counts differ from the release's")
        )
    if problems:
        raise ReleaseError(
            f"{store.uri}: release {rid} exists but cannot be adopted by this run (an input the "
            f"release id does not cover, or an edited release): {'; '.join(map(str, problems))}"
        )


def _repair_data(
    store: Store,
    existing: Mapping[str, Any],
    tables: Mapping[str, ReleaseTable],
    split_cols: Mapping[str, str | None],
    max_rows: int,
    workers: int,
) -> list[str]:
    """Check every data file of an existing release (size, then sha256); re-encode the damaged
    or missing ones from this run's tables, storing each only if it has the manifest's bytes.
    Returns the repaired paths; a file that cannot be repaired is a ``ReleaseError`` naming it."""
    rid = str(existing["release_id"])
    damaged = file_problems(store, existing, data_files(existing))
    if not damaged:
        return []
    log.warning("%s: release %s is damaged: %s", store.uri, rid, "; ".join(map(str, damaged)))
    expected = {f["path"]: f["sha256"] for f in data_files(existing)}
    by_table: dict[str, dict[str, str]] = {}
    for problem in damaged:
        table = next(f["table"] for f in data_files(existing) if f["path"] == problem.path)
        by_table.setdefault(table, {})[problem.path] = expected[problem.path]
    for name, only in sorted(by_table.items()):
        _write_table(
            store,
            rid,
            name,
            tables[name],
            _split_column_of(store, rid, name, tables[name], split_cols),
            max_rows,
            lambda: None,
            workers,
            only=only,
        )
    still = file_problems(store, existing, data_files(existing))
    if still:
        raise ReleaseError(
            f"{store.uri}: release {rid}: could not repair {', '.join(p.path for p in still)}"
        )
    repaired = sorted(p.path for p in damaged)
    log.warning("%s: release %s: repaired %s", store.uri, rid, ", ".join(repaired))
    return repaired


def _publish(
    store: Store,
    tables: Mapping[str, ReleaseTable],
    *,
    sources: list[dict[str, Any]],
    config: dict[str, Any],
    code_version: str,
    counts: dict[str, Any],
    checks: dict[str, Any],
    references: list[dict[str, Any]] | None = None,
    libraries: Mapping[str, str] | None = None,
    profile: dict[str, Any] | None = None,
    pair_keys: pa.Table | None = None,
    drift: DriftConfig | None = None,
    allowed_missing: tuple[str, ...] = (),
    split_column: Mapping[str, str | None] | None = None,
    max_rows_per_part: int = 100_000,
    clock: Callable[[], datetime] | None = None,
    write_threads: int = 0,
    run_started_at: datetime | None = None,
) -> PublishResult:
    """The publish protocol, run under the store's publish lock.

    ``split_column`` maps table name -> column to split by (``None``: no split level); it
    defaults to :data:`DEFAULT_SPLIT_COLUMNS`, and to ``'split'`` for other tables that have it.
    ``references``: the extra reference files decontamination read (``name``, ``field``,
    ``sha256``, ...); ``libraries``: library versions that encode the output (default:
    :func:`curation.core.version.release_libraries`). Both are recorded and hashed into the id.
    ``profile``: the release's profile (:func:`curation.publish.profile.profile_release`); given, the
    release is compared with the one ``latest`` names (``drift`` thresholds, ``allowed_missing``
    file globs that may vanish) and an ERROR keeps ``latest`` where it is (``held``);
    ``pair_keys`` (:func:`curation.publish.profile.pair_keys`) are stored with the release and compared
    with the previous release's to count swapped pairs.
    ``clock`` returns the current time (tests inject it); naive datetimes are taken as UTC.
    ``write_threads``: threads encoding data files (0: one per CPU).
    ``run_started_at``: when the run that computed ``tables`` started (it read its inputs after
    that); ``latest.json`` names the release of the run that started last (default: the
    release's ``created_at``, i.e. publishes order by time).
    """
    workers = write_threads or os.cpu_count() or 1
    if max_rows_per_part < 1:
        raise ValueError("max_rows_per_part must be >= 1")
    clock = clock or (lambda: datetime.now(UTC))
    references = list(references or [])
    libraries = dict(release_libraries() if libraries is None else libraries)
    release_id = compute_release_id(sources, config, code_version, references, libraries)
    started = format_created_at(run_started_at) if run_started_at else None
    prefix = release_prefix(release_id)
    uri = store.url(prefix)
    for name in tables:
        if not _NAME_RE.match(name):
            raise ReleaseError(f"invalid table name {name!r}")
    split_cols = dict(DEFAULT_SPLIT_COLUMNS)
    split_cols.update(split_column or {})
    for view_name, view in VIEWS.items():  # a view has the splits of its source table
        split_cols[view_name] = split_cols.get(view.of, split_cols.get(view_name))
    tables = with_views(tables)

    existing = read_manifest(store, release_id)
    if existing is not None:
        log.info("%s: release %s already published; checking it", store.uri, release_id)
        _check_existing(store, existing, tables, counts)
        _repair_data(store, existing, tables, split_cols, max_rows_per_part, workers)
        repair_assets(store, existing, tables)
        remove_unlisted(store, existing)
        moved, held = _point_at(store, existing, started)
        return PublishResult(release_id, "unchanged", uri, existing, moved, held)

    def abort_if_published() -> None:
        if store.exists(manifest_key(release_id)):
            raise _AlreadyPublished

    try:
        table_entries = {
            name: _write_table(
                store,
                release_id,
                name,
                tables[name],
                _split_column_of(store, release_id, name, tables[name], split_cols),
                max_rows_per_part,
                abort_if_published,
                workers,
            )
            for name in sorted(tables)
        }
        manifest = _new_manifest(
            store,
            {
                "format_version": FORMAT_VERSION,
                "release_id": release_id,
                "created_at": format_created_at(clock()),
                "code_version": code_version,
                "config": config,
                "sources": sources,
                "references": references,
                "libraries": libraries,
                "tables": table_entries,
                "counts": counts,
                "checks": checks,
            },
        )
        if profile is not None:
            manifest = _with_changes(store, manifest, profile, drift, allowed_missing, pair_keys)
        card, charts = render_card(manifest, card_tables(tables), base_uri=uri)
        abort_if_published()
        manifest["assets"] = _write_assets(store, release_id, card, charts, pair_keys)
        # The commit point: the release becomes visible iff this create-only write succeeds.
        payload = pretty_json(manifest)
        created = store.put_if_absent(manifest_key(release_id), payload)
        if created:
            store.put_if_absent(digest_key(release_id), sha256_hex(payload).encode() + b"\n")
    except _AlreadyPublished:
        created = False
        manifest = None  # type: ignore[assignment]

    if not created:
        return _adopt_concurrent_release(store, release_id, manifest, tables, started)

    log.info("%s: published release %s (sequence %s)", store.uri, release_id, manifest["sequence"])
    remove_unlisted(store, manifest)
    moved, held = _point_at(store, manifest, started)
    return PublishResult(release_id, "published", uri, manifest, moved, held)
