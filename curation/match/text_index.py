"""Distinct normalized texts of a pair table, hashed and tokenized once, batch by batch
(Dagster-free).

Dedup and decontamination compare ~0.5 M distinct normalized texts. Keeping those texts (and the
mapped pair table they come from) alive for the whole step costs more memory than everything
derived from them, yet the texts themselves are only read again for the few thousand candidate
pairs that are aligned word by word. So the pair table (a ``pa.Table`` or a
:class:`~curation.core.stage_table.StageTable` handle) is read one record batch at a time
(:func:`table_batches`); :class:`DistinctTexts` hashes each batch's texts (xxh3-128), tokenizes
only texts it has not seen before, and keeps their word hashes, their space-free key and a
*locator* (where the text came from, e.g. its input row). :meth:`DistinctTexts.words` then
returns the texts of any set of occurrences as text ids and :class:`~curation.match.near_dup.Words` in
the order :func:`distinct_texts` gives them, with :class:`~curation.match.near_dup.LazyTexts` that
re-read the few texts a verdict needs (:func:`~curation.core.stage_table.take_rows`).

Every value is a function of one text, so the results are the same as hashing and tokenizing the
whole column at once.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import IO

import numpy as np
import polars as pl
import pyarrow as pa

from curation.core.hashing import text_hash128
from curation.core.stage_table import StageTable
from curation.match.near_dup import LazyTexts, Words, _ranges, compact_keys, tokenize

__all__ = [
    "DistinctTexts",
    "distinct_texts",
    "read_columns",
    "table_batches",
]

#: Rows per record batch of :func:`table_batches`: large enough that per-batch costs vanish,
#: small enough that a batch's tokenizer temporaries stay ~100 MB.
BATCH_ROWS = 1 << 14


def table_batches(
    pairs: pa.Table | StageTable, columns: Sequence[str], max_rows: int = BATCH_ROWS
) -> Iterator[pa.RecordBatch]:
    """Record batches of ``columns`` of ``pairs`` in row order, of at most ``max_rows`` rows.

    Small stored batches of a stage table are combined (per-batch work such as tokenizing has a
    fixed cost), large ones sliced; every batch owns its memory (:meth:`StageTable.copied_batches`).
    """
    if not isinstance(pairs, StageTable):
        yield from pairs.select(list(columns)).combine_chunks().to_batches(max_chunksize=max_rows)
        return
    pending: list[pa.RecordBatch] = []
    size = 0
    for stored in pairs.copied_batches(columns):
        for batch in stored.to_batches(max_chunksize=max_rows) if stored.num_rows else []:
            if size + batch.num_rows > max_rows and pending:
                yield _combined(pending)
                pending, size = [], 0
            pending.append(batch)
            size += batch.num_rows
    if pending:
        yield _combined(pending)


def _combined(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    """One record batch of ``batches``."""
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def read_columns(pairs: pa.Table | StageTable, columns: Sequence[str]) -> pa.Table:
    """``columns`` of ``pairs`` (a stage table's are read now, into memory)."""
    if not isinstance(pairs, StageTable):
        return pairs.select(list(columns))
    schema = pa.schema([pairs.schema.field(c) for c in columns])
    return pa.Table.from_batches(list(table_batches(pairs, columns)), schema=schema)


def distinct_texts(hi: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Text ids sorted by hash: returns (text id per input, first input index per text id)."""
    df = pl.DataFrame({"hi": hi, "lo": lo}).with_row_index("k")
    uniq = df.group_by("hi", "lo").agg(pl.col("k").min()).sort("hi", "lo").with_row_index("tid")
    tid = df.join(
        uniq.select("hi", "lo", "tid"), on=["hi", "lo"], how="left", maintain_order="left"
    )
    return tid["tid"].to_numpy().astype(np.int64), uniq["k"].to_numpy().astype(np.int64)


class DistinctTexts:
    """Normalized texts added batch by batch: each distinct text is tokenized once.

    :meth:`add` hashes a batch of texts and, unless ``tokenize`` is false, tokenizes the texts not
    seen before and computes their space-free keys (:func:`~curation.match.near_dup.compact_keys`);
    ``locators`` (one int per text, e.g. its input row) say where each text can be read again.

    The word hashes of each batch wait in an unnamed temporary file (``tempfile.TemporaryFile`` in
    ``$TMPDIR``; written sequentially, so they are page cache, not memory of the process) until
    :meth:`words` reads them back one batch at a time into text-id order. Held in memory they
    would exist twice while being reordered: 2 x 229 MB on the scale-1.0 benchmark corpus.
    """

    def __init__(self, seed: int, *, tokenize: bool = True) -> None:
        self.seed, self.tokenize = seed, tokenize
        self._seen = pl.DataFrame(schema={"hi": pl.UInt64, "lo": pl.UInt64, "d": pl.Int64})
        self._spill: IO[bytes] | None = None  # opened by the first tokenized batch
        self._counts: list[np.ndarray] = []
        self._compact: list[np.ndarray] = []
        self._locators: list[np.ndarray] = []
        self._n = 0

    def add(self, texts: pa.Array, locators: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hash ``texts`` (and tokenize the new ones); returns their xxh3-128 ``(hi, lo)``."""
        hi, lo = text_hash128(texts)
        if not self.tokenize or len(hi) == 0:
            return hi, lo
        batch = pl.DataFrame({"hi": hi, "lo": lo}).with_row_index("i")
        new = (
            batch.unique(["hi", "lo"], keep="first", maintain_order=True)
            .join(self._seen, on=["hi", "lo"], how="anti", maintain_order="left")
            .with_columns(d=pl.int_range(self._n, self._n + pl.len(), dtype=pl.Int64))
        )
        if new.height:
            idx = pa.array(new["i"].to_numpy().astype(np.int64), pa.int64())
            fresh = texts.take(idx)
            words = tokenize(fresh, self.seed)
            if self._spill is None:
                self._spill = tempfile.TemporaryFile(prefix="word_hashes_")  # noqa: SIM115
            np.ascontiguousarray(words.hashes, np.uint64).tofile(self._spill)
            self._counts.append(words.counts)
            self._compact.append(compact_keys(words.texts, self.seed))
            self._locators.append(np.asarray(locators, np.int64)[new["i"].to_numpy()])
            self._seen = pl.concat([self._seen, new.select("hi", "lo", "d")])
            self._n += new.height
        return hi, lo

    def words(
        self, hi: np.ndarray, lo: np.ndarray, fetch: Callable[[np.ndarray], pa.Array]
    ) -> tuple[np.ndarray, np.ndarray, Words]:
        """The distinct texts of the occurrences ``(hi, lo)`` (hashes returned by :meth:`add`).

        Returns ``(tid, first, words)`` as :func:`distinct_texts` numbers them, ``words`` in tid
        order; its texts are :class:`~curation.match.near_dup.LazyTexts` read by ``fetch(locators)``.
        Consumes the tokenized batches (and closes the temporary file): call it once.
        """
        tid, first = distinct_texts(hi, lo)
        uniq = pl.DataFrame({"hi": hi[first], "lo": lo[first]}).with_row_index("tid")
        d = (
            uniq.join(self._seen, on=["hi", "lo"], how="left", maintain_order="left")["d"]
            .to_numpy()
            .astype(np.int64)
        )
        counts_d = np.concatenate([*self._counts, np.zeros(0, np.int64)])
        counts = counts_d[d]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        hashes = np.empty(int(offsets[-1]), np.uint64)
        tid_of_d = np.full(self._n, -1, np.int64)
        tid_of_d[d] = np.arange(len(d))
        base = 0
        if self._spill is not None:
            self._spill.seek(0)
        while self._counts:  # scatter batch by batch: one batch's hashes in memory at a time
            part_counts = self._counts.pop(0)
            part = np.fromfile(self._spill, np.uint64, int(part_counts.sum()))
            dest = tid_of_d[base : base + len(part_counts)]
            used = dest >= 0
            src_offsets = np.concatenate([[0], np.cumsum(part_counts)])[:-1]
            hashes[_ranges(offsets[dest[used]], part_counts[used])] = part[
                _ranges(src_offsets[used], part_counts[used])
            ]
            base += len(part_counts)
        if self._spill is not None:
            self._spill.close()
            self._spill = None
        compact = np.concatenate([*self._compact, np.zeros(0, np.uint64)])[d]
        locators = np.concatenate([*self._locators, np.zeros(0, np.int64)])[d]
        self._compact, self._locators = [], []
        texts = LazyTexts(len(d), lambda ids: fetch(locators[ids]))
        return tid, first, Words(hashes, offsets, texts, compact, self.seed)
