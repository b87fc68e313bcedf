"""RowSelection: dedup/decontam outputs written batch by batch equal the filtered tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from assets.io import read_table, write_table
from curation.core.selection import RowSelection
from curation.match.decontam import decontaminate
from curation.match.dedup import deduplicate
from tests.test_dedup import _mixed_corpus, make_pairs


def test_lazy_results_equal_the_materialized_ones(tmp_path: Path) -> None:
    pairs = make_pairs(_mixed_corpus(1))
    kept, removed = deduplicate(pairs)
    lazy, removed_lazy = deduplicate(pairs, lazy=True)
    assert isinstance(lazy, RowSelection) and removed_lazy.equals(removed)
    assert lazy.num_rows == kept.num_rows < pairs.num_rows
    assert lazy.to_table().equals(kept)
    write_table(lazy, tmp_path / "kept.arrow")
    assert read_table(tmp_path / "kept.arrow").equals(kept)
    clean, gone = decontaminate(kept)
    clean_lazy, gone_lazy = decontaminate(kept, lazy=True)
    assert gone_lazy.equals(gone) and clean_lazy.to_table().equals(clean)


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_batches_keep_order_across_chunks(tmp_path: Path, chunk: int) -> None:
    table = pa.table({"x": list(range(10))}).replace_schema_metadata({b"k": b"v"})
    keep = np.array([i % 3 != 0 for i in range(10)])
    selection = RowSelection(table, keep)
    rows = [r for b in selection.batches(max_rows=chunk) for r in b.column("x").to_pylist()]
    assert rows == [i for i in range(10) if i % 3 != 0]
    assert selection.head(2).column("x").to_pylist() == [1, 2]
    write_table(selection, tmp_path / "t.arrow")
    back = read_table(tmp_path / "t.arrow")
    assert back.column("x").to_pylist() == rows and back.schema.metadata == {b"k": b"v"}


def test_mask_length_must_match() -> None:
    with pytest.raises(ValueError, match="mask"):
        RowSelection(pa.table({"x": [1, 2]}), np.array([True]))
