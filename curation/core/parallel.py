"""The one thread pool of the library (Dagster-free).

Decompression, JSON parsing, polars, pyarrow compute, numpy and rensa release the GIL, so work
split over threads keeps every core busy in one process. Every parallel part of ``curation/``
runs on one shared pool, whose size is set once per process with :func:`configure` (the Dagster
layer calls it from ``CurationSettings.threads``; default: one thread per CPU):

- :func:`in_threads` streams ``(item, result)`` over many items (files to ingest, parts to
  encode) with a bounded number in flight;
- :func:`parallel_map` maps a few independent pieces (the two halves of a large array to
  tokenize or normalize) and returns the results in order.

Nesting is safe: a pool thread never waits for work that no thread has started. In
:func:`parallel_map` called from a pool thread, the caller runs every piece that no other thread
has picked up yet; :func:`in_threads` called from a pool thread runs serially.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

__all__ = ["configure", "in_threads", "parallel_map", "threads"]

T = TypeVar("T")
R = TypeVar("R")

#: Name prefix of the pool's threads (``curation_0``, ``curation_1``, ...).
THREAD_PREFIX = "curation"

_lock = threading.Lock()
_size = 0  # 0: one thread per CPU
_pool: ThreadPoolExecutor | None = None


def configure(size: int = 0) -> None:
    """Set the number of threads of the shared pool (0: one per CPU).

    Call it once per process before the work starts; a pool of another size that already exists
    is replaced (the work already given to it still finishes).
    """
    global _size, _pool
    if size < 0:
        raise ValueError(f"thread pool size must be >= 0, got {size}")
    with _lock:
        if size == _size:
            return
        _size = size
        old, _pool = _pool, None
    if old is not None:
        old.shutdown(wait=False)


def threads() -> int:
    """The number of threads of the shared pool."""
    return _size or os.cpu_count() or 1


def _shared_pool() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=threads(), thread_name_prefix=THREAD_PREFIX)
        return _pool


def in_pool_thread() -> bool:
    """Whether the calling thread is one of the shared pool's."""
    return threading.current_thread().name.startswith(f"{THREAD_PREFIX}_")


def parallel_map(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(x) for x in items]``, the items on the shared pool, the results in item order.

    Called from a pool thread, the caller runs every item no other thread has started, so nested
    calls never wait for a free thread. The first exception is raised and the items not started
    are cancelled.
    """
    if len(items) < 2 or threads() < 2:
        return [fn(x) for x in items]
    futures = [_shared_pool().submit(fn, x) for x in items]
    nested = in_pool_thread()
    try:
        return [
            fn(x) if nested and f.cancel() else f.result()
            for x, f in zip(items, futures, strict=True)
        ]
    except BaseException:
        for future in futures:
            future.cancel()
        raise


def in_threads(
    fn: Callable[[T], R], items: Sequence[T], workers: int | None = None, *, ordered: bool = True
) -> Iterator[tuple[T, R]]:
    """``fn(item)`` for every item on the shared pool, as ``(item, result)``.

    At most ``workers`` items run at once (default and upper bound: the pool's size) and one
    more waits in the queue, so finished tables do not pile up in memory while the consumer
    stores earlier ones. ``ordered``: results come in item order (a slow item holds the others
    back); otherwise as they finish, which keeps every thread busy when the items' costs differ.
    The first exception is raised once the items already running have finished; the items not
    started are cancelled. Called from a pool thread, the items run serially on the caller.
    """
    workers = min(workers or threads(), threads())
    if workers <= 1 or len(items) <= 1 or in_pool_thread():
        for item in items:
            yield item, fn(item)
        return
    pool = _shared_pool()
    running = threading.BoundedSemaphore(workers)

    def run(item: T) -> R:
        with running:
            return fn(item)

    queue = iter(items)
    pending: dict[Future, T] = {}
    order: deque[Future] = deque()

    def submit() -> None:
        item = next(queue, _DONE)
        if item is not _DONE:
            future = pool.submit(run, item)
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
        wait(pending)  # the items already running finish (and clean up) before the error leaves
        raise


_DONE = object()
