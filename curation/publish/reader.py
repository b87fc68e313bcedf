"""Consumer API for published releases (parquet + JSON only; nothing is ever unpickled).

>>> release = open_release("s3://bucket/curated")          # follows latest.json
>>> pairs = release.table("pairs", split="train")          # pyarrow.Table, read on request
>>> df = release.to_pandas("removed")
>>> release.verify(progress=True)                          # [] when every file matches
>>> list_releases("s3://bucket/curated"); diff_releases(store, "a1b2...", "latest")
>>> prune(store, keep=5, pinned=["a1b2c3d4e5f60718"])

Only releases with a ``manifest.json`` exist for these functions; half-written folders left by a
crashed publisher are invisible. Errors name the store, the release and the file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from curation.core.schema import NO_SPLIT
from curation.core.store import Store
from curation.publish.drift import DriftConfig, compare_releases, swapped_pairs
from curation.publish.integrity import (
    Problem,
    accounting_problems,
    digest_problems,
    file_problems,
    id_problems,
    listed_paths,
    parquet_rows,
    row_problems,
    table_count_problems,
    unlisted_problems,
)
from curation.publish.release import (
    LATEST_KEY,
    RELEASES_DIR,
    ReleaseError,
    digest_key,
    manifest_key,
    order_key,
    promotion_key,
    read_latest,
    read_manifest,
    release_prefix,
    remove_leftovers,
    schema_from_b64,
    stored_pair_keys,
)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow.dataset as pads

log = logging.getLogger(__name__)

#: Row identity per table for :func:`diff_releases` (tables not listed use ``pair_id`` if present).
DIFF_KEYS: dict[str, list[str]] = {
    "pairs": ["pair_id"],
    "removed": ["pair_id"],
    "quarantine": ["dataset", "subset", "source_file", "source_line"],
    "red_team": ["transcript_id"],
    "paraphrases": [
        "pair_id",
        "matched_pair_id",
        "matched_dataset",
        "matched_source_file",
        "matched_source_line",
    ],
}


class Release:
    """A published release: its manifest, and its tables read lazily on request."""

    def __init__(self, store: Store, manifest: Mapping[str, Any]):
        self.store = store
        self.manifest: dict[str, Any] = dict(manifest)
        self.release_id: str = self.manifest["release_id"]
        self.prefix = release_prefix(self.release_id)
        self.uri = store.url(self.prefix)

    def __repr__(self) -> str:
        return f"Release({self.store.uri!r}, {self.release_id!r}, sequence={self.manifest.get('sequence')})"

    # ------------------------------------------------------------------ metadata

    @property
    def sequence(self) -> int:
        return int(self.manifest.get("sequence") or 0)

    @property
    def created_at(self) -> str:
        return str(self.manifest.get("created_at"))

    @property
    def tables(self) -> list[str]:
        return sorted(self.manifest.get("tables", {}))

    def _info(self, name: str) -> dict[str, Any]:
        try:
            return self.manifest["tables"][name]
        except KeyError:
            raise KeyError(
                f"{self.store.uri}: release {self.release_id} has no table {name!r} (tables: {self.tables})"
            ) from None

    def splits(self, name: str) -> list[str]:
        info = self._info(name)
        return sorted(info.get("splits") or {f["split"] for f in info["files"] if f.get("split")})

    def files(self, name: str, split: str | None = None) -> list[dict[str, Any]]:
        """The manifest's file entries of ``name`` (of one ``split`` if given)."""
        info = self._info(name)
        files = list(info.get("files", []))
        if split is not None:
            if info.get("split_column") is None:
                raise ValueError(
                    f"{self.store.uri}: release {self.release_id}: table {name!r} has no splits"
                )
            if split not in self.splits(name):
                raise KeyError(
                    f"{self.store.uri}: release {self.release_id}: table {name!r} has no split {split!r} "
                    f"(splits: {self.splits(name)})"
                )
            files = [f for f in files if f.get("split") == split]
        return files

    def paths(self, name: str, split: str | None = None) -> list[str]:
        """Full URIs (``s3://...`` or local paths) of the table's data files."""
        return [self.store.url(f"{self.prefix}/{f['path']}") for f in self.files(name, split)]

    def schema(self, name: str) -> pa.Schema:
        info = self._info(name)
        if info.get("arrow_schema"):
            return schema_from_b64(info["arrow_schema"])
        files = info.get("files") or []
        if not files:
            raise ReleaseError(
                f"{self.store.uri}: release {self.release_id}: table {name!r} has no schema"
            )
        import pyarrow.parquet as pq

        with self.store.open_input(f"{self.prefix}/{files[0]['path']}") as fh:
            return pq.read_schema(fh)

    def rows(self, name: str, split: str | None = None) -> int:
        return sum(int(f["rows"]) for f in self.files(name, split))

    # ------------------------------------------------------------------ data

    def _arrow_fs(self) -> Any:
        if not self.store.is_s3:
            return pa.fs.LocalFileSystem()
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        return PyFileSystem(FSSpecHandler(self.store.fs))

    def dataset(self, name: str, split: str | None = None) -> pads.Dataset:
        """A :class:`pyarrow.dataset.Dataset` over exactly the manifest's files (nothing read yet)."""
        import pyarrow.dataset as ds

        files = self.files(name, split)
        schema = self.schema(name)
        paths = [self.store.path(f"{self.prefix}/{f['path']}") for f in files]
        # every page's CRC is checked while reading: a damaged page is an error, not wrong rows
        checked = ds.ParquetFileFormat(
            default_fragment_scan_options=ds.ParquetFragmentScanOptions(
                page_checksum_verification=True
            )
        )
        try:
            return ds.dataset(paths, schema=schema, format=checked, filesystem=self._arrow_fs())
        except (FileNotFoundError, OSError, pa.ArrowException) as exc:
            missing = [
                f["path"] for f in files if not self.store.exists(f"{self.prefix}/{f['path']}")
            ]
            detail = f"missing files {missing[:5]}" if missing else str(exc)
            raise ReleaseError(
                f"{self.store.uri}: release {self.release_id}: cannot open table {name!r}: {detail}"
            ) from exc

    def table(
        self,
        name: str,
        split: str | None = None,
        *,
        columns: Sequence[str] | None = None,
        filter: Any = None,
    ) -> pa.Table:
        """The table (one split of it if ``split`` is given) as a :class:`pyarrow.Table`.

        Without a ``filter`` the files are read one by one with ``pyarrow.parquet``, which does
        not import ``pyarrow.dataset`` (whose import loads pandas: a third of a second of
        ``rlhf-curate releases diff``); a ``filter`` goes through :meth:`dataset`."""
        files = self.files(name, split)
        if not files:
            empty = self.schema(name).empty_table()
            return empty.select(list(columns)) if columns else empty
        if filter is None:
            return self._read_files(name, files, columns)
        try:
            return self.dataset(name, split).to_table(
                columns=list(columns) if columns else None, filter=filter
            )
        except ReleaseError:
            raise
        except (OSError, pa.ArrowException) as exc:
            raise ReleaseError(
                f"{self.store.uri}: release {self.release_id}: reading table {name!r}"
                f"{f' split {split!r}' if split else ''} failed: {exc}"
            ) from exc

    def _read_files(
        self,
        name: str,
        files: Sequence[Mapping[str, Any]],
        columns: Sequence[str] | None,
        use_threads: bool = True,
    ) -> pa.Table:
        """``files`` of table ``name`` read in order into one table of its schema (every page's
        CRC checked, as in :meth:`dataset`); errors name the file. ``use_threads=False``
        decodes on the calling thread only: a process that read parquet on Arrow's thread pool
        sometimes aborts at exit (``terminate called without an active exception``, about 2 in
        100 short processes here; apache/arrow#34314), which the CLI must not do."""
        import pyarrow.parquet as pq

        schema = self.schema(name)
        if columns:
            schema = pa.schema([schema.field(c) for c in columns])
        parts = []
        for f in files:
            key = f"{self.prefix}/{f['path']}"
            try:
                with self.store.open_input(key) as fh:
                    parquet = pq.ParquetFile(fh, page_checksum_verification=True)
                    parts.append(
                        parquet.read(
                            columns=list(columns) if columns else None, use_threads=use_threads
                        )
                    )
            except (FileNotFoundError, OSError, pa.ArrowException) as exc:
                missing = not self.store.exists(key)
                raise ReleaseError(
                    f"{self.store.uri}: release {self.release_id}: cannot read table {name!r}: "
                    + (f"missing file {f['path']}" if missing else f"{f['path']}: {exc}")
                ) from exc
        if not parts:
            return schema.empty_table()
        return pa.concat_tables([part.cast(schema) for part in parts])

    def to_pandas(self, name: str, split: str | None = None, **kwargs: Any) -> pd.DataFrame:
        return self.table(name, split, **kwargs).to_pandas()

    def read_asset(self, path: str = "README.md") -> bytes:
        return self.store.get(f"{self.prefix}/{path}")

    # ------------------------------------------------------------------ integrity

    def listed_paths(self) -> set[str]:
        return listed_paths(self.manifest)

    def verify(self, progress: bool = False) -> list[Problem]:
        """Everything that can be checked without the inputs (``docs/releases.md``):

        - every listed file's size and sha256 against the manifest, and no unlisted file in the
          release folder (glob readers would see it);
        - the manifest against digests kept outside the release folder (``releases/<id>.sha256``
          and ``latest.json``'s ``manifest_sha256``) and against its own id, recomputed from the
          inputs it records (sources, references, config, code version, libraries);
        - the manifest's row counts against the parquet footers, within itself (files, splits,
          tables) and in the accounting identity read = kept + removed + quarantined.
        """
        rid = self.release_id
        problems = digest_problems(
            self.store, rid, self.store.get(manifest_key(rid)), read_latest(self.store)
        )
        problems += id_problems(self.manifest) + table_count_problems(self.manifest)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=0, unit="B", unit_scale=True, desc=f"verify {rid}")
        try:
            damaged = file_problems(self.store, self.manifest, progress=bar)
        finally:
            if bar is not None:
                bar.close()
        problems += damaged
        unreadable = {p.path for p in damaged if p.kind in ("missing", "size")}
        rows, unreadable_footers = parquet_rows(self.store, self.manifest, unreadable)
        problems += unreadable_footers + row_problems(self.manifest, rows, unreadable)
        if not unreadable and not unreadable_footers:
            problems += accounting_problems(self.manifest, rows)
        return problems + unlisted_problems(self.store, self.manifest)


