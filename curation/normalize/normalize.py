"""Normalize validated source rows of every dataset into one preference-pair table.

Each dataset maps its valid rows onto :data:`~curation.core.schema.PAIRS` (its module in
:mod:`curation.datasets`: ``pairs``/``pair_parts``); this module fills ``pair_id``, streams the
files group by group, and splits off the quarantined rows and the red-team transcripts.

``pair_id`` is the xxh3-128 hex digest of dataset, subset, split, dimension and the normalized
prompt/chosen/rejected (see :mod:`curation.core.textnorm`), so it is stable across runs and
independent of row order; exact repeats inside one file get ``-1``, ``-2``... in line order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from curation.core.batches import BatchStream
from curation.core.hashing import xxh3_128_digests
from curation.core.jsonl import SOURCE_LINE
from curation.core.parallel import in_threads
from curation.core.report import report_of
from curation.core.schema import PAIRS, QUARANTINE, RED_TEAM, TURN
from curation.core.stage_table import StageTable
from curation.core.textnorm import NORMALIZED_PROMPT, normalize_array
from curation.datasets import dataset, dataset_of, pairs_per_row
from curation.datasets import hh_format as hh
from curation.ingest.ingest import RAW_LINE, REASONS, WARNINGS

#: Pairs between stages: :data:`~curation.core.schema.PAIRS` plus the normalized prompt.
PAIRS_STAGE = PAIRS.append(pa.field(NORMALIZED_PROMPT, pa.large_string()))
_KEY_SEP = "\x1f"


def split_verdicts(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Split an ingested table into (rows that go on, rows to quarantine)."""
    quarantined = pc.greater(pc.list_value_length(table.column(REASONS)), 0)
    return table.filter(pc.invert(quarantined)), table.filter(quarantined)


def quarantine_rows(table: pa.Table) -> pa.Table:
    """Quarantined rows of an ingested table in the :data:`~curation.core.schema.QUARANTINE` schema."""
    return pa.table(
        {
            "dataset": table.column("dataset"),
            "subset": table.column("subset"),
            "split": table.column("split"),
            "source_file": table.column("source_file"),
            "source_line": table.column(SOURCE_LINE),
            "reasons": table.column(REASONS),
            "raw_line": table.column(RAW_LINE),
        },
        schema=QUARANTINE,
    )


