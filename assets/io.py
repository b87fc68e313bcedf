"""The IO manager of stage tables: Arrow IPC files under a per-run folder (never pickles).

Stage tables are scratch data that the next steps read back. They live at::

    <stage store>/runs/<run_id>/<asset key>.arrow

so that overlapping runs never read each other's tables (two runs writing one fixed path once
published each other's data). The stage store is ``$STAGE_STORE_URI``, default
``$DAGSTER_HOME/tables``:

* **local folder** (default): uncompressed Arrow IPC, read back **memory-mapped**: loading a stage
  table copies nothing (its buffers point into the page cache), a step touches only the columns it
  uses, and the pages are released when the table is dropped. On the full-scale corpus this
  replaced ~10 s of parquet decoding per run (``docs/benchmarks.md``).
* **object storage** (``s3://bucket/prefix``): zstd-compressed Arrow IPC, so that steps on
  different machines (``k8s_job_executor``, multiprocess without a shared disk) exchange tables.
  A load copies the object to node-local scratch (``tempfile``'s folder) and memory-maps it.

An input is read from the current run's folder when this run produced it, otherwise from the
folder of the run that holds the asset's latest materialization (a subset run, e.g. only
``release``, reads what earlier runs produced). When a run starts, and no other run is executing,
the files of finished runs that are no longer any asset's latest materialization are deleted.
Releases, which other teams read, are zstd parquet (``curation.publish.release``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import pyarrow as pa

from curation.core.batches import BatchStream
from curation.core.redact import has_credentials
from curation.core.selection import RowSelection
from curation.core.stage_table import StageTable
from curation.core.store import credentials_refused

if TYPE_CHECKING:
    from upath import UPath

SUFFIX = ".arrow"
RUNS_DIR = "runs"
#: Resource key of the input manager that loads a never-materialized table as ``None`` and every
#: other one as a :class:`StageTable` handle (the ingest checks read one file at a time).
OPTIONAL_INPUT_MANAGER = "optional_table_loader"
#: Runs in these states may still read stage tables: no clean-up while one of them exists.
EXECUTING = [
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
_FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def _is_local(path: UPath | Path) -> bool:
    return getattr(path, "protocol", "") in ("", "file", "local")


def _local_path(path: UPath | Path) -> str:
    return path.path if hasattr(path, "path") else os.fspath(path)


def _write_ipc(
    table: pa.Table | RowSelection | BatchStream, sink: Any, compression: str | None
) -> None:
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_file(sink, table.schema, options=options) as writer:
        if isinstance(table, RowSelection | BatchStream):
            for batch in table.batches():
                writer.write_batch(batch)
        else:
            writer.write_table(table, max_chunksize=1 << 16)


def write_table(table: pa.Table | RowSelection, path: UPath | Path) -> None:
    """Write ``table`` (schema metadata kept) to ``path`` atomically.

    Local: uncompressed, to a temp file that is renamed into place. Object storage: zstd, as one
    upload that only becomes visible when complete. A :class:`RowSelection` is written batch by
    batch, never copied whole.
    """
    if _is_local(path):
        final = Path(_local_path(path))
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex}")
        try:
            with pa.OSFile(str(tmp), "wb") as sink:
                _write_ipc(table, sink, None)
            tmp.replace(final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return
    with path.fs.open(path.path, "wb") as raw, pa.PythonFile(raw, mode="w") as sink:
        _write_ipc(table, sink, "zstd")


def read_table(path: UPath | Path, scratch_dir: str | None = None) -> pa.Table:
    """The table stored at ``path``, memory-mapped (zero copy for local, uncompressed files).

    A remote object is first copied to node-local scratch; the copy is unlinked right after it is
    mapped (the mapping keeps the pages alive), so scratch never fills up.
    """
    if _is_local(path):
        with pa.memory_map(_local_path(path), "r") as source:
            return pa.ipc.open_file(source).read_all()
    fd, local = tempfile.mkstemp(suffix=SUFFIX, prefix="stage-", dir=scratch_dir)
    os.close(fd)
    try:
        path.fs.get_file(path.path, local)
        with pa.memory_map(local, "r") as source:
            return pa.ipc.open_file(source).read_all()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(local)


def open_stage_table(path: UPath | Path, scratch_dir: str | None = None) -> StageTable:
    """A :class:`StageTable` handle on ``path`` (a remote object is copied to scratch first and
    the copy is deleted with the handle)."""
    if _is_local(path):
        return StageTable(_local_path(path))
    fd, local = tempfile.mkstemp(suffix=SUFFIX, prefix="stage-", dir=scratch_dir)
    os.close(fd)
    try:
        path.fs.get_file(path.path, local)
        return StageTable(local, owned=True)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(local)
        raise


def release_memory() -> None:
    """Hand freed memory back to the OS between steps (in-process runs share one process).

    Arrow's allocator and glibc's malloc keep freed pages for reuse; without this the next step
    starts with the previous step's high-water mark still resident. (No ``gc.collect()``: the
    tables are freed by reference counting, and a full collection costs ~0.2 s per call.)
    """
    pa.default_memory_pool().release_unused()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def _wants_handle(context: dg.InputContext) -> bool:
    dagster_type = context.dagster_type
    return dagster_type is not None and dagster_type.typing_type is StageTable


class RunScopedArrowIOManager(dg.UPathIOManager):
    """Stage tables at ``<base>/runs/<run_id>/<asset key>.arrow`` (see the module docstring)."""

    extension = SUFFIX

    def __init__(
        self,
        base_path: UPath,
        run_id: str,
        instance: dg.DagsterInstance | None,
        allow_missing: bool = False,
        scratch_dir: str | None = None,
        handles: bool = False,
    ):
        super().__init__(base_path=base_path)
        self.base = base_path
        self.run_id = run_id
        self.instance = instance
        self.allow_missing = allow_missing
        self.scratch_dir = scratch_dir
        self.handles = handles

    def run_folder(self, run_id: str) -> UPath:
        """The folder of one run's stage tables."""
        return self.base / RUNS_DIR / run_id

    def _run_of_input(self, context: dg.InputContext) -> str:
        """This run if it stored the table, else the run of the asset's latest materialization."""
        mine = self.run_folder(self.run_id).joinpath(*context.asset_key.path)
        if self.path_exists(self._with_extension(mine)) or self.instance is None:
            return self.run_id
        event = self.instance.get_latest_materialization_event(context.asset_key)
        return event.run_id if event is not None else self.run_id

    def _get_path_without_extension(self, context: dg.InputContext | dg.OutputContext) -> UPath:
        run_id = (
            self.run_id if isinstance(context, dg.OutputContext) else self._run_of_input(context)
        )
        return self.run_folder(run_id).joinpath(*context.asset_key.path)

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        if not isinstance(obj, pa.Table | RowSelection | BatchStream):
            raise TypeError(f"{context.asset_key}: expected a pyarrow.Table, got {type(obj)}")
        write_table(obj, path)
        release_memory()

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        """Store the table; its path is the output's ``path`` metadata. (Unlike
        ``UPathIOManager``, no "Writing file at" debug message: one event log write fewer per
        output, and the path is in the metadata anyway.)"""
        if obj is None:  # assets that return nothing (e.g. release) store nothing
            return
        if context.has_asset_partitions:
            super().handle_output(context, obj)
            return
        path = self._with_extension(self._get_path_without_extension(context))
        self.make_directory(path.parent)
        self.dump_to_path(context=context, obj=obj, path=path)
        context.add_output_metadata(
            {"path": dg.MetadataValue.path(str(path)), **self.get_metadata(context, obj)}
        )

    def load_input(self, context: dg.InputContext) -> Any:
        """Load the table; a debug message names it only when it is another run's (one of this
        run is named by this run's ``path`` output metadata: one event log write fewer per input).
        """
        if context.has_asset_partitions:
            return super().load_input(context)
        run_id = self._run_of_input(context)
        path = self._with_extension(self.run_folder(run_id).joinpath(*context.asset_key.path))
        if run_id != self.run_id:
            context.log.debug(self.get_loading_input_log_message(path))
        return self.load_from_path(context=context, path=path)

    def load_from_path(self, context: dg.InputContext, path: UPath) -> pa.Table | StageTable | None:
        """The stored table: memory-mapped, or a :class:`StageTable` handle when the step's input
        is annotated ``StageTable`` (it reads columns and batches on demand)."""
        if not self.path_exists(path):
            if self.allow_missing:
                return None
            raise FileNotFoundError(
                f"{context.asset_key.to_user_string()}: no stored table at {path}; materialize it first"
            )
        if self.handles or _wants_handle(context):
            return open_stage_table(path, self.scratch_dir)
        return read_table(path, self.scratch_dir)

    def make_directory(self, path: UPath) -> None:
        if _is_local(path):  # object stores have no folders
            super().make_directory(path)

    # ------------------------------------------------------------------ clean-up

    def clean_up(self) -> list[str]:
        """Delete stage tables of finished runs that are no longer an asset's latest
        materialization, unless another run is executing. Returns the deleted paths."""
        if self.instance is None:
            return []
        executing = self.instance.get_runs(filters=dg.RunsFilter(statuses=EXECUTING))
        if any(run.run_id != self.run_id for run in executing):
            return []
        root = self.base / RUNS_DIR
        try:
            folders = [p for p in root.iterdir() if p.name != self.run_id]
        except (FileNotFoundError, NotADirectoryError):
            return []
        finished = []
        for folder in folders:
            run = self.instance.get_run_by_id(folder.name)
            if run is None or run.status not in _FINISHED:
                continue  # another instance's run, or one that may still start
            finished.append((folder, self._tables_of(folder)))
        keys = {key for _, tables in finished for key in tables}
        # one query for every key (one per key cost ~27 ms each on SQLite, ~2 s per run start)
        latest = self.instance.get_latest_materialization_events(keys) if keys else {}
        latest_run = {key: event.run_id for key, event in latest.items() if event is not None}
        deleted = []
        for folder, tables in finished:
            deleted += self._clean_run_folder(folder, tables, latest_run)
        return deleted

    @staticmethod
    def _tables_of(folder: UPath) -> dict[dg.AssetKey, UPath]:
        """``{asset key: stored table}`` of one run folder."""
        tables = {}
        for path in sorted(folder.rglob(f"*{SUFFIX}")):
            rel = path.relative_to(folder)
            tables[dg.AssetKey([*rel.parent.parts, rel.name[: -len(SUFFIX)]])] = path
        return tables

    def _clean_run_folder(
        self,
        folder: UPath,
        tables: dict[dg.AssetKey, UPath],
        latest_run: dict[dg.AssetKey, str],
    ) -> list[str]:
        deleted = []
        for key, path in tables.items():
            if latest_run.get(key) == folder.name:
                continue  # still the table a subset run would load
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            deleted.append(str(path))
        if _is_local(folder):  # empty folders (object stores have none)
            local = Path(_local_path(folder))
            for sub in [*sorted(local.rglob("*"), reverse=True), local]:
                with contextlib.suppress(OSError):
                    sub.rmdir()
        return deleted


