"""Adaptive batching, overload (503) and deadlines (504), with a classifier held at a gate.

No test reads the clock for speed: the gate decides when a batch runs, so the
order of events is fixed whatever the machine's load.
"""

from __future__ import annotations

import asyncio
import threading
import time
import warnings

import numpy as np
import pytest

pytest.importorskip("starlette", reason="needs the 'serve' extra")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx")

from _serve_support import GatedClassifier, binary_infer_body, read_binary_outputs, sample_csv_bytes, sample_digits  # noqa: E402

from mnist_onnx.runtime import DigitClassifier  # noqa: E402
from mnist_onnx.serve.app import create_app  # noqa: E402
from mnist_onnx.serve.batcher import Batcher, BatchStats, DeadlineExceeded, QueueFull  # noqa: E402
from mnist_onnx.serve.config import ServeConfig  # noqa: E402

with warnings.catch_warnings():  # Starlette 1.10 suggests httpx2 for its test client; httpx works the same here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient  # noqa: E402

INFER = "/v2/models/digits/infer"


@pytest.fixture(scope="module")
def reference():
    return DigitClassifier(precision="int8")


def wait_until(condition, what: str, limit_s: float = 30.0) -> None:
    """Poll ``condition`` (bounded); fail naming ``what`` if it never holds."""
    end = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


def test_batcher_groups_queued_requests_and_answers_bitwise(reference):
    images = sample_digits(120)[0]
    gated = GatedClassifier(reference)
    sizes: list[int] = []
    batcher = Batcher(gated.predict_proba, max_batch_size=32, stats=BatchStats(on_batch=sizes.append))
    cuts = [0, 1, 4, 5, 40, 41, 77, 90, 120]  # requests of 1, 3, 1, 35 (two blocks), 1, 36, 13, 30 images

    async def run() -> list[np.ndarray]:
        gated.gate_on()
        first = asyncio.ensure_future(batcher.predict(images[:1]))
        await asyncio.get_running_loop().run_in_executor(None, gated.started.wait, 30)
        rest = [asyncio.ensure_future(batcher.predict(images[a:b])) for a, b in zip(cuts[1:], cuts[2:], strict=False)]
        await asyncio.sleep(0)
        gated.release()
        return [await first] + [await r for r in rest]

    try:
        answers = asyncio.run(run())
    finally:
        batcher.close()
    np.testing.assert_array_equal(np.concatenate(answers), reference.predict_proba(images))
    assert sum(sizes) == 120 and max(sizes) <= 32
    assert len(sizes) < len(cuts) - 1 + 2  # queued requests shared batches (two requests needed two blocks)
    assert gated.calls[0] == 1


