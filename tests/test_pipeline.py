"""The pipeline pieces: batch slices, the prefetching reader thread, the ordered parallel map."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from mnist_onnx.runtime._pipeline import batch_slices, ordered_map, prefetched


def test_batch_slices_cover_the_range_once():
    for total in (0, 1, 15, 16, 17, 1000):
        covered = [i for part in batch_slices(total, 16) for i in range(part.start, part.stop)]
        assert covered == list(range(total))


def test_prefetched_reraises_the_producer_error_in_order():
    def items():
        yield 1
        yield 2
        raise ValueError("bad row")

    got = []
    with pytest.raises(ValueError, match="bad row"):
        for item in prefetched(items()):
            got.append(item)
    assert got == [1, 2]


def test_prefetched_thread_stops_when_the_consumer_leaves():
    stream = prefetched(iter(range(1000)))
    assert next(stream) == 0
    stream.close()
    assert not any(t.name == "mnist-onnx-csv-reader" for t in threading.enumerate())


def test_ordered_map_keeps_input_order_and_bounds_work_in_flight():
    submitted = []
    lock = threading.Lock()

    def items():
        for i in range(40):
            with lock:
                submitted.append(i)
            yield i

    def task(i: int) -> int:
        time.sleep(0.001 * (i % 3))  # finish out of order
        return i * i

    with ThreadPoolExecutor(3) as pool:
        results = ordered_map(pool, task, items(), in_flight=4)
        first = next(results)
        assert first == 0 and len(submitted) == 4, "no more than in_flight tasks ahead of the consumer"
        assert [first, *results] == [i * i for i in range(40)]


def test_ordered_map_raises_a_task_error_and_cancels_the_rest():
    closed = []

    def items():
        try:
            yield from range(100)
        finally:
            closed.append(True)

    def task(i: int) -> int:
        if i == 5:
            raise KeyError(i)
        return i

    with ThreadPoolExecutor(2) as pool:
        with pytest.raises(KeyError):
            list(ordered_map(pool, task, items(), in_flight=3))
    assert closed == [True]