class ArrowTableIOManager(dg.ConfigurableIOManagerFactory):
    """Keeps each asset's ``pa.Table`` (or ``RowSelection``) as
    ``<base_dir>/runs/<run_id>/<asset key>.arrow``; inputs are always loaded as ``pa.Table``.

    ``base_dir`` is a folder or an fsspec URI (``s3://bucket/prefix``; S3 endpoint and credentials
    come from the ``AWS_*`` environment, as for s3fs).
    """

    base_dir: str
    allow_missing: bool = False  # load a table that was never stored as None (input managers)
    scratch_dir: str | None = None  # node-local copies of remote tables (default: $TMPDIR)
    # load every input as a StageTable handle (for steps whose inputs Dagster cannot type, such
    # as the **kwargs of a multi-asset check)
    handles: bool = False

    def create_io_manager(self, context: dg.InitResourceContext) -> RunScopedArrowIOManager:
        from upath import UPath

        if has_credentials(self.base_dir):  # as a store does (curation.core.store)
            raise credentials_refused(self.base_dir)
        manager = RunScopedArrowIOManager(
            UPath(self.base_dir),
            run_id=context.run_id or "no-run",
            instance=context.instance,
            allow_missing=self.allow_missing,
            scratch_dir=self.scratch_dir,
            handles=self.handles,
        )
        if not self.allow_missing:  # one of the two managers is enough
            deleted = manager.clean_up()
            if deleted:
                context.log.debug(f"removed {len(deleted)} stage tables of finished runs")
        return manager
