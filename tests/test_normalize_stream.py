"""The streamed normalization (group by group, written batch by batch) equals the whole-file one.

Real sample rows, stored as a stage table in small record batches so that one file spans several
groups: repeat suffixes counted across groups, PKU dimensions in file order (all helpful pairs,
then all harmless), quarantined rows skipped, one written batch per stored raw batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from curation.core.report import REPORT_KEY
from curation.core.stage_table import StageTable
from curation.ingest.ingest import REASONS, ingest_file
from curation.ingest.sources import source_file
from curation.normalize.normalize import (
    PAIRS_STAGE,
    normalize_file,
    pair_files_in_order,
    pair_preview_rows,
    pair_stream,
    pairs_from,
    quarantine_table,
    split_verdicts,
    with_pair_ids,
)
from pipelines.settings import SAMPLE

HH_TRAIN = source_file("harmless-base", "train")
HH_TEST = source_file("harmless-base", "test")
PKU_TRAIN = source_file("Alpaca-7B", "train")


def _ingested(source) -> pa.Table:
    root = SAMPLE / ("hh-rlhf" if source.dataset == "hh-rlhf" else "PKU-SafeRLHF")
    result = ingest_file(source, str(root))
    report = json.dumps(result.report.to_dict()).encode()
    return result.table.replace_schema_metadata({REPORT_KEY: report})


def _with_repeats_and_a_quarantined_batch(table: pa.Table) -> pa.Table:
    """The table twice over (every pair repeats, in a later group), the rows of one stored batch
    quarantined, ``source_line`` kept increasing."""
    second = table.set_column(
        table.schema.get_field_index("source_line"),
        "source_line",
        pc.add(table["source_line"], 10_000),
    )
    doubled = pa.concat_tables([table, second])
    reasons = doubled[REASONS].to_pylist()
    for row in range(3, 6):
        reasons[row] = ["planted"]
    return doubled.set_column(
        doubled.schema.get_field_index(REASONS), REASONS, pa.array(reasons, pa.list_(pa.string()))
    )


def _store(table: pa.Table, path: Path, batch_rows: int) -> StageTable:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=batch_rows)
    return StageTable(path)


def _written_layout(table: pa.Table) -> list[int]:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=1 << 16)
    reader = pa.ipc.open_file(sink.getvalue())
    return [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]


@pytest.mark.parametrize("group_rows", [1, 7, 10_000])
def test_stream_equals_the_whole_file_normalization(tmp_path: Path, group_rows: int) -> None:
    tables = {
        "hh_test": _ingested(HH_TEST),
        "hh_train": _with_repeats_and_a_quarantined_batch(_ingested(HH_TRAIN)),
        "pku_train": _with_repeats_and_a_quarantined_batch(_ingested(PKU_TRAIN)),
    }
    handles = {
        name: _store(table, tmp_path / f"{name}.arrow", batch_rows=3)
        for name, table in tables.items()
    }
    order = pair_files_in_order(handles)
    assert [h.path for h in order] == [
        handles[n].path for n in ("hh_test", "hh_train", "pku_train")
    ]

    stream = pair_stream(order, workers=2, group_rows=group_rows)
    batches = list(stream.batches())
    streamed = pa.Table.from_batches(batches, schema=PAIRS_STAGE)

    # what the step computed before: whole files, concatenated in the same order
    chunked = {n: pa.Table.from_batches(list(h.to_batches())) for n, h in handles.items()}
    whole = [
        with_pair_ids(pairs_from(split_verdicts(chunked[n])[0]))
        for n in ("hh_test", "hh_train", "pku_train")
    ]
    expected = pa.concat_tables([PAIRS_STAGE.empty_table(), *whole])
    assert streamed.equals(expected)
    assert stream.num_rows == expected.num_rows
    assert any("-1" in i for i in streamed["pair_id"].to_pylist())  # repeats across groups
    assert [b.num_rows for b in batches] == _written_layout(expected)
    assert pair_preview_rows(order, 5).equals(expected.slice(0, 5))
    quarantined = sum(split_verdicts(t)[1].num_rows for t in chunked.values())
    assert quarantine_table(list(handles.values())).num_rows == quarantined


def test_normalize_file_still_gives_the_pairs_of_one_table() -> None:
    table = _ingested(PKU_TRAIN)
    _, quarantine, pairs = normalize_file(table)
    assert pairs.equals(with_pair_ids(pairs_from(split_verdicts(table)[0])))
    assert quarantine.num_rows == split_verdicts(table)[1].num_rows
