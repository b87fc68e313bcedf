"""A stage table computed while it is written: record batches from a generator (Dagster-free).

A step whose output is large (the ~1.4 GB pair table) need not hold it whole: it returns a
:class:`BatchStream` whose schema and row count are known up front (the asset's metadata needs
them) and whose record batches are computed one after another while the stage IO manager writes
them, each freed once written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class BatchStream:
    """``num_rows`` rows of ``schema``, produced as record batches by ``produce()``.

    :meth:`batches` can be iterated once per call of ``produce`` (each call computes the rows
    again); it checks that the batches have the schema and add up to ``num_rows``.
    """

    schema: pa.Schema
    num_rows: int
    produce: Callable[[], Iterator[pa.RecordBatch]]

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The record batches, in order, as they are computed."""
        rows = 0
        for batch in self.produce():
            if not batch.schema.equals(self.schema):
                raise ValueError(f"batch schema {batch.schema} is not the stream's {self.schema}")
            rows += batch.num_rows
            yield batch
        if rows != self.num_rows:
            raise ValueError(f"stream produced {rows} rows, announced {self.num_rows}")

    def to_table(self) -> pa.Table:
        """A materialized copy (tests, small data)."""
        return pa.Table.from_batches(list(self.batches()), schema=self.schema)