def test_batcher_refuses_when_the_queue_is_full(reference):
    gated = GatedClassifier(reference)
    batcher = Batcher(gated.predict_proba, max_batch_size=8, max_queue=2)
    one = sample_digits(1)[0]

    async def run() -> None:
        gated.gate_on()
        running = asyncio.ensure_future(batcher.predict(one))
        await asyncio.get_running_loop().run_in_executor(None, gated.started.wait, 30)
        queued = [asyncio.ensure_future(batcher.predict(one)) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            batcher.submit(one)
        gated.release()
        await asyncio.gather(running, *queued)

    try:
        asyncio.run(run())
    finally:
        batcher.close()


def test_batcher_never_computes_a_request_past_its_deadline(reference):
    gated = GatedClassifier(reference)
    batcher = Batcher(gated.predict_proba, max_batch_size=8)
    digits = sample_digits(6)[0]

    async def run() -> None:
        gated.gate_on()
        running = asyncio.ensure_future(batcher.predict(digits[:1]))
        await asyncio.get_running_loop().run_in_executor(None, gated.started.wait, 30)
        late = asyncio.ensure_future(batcher.predict(digits[1:6], deadline=time.monotonic() + 0.05))
        await asyncio.sleep(0.1)  # the deadline passes while the first batch is held
        gated.release()
        await running
        with pytest.raises(DeadlineExceeded):
            await late

    try:
        asyncio.run(run())
    finally:
        batcher.close()
    assert gated.calls == [1]  # the late request's 5 images never reached the model


def test_a_deadline_is_answered_when_it_passes_not_when_the_running_batch_ends(reference):
    gated = GatedClassifier(reference)
    batcher = Batcher(gated.predict_proba, max_batch_size=4, max_queue=1)
    digits = sample_digits(7)[0]

    async def run() -> None:
        gated.gate_on()
        running = asyncio.ensure_future(batcher.predict(digits[:1]))
        await asyncio.get_running_loop().run_in_executor(None, gated.started.wait, 30)
        late = asyncio.ensure_future(batcher.predict(digits[1:7], deadline=time.monotonic() + 0.05))  # two blocks
        with pytest.raises(DeadlineExceeded, match="not computed"):
            await asyncio.wait_for(late, 30)  # bounded; the first batch is still held at the gate
        assert not running.done()
        assert batcher.waiting_requests == 0  # its place in the queue is free again
        next_one = batcher.submit(digits[:1])  # so --max-queue 1 takes the next request
        gated.release()
        await running
        await asyncio.wait_for(next_one[0], 30)

    try:
        asyncio.run(run())
    finally:
        batcher.close()
    assert gated.calls[:1] == [1] and 6 not in gated.calls and sum(gated.calls) == 2  # the late images: never


def test_a_deadline_passing_while_a_batch_waits_for_company_leaves_the_worker_alive(reference):
    batcher = Batcher(reference.predict_proba, max_batch_size=64, max_queue_delay_s=0.2)
    digits = sample_digits(2)[0]

    async def run() -> None:
        late = batcher.submit(digits[:1], deadline=time.monotonic() + 0.05)  # expires within the 0.2 s wait
        with pytest.raises(DeadlineExceeded):
            await asyncio.wait_for(late[0], 30)
        await asyncio.sleep(0.5)  # the wait ends with the queue empty; nothing else may arrive before
        assert batcher._thread.is_alive()
        after = await asyncio.wait_for(batcher.predict(digits[1:2]), 30)  # bounded: a dead worker fails here
        np.testing.assert_array_equal(after, reference.predict_proba(digits[1:2]))

    try:
        asyncio.run(run())
    finally:
        batcher.close(timeout=30)


def test_large_request_is_split_into_blocks(reference):
    digits = sample_digits(70)[0]
    gated = GatedClassifier(reference)
    gated.gate_on()
    gated.release()
    batcher = Batcher(gated.predict_proba, max_batch_size=32)
    try:
        answer = asyncio.run(batcher.predict(digits))
    finally:
        batcher.close()
    np.testing.assert_array_equal(answer, reference.predict_proba(digits))
    assert gated.calls == [32, 32, 6]


def test_close_finishes_queued_work(reference):
    gated = GatedClassifier(reference)
    batcher = Batcher(gated.predict_proba, max_batch_size=4)
    digits = sample_digits(10)[0]

    async def run() -> list[np.ndarray]:
        gated.gate_on()
        futures = [asyncio.ensure_future(batcher.predict(digits[i : i + 1])) for i in range(10)]
        await asyncio.sleep(0)
        await asyncio.get_running_loop().run_in_executor(None, gated.started.wait, 30)
        closing = threading.Thread(target=batcher.close)
        closing.start()
        gated.release()
        answers = [await f for f in futures]
        closing.join(30)
        return answers

    answers = asyncio.run(run())
    np.testing.assert_array_equal(np.concatenate(answers), reference.predict_proba(digits))


def test_batcher_refuses_at_once_a_request_the_queued_work_would_make_late(reference):
    gated = GatedClassifier(reference)
    # A stated throughput of 10 images/s: 8 queued images are 0.8 s of work.
    batcher = Batcher(gated.predict_proba, max_batch_size=8, images_per_second=10.0)
    digits = sample_digits(17)[0]

    async def run() -> None:
        gated.gate_on()
        running = asyncio.ensure_future(batcher.predict(digits[:1]))
        await asyncio.get_running_loop().run_in_executor(None, gated.started.wait, 30)
        queued = asyncio.ensure_future(batcher.predict(digits[1:9], deadline=time.monotonic() + 60))
        await asyncio.sleep(0)
        with pytest.raises(QueueFull, match="0.8 s of work is queued ahead") as refused:
            batcher.submit(digits[9:10], deadline=time.monotonic() + 0.3)
        assert refused.value.retry_after_s == 1
        batcher.images_per_second = 1.0  # now 8 s of work: a 0.3 s deadline is 7.7 s short
        with pytest.raises(QueueFull, match="8.0 s of work") as refused:
            batcher.submit(digits[9:10], deadline=time.monotonic() + 0.3)
        assert refused.value.retry_after_s == 8
        accepted = batcher.submit(digits[9:17], deadline=time.monotonic() + 60)  # time enough: queued
        no_deadline = batcher.submit(digits[9:10])  # no deadline: never refused on the estimate
        gated.release()
        await asyncio.gather(running, queued, *accepted, *no_deadline)

    try:
        asyncio.run(run())
    finally:
        batcher.close()
    assert sum(gated.calls) == 1 + 8 + 8 + 1  # the refused requests were never computed


def test_the_estimate_knows_a_small_request_skips_ahead_of_a_large_ones_blocks(reference):
    gated = GatedClassifier(reference)
    batcher = Batcher(gated.predict_proba, max_batch_size=8, images_per_second=10.0)
    digits = sample_digits(60)[0]

    async def run() -> None:
        gated.gate_on()
        running = asyncio.ensure_future(batcher.predict(digits[:1]))
        await asyncio.get_running_loop().run_in_executor(None, gated.started.wait, 30)
        large = asyncio.ensure_future(batcher.predict(digits[1:41], deadline=time.monotonic() + 60))  # 4 s queued
        await asyncio.sleep(0)
        one = batcher.submit(digits[41:42], deadline=time.monotonic() + 1.5)  # waits one batch: 0.8 s
        with pytest.raises(QueueFull, match="4.1 s of work"):  # 16 images wait their turn: all 41 queued
            batcher.submit(digits[42:58], deadline=time.monotonic() + 1.5)
        gated.release()
        await asyncio.gather(running, large, *one)

    try:
        asyncio.run(run())
    finally:
        batcher.close()


def test_overload_by_estimate_is_a_503_with_retry_after_through_the_app(reference):
    gated = GatedClassifier(reference)
    config = ServeConfig(precision="int8", max_batch_size=8, inline_max_images=0, timeout_ms=200)
    app = create_app(config, classifier_factory=lambda config: gated)
    digits = sample_digits(9)[0]
    with TestClient(app) as client:
        assert app.state.model.loaded.wait(120) and app.state.model.ready
        batcher = app.state.model.batcher
        assert batcher.images_per_second and batcher.images_per_second > 0  # measured on the bundled sample
        batcher.images_per_second = 10.0  # as if the model were that slow: 8 queued images are 0.8 s
        gated.gate_on()
        results: list = []
        try:
            first = _post_in_thread(client, digits[:1], results, timeout=60_000_000)
            assert gated.started.wait(30)
            queued = _post_in_thread(client, digits[1:9], results, timeout=60_000_000)
            wait_until(lambda: batcher.waiting_requests == 1, "the 8-image request queued")
            body, headers = binary_infer_body(digits[:1])
            refused = client.post(INFER, content=body, headers=headers)
        finally:
            gated.release()
        first.join(60)
        queued.join(60)
    assert refused.status_code == 503 and "of work is queued ahead" in refused.json()["error"]
    assert refused.headers["retry-after"] == "1"
    assert sorted(r.status_code for r in results) == [200, 200]


def test_a_small_request_is_not_stuck_behind_a_large_ones_blocks(reference):
    gated = GatedClassifier(reference)
    batcher = Batcher(gated.predict_proba, max_batch_size=8)
    digits = sample_digits(60)[0]

    async def run() -> list[np.ndarray]:
        gated.gate_on()
        running = asyncio.ensure_future(batcher.predict(digits[:1]))  # holds the worker
        await asyncio.get_running_loop().run_in_executor(None, gated.started.wait, 30)
        large = asyncio.ensure_future(batcher.predict(digits[1:41]))  # 40 images: 5 blocks of 8
        second = asyncio.ensure_future(batcher.predict(digits[41:57]))  # 16 images: 2 blocks, first in first out
        await asyncio.sleep(0)
        small = asyncio.ensure_future(batcher.predict(digits[57:58]))
        await asyncio.sleep(0)
        gated.release()
        return [await running, await large, await second, await small]

    try:
        answers = asyncio.run(run())
    finally:
        batcher.close()
    np.testing.assert_array_equal(np.concatenate(answers), reference.predict_proba(digits[:58]))
    # The one image goes in the very next batch, not after the 56 images queued ahead of it; the two
    # large requests keep their order (first in, first out).
    assert gated.calls == [1, 1, 8, 8, 8, 8, 8, 8, 8]


def test_large_requests_are_not_starved_by_a_stream_of_small_ones(reference):
    gated = GatedClassifier(reference)
    batcher = Batcher(gated.predict_proba, max_batch_size=8)
    digits = sample_digits(40)[0]
    finished: list[str] = []

    async def run() -> None:
        gated.gate_on()
        running = asyncio.ensure_future(batcher.predict(digits[:1]))
        await asyncio.get_running_loop().run_in_executor(None, gated.started.wait, 30)
        large = asyncio.ensure_future(batcher.predict(digits[1:17]))  # 2 blocks of 8
        large.add_done_callback(lambda _: finished.append("large"))
        small = [asyncio.ensure_future(batcher.predict(digits[i : i + 1])) for i in range(17, 40)]  # 23 singles
        for future in small:
            future.add_done_callback(lambda _: finished.append("single"))
        await asyncio.sleep(0)
        gated.release()
        await asyncio.gather(running, large, *small)

    try:
        asyncio.run(run())
    finally:
        batcher.close()
    # Singles lead every other batch (8 of them first), the large request's blocks the others: it is done
    # before the other 15 singles queued with it, however many singles keep coming.
    assert finished.index("large") == 8, finished
    assert gated.calls == [1, 8, 8, 8, 8, 7]


class _ThreadRecorder:
    """A classifier that notes which thread ran each call."""

    def __init__(self, real: DigitClassifier) -> None:
        self.real = real
        self.threads: list[tuple[int, str]] = []

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        self.threads.append((len(images), threading.current_thread().name))
        return self.real.predict_proba(images)


def test_idle_small_request_is_predicted_at_once_on_the_callers_thread(reference):
    recorder = _ThreadRecorder(reference)
    waits: list[float] = []
    batcher = Batcher(
        recorder.predict_proba, max_batch_size=32, inline_max_images=4, stats=BatchStats(on_wait=waits.append)
    )
    digits = sample_digits(9)[0]

    async def run() -> list[np.ndarray]:
        return [
            await batcher.predict(digits[:1]),
            await batcher.predict(digits[1:5]),
            await batcher.predict(digits[4:9]),
        ]

    try:
        answers = asyncio.run(run())
    finally:
        batcher.close()
    np.testing.assert_array_equal(answers[0], reference.predict_proba(digits[:1]))
    np.testing.assert_array_equal(answers[1], reference.predict_proba(digits[1:5]))
    np.testing.assert_array_equal(answers[2], reference.predict_proba(digits[4:9]))
    me = threading.current_thread().name
    assert recorder.threads == [(1, me), (4, me), (5, "mnist-onnx-batcher")]  # 5 > inline_max_images: queued
    assert waits[:2] == [0.0, 0.0]


def test_small_request_queues_while_a_batch_runs(reference):
    gated = GatedClassifier(reference)
    batcher = Batcher(gated.predict_proba, max_batch_size=32, inline_max_images=8)
    digits = sample_digits(12)[0]

    async def run() -> list[np.ndarray]:
        gated.gate_on()
        large = asyncio.ensure_future(batcher.predict(digits[:10]))  # over the inline limit: the worker
        await asyncio.get_running_loop().run_in_executor(None, gated.started.wait, 30)
        small = [asyncio.ensure_future(batcher.predict(digits[i : i + 1])) for i in (10, 11)]
        await asyncio.sleep(0)
        assert batcher.waiting_requests == 2  # queued behind the running batch, not run on the event loop
        gated.release()
        return [await large] + [await f for f in small]

    try:
        answers = asyncio.run(run())
    finally:
        batcher.close()
    np.testing.assert_array_equal(np.concatenate(answers), reference.predict_proba(digits))
    assert gated.calls == [10, 2]  # the two small requests shared the next batch


def test_idle_request_past_its_deadline_is_not_computed(reference):
    recorder = _ThreadRecorder(reference)
    batcher = Batcher(recorder.predict_proba, max_batch_size=8, inline_max_images=8)
    try:
        with pytest.raises(DeadlineExceeded):
            asyncio.run(batcher.predict(sample_digits(1)[0], deadline=time.monotonic() - 1))
    finally:
        batcher.close()
    assert recorder.threads == []


def test_a_slow_model_never_runs_on_the_event_loop(reference):
    class Slow:
        class_labels = reference.class_labels

        def predict_proba(self, images: np.ndarray) -> np.ndarray:
            time.sleep(0.005)  # five times the budget: the start-up measurement must turn the fast path off
            return reference.predict_proba(images)

    app = create_app(ServeConfig(precision="int8"), classifier_factory=lambda config: Slow())
    with TestClient(app) as client:
        assert app.state.model.loaded.wait(120) and app.state.model.ready
        assert app.state.model.batcher.inline_max_images == 0
        assert client.get("/v2/health/ready").status_code == 200
    app = create_app(ServeConfig(precision="int8", inline_max_images=3))
    with TestClient(app):
        assert app.state.model.loaded.wait(120) and app.state.model.batcher.inline_max_images == 3


# -- through the app: the HTTP statuses -----------------------------------------------------------------------------


@pytest.fixture
def gated_app(reference):
    holder: dict[str, GatedClassifier] = {}

    def factory(config: ServeConfig) -> GatedClassifier:
        holder["clf"] = GatedClassifier(reference)
        return holder["clf"]

    # No idle fast path: the gated first request must wait in the worker, not hold the event loop.
    config = ServeConfig(precision="int8", max_queue=2, timeout_ms=100, max_batch_size=64, inline_max_images=0)
    app = create_app(config, classifier_factory=factory)
    with TestClient(app) as client:
        assert app.state.model.loaded.wait(120) and app.state.model.ready
        gated = holder["clf"]
        gated.gate_on()
        try:
            yield client, app, gated
        finally:
            gated.release()


def _post_in_thread(client: TestClient, images: np.ndarray, results: list, **parameters: object) -> threading.Thread:
    body, headers = binary_infer_body(images, binary_data_output=True, **parameters)
    thread = threading.Thread(target=lambda: results.append(client.post(INFER, content=body, headers=headers)))
    thread.start()
    return thread


def test_overload_gives_503_with_retry_after(gated_app, reference):
    client, app, gated = gated_app
    digits = sample_digits(3)[0]
    results: list = []
    first = _post_in_thread(client, digits[:1], results, timeout=60_000_000)
    assert gated.started.wait(30)
    queued = [_post_in_thread(client, digits[i : i + 1], results, timeout=60_000_000) for i in (1, 2)]
    wait_until(lambda: app.state.model.batcher.waiting_requests == 2, "two queued requests")
    body, headers = binary_infer_body(digits[:1])
    refused = client.post(INFER, content=body, headers=headers)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "overloaded" in refused.json()["error"]
    gated.release()
    for thread in [first, *queued]:
        thread.join(60)
    assert [r.status_code for r in results] == [200, 200, 200]  # their own timeout parameter: 60 s
    for response in results:
        arrays = read_binary_outputs(response.content, int(response.headers["inference-header-content-length"]))
        assert arrays["probabilities"].shape == (1, 10)
    assert 'status="503"' in client.get("/metrics").text


def test_deadline_gives_504_and_the_images_are_never_computed(gated_app):
    client, app, gated = gated_app
    digits = sample_digits(8)[0]
    results: list = []
    first = _post_in_thread(client, digits[:1], results)
    assert gated.started.wait(30)
    late = _post_in_thread(client, digits[1:8], results)
    wait_until(lambda: app.state.model.batcher.waiting_requests == 1, "the second request queued")
    time.sleep(0.2)  # past the 100 ms deadline while the first batch is held
    gated.release()
    first.join(60)
    late.join(60)
    by_size = {len(r.request.content): r for r in results}
    late_response = by_size[max(by_size)]
    assert late_response.status_code == 504 and "not computed" in late_response.json()["error"]
    assert gated.calls == [1]
    assert 'status="504"' in client.get("/metrics").text


def test_a_csv_past_its_deadline_is_a_504_and_its_other_blocks_leave_no_error_in_the_log(gated_app, caplog):
    import gc

    client, app, gated = gated_app
    digits = sample_digits(1)[0]
    results: list = []
    first = _post_in_thread(client, digits, results)
    assert gated.started.wait(30)
    csv = sample_csv_bytes(150)  # three blocks of the fixture's 64
    late = client.post("/v1/predict", content=csv, headers={"content-type": "text/csv"})  # 100 ms deadline
    gated.release()
    first.join(60)
    assert late.status_code == 504 and "not computed" in late.json()["error"]
    gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
    assert gated.calls == [1]