# ---------------------------------------------------------------------------- module functions


def _store(store: Store | str, storage_options: Mapping[str, Any] | None = None) -> Store:
    return Store.of(store, storage_options)


def resolve_release_id(
    store: Store | str, release_id: str = "latest", storage_options: Mapping[str, Any] | None = None
) -> str:
    """``'latest'`` -> the id latest.json points at; a unique prefix (>= 4 chars) -> the full id."""
    st = _store(store, storage_options)
    if release_id in ("latest", "", None):
        pointer = read_latest(st)
        if pointer is None:
            raise ReleaseError(f"{st.uri}: no {LATEST_KEY}: nothing has been published yet")
        return str(pointer["release_id"])
    if st.exists(manifest_key(release_id)):
        return release_id
    if len(release_id) >= 4:
        matches = [
            d
            for d in st.list_dirs(RELEASES_DIR)
            if d.startswith(release_id) and st.exists(manifest_key(d))
        ]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ReleaseError(f"{st.uri}: release prefix {release_id!r} is ambiguous: {matches}")
    raise ReleaseError(
        f"{st.uri}: no published release {release_id!r} (no {manifest_key(release_id)})"
    )


def open_release(
    store_uri: Store | str,
    release_id: str = "latest",
    storage_options: Mapping[str, Any] | None = None,
) -> Release:
    """Open a published release (``'latest'`` follows ``latest.json``). Reads only the manifest."""
    st = _store(store_uri, storage_options)
    rid = resolve_release_id(st, release_id)
    manifest = read_manifest(st, rid)
    if manifest is None:
        raise ReleaseError(f"{st.uri}: release {rid} has no manifest ({manifest_key(rid)})")
    if manifest.get("release_id") != rid:
        raise ReleaseError(
            f"{st.uri}: {manifest_key(rid)} is for release {manifest.get('release_id')!r}"
        )
    return Release(st, manifest)


