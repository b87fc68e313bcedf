"""curation.ingest.ingest_order / is_large: the order in which ingest_files starts the files, so
that the large HH-RLHF train files run one after another while the small ones fill the other
threads (two large files at once held ~1.2 GB at full scale: docs/benchmarks.md)."""

from __future__ import annotations

import itertools

from curation.ingest import UPSTREAM_ROWS, file_name, ingest_order, is_large
from curation.sources import all_files, source_file


def test_the_large_files_are_the_hh_train_files() -> None:
    large = {f"{f.subset}/{f.split}" for f in all_files() if is_large(f)}
    assert large == {
        "harmless-base/train",
        "helpful-base/train",
        "helpful-online/train",
        "helpful-rejection-sampled/train",
    }
    assert not is_large(source_file("red-team-attempts"))
    assert not is_large(source_file("Alpaca-7B", "train"))


def test_every_file_once_red_team_first_large_ones_longest_first_and_never_adjacent() -> None:
    files = all_files()
    order = ingest_order(files)
    assert sorted(f.key for f in order) == sorted(f.key for f in files)
    assert order[0].kind == "hh_red_team"
    large = [f for f in order if is_large(f)]
    rows = [UPSTREAM_ROWS[file_name(f.dataset, f.relpath)] for f in large]
    assert rows == sorted(rows, reverse=True)
    flags = [is_large(f) for f in order]
    assert not any(a and b for a, b in itertools.pairwise(flags))
    assert all(f.split == "test" for f in order[order.index(large[-1]) + 2 :])


def test_a_selection_without_large_files_keeps_red_team_first() -> None:
    files = [f for f in all_files() if not is_large(f)]
    order = ingest_order(list(reversed(files)))
    assert order[0].kind == "hh_red_team"
    assert [f.split for f in order[1:]].index("test") > 0  # trains before tests
    assert ingest_order([]) == []
