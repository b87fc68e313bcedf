"""A stage table read on demand: columns and record batches from an Arrow IPC file (Dagster-free).

A memory-mapped table costs nothing to open, but every page a step touches stays resident (and
counts in the process's RSS) until the whole table is dropped: a step that hashes every text of
a ~1 GB pair table holds ~1 GB even when it only needs one batch at a time. A
:class:`StageTable` instead reads what is asked for, when it is asked for, and the pages it read
leave the RSS with the returned arrays (each record batch is mapped on its own):

* :meth:`StageTable.to_batches` streams record batches, optionally of a few columns only (only
  those columns' pages are read);
* :meth:`StageTable.column` and :meth:`StageTable.select` read whole columns;
* :meth:`StageTable.read_all` is the plain table, for small tables and tests.

Steps declare that they want one by annotating the input (``normalized_pairs: StageTable``); the
stage IO manager then hands over a handle instead of a mapped table.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

#: Rows read through one memory mapping before the file is mapped anew (see ``to_batches``).
REMAP_ROWS = 1 << 16
#: Bytes read through one memory map by :meth:`StageTable.copied_batches` before it is reopened.
COPY_MAP_BYTES = 64 << 20


class StageTable:
    """An Arrow IPC file, read column- and batch-wise on demand.

    ``owned=True`` deletes the file when the handle is garbage-collected (a local copy of a
    remote stage table).
    """

    def __init__(self, path: str | os.PathLike, *, owned: bool = False):
        self.path = str(path)
        with pa.memory_map(self.path, "r") as source:  # batch headers only: no data pages read
            reader = ipc.open_file(source)
            self.schema: pa.Schema = reader.schema
            #: rows of each stored record batch
            self.batch_rows: tuple[int, ...] = tuple(
                reader.get_batch(i).num_rows for i in range(reader.num_record_batches)
            )
        self.num_rows: int = sum(self.batch_rows)
        if owned:
            weakref.finalize(self, _unlink, self.path)

    def __repr__(self) -> str:
        return f"StageTable({self.path!r}, {len(self.schema)} columns)"

    @property
    def column_names(self) -> list[str]:
        """The column names, in schema order."""
        return self.schema.names

    def _check(self, columns: Sequence[str]) -> None:
        missing = [c for c in columns if c not in self.schema.names]
        if missing:
            raise KeyError(f"{self.path}: no column {missing} (has {self.schema.names})")

    def to_batches(
        self, columns: Sequence[str] | None = None, max_chunksize: int | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Record batches in file order, of ``columns`` only (default all), each freshly read.

        ``max_chunksize`` splits stored batches further (zero-copy slices).

        The file is memory-mapped anew every :data:`REMAP_ROWS` rows: a batch's arrays point
        into the page cache, only the pages of the requested columns are touched, and they leave
        the process's RSS once the arrays of every batch of that mapping are dropped (one mapping
        for all batches would keep every page touched so far resident until the last batch is
        dropped; one per batch costs ~0.2 ms per batch to re-read the footer, seconds per pass
        over a table of ~1,000 small batches). ``IpcReadOptions.included_fields`` is not used:
        it copies each batch's whole body, all columns, into memory (reading the 2 MB ``split``
        column of the scale-1.0 ``curated_pairs`` allocated 1.1 GB).
        """
        if columns is not None:
            self._check(columns)
        with pa.memory_map(self.path, "r") as source:
            count = ipc.open_file(source).num_record_batches
        source, reader, mapped = None, None, 0
        try:
            for i in range(count):
                if reader is None or mapped >= REMAP_ROWS:
                    if source is not None:
                        source.close()  # the arrays read from it keep its mapping alive
                    source = pa.memory_map(self.path, "r")
                    reader, mapped = ipc.open_file(source), 0
                batch = reader.get_batch(i)
                mapped += batch.num_rows
                if columns is not None:
                    batch = batch.select(list(columns))
                if max_chunksize is None or batch.num_rows <= max_chunksize:
                    yield batch
                else:
                    for start in range(0, batch.num_rows, max_chunksize):
                        yield batch.slice(start, max_chunksize)
        finally:
            if source is not None:
                source.close()

    def copied_batches(self, columns: Sequence[str]) -> Iterator[pa.Table]:
        """The stored record batches of ``columns``, each copied into memory of its own.

        For long passes that keep little: unlike :meth:`to_batches`, no result points into the
        mapping, so the pages read leave the RSS as soon as the map is reopened (every
        :data:`COPY_MAP_BYTES`), whatever the caller keeps. ``included_fields`` is zero-copy on a
        memory map, so only the wanted columns' pages are read.
        """
        self._check(columns)
        fields = [self.schema.get_field_index(c) for c in columns]
        options = ipc.IpcReadOptions(included_fields=sorted(fields))  # read in file order
        index, count = 0, None
        while count is None or index < count:
            with pa.memory_map(self.path, "r") as source:
                reader = ipc.open_file(source, options=options)
                count, mapped = reader.num_record_batches, 0
                while index < count and mapped < COPY_MAP_BYTES:
                    batch = reader.get_batch(index)
                    index += 1
                    mapped += batch.nbytes
                    # a copy (concatenating with an empty batch allocates new buffers)
                    both = pa.Table.from_batches([batch, batch.slice(0, 0)])
                    yield both.select(list(columns)).replace_schema_metadata(None).combine_chunks()

    def read_batches(self, start: int, stop: int, columns: Sequence[str]) -> pa.Table:
        """Stored record batches ``start:stop`` of ``columns`` (one chunk per stored batch).

        Memory-mapped: each batch's ``columns`` are selected from the mapped batch (zero-copy),
        so only their pages are read, and they leave the RSS when the returned table is dropped.
        """
        self._check(columns)
        schema = pa.schema([self.schema.field(c) for c in columns])
        with pa.memory_map(self.path, "r") as source:
            reader = ipc.open_file(source)
            batches = [reader.get_batch(i).select(list(columns)) for i in range(start, stop)]
        return pa.Table.from_batches(batches, schema=schema)

    def select(self, columns: Sequence[str]) -> pa.Table:
        """A table of ``columns`` only, in the given order (read now)."""
        batches = list(self.to_batches(columns))
        schema = pa.schema([self.schema.field(c) for c in columns], metadata=self.schema.metadata)
        return pa.Table.from_batches(batches, schema=schema)

    def column(self, name: str) -> pa.ChunkedArray:
        """One column (read now)."""
        return self.select([name]).column(0)

    def read_all(self) -> pa.Table:
        """The whole table (read now)."""
        return self.select(self.schema.names)

    def take(self, indices: pa.Array | Sequence[int]) -> pa.Table:
        """Rows by position (:func:`take_rows`: batch by batch, only the wanted rows kept)."""
        return take_rows(self, np.asarray(indices, np.int64))

    def filter(self, mask: pa.Array) -> pa.Table:
        """Rows where ``mask`` is true (reads the whole table: small tables and tests)."""
        return self.read_all().filter(mask)