def _summary(manifest: Mapping[str, Any], latest_id: str | None) -> dict[str, Any]:
    return {
        "release_id": manifest["release_id"],
        "sequence": manifest.get("sequence"),
        "created_at": manifest.get("created_at"),
        "parent_release_id": manifest.get("parent_release_id"),
        "code_version": manifest.get("code_version"),
        "rows": {
            name: info.get("rows", 0) for name, info in sorted(manifest.get("tables", {}).items())
        },
        "latest": manifest["release_id"] == latest_id,
    }


def list_releases(
    store: Store | str, storage_options: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Summaries of every published release (those with a manifest), oldest first."""
    st = _store(store, storage_options)
    pointer = read_latest(st)
    latest_id = pointer["release_id"] if pointer else None
    out = []
    for rid in st.list_dirs(RELEASES_DIR):
        try:
            manifest = read_manifest(st, rid)
        except ReleaseError as exc:
            log.warning("%s", exc)
            continue
        if manifest is not None and manifest.get("release_id") == rid:
            out.append(_summary(manifest, latest_id))
    return sorted(out, key=order_key)


def show(
    store: Store | str, release_id: str = "latest", storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The manifest of a release (``'latest'`` allowed)."""
    return open_release(store, release_id, storage_options).manifest


# ---------------------------------------------------------------------------- diff


def _keyed_hashes(table: pa.Table, keys: list[str]) -> Any:
    """A polars frame ``__key``, ``__h`` (hash of every non-key column), one row per key."""
    import polars as pl

    df = pl.from_arrow(table)
    if not isinstance(df, pl.DataFrame):  # pragma: no cover - from_arrow of a Table is a DataFrame
        df = df.to_frame()
    others = [c for c in df.columns if c not in keys]
    key_expr = pl.concat_str(
        [pl.col(k).cast(pl.Utf8).fill_null("\x00") for k in keys], separator="\x1f"
    )
    hash_expr = pl.struct(others).hash(seed=0) if others else pl.lit(0, dtype=pl.UInt64)
    frame = df.select(key_expr.alias("__key"), hash_expr.alias("__h"))
    # Duplicate keys: compare the sorted multiset of row hashes.
    return frame.group_by("__key").agg(
        pl.col("__h").cast(pl.Utf8).sort().str.join(",").alias("__h")
    )


def _diff_frames(a: pa.Table, b: pa.Table, keys: list[str], examples: int) -> dict[str, Any]:
    fa, fb = _keyed_hashes(a, keys), _keyed_hashes(b, keys)
    added = fb.join(fa, on="__key", how="anti").get_column("__key").sort()
    removed = fa.join(fb, on="__key", how="anti").get_column("__key").sort()
    both = fa.join(fb, on="__key", how="inner", suffix="_b")
    changed = (
        both.filter(both.get_column("__h") != both.get_column("__h_b")).get_column("__key").sort()
    )
    return {
        "added": len(added),
        "removed": len(removed),
        "changed": len(changed),
        "unchanged": both.height - len(changed),
        "examples": {
            "added": added.head(examples).to_list(),
            "removed": removed.head(examples).to_list(),
            "changed": changed.head(examples).to_list(),
        },
    }


def _reason_counts(table: pa.Table | None, name: str) -> dict[str, int]:
    """``{reason: rows}`` of a ``removed`` (``reason``) or ``quarantine`` (``reasons``) table."""
    column = "reason" if name == "removed" else "reasons"
    if table is None or column not in table.column_names:
        return {}
    values = table.column(column)
    if name != "removed":
        values = pc.list_flatten(values)
    if len(values) == 0:
        return {}
    vc = pc.value_counts(values)
    return {
        str(v): int(c)
        for v, c in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True)
    }