_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def hex_digests128(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``xxh3_128_hexdigest`` of every string of ``values`` (UTF-8 bytes), without Python strings.

    The digests (:func:`~curation.core.hashing.xxh3_128_digests`) are hex-encoded in numpy (the
    per-row ``to_pylist`` + ``encode`` + ``hexdigest`` took ~1.5 s at full scale).
    """
    nibbles = xxh3_128_digests(values)
    if len(nibbles) == 0:
        return pa.array([], pa.string())
    text = np.empty((len(nibbles), 32), np.uint8)
    text[:, 0::2], text[:, 1::2] = _HEX[nibbles >> 4], _HEX[nibbles & 15]
    return pa.array(text.view("S32").ravel(), pa.binary(32)).cast(pa.string())


def base_ids(keys: list[pa.ChunkedArray | pa.Array]) -> pa.Array:
    """xxh3-128 hex digests of the ``keys`` joined per row (nulls as ``""``), without the repeat
    suffix of :func:`content_ids`."""
    joined = pc.binary_join_element_wise(
        *[pc.fill_null(pc.cast(k, pa.large_string()), "") for k in keys],
        pa.scalar(_KEY_SEP, pa.large_string()),
    )
    return hex_digests128(joined)


class RepeatCounter:
    """Repeat suffixes of :func:`content_ids` computed part by part.

    Parts must come in ``order`` (``source_line``) order: a row's suffix is the number of rows
    with the same base id before it, in this part (by ``order``) and in earlier parts.
    """

    def __init__(self) -> None:
        self._seen = pl.DataFrame(schema={"id": pl.String, "seen": pl.UInt32})
        self._last: int | None = None

    def ids(self, base: pa.Array, order: pa.ChunkedArray | pa.Array) -> pa.Array:
        """The ids of one part: ``base`` with ``-1``, ``-2``... on repeats."""
        order_np = np.asarray(order.to_numpy() if isinstance(order, pa.Array) else order)
        if len(order_np):
            if self._last is not None and int(order_np.min()) <= self._last:
                raise ValueError("parts must come in increasing order")
            self._last = int(order_np.max())
        frame = pl.DataFrame({"id": pl.Series(base, dtype=pl.String), "order": order_np})
        frame = frame.with_columns(rank=pl.col("order").rank("ordinal").over("id") - 1)
        if self._seen.height:
            frame = frame.join(self._seen, on="id", how="left", maintain_order="left")
            frame = frame.with_columns(rank=pl.col("rank") + pl.col("seen").fill_null(0))
        counts = frame.group_by("id").agg(seen=pl.len().cast(pl.UInt32))
        self._seen = (
            pl.concat([self._seen, counts]).group_by("id").agg(pl.col("seen").sum())
            if self._seen.height
            else counts
        )
        ids = frame.select(
            pl.when(pl.col("rank") == 0)
            .then(pl.col("id"))
            .otherwise(pl.col("id") + "-" + pl.col("rank").cast(pl.String))
        ).to_series()
        return ids.to_arrow().cast(pa.string())


def content_ids(keys: list[pa.ChunkedArray | pa.Array], order: pa.ChunkedArray) -> pa.Array:
    """xxh3-128 hex ids of the joined ``keys`` per row; repeats get ``-1``, ``-2``... by ``order``."""
    return RepeatCounter().ids(base_ids(keys), order)


def with_pair_ids(pairs: pa.Table) -> pa.Table:
    """Fill ``pair_id`` (see the module docstring) and add the normalized prompt.

    The result has the :data:`PAIRS_STAGE` schema: :data:`~curation.core.schema.PAIRS` plus
    :data:`~curation.core.textnorm.NORMALIZED_PROMPT`, so dedup and decontamination do not normalize
    the prompts again.
    """
    staged, base = _staged_with_base_ids(pairs)
    ids = RepeatCounter().ids(base, pairs.column(SOURCE_LINE))
    return staged.set_column(0, "pair_id", ids)


def _staged_with_base_ids(
    pairs: pa.Table,
    prompt: pa.Array | None = None,
    chosen: pa.Array | None = None,
    rejected: pa.Array | None = None,
) -> tuple[pa.Table, pa.Array]:
    """``pairs`` with the normalized prompt appended, and their ids before repeat suffixes.

    The id key is dataset, subset, split, dimension and the normalized prompt, chosen and
    rejected texts; normalized texts computed already (a dataset giving several pairs a row:
    once per row) can be passed in.
    """
    prompt = normalize_array(pairs.column("prompt")) if prompt is None else prompt
    chosen = normalize_array(pairs.column("chosen")) if chosen is None else chosen
    rejected = normalize_array(pairs.column("rejected")) if rejected is None else rejected
    keys = [pairs.column(c) for c in ("dataset", "subset", "split", "dimension")]
    staged = pairs.append_column(PAIRS_STAGE.field(NORMALIZED_PROMPT), prompt)
    return staged, base_ids([*keys, prompt, chosen, rejected])


def red_team_rows(table: pa.Table) -> pa.Table:
    """Validated red-team rows → the :data:`~curation.core.schema.RED_TEAM` table with parsed turns."""
    parsed = hh.parse_transcripts(table.column("transcript"))
    columns = {name: table.column(name) for name in RED_TEAM.names if name in table.column_names}
    columns["turns"] = parsed["turns"].to_arrow().cast(pa.list_(TURN))
    columns["transcript_id"] = content_ids([table.column("transcript")], table.column(SOURCE_LINE))
    columns["source_line"] = table.column(SOURCE_LINE)
    return pa.table({name: columns[name] for name in RED_TEAM.names}, schema=RED_TEAM)


def pairs_from(table: pa.Table) -> pa.Table:
    """Pairs of one validated ingested table of any dataset, ``pair_id`` not yet filled."""
    if table.num_rows == 0:
        return PAIRS.empty_table()
    return dataset(table.column("dataset")[0].as_py()).pairs(table)


def normalize_file(table: pa.Table) -> tuple[dict, pa.Table, pa.Table]:
    """One ingested file -> (its report, its quarantine rows, its pairs or red-team rows)."""
    if is_red_team(table):
        out = red_team_table([table])
    else:
        out = pair_stream([table], workers=1).to_table()
    return report_of(table), quarantine_table([table]), out


# ------------------------------------------------------------------ streaming, file by file

#: An ingested table: in memory, or a stage-table handle read batch by batch.
RawTable = pa.Table | StageTable
#: Stored batches of a raw table normalized together, up to about this many rows: one work
#: item on the thread pool (~8 MB of HH text; larger groups only hold more memory).
GROUP_ROWS = 2048
#: Raw columns that normalization never reads.
_UNUSED = (RAW_LINE, WARNINGS)


def is_red_team(raw: RawTable) -> bool:
    """Whether an ingested table holds red-team transcripts (its dataset gives no pairs for it)."""
    return pairs_per_row(report_of(raw)) == 0


def pair_files_in_order(raw_tables: Mapping[str, RawTable]) -> list[RawTable]:
    """The ingested tables that give pairs, in the order of the pair table: test files first,
    then train, each split in name order (so each split is one contiguous run of rows)."""
    names = [n for n in sorted(raw_tables) if not is_red_team(raw_tables[n])]
    return [
        raw_tables[n] for n in sorted(names, key=lambda n: report_of(raw_tables[n])["split"] or "")
    ]


def _select(raw: RawTable, columns: Sequence[str]) -> pa.Table:
    """``columns`` of a raw table, in its stored batches."""
    return raw.select(list(columns))


def _used_columns(raw: RawTable) -> list[str]:
    return [c for c in raw.schema.names if c not in _UNUSED]


def _valid(reasons: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    return pc.equal(pc.list_value_length(reasons), 0)


def quarantine_table(raws: Sequence[RawTable]) -> pa.Table:
    """The quarantined rows of every raw table, in order (:data:`~curation.core.schema.QUARANTINE`)."""
    parts = []
    for raw in raws:
        columns = ["dataset", "subset", "split", "source_file", SOURCE_LINE, REASONS, RAW_LINE]
        parts.append(quarantine_rows(split_verdicts(_select(raw, columns))[1]))
    return pa.concat_tables([QUARANTINE.empty_table(), *parts])


def red_team_table(raws: Sequence[RawTable]) -> pa.Table:
    """The validated red-team rows of the red-team raw tables, in order."""
    parts = [red_team_rows(split_verdicts(_select(raw, _used_columns(raw)))[0]) for raw in raws]
    return pa.concat_tables([RED_TEAM.empty_table(), *parts])


def _pairs_per_row(raw: RawTable) -> int:
    return pairs_per_row(report_of(raw))


def _stored_batch_rows(raw: RawTable) -> list[int]:
    """Rows of each stored record batch (a table's batches as the IO manager writes them)."""
    if isinstance(raw, StageTable):
        return list(raw.batch_rows)
    return [b.num_rows for b in raw.to_batches()]


def _read_stored(raw: RawTable, columns: list[str], start: int, stop: int) -> pa.Table:
    """Stored batches ``start:stop`` of ``columns`` (one chunk per stored batch)."""
    if isinstance(raw, StageTable):
        return raw.read_batches(start, stop, columns)
    schema = pa.schema([raw.schema.field(c) for c in columns])
    return pa.Table.from_batches(raw.select(columns).to_batches()[start:stop], schema=schema)


@dataclass(frozen=True)
class _Group:
    """Stored batches ``start:stop`` of one raw table: one work item."""

    raw: RawTable
    start: int
    stop: int
    first: bool
    last: bool


def _groups(raw: RawTable, group_rows: int) -> list[_Group]:
    sizes = _stored_batch_rows(raw)
    bounds, rows = [0], 0
    for i, size in enumerate(sizes):
        rows += size
        if rows >= group_rows and i + 1 < len(sizes):
            bounds.append(i + 1)
            rows = 0
    bounds.append(len(sizes))
    pairs = list(itertools.pairwise(bounds))
    return [_Group(raw, a, b, i == 0, i == len(pairs) - 1) for i, (a, b) in enumerate(pairs)]


@dataclass
class _Part:
    """One group's pairs per dimension (``pair_id`` not filled) with their base ids, and the
    valid rows of each of its stored batches."""

    dimensions: list[tuple[str, pa.Table, pa.Array]]
    counts: list[int]
    empty: bool


def _parts(raw: RawTable, good: pa.Table) -> list[tuple[str, pa.Table, pa.Array]]:
    """The pairs of validated rows, per part of their dataset (:meth:`pair_parts`), staged with
    their base ids."""
    parts = dataset_of(report_of(raw)).pair_parts(good)
    return [(p.key, *_staged_with_base_ids(p.pairs, p.prompt, p.chosen, p.rejected)) for p in parts]


def _group_pairs(group: _Group) -> _Part:
    """The pairs of one group of stored batches (runs on the thread pool)."""
    table = _read_stored(group.raw, _used_columns(group.raw), group.start, group.stop)
    valid = _valid(table.column(REASONS))
    mask = np.asarray(valid.to_numpy(zero_copy_only=False), bool)
    bounds = np.cumsum([0, *(len(c) for c in table.column(REASONS).chunks)])
    counts = [int(mask[a:b].sum()) for a, b in itertools.pairwise(bounds.tolist())]
    good = table.filter(valid)
    if good.num_rows == 0:
        return _Part([], counts, True)
    return _Part(_parts(group.raw, good), counts, False)


def _empty_batch() -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=PAIRS_STAGE)


def _slices(pairs: pa.Table, counts: list[int]) -> Iterator[pa.RecordBatch]:
    """``pairs`` as one record batch per stored raw batch with valid rows (its valid rows)."""
    batch = pairs.combine_chunks().to_batches()
    whole = batch[0] if batch else _empty_batch()
    offset = 0
    for count in counts:
        if count:  # a stored batch without valid rows left no chunk in the written table
            yield whole.slice(offset, count)
            offset += count


def _file_batches(parts: Iterator[tuple[_Group, _Part]]) -> Iterator[pa.RecordBatch]:
    """Record batches of the pair table from groups in file order: per file and dimension, one
    batch per stored raw batch (the layout the concatenated per-file tables were written in)."""
    counters: dict[str, RepeatCounter] = {}
    later: list[pa.RecordBatch] = []  # the second PKU dimension, after the file's first
    empty = True
    for group, part in parts:
        if group.first:
            counters, later, empty = {}, [], True
        empty &= part.empty
        for index, (dimension, pairs, base) in enumerate(part.dimensions):
            counter = counters.setdefault(dimension, RepeatCounter())
            ids = counter.ids(base, pairs.column(SOURCE_LINE))
            pairs = pairs.set_column(0, PAIRS_STAGE.field("pair_id"), ids)
            batches = _slices(pairs, part.counts)
            if index == 0:
                yield from batches
            else:
                later.extend(batches)
        if group.last:
            if empty:  # no valid row: an empty table, as for an absent file
                yield _empty_batch()
            yield from later
            later = []


def _like_written_table(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """The batches as writing one concatenated table would store them: an empty leading batch
    (the empty table the parts were concatenated to), empty batches kept except at the end."""
    pending = 1
    for batch in batches:
        if batch.num_rows == 0:
            pending += 1
            continue
        for _ in range(pending):
            yield _empty_batch()
        pending = 0
        yield batch


def pair_stream(
    raws: Sequence[RawTable], workers: int | None = None, group_rows: int = GROUP_ROWS
) -> BatchStream:
    """The :data:`PAIRS_STAGE` table of the ingested tables ``raws`` (pair files, in pair-table
    order: :func:`pair_files_in_order`), computed group by group while it is written.

    Groups of stored batches are normalized on ``workers`` threads and come back in order;
    repeat suffixes are counted per file across its groups (:class:`RepeatCounter`). At most a
    few groups and, for a PKU file, its second dimension are in memory at once.
    """
    rows = sum(
        _pairs_per_row(raw) * int(pc.sum(_valid(raw.column(REASONS))).as_py() or 0) for raw in raws
    )

    def produce() -> Iterator[pa.RecordBatch]:
        groups = [g for raw in raws for g in _groups(raw, group_rows)]
        parts = in_threads(_group_pairs, groups, workers, ordered=True)
        return _like_written_table(_file_batches(parts))

    return BatchStream(PAIRS_STAGE, rows, produce)


def pair_preview_rows(raws: Sequence[RawTable], n: int = 5) -> pa.Table:
    """The first ``n`` rows of :func:`pair_stream` without computing the others.

    A pair's id depends only on the rows of its file before it, so the first ``n`` valid rows
    of a file give its first ``n`` pairs.
    """
    parts, rows = [], 0
    for raw in raws:
        if rows >= n:
            break
        head = _select(raw, _used_columns(raw))
        head = head.filter(_valid(head.column(REASONS))).slice(0, n)
        if head.num_rows:
            table = pair_stream([head], workers=1).to_table()
            parts.append(table.slice(0, n - rows))
            rows += parts[-1].num_rows
    return pa.concat_tables([PAIRS_STAGE.empty_table(), *parts])
