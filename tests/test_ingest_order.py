"""curation.ingest.ingest.ingest_order / is_large / ingest_in_threads: how ingest_files starts the files,
so that the large HH-RLHF train files run one after another while the small ones fill the other
threads (two large files at once put the scale-1.0 ingest step at up to 1,533 MiB:
docs/benchmarks.md)."""

from __future__ import annotations

import itertools
import threading
import time

from curation.core import parallel
from curation.ingest.ingest import (
    UPSTREAM_ROWS,
    file_name,
    ingest_in_threads,
    ingest_order,
    is_large,
)
from curation.ingest.sources import all_files, source_file


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


def test_ingest_in_threads_runs_one_large_file_at_a_time_beside_small_ones() -> None:
    """Real threads on the shared pool: a stand-in for ingesting records how many large files
    run at once; small files still run beside a large one, and every file comes out once."""
    lock = threading.Lock()
    running = {"large": 0, "small": 0}
    seen = {"max_large": 0, "small_beside_large": 0}

    def work(source):
        kind = "large" if is_large(source) else "small"
        with lock:
            running[kind] += 1
            seen["max_large"] = max(seen["max_large"], running["large"])
            seen["small_beside_large"] += kind == "small" and running["large"] > 0
        time.sleep(0.05 if kind == "large" else 0.01)
        with lock:
            running[kind] -= 1
        return source.key

    parallel.configure(2)
    try:
        out = list(ingest_in_threads(work, all_files(), workers=2))
    finally:
        parallel.configure(0)
    assert sorted(key for _, key in out) == sorted(f.key for f in all_files())
    assert all(source.key == key for source, key in out)
    assert seen["max_large"] == 1
    assert seen["small_beside_large"] > 0