def _split_values(a: pa.ChunkedArray, b: pa.ChunkedArray) -> list[pa.Scalar]:
    """The distinct values of two split columns (sorted, null last), as Arrow scalars: turning
    a Python value into Arrow makes pyarrow import pandas (a third of a second of the CLI)."""
    unique = pc.unique(pa.chunked_array([*a.chunks, *b.cast(a.type).chunks], type=a.type))
    values = [unique[i] for i in range(len(unique))]
    return sorted(values, key=lambda v: (not v.is_valid, str(v.as_py())))


def _rows_of_split(table: pa.Table, column: str, value: pa.Scalar) -> pa.Table:
    """The rows of ``table`` whose ``column`` is ``value`` (null: the rows without a split)."""
    col = table.column(column)
    return table.filter(pc.is_null(col) if not value.is_valid else pc.equal(col, value))


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def _is_view(a: Release, b: Release, name: str) -> bool:
    """Whether table ``name`` is a view of another table in either release."""
    return any((r.manifest["tables"].get(name) or {}).get("view_of") for r in (a, b))


def diff_releases(
    store: Store | str,
    a: str,
    b: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
    examples: int = 5,
) -> dict[str, Any]:
    """What changed from release ``a`` to release ``b``.

    Per table (keyed by ``pair_id``; see :data:`DIFF_KEYS`; a view such as ``trl`` is skipped:
    it changes with its source table) and per split (plus ``'*'`` over the whole table, where a
    pair that moved split counts as changed; rows whose split is null are ``no_split``, as
    their folder and the manifest name them): rows added, removed, changed (same key,
    different hash of the other columns) and unchanged, with example keys. Also the
    per-reason count changes of ``removed`` and ``quarantine``, and config/code changes.
    """
    st = _store(store, storage_options)
    ra, rb = open_release(st, a), open_release(st, b)
    result: dict[str, Any] = {
        "store": st.uri,
        "a": ra.release_id,
        "b": rb.release_id,
        "code_version": {
            "a": ra.manifest.get("code_version"),
            "b": rb.manifest.get("code_version"),
        },
        "config_changes": {},
        "tables": {},
        "reasons": {},
    }
    ca, cb = _flat(ra.manifest.get("config") or {}), _flat(rb.manifest.get("config") or {})
    for k in sorted(set(ca) | set(cb)):
        if ca.get(k) != cb.get(k):
            result["config_changes"][k] = {"a": ca.get(k), "b": cb.get(k)}

    # each table read once, on this thread (see Release._read_files); a view (the TRL view of
    # the pairs) changes with the table it is derived from, so only that one is compared
    compared = {n for n in set(ra.tables) | set(rb.tables) if not _is_view(ra, rb, n)}
    read = {
        (r.release_id, name): (
            r._read_files(name, r.files(name), None, use_threads=False)
            if name in r.tables
            else None
        )
        for r in (ra, rb)
        for name in compared | {"removed", "quarantine"}
    }
    for name in sorted(compared):
        ta, tb = read[(ra.release_id, name)], read[(rb.release_id, name)]
        ref = tb if tb is not None else ta
        assert ref is not None
        keys = DIFF_KEYS.get(name) or (["pair_id"] if "pair_id" in ref.column_names else [])
        keys = [k for k in keys if k in ref.column_names]
        if not keys:
            continue
        if ta is None:
            ta = ref.schema.empty_table()
        if tb is None:
            tb = ref.schema.empty_table()
        if not (set(keys) <= set(ta.column_names) and set(keys) <= set(tb.column_names)):
            continue
        per: dict[str, Any] = {"*": _diff_frames(ta, tb, keys, examples)}
        split_col = (rb.manifest["tables"].get(name) or ra.manifest["tables"].get(name) or {}).get(
            "split_column"
        )
        if split_col and split_col in ta.column_names and split_col in tb.column_names:
            for value in _split_values(ta.column(split_col), tb.column(split_col)):
                name_of_split = str(value.as_py()) if value.is_valid else NO_SPLIT  # as the folder
                per[name_of_split] = _diff_frames(
                    _rows_of_split(ta, split_col, value),
                    _rows_of_split(tb, split_col, value),
                    keys,
                    examples,
                )
        result["tables"][name] = per

    result["drift"] = drift_between(st, ra.manifest, rb.manifest)
    for name in ("removed", "quarantine"):
        xa = _reason_counts(read[(ra.release_id, name)], name)
        xb = _reason_counts(read[(rb.release_id, name)], name)
        if xa or xb:
            result["reasons"][name] = {
                r: {"a": xa.get(r, 0), "b": xb.get(r, 0), "delta": xb.get(r, 0) - xa.get(r, 0)}
                for r in sorted(set(xa) | set(xb))
            }
    return result


