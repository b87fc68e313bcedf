"""An IO manager that keeps Arrow tables between stages as Arrow IPC files (never pickles).

Stage tables are scratch data that the next steps read back, so they are stored in the Arrow IPC
file format, uncompressed, and read back **memory-mapped**: loading a stage table copies nothing
(its buffers point into the page cache), a step touches only the columns it uses, and the pages
are released when the table is dropped. On the full-scale corpus this replaced ~10 s of parquet
decoding per run and the anonymous-memory copy of every input (``docs/benchmarks.md``).
Releases, which other teams read, are zstd parquet (``curation.release``).
"""

import contextlib
import ctypes
import sys
from pathlib import Path

import dagster as dg
import pyarrow as pa

from curation.selection import RowSelection

SUFFIX = ".arrow"
#: Resource key of the input manager that loads a never-materialized table as ``None``.
OPTIONAL_INPUT_MANAGER = "optional_table_loader"


def write_table(table: pa.Table | RowSelection, path: Path) -> None:
    """Write ``table`` (schema metadata kept) to ``path`` atomically (temp file + rename).

    A :class:`~curation.selection.RowSelection` is written batch by batch, never copied whole.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        if isinstance(table, RowSelection):
            for batch in table.batches():
                writer.write_batch(batch)
        else:
            writer.write_table(table, max_chunksize=1 << 16)
    tmp.replace(path)


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


def read_table(path: Path) -> pa.Table:
    """The table stored at ``path``, memory-mapped (zero copy)."""
    with pa.memory_map(str(path), "r") as source:
        return pa.ipc.open_file(source).read_all()


class ArrowTableIOManager(dg.ConfigurableIOManager):
    """Keeps each asset's ``pa.Table`` (or ``RowSelection``) as ``<base_dir>/<asset key>.arrow``;
    inputs are always loaded as ``pa.Table``."""

    base_dir: str
    allow_missing: bool = False  # load a table that was never stored as None (input managers)

    def _path(self, context: dg.OutputContext | dg.InputContext) -> Path:
        return Path(self.base_dir).joinpath(*context.asset_key.path).with_suffix(SUFFIX)

    def handle_output(self, context: dg.OutputContext, obj: pa.Table | RowSelection) -> None:
        if obj is None:
            return
        if not isinstance(obj, pa.Table | RowSelection):
            raise TypeError(f"{context.asset_key}: expected a pyarrow.Table, got {type(obj)}")
        write_table(obj, self._path(context))
        release_memory()

    def load_input(self, context: dg.InputContext) -> pa.Table | None:
        """The stored table; ``None`` if it was never stored and ``allow_missing`` is set."""
        path = self._path(context)
        if not path.exists() and self.allow_missing:
            return None
        if not path.exists():
            raise FileNotFoundError(
                f"{context.asset_key}: no stored table at {path}; materialize it first"
            )
        return read_table(path)