def take_rows(
    table: pa.Table | StageTable,
    rows: np.ndarray | Sequence[int],
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """Rows at the positions ``rows`` (any order, repeats allowed) of ``columns`` (default all).

    A :class:`StageTable` is read batch by batch, only ``columns``, keeping the wanted rows of
    each batch and stopping after the last one; the result keeps the schema metadata.
    """
    rows = np.asarray(rows, np.int64)
    if isinstance(table, pa.Table):
        picked = table if columns is None else table.select(list(columns))
        return picked.take(pa.array(rows, pa.int64()))
    names = table.column_names if columns is None else list(columns)
    schema = pa.schema([table.schema.field(c) for c in names], metadata=table.schema.metadata)
    wanted, inverse = np.unique(rows, return_inverse=True)
    parts, start = [], 0
    for batch in table.to_batches(names):
        if len(wanted) == 0 or start > wanted[-1]:
            break
        lo, hi = np.searchsorted(wanted, [start, start + batch.num_rows])
        if hi > lo:
            parts.append(batch.take(pa.array(wanted[lo:hi] - start, pa.int64())))
        start += batch.num_rows
    found = pa.Table.from_batches(parts, schema=schema)
    return found.take(pa.array(inverse.reshape(-1), pa.int64()))


def _unlink(path: str) -> None:
    Path(path).unlink(missing_ok=True)