def drift_between(
    store: Store, a: Mapping[str, Any], b: Mapping[str, Any], config: DriftConfig | None = None
) -> list[dict[str, Any]]:
    """The release-over-release checks of ``b`` against ``a`` (the same function the publisher,
    the alert and the card use), as dicts; swapped pairs from both releases' stored keys."""
    keys_a, keys_b = stored_pair_keys(store, a), stored_pair_keys(store, b)
    swaps = swapped_pairs(keys_a, keys_b) if keys_a is not None and keys_b is not None else None
    return [r.to_dict() for r in compare_releases(a, b, config, swaps=swaps)]


# ---------------------------------------------------------------------------- prune


def prune(
    store: Store | str,
    keep: int,
    pinned: Sequence[str] = (),
    *,
    storage_options: Mapping[str, Any] | None = None,
    dry_run: bool = False,
) -> list[str]:
    """Delete all but the newest ``keep`` releases, the ``pinned`` ones and the one ``latest.json``
    points at. Returns the deleted (or, with ``dry_run``, the deletable) ids, oldest first.

    Pins are resolved like ``show`` resolves ids (full id, unique prefix, ``latest``); an unknown
    or ambiguous pin is an error before anything is deleted. Runs under the store's ``publish``
    lock, and also removes what killed publishers left (release folders without a manifest,
    temporary files). Each release's manifest is deleted first, so an interrupted prune leaves an
    invisible folder, never a visible release with missing files.
    """
    if keep < 0:
        raise ValueError("keep must be >= 0")
    st = _store(store, storage_options)
    pinned_ids = {resolve_release_id(st, pin) for pin in pinned}
    with st.lock("publish"):
        if not dry_run:
            remove_leftovers(st)
        releases = list_releases(st)
        newest_first = sorted(releases, key=order_key, reverse=True)
        protected = {r["release_id"] for r in newest_first[:keep]} | pinned_ids
        pointer = read_latest(st)
        if pointer is not None:
            protected.add(str(pointer.get("release_id")))
        deleted = []
        for summary in sorted(releases, key=order_key):
            rid = summary["release_id"]
            if rid in protected:
                continue
            deleted.append(rid)
            if dry_run:
                continue
            st.delete(manifest_key(rid))
            st.delete_prefix(release_prefix(rid))
            st.delete(digest_key(rid))
            st.delete(promotion_key(rid))
            log.info("%s: pruned release %s", st.uri, rid)
    return deleted
