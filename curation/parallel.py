"""A bounded, ordered thread pool for per-file work (Dagster-free).

Decompression, JSON parsing, polars and pyarrow compute release the GIL, so files processed on
threads keep every core busy in one process.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def in_threads(fn: Callable[[T], R], items: Sequence[T], workers: int) -> Iterator[tuple[T, R]]:
    """``fn(item)`` for every item on ``workers`` threads, yielded in order.

    At most ``workers + 1`` results are computed ahead of the consumer, so finished tables do not
    pile up in memory while the consumer stores earlier ones.
    """
    if workers <= 1 or len(items) <= 1:
        for item in items:
            yield item, fn(item)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="curation") as pool:
        pending: deque = deque()
        queue = iter(items)
        for item in queue:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) > workers:
                break
        while pending:
            item, future = pending.popleft()
            try:
                value = future.result()
            except BaseException:
                for _, other in pending:
                    other.cancel()
                raise
            nxt = next(queue, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(fn, nxt)))
            yield item, value
