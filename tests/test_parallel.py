"""The one thread pool (``curation.core.parallel``) behind ingest, normalization, matching and release
encoding.

Concurrency is shown by what the threads record (barriers that only open when enough items run
at once, thread names, running counts), never by durations: sleeps below only vary the order in
which items finish, and every wait has a generous timeout that only guards against a hang.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import dagster as dg
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assets.resources import CurationSettings
from curation.core import parallel, textnorm
from curation.core.parallel import in_threads, parallel_map
from curation.ingest.ingest import ingest_file
from curation.ingest.sources import all_files
from curation.match.decontam import decontaminate
from curation.match.dedup import deduplicate
from curation.normalize.normalize import pairs_from, split_verdicts, with_pair_ids

HANG = 60  # seconds; only reached when something deadlocks


@pytest.fixture
def pool() -> Iterator[None]:
    """A 4-thread shared pool for the test, whatever the machine; back to the default after."""
    parallel.configure(4)
    yield
    parallel.configure(0)


def _pool_thread() -> bool:
    return threading.current_thread().name.startswith(f"{parallel.THREAD_PREFIX}_")


# ---------------------------------------------------------------------------- in_threads


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(0, 3), max_size=12),
    st.integers(1, 4),
    st.booleans(),
)
def test_every_item_once_in_order_when_ordered(delays, workers, ordered):
    def work(i: int) -> int:
        time.sleep(delays[i] / 1000)  # varies the finishing order only
        return i * 10

    out = list(in_threads(work, list(range(len(delays))), workers, ordered=ordered))
    assert sorted(out) == [(i, i * 10) for i in range(len(delays))]
    if ordered:
        assert [i for i, _ in out] == list(range(len(delays)))


@pytest.mark.usefixtures("pool")
@pytest.mark.parametrize("ordered", [True, False])
def test_workers_items_run_at_once_and_at_most_one_more_waits(ordered):
    """Two at a time (a 2-party barrier opens only when two items run together), never more
    than two running and three taken, although the pool has four threads."""
    barrier = threading.Barrier(2, timeout=HANG)
    lock = threading.Lock()
    state = {"running": 0, "max_running": 0, "started": 0, "yielded": 0, "ahead": 0}
    threads = set()

    def work(i: int) -> int:
        with lock:
            state["running"] += 1
            state["started"] += 1
            state["max_running"] = max(state["max_running"], state["running"])
            state["ahead"] = max(state["ahead"], state["started"] - state["yielded"])
            threads.add(threading.current_thread().name)
        barrier.wait()  # BrokenBarrierError if the partner item never runs at the same time
        time.sleep(0.005)  # room for a third item to start, were it allowed to
        with lock:
            state["running"] -= 1
        return i

    for _ in in_threads(work, list(range(20)), 2, ordered=ordered):
        time.sleep(0.005)  # a slow consumer
        with lock:
            state["yielded"] += 1
    assert state["max_running"] == 2
    assert state["ahead"] <= 3
    assert all(name.startswith(f"{parallel.THREAD_PREFIX}_") for name in threads)


@pytest.mark.usefixtures("pool")
def test_a_blocked_first_item_does_not_hold_back_the_others_when_unordered():
    """Item 0 finishes only after the consumer has received the four others."""
    others_seen = threading.Event()
    order = []

    def work(i: int) -> int:
        if i == 0:
            assert others_seen.wait(HANG), "the other items were held back"
        return i

    for i, _ in in_threads(work, list(range(5)), 2, ordered=False):
        order.append(i)
        if len(order) == 4:
            others_seen.set()
    assert order[-1] == 0 and sorted(order) == list(range(5))


@pytest.mark.usefixtures("pool")
@pytest.mark.parametrize("ordered", [True, False])
def test_the_first_error_is_raised(ordered):
    def work(i: int) -> int:
        if i == 3:
            raise ValueError("boom")
        return i

    with pytest.raises(ValueError, match="boom"):
        list(in_threads(work, list(range(8)), 2, ordered=ordered))


@pytest.mark.usefixtures("pool")
def test_items_already_running_finish_before_the_error_leaves():
    """A failed item does not leave a running one behind (the release's encode threads write into
    a temporary folder the error path removes). Unordered: the error of item 1 arrives while
    item 0 still runs (in item order, item 0's result is awaited first anyway)."""
    finished = threading.Event()

    def work(i: int) -> int:
        if i == 1:
            time.sleep(0.05)  # item 0 is running by now
            raise ValueError("boom")
        time.sleep(0.3)
        finished.set()
        return i

    with pytest.raises(ValueError, match="boom"):
        list(in_threads(work, [0, 1], 2, ordered=False))
    assert finished.is_set()


@pytest.mark.usefixtures("pool")
def test_in_threads_from_a_pool_thread_runs_serially_on_it():
    def inner(_: int) -> str:
        return threading.current_thread().name

    def outer(i: int) -> tuple[str, set[str]]:
        return threading.current_thread().name, {n for _, n in in_threads(inner, [1, 2, 3])}

    for _, (caller, inner_threads) in in_threads(outer, [0, 1]):
        assert inner_threads == {caller}


# ---------------------------------------------------------------------------- parallel_map


@pytest.mark.usefixtures("pool")
def test_parallel_map_runs_the_items_at_once_and_keeps_their_order():
    barrier = threading.Barrier(3, timeout=HANG)

    def work(i: int) -> tuple[int, str]:
        barrier.wait()  # opens only when three items run at the same time
        return i * i, threading.current_thread().name

    out = parallel_map(work, [1, 2, 3])
    assert [v for v, _ in out] == [1, 4, 9]
    assert len({name for _, name in out}) == 3


@pytest.mark.usefixtures("pool")
def test_parallel_map_raises_the_first_error():
    def work(i: int) -> int:
        if i == 1:
            raise ValueError("boom")
        return i

    with pytest.raises(ValueError, match="boom"):
        parallel_map(work, [0, 1, 2])


def test_one_thread_means_serial_on_the_caller():
    parallel.configure(1)
    try:
        assert parallel.threads() == 1
        caller = threading.current_thread().name
        assert parallel_map(lambda _: threading.current_thread().name, [1, 2, 3]) == [caller] * 3
        assert {n for _, n in in_threads(lambda _: threading.current_thread().name, [1, 2])} == {
            caller
        }
    finally:
        parallel.configure(0)


def test_configure_rejects_a_negative_size():
    with pytest.raises(ValueError, match=">= 0"):
        parallel.configure(-1)


def test_nested_calls_on_a_full_pool_do_not_deadlock():
    """Two pool threads, each running an item that maps four pieces which map two more: the
    callers run the pieces nobody picked up, so the work finishes (the thread below would
    otherwise hang)."""
    parallel.configure(2)
    result: list = []

    def leaf(x: int) -> int:
        return x + 1

    def piece(x: int) -> int:
        return sum(parallel_map(leaf, [x, x]))

    def item(x: int) -> int:
        return sum(parallel_map(piece, [x, x, x, x]))

    def run() -> None:
        result.append([v for _, v in in_threads(item, list(range(6)), ordered=False)])
        result.append(parallel_map(item, [10, 20]))

    try:
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(HANG)
        assert not worker.is_alive(), "nested parallel calls deadlocked"
    finally:
        parallel.configure(0)
    assert sorted(result[0]) == [8 * (x + 1) for x in range(6)]
    assert result[1] == [88, 168]


# ---------------------------------------------------------------------------- the whole library


def _real_pairs() -> pa.Table:
    """Pairs of the bundled real sample (HH harmless-base and PKU Alpaca-7B, both splits)."""
    roots = {"hh-rlhf": "sample_data/hh-rlhf", "pku-saferlhf": "sample_data/PKU-SafeRLHF"}
    tables = []
    for source in all_files():
        if source.subset in ("harmless-base", "Alpaca-7B"):
            good, _ = split_verdicts(ingest_file(source, roots[source.dataset]).table)
            tables.append(pairs_from(good))
    return pa.concat_tables(tables)


def test_same_results_on_one_two_and_four_threads(monkeypatch: pytest.MonkeyPatch):
    """Normalization, dedup and decontamination of the real sample give the same tables whatever
    the pool size, with every array split into halves (so textnorm and the tokenizer really
    map pieces, nested inside the decontamination matchers)."""
    monkeypatch.setattr(textnorm, "PARALLEL_BYTES", 0)
    pairs = _real_pairs()
    results = []
    try:
        for size in (1, 2, 4):
            parallel.configure(size)
            staged = with_pair_ids(pairs)
            kept, removed = deduplicate(staged)
            clean, contaminated = decontaminate(kept)
            results.append((staged, removed, clean, contaminated))
    finally:
        parallel.configure(0)
    assert results[0][3].num_rows > 0  # the real sample has contaminated train prompts
    for other in results[1:]:
        assert all(a.equals(b) for a, b in zip(results[0], other, strict=True))


def test_the_pool_is_sized_from_curation_settings():
    """``CurationSettings.threads`` sizes the pool when Dagster sets the resource up."""
    seen = {}

    @dg.asset
    def pool_size(settings: CurationSettings) -> None:
        seen["threads"] = parallel.threads()
        seen["parallel"] = parallel_map(lambda _: _pool_thread(), [1, 2, 3])

    try:
        result = dg.materialize([pool_size], resources={"settings": CurationSettings(threads=3)})
    finally:
        parallel.configure(0)
    assert result.success
    assert seen == {"threads": 3, "parallel": [True, True, True]}
