"""Adaptive batching: one queue, one inference thread, whatever has queued goes in the next batch.

Requests from the event loop are split into blocks of at most ``max_batch_size``
images and put on one queue.  A single worker thread takes blocks (same pixel
dtype) up to ``max_batch_size`` images, led in turn by the oldest block and by
the oldest request with one block left, so small requests are not stuck behind
a large one's blocks (see :meth:`Batcher._choose_blocks`); it does not wait when nothing else is queued,
unless ``max_queue_delay_s`` asks it to wait that long for company (Triton's
``max_queue_delay_microseconds``; 0 by default, as there).  While a batch runs,
new requests queue up and form the next batch, so the batch size adapts to the
load on its own.

Idle fast path: a request of at most ``inline_max_images`` images that finds
the worker idle and nothing queued is predicted at once on the caller's thread
(the event loop), as a per-request handler would, instead of paying two thread
hand-offs for a batch of one.  The server sets ``inline_max_images`` from the
model's measured warm-up (see :mod:`.model`), so only calls that take well under
a millisecond ever hold the event loop; while one runs, nothing else can queue.

A request whose deadline passes before its first block joins a batch is
answered with :class:`DeadlineExceeded` at the deadline (a timer on the event
loop, not when its turn comes after the running batch) and never computed (once
a block has joined a batch, the request's other blocks are computed too); a request that finds
``max_queue`` requests waiting is refused at once with :class:`QueueFull`, and so
is one whose deadline would pass before it joins a batch (estimated from the
work ahead of it at the measured images/s), refused at once rather than failed
later.

Answers are those of the prediction function on the batch; with
:meth:`DigitClassifier.predict_proba` each image's row is bitwise the one it
gives for that image alone (onnxruntime's CPU kernels do not mix images of a
batch; the tests check it on the bundled sample).
"""

from __future__ import annotations

import asyncio
import collections
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Batcher", "BatchStats", "QueueFull", "DeadlineExceeded", "ServerStopping", "RATE_MIN_BATCH"]

#: Batches of at least this many images update the throughput estimate that admission uses.
RATE_MIN_BATCH = 64


class QueueFull(RuntimeError):
    """The queue is full, or holds more work than the request's deadline allows (HTTP 503).

    Attributes:
        retry_after_s: Whole seconds after which a retry may find room (the ``Retry-After`` header).
    """

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(RuntimeError):
    """The request's deadline passed before it joined a batch; it was not computed (HTTP 504)."""


class ServerStopping(RuntimeError):
    """The server is shutting down and takes no new work (HTTP 503)."""


@dataclass
class _Request:
    """What the blocks of one request share: whether one of them failed, so the rest are skipped."""

    failed: bool = False
    started: bool = False  # a block is in a batch: the deadline no longer applies to the rest
    blocks_left: int = 0


@dataclass
class _Block:
    images: np.ndarray
    deadline: float | None
    future: asyncio.Future[np.ndarray]
    loop: asyncio.AbstractEventLoop
    request: _Request
    enqueued: float = field(default_factory=time.monotonic)


@dataclass
class BatchStats:
    """Callbacks the server's metrics hang on (all optional; called from the worker thread).

    Attributes:
        on_batch: Called with the images in each batch run.
        on_wait: Called with each block's seconds in the queue.
        on_depth: Called with the requests waiting, whenever that changes.
    """

    on_batch: Callable[[int], None] | None = None
    on_wait: Callable[[float], None] | None = None
    on_depth: Callable[[int], None] | None = None


def _resolve(future: asyncio.Future[np.ndarray], value: np.ndarray | None, error: BaseException | None) -> None:
    if future.done():  # the client went away and the handler was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)  # type: ignore[arg-type]


