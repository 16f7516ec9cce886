"""Adaptive batching with Triton's dynamic-batcher semantics.

Requests for one model version queue here from every protocol. A batch leaves as soon as it is
full or reaches a preferred size, and never later than ``max_batch_delay_ms`` after its oldest
request arrived. Only compatible requests share a batch (same requested outputs, parameters,
dtypes and non-batch dimensions); inputs are concatenated along axis 0 and outputs split back by
row counts. When a batch fails, its requests are retried one by one, so an error reaches only the
request that caused it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from servekit.core.executor import AsyncCallable
from servekit.errors import InvalidInput, Unavailable

logger = logging.getLogger("servekit.batching")


@dataclass(frozen=True, slots=True)
class BatchingPolicy:
    max_batch_size: int
    max_batch_delay_ms: float = 0.0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = 1024
    timeout_ms: float | None = None
    """Longest a request may wait in the queue before it is refused (None: no limit)."""
    concurrency: int = 1
    """Batches in flight at once (one per model instance)."""


@dataclass(slots=True, eq=False)
class _Pending:
    inputs: Mapping[str, np.ndarray]
    outputs: Sequence[str] | None
    parameters: Mapping[str, Any]
    rows: int
    key: tuple
    future: asyncio.Future
    enqueued: float
    started: bool = False
    expired: bool = False


def _batch_key(
    inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None, parameters: Mapping[str, Any]
) -> tuple:
    shapes = tuple((name, a.dtype.str, a.shape[1:]) for name, a in inputs.items())
    params = orjson.dumps(parameters, option=orjson.OPT_SORT_KEYS) if parameters else b""
    return (shapes, tuple(outputs) if outputs is not None else None, params)


def _rows(inputs: Mapping[str, np.ndarray]) -> int | None:
    """Rows along the batch axis, or None when the request cannot be batched."""
    if len(inputs) == 1:  # most models: one input, no set to build
        (array,) = inputs.values()
        return array.shape[0] if array.ndim else None
    counts = {a.shape[0] if a.ndim else None for a in inputs.values()}
    if len(counts) != 1:
        return None
    return counts.pop()


class AdaptiveBatcher:
    """Wraps a model's async predict with the same call signature."""

    def __init__(
        self,
        predict: AsyncCallable,
        policy: BatchingPolicy,
        model: str,
        on_batch: Callable[[int], Any] | None = None,
    ) -> None:
        self._predict = predict
        self.policy = policy
        self._model = model
        self._on_batch = on_batch
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._wakeup: asyncio.Future | None = None
        self._idle = False  # the runner sleeps until anything arrives (no deadline set)
        self._slots = asyncio.Semaphore(policy.concurrency)
        self._task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self._preferred = sorted(
            s for s in policy.preferred_batch_sizes if s <= policy.max_batch_size
        )

    @property
    def queue_size(self) -> int:
        return len(self._queue)

    async def predict(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> Any:
        parameters = parameters or {}
        rows = _rows(inputs)
        if rows is None or rows == 0:  # scalars or ragged inputs: nothing to batch with
            return await self._predict(inputs, outputs, parameters)
        if rows > self.policy.max_batch_size:
            raise InvalidInput(
                f"model '{self._model}': request has {rows} rows, more than its "
                f"max_batch_size {self.policy.max_batch_size}"
            )
        if len(self._queue) >= self.policy.max_queue_size:
            raise Unavailable(
                f"model '{self._model}': queue is full ({self.policy.max_queue_size} requests "
                "waiting); retry later"
            )
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name=f"batcher-{self._model}")
        item = _Pending(
            inputs,
            outputs,
            parameters,
            rows,
            _batch_key(inputs, outputs, parameters),
            loop.create_future(),
            loop.time(),
        )
        self._queue.append(item)
        self._queued_rows += rows
        if self._wakeup is not None and (
            self._idle or self._preferred or self._queued_rows >= self.policy.max_batch_size
        ):
            self._wake()  # otherwise the deadline's timer wakes the runner: no hop per arrival
        if self.policy.timeout_ms is None:
            return await item.future
        try:
            return await asyncio.wait_for(
                asyncio.shield(item.future), self.policy.timeout_ms / 1000
            )
        except TimeoutError:
            if item.started:  # already running: queue time is over, wait for the answer
                return await item.future
            item.expired = True
            raise Unavailable(
                f"model '{self._model}': request waited more than {self.policy.timeout_ms:g} ms "
                "in the batching queue"
            ) from None

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def _sleep(self, loop: asyncio.AbstractEventLoop, deadline: float | None) -> None:
        """Until ``_wake`` or ``deadline`` (loop time). A bare future and one timer: far less
        work than ``wait_for`` on an Event, which makes a task per wait."""
        self._wakeup = loop.create_future()
        self._idle = deadline is None
        timer = loop.call_at(deadline, self._wake) if deadline is not None else None
        try:
            await self._wakeup
        finally:
            self._wakeup = None
            if timer is not None:
                timer.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self.policy.max_batch_delay_ms / 1000
        while True:
            await self._slots.acquire()
            batch = None
            while batch is None:
                self._drop_expired()
                if not self._queue:
                    await self._sleep(loop, None)
                    continue
                candidates, full = self._candidates()
                deadline = self._queue[0].enqueued + delay
                take = self._ready_prefix(candidates, full, loop.time() >= deadline)
                if take:
                    batch = candidates[:take]
                    break
                await self._sleep(loop, deadline)
            for item in batch:
                self._queue.remove(item)
                self._queued_rows -= item.rows
                item.started = True
            task = loop.create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        self._slots.release()

    def _drop_expired(self) -> None:
        while self._queue and (self._queue[0].expired or self._queue[0].future.done()):
            self._queued_rows -= self._queue.popleft().rows

    def _candidates(self) -> tuple[list[_Pending], bool]:
        """Compatible queued requests, oldest first, that fit in one batch together; and
        whether the batch is full (it reached the maximum, or the next one does not fit)."""
        head = self._queue[0]
        chosen, rows = [], 0
        for item in self._queue:
            if item.expired or item.future.done() or item.key != head.key:
                continue
            if rows + item.rows > self.policy.max_batch_size:
                return chosen, True
            chosen.append(item)
            rows += item.rows
        return chosen, rows == self.policy.max_batch_size

    def _ready_prefix(self, candidates: list[_Pending], full: bool, deadline_passed: bool) -> int:
        """How many candidates to send now (0: keep waiting for more)."""
        if full or deadline_passed:
            return len(candidates)
        total, best = 0, 0
        for index, item in enumerate(candidates, start=1):
            total += item.rows
            if total in self._preferred:
                best = index  # the largest preferred size that can be formed now
        return best

    async def _execute(self, batch: list[_Pending]) -> None:
        first = batch[0]
        rows = [item.rows for item in batch]
        if self._on_batch is not None:
            self._on_batch(sum(rows))
        if len(batch) == 1:
            await self._settle(first, first.inputs)
            return
        names = list(first.inputs)
        merged = {n: np.concatenate([item.inputs[n] for item in batch]) for n in names}
        try:
            result = await self._predict(merged, first.outputs, first.parameters)
            parts = _split(result, rows)
        except Exception:  # noqa: BLE001 - retried alone so the error reaches its owner only
            logger.debug(
                "batch of %d for %s failed; retrying requests one by one", len(batch), self._model
            )
            for item in batch:
                await self._settle(item, item.inputs)
            return
        for item, part in zip(batch, parts, strict=True):
            if not item.future.done():
                item.future.set_result(part)

    async def _settle(self, item: _Pending, inputs: Mapping[str, np.ndarray]) -> None:
        try:
            result = await self._predict(inputs, item.outputs, item.parameters)
        except Exception as exc:  # noqa: BLE001 - delivered to the request that caused it
            if not item.future.done():
                item.future.set_exception(exc)
        else:
            if not item.future.done():
                item.future.set_result(result)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(Unavailable(f"model '{self._model}' is unloading"))
        self._queue.clear()
        self._queued_rows = 0
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)


def _split(result: Any, rows: list[int]) -> list[dict[str, np.ndarray]]:
    """Cut every output back into per-request pieces; refuse outputs that are not per row."""
    if not isinstance(result, Mapping):
        raise TypeError(f"batched predict returned {type(result).__name__}, not a mapping")
    total = sum(rows)
    bounds = list(itertools.accumulate(rows, initial=0))
    pieces: list[dict[str, np.ndarray]] = [{} for _ in rows]
    for name, value in result.items():
        array = np.asarray(value)
        if array.ndim == 0 or array.shape[0] != total:
            raise ValueError(f"output '{name}' has {array.shape} rows, expected {total}")
        for index, piece in enumerate(pieces):  # views, as np.split gives, at a third the cost
            piece[name] = array[bounds[index] : bounds[index + 1]]
    return pieces
