"""A bounded, ordered thread pool for per-file work (Dagster-free).

Decompression, JSON parsing, polars and pyarrow compute release the GIL, so files processed on
threads keep every core busy in one process.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def in_threads(
    fn: Callable[[T], R], items: Sequence[T], workers: int, *, ordered: bool = True
) -> Iterator[tuple[T, R]]:
    """``fn(item)`` for every item on ``workers`` threads, as ``(item, result)``.

    At most ``workers + 1`` items are in flight, so finished tables do not pile up in memory
    while the consumer stores earlier ones. ``ordered``: results come in item order (a slow item
    holds the others back); otherwise as they finish, which keeps every thread busy when the
    items' costs differ. The first exception is raised and the items not started are cancelled.
    """
    if workers <= 1 or len(items) <= 1:
        for item in items:
            yield item, fn(item)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="curation") as pool:
        queue = iter(items)
        pending: dict[Future, T] = {}
        order: deque[Future] = deque()

        def submit() -> None:
            item = next(queue, _DONE)
            if item is not _DONE:
                future = pool.submit(fn, item)
                pending[future] = item
                order.append(future)

        for _ in range(workers + 1):
            submit()
        try:
            while pending:
                if ordered:
                    future = order.popleft()
                    future.result()
                else:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    future = min(done, key=order.index)  # deterministic among ties
                    order.remove(future)
                item = pending.pop(future)
                value = future.result()
                yield item, value
                submit()  # after the consumer is done with this result
        except BaseException:
            for future in pending:
                future.cancel()
            raise


_DONE = object()