class Batcher:
    """Group concurrent prediction requests into batches run by one worker thread.

    Args:
        predict: The batch function: images shaped (n, 28, 28), uint8 or
            float32 in [0, 1] -> float32 (n, classes).  Called from the worker
            thread only, one batch at a time.
        max_batch_size: Most images in one call of ``predict``; larger
            requests are split into blocks of this size.
        max_queue_delay_s: How long the worker may wait for more requests
            once one is queued (0: never wait; it takes whatever queued while
            the previous batch ran).
        max_queue: Most requests waiting; one more is refused with
            :class:`QueueFull`.
        inline_max_images: Largest request predicted on the caller's thread
            when the worker is idle and nothing is queued (0: never).
        images_per_second: The model's measured throughput on full batches,
            used to refuse requests whose deadline the queued work would
            outlast; updated from every batch of at least ``RATE_MIN_BATCH``
            images.  None: no such refusal until a batch was measured.
        stats: Metric callbacks.

    Raises:
        ValueError: If a size is not positive or the delay is negative.
    """

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch_size: int,
        max_queue_delay_s: float = 0.0,
        max_queue: int = 1024,
        inline_max_images: int = 0,
        images_per_second: float | None = None,
        stats: BatchStats | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or max_queue_delay_s < 0 or inline_max_images < 0:
            raise ValueError(
                f"expected max_batch_size >= 1, max_queue >= 1, max_queue_delay_s >= 0 and inline_max_images >= 0, "
                f"got {max_batch_size}, {max_queue}, {max_queue_delay_s} and {inline_max_images}"
            )
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.max_queue = max_queue
        self.inline_max_images = min(inline_max_images, max_batch_size)
        self.images_per_second = images_per_second
        self._stats = stats or BatchStats()
        self._blocks: collections.deque[_Block] = collections.deque()
        self._small_turn = False  # whether the next batch is led by a request with one block left
        self._waiting_requests = 0
        self._queued_images = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._busy = False  # a batch (or an inline call) is being predicted
        self._thread = threading.Thread(target=self._work, name="mnist-onnx-batcher", daemon=True)
        self._thread.start()

    @property
    def waiting_requests(self) -> int:
        """Requests with at least one block still queued (what ``max_queue`` limits)."""
        return self._waiting_requests

    def submit(self, images: np.ndarray, deadline: float | None = None) -> list[asyncio.Future[np.ndarray]]:
        """Queue ``images`` from the running event loop; return one future per block, in order.

        Args:
            images: (n, 28, 28) uint8, or float32 in [0, 1], n >= 1.
            deadline: ``time.monotonic()`` after which blocks not yet in a
                batch fail with :class:`DeadlineExceeded`; None for no deadline.

        Returns:
            Futures of float32 (block_n, classes) arrays; concatenated, the
            rows of ``images`` in order.

        Raises:
            QueueFull: If ``max_queue`` requests are already waiting, or the
                images queued ahead would take past ``deadline`` to compute at
                ``images_per_second``.
            ServerStopping: If :meth:`close` was called.
        """
        loop = asyncio.get_running_loop()
        request = _Request()
        blocks = [
            _Block(images[start : start + self.max_batch_size], deadline, loop.create_future(), loop, request)
            for start in range(0, len(images), self.max_batch_size)
        ]
        request.blocks_left = len(blocks)
        with self._cond:
            self._refuse_if_full()
            self._refuse_if_late(deadline, len(images))
            self._waiting_requests += 1
            self._queued_images += len(images)
            self._blocks.extend(blocks)
            self._cond.notify()
            depth = self._waiting_requests
        if self._stats.on_depth:
            self._stats.on_depth(depth)
        if deadline is not None:  # the 504 is answered at the deadline, not when the block's turn comes
            timer = loop.call_later(
                max(0.0, deadline - time.monotonic()), self._expire, request, deadline, blocks[0].enqueued
            )
            # Answered (or abandoned) before the deadline: drop the timer rather than keep one per request
            # in the loop's heap for the whole --timeout-ms.
            blocks[-1].future.add_done_callback(lambda _future: timer.cancel())
        return [block.future for block in blocks]

    def _expire(self, request: _Request, deadline: float, enqueued: float) -> None:
        """On the event loop, at ``deadline``: fail a request none of whose blocks joined a batch yet.

        Its blocks leave the queue, so they are never computed and no longer count
        against ``max_queue`` or the admission estimate. The timer holds only the
        small :class:`_Request`, never the images.
        """
        now = time.monotonic()
        if now < deadline:  # the loop's clock ran a little ahead of time.monotonic()
            asyncio.get_running_loop().call_later(deadline - now, self._expire, request, deadline, enqueued)
            return
        with self._cond:
            if request.started or request.failed:
                return
            request.failed = True
            mine = [block for block in self._blocks if block.request is request]
            if not mine:
                return
            self._blocks = collections.deque(block for block in self._blocks if block.request is not request)
            self._queued_images -= sum(len(block.images) for block in mine)
            self._waiting_requests -= 1
            request.blocks_left = 0
            depth = self._waiting_requests
        error = DeadlineExceeded(f"the deadline passed after {now - enqueued:.3f} s in the queue; not computed")
        for block in mine:
            _resolve(block.future, None, error)
        if self._stats.on_depth:
            self._stats.on_depth(depth)

    async def predict(self, images: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """The rows for ``images``: at once when the worker is idle and the request small, else queued.

        See :meth:`submit` for the arguments and the errors; a request past its
        deadline before it starts raises :class:`DeadlineExceeded` either way.
        """
        if 0 < len(images) <= self.inline_max_images:
            scores = self._predict_inline(images, deadline)
            if scores is not None:
                return scores
        futures = self.submit(images, deadline)
        if len(futures) == 1:
            return await futures[0]
        parts = await asyncio.gather(*futures)
        return np.concatenate(parts)

    def close(self, timeout: float | None = None) -> None:
        """Refuse new work, finish every queued block, and stop the worker thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def admit(self, deadline: float | None) -> None:
        """Refuse now a request the queued work would make late, before its body is even read.

        :meth:`submit` checks the same again (the queue may have grown meanwhile).

        Raises:
            QueueFull: If even a one-image request queued now would join a batch only
                after ``deadline``, or ``max_queue`` requests are waiting.
            ServerStopping: If :meth:`close` was called.
        """
        with self._cond:
            self._refuse_if_full()
            self._refuse_if_late(deadline)

    def _refuse_if_full(self) -> None:
        """Raise :class:`ServerStopping` once closing, :class:`QueueFull` at ``max_queue``. Hold ``_cond``."""
        if self._stopping:
            raise ServerStopping("the server is shutting down")
        if self._waiting_requests >= self.max_queue:
            waiting = self._waiting_requests
            raise QueueFull(
                f"the queue holds {waiting} request{'s' if waiting != 1 else ''} (--max-queue {self.max_queue})"
            )

    def _refuse_if_late(self, deadline: float | None, images: int = 1) -> None:
        """Raise :class:`QueueFull` if the work ahead of a new request of ``images`` outlasts ``deadline``.

        Hold ``_cond``.
        """
        wait = self._expected_wait(images)
        if deadline is None or wait is None:
            return
        left = deadline - time.monotonic()
        if wait > left:
            left = max(0.0, left)
            raise QueueFull(
                f"about {wait:.1f} s of work is queued ahead ({self._images_ahead(images):,} images at "
                f"{self.images_per_second:,.0f}/s), more than the {left:.1f} s the request's deadline leaves "
                f"(--timeout-ms, or the request's timeout parameter)",
                retry_after_s=max(1, math.ceil(wait - left)),
            )

    def _images_ahead(self, images: int) -> int:
        """Images computed, at most, before a request of ``images`` images queued now joins a batch. Hold ``_cond``.

        One block (``images <= max_batch_size``) leads every other batch at the
        latest (:meth:`_choose_blocks`): it waits for one batch and the one-block
        requests ahead of it.  A larger request waits for everything queued.
        """
        if images > self.max_batch_size or self._queued_images <= self.max_batch_size:
            return self._queued_images  # the second case: less than one batch queued, no need to count
        small = sum(len(block.images) for block in self._blocks if block.request.blocks_left == 1)
        return min(self._queued_images, self.max_batch_size + small)

    def _expected_wait(self, images: int) -> float | None:
        """Seconds until a request of ``images`` images queued now joins a batch (None before any measurement).

        Hold ``_cond``.
        """
        if not self.images_per_second or not self._queued_images:
            return None
        return self._images_ahead(images) / self.images_per_second

    def _predict_inline(self, images: np.ndarray, deadline: float | None) -> np.ndarray | None:
        """Predict on this thread if the worker is idle and nothing is queued; None otherwise."""
        with self._cond:
            if self._busy or self._blocks or self._stopping:
                return None
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceeded("the deadline passed before the request could start; not computed")
            self._busy = True
        try:
            scores = self._predict(images)
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
        if self._stats.on_wait:
            self._stats.on_wait(0.0)
        if self._stats.on_batch:
            self._stats.on_batch(len(images))
        return scores

    # -- worker thread ------------------------------------------------------

    def _wait_for_blocks(self) -> bool:
        """Wait until blocks are queued and the worker may take them (False: closed and drained). Hold ``_cond``.

        With ``max_queue_delay_s``, wait that long after the oldest block for company.
        A deadline (:meth:`_expire`) may empty the queue meanwhile: then wait again.
        """
        while True:
            while not self._blocks or self._busy:
                if self._stopping and not self._blocks:
                    return False
                self._cond.wait()
            if self.max_queue_delay_s > 0 and self._queued_images < self.max_batch_size and not self._stopping:
                until = self._blocks[0].enqueued + self.max_queue_delay_s
                while self._queued_images < self.max_batch_size and not self._stopping:
                    left = until - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            if self._blocks:
                return True

    def _choose_blocks(self) -> list[_Block]:
        """Pop the next batch's blocks. Hold ``_cond``.

        Batches take turns at who leads: the oldest block in the queue (first in,
        first out), then the oldest request that has one block left, such as a
        single image (falling back to the oldest block when there is none).  The
        rest of the batch is filled in arrival order with blocks that fit (same
        pixel dtype).  So a one-image request behind a 28,000-row CSV waits about
        one batch, not the whole file, while large requests among themselves stay
        first in, first out and are never starved by a stream of small ones.
        """
        lead = self._blocks[0]
        if self._small_turn:
            lead = next((block for block in self._blocks if block.request.blocks_left == 1), lead)
        self._small_turn = not self._small_turn
        batch, size, dtype = [lead], len(lead.images), lead.images.dtype
        for block in self._blocks:
            if block is not lead and block.images.dtype == dtype and size + len(block.images) <= self.max_batch_size:
                batch.append(block)
                size += len(block.images)
        if len(batch) == len(self._blocks):
            self._blocks.clear()
        else:
            chosen = {id(block) for block in batch}
            self._blocks = collections.deque(block for block in self._blocks if id(block) not in chosen)
        return batch

    def _take_batch(self) -> list[_Block] | None:
        """Wait for work; pop the blocks of the next batch (None once closed and drained)."""
        with self._cond:
            if not self._wait_for_blocks():
                return None
            batch = self._choose_blocks()
            now = time.monotonic()
            for block in batch:
                self._queued_images -= len(block.images)
                block.request.blocks_left -= 1
                if block.request.blocks_left == 0:
                    self._waiting_requests -= 1
                # Decided under the lock, so the event loop's deadline timer (_expire) and this never disagree.
                if not block.request.failed and not block.request.started:
                    if block.deadline is not None and now > block.deadline:
                        block.request.failed = True
                    else:
                        block.request.started = True
            depth = self._waiting_requests
            self._busy = True
        if self._stats.on_depth:
            self._stats.on_depth(depth)
        return batch

    def _work(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            now = time.monotonic()
            live = []
            for block in batch:
                if self._stats.on_wait:
                    self._stats.on_wait(now - block.enqueued)
                if block.request.failed:
                    self._fail(
                        block,
                        DeadlineExceeded(
                            f"the deadline passed after {now - block.enqueued:.3f} s in the queue; not computed"
                        ),
                    )
                else:
                    live.append(block)
            if live:
                self._run(live)
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _run(self, batch: list[_Block]) -> None:
        images = batch[0].images if len(batch) == 1 else np.concatenate([block.images for block in batch])
        started = time.perf_counter()
        try:
            scores = self._predict(images)
        except Exception as exc:  # handed to every request of the batch, which answers with it
            for block in batch:
                self._fail(block, exc)
            return
        if len(images) >= RATE_MIN_BATCH:  # small batches measure the per-call overhead, not the throughput
            rate = len(images) / max(time.perf_counter() - started, 1e-9)
            previous = self.images_per_second
            self.images_per_second = rate if previous is None else 0.8 * previous + 0.2 * rate
        if self._stats.on_batch:
            self._stats.on_batch(len(images))
        start = 0
        for block in batch:
            stop = start + len(block.images)
            block.loop.call_soon_threadsafe(_resolve, block.future, scores[start:stop], None)
            start = stop

    @staticmethod
    def _fail(block: _Block, error: BaseException) -> None:
        block.loop.call_soon_threadsafe(_resolve, block.future, None, error)
