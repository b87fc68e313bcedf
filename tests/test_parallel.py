"""The bounded thread pool behind per-file ingest, normalization and release encoding."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.parallel import in_threads


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(0, 3), max_size=12),
    st.integers(1, 4),
    st.booleans(),
)
def test_every_item_once_in_order_when_ordered(delays, workers, ordered):
    def work(i: int) -> int:
        time.sleep(delays[i] / 1000)
        return i * 10

    out = list(in_threads(work, list(range(len(delays))), workers, ordered=ordered))
    assert sorted(out) == [(i, i * 10) for i in range(len(delays))]
    if ordered:
        assert [i for i, _ in out] == list(range(len(delays)))


@pytest.mark.parametrize("ordered", [True, False])
def test_at_most_workers_plus_one_items_in_flight(ordered):
    lock, state = threading.Lock(), {"started": 0, "yielded": 0, "ahead": 0}

    def work(i: int) -> int:
        with lock:
            state["started"] += 1
            state["ahead"] = max(state["ahead"], state["started"] - state["yielded"])
        time.sleep(0.01)
        return i

    for _ in in_threads(work, list(range(20)), 2, ordered=ordered):
        time.sleep(0.02)  # a slow consumer
        with lock:
            state["yielded"] += 1
    assert state["ahead"] <= 3


def test_a_slow_first_item_does_not_hold_back_the_others_when_unordered():
    def work(i: int) -> int:
        time.sleep(0.3 if i == 0 else 0.01)
        return i

    assert [i for i, _ in in_threads(work, list(range(5)), 2, ordered=False)][-1] == 0


@pytest.mark.parametrize("ordered", [True, False])
def test_the_first_error_is_raised(ordered):
    def work(i: int) -> int:
        if i == 3:
            raise ValueError("boom")
        return i

    with pytest.raises(ValueError, match="boom"):
        list(in_threads(work, list(range(8)), 2, ordered=ordered))
