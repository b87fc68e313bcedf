"""A table restricted to some of its rows, without copying them (Dagster-free).

Dedup and decontamination keep ~95 % of a ~1 GB pair table; filtering it into a new table would
allocate another copy of every text column only for it to be written out. A
:class:`RowSelection` keeps the source table and a mask; the stage IO manager writes it record
batch by record batch (one batch of copies at a time), and readers get an ordinary table.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curation.core.stage_table import StageTable


@dataclass(frozen=True)
class RowSelection:
    """The rows of ``table`` (a table or a :class:`StageTable` handle) where ``keep`` is true, in
    table order."""

    table: pa.Table | StageTable
    keep: np.ndarray

    def __post_init__(self) -> None:
        if len(self.keep) != self.table.num_rows:
            raise ValueError(f"mask has {len(self.keep)} entries for {self.table.num_rows} rows")

    @property
    def num_rows(self) -> int:
        """Rows selected."""
        return int(np.count_nonzero(self.keep))

    @property
    def schema(self) -> pa.Schema:
        """The schema of the selected rows (the table's)."""
        return self.table.schema

    def head(self, n: int = 5) -> pa.Table:
        """The first ``n`` selected rows as a table."""
        return self.table.take(pa.array(np.flatnonzero(self.keep)[:n], pa.int64()))

    def batches(self, max_rows: int = 1 << 16) -> Iterator[pa.RecordBatch]:
        """The selected rows as record batches of at most ``max_rows`` input rows each."""
        start = 0
        for batch in self.table.to_batches(max_chunksize=max_rows):
            mask = self.keep[start : start + batch.num_rows]
            start += batch.num_rows
            if mask.all():
                yield batch
            elif mask.any():
                yield batch.filter(pa.array(mask))

    def to_table(self) -> pa.Table:
        """A materialized copy (tests, small data)."""
        return self.table.filter(pa.array(self.keep))
