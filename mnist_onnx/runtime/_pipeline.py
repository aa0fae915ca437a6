"""Small pipeline pieces: batch slices, a prefetching reader thread, an ordered parallel map.

Standard library only; nothing here knows about models or CSVs.
"""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

__all__ = ["batch_slices", "prefetched", "ordered_map"]

_T = TypeVar("_T")
_R = TypeVar("_R")


def batch_slices(total: int, batch_size: int) -> Iterator[slice]:
    """Yield consecutive slices of at most ``batch_size`` that cover ``range(total)``.

    >>> [(s.start, s.stop) for s in batch_slices(5, 2)]
    [(0, 2), (2, 4), (4, 5)]
    >>> list(batch_slices(0, 3))
    []
    """
    for start in range(0, total, batch_size):
        yield slice(start, min(start + batch_size, total))


def prefetched(items: Iterable[_T]) -> Iterator[_T]:
    """Produce ``items`` from a background thread, one ahead of the consumer.

    The CSV parser (pandas' C tokenizer) and onnxruntime both release the GIL,
    so reading chunk k+1 can overlap inference on chunk k.  Exceptions from the
    producer are re-raised in the consumer, in order.  Closing the generator
    stops the thread.

    >>> list(prefetched(range(3)))
    [0, 1, 2]
    """
    slot: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def offer(message: tuple[str, Any]) -> bool:
        """Put ``message`` in the slot unless the consumer has gone; say whether it was put."""
        while not stop.is_set():
            try:
                slot.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(("item", item)):
                    return
            offer(("done", None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            offer(("error", exc))

    worker = threading.Thread(target=produce, name="mnist-onnx-csv-reader", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = slot.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        worker.join()


def ordered_map(executor: Executor, task: Callable[[_T], _R], items: Iterator[_T], *, in_flight: int) -> Iterator[_R]:
    """Run ``task`` on each item in ``executor``; yield the results in input order.

    At most ``in_flight`` tasks are submitted ahead of the result being
    yielded, so memory stays bounded however long ``items`` is.  A task's
    exception is raised when its turn comes.  Closing the generator cancels
    the tasks not yet started and closes ``items`` (a task already running
    finishes on its own).

    >>> from concurrent.futures import ThreadPoolExecutor
    >>> with ThreadPoolExecutor(2) as pool:
    ...     list(ordered_map(pool, lambda x: x * x, iter(range(5)), in_flight=2))
    [0, 1, 4, 9, 16]
    """
    pending: collections.deque[Future[_R]] = collections.deque()
    try:
        for item in items:
            pending.append(executor.submit(task, item))
            if len(pending) >= in_flight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        close = getattr(items, "close", None)
        if close is not None:
            close()
