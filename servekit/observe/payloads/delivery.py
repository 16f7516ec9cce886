"""One thread per sink: read the journal from the sink's cursor, deliver, commit, repeat.

A failed delivery is retried with exponential backoff, in order, forever: the journal keeps
the events on disk meanwhile, so a sink that is down costs disk, never memory or requests.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import zlib
from collections.abc import Callable
from functools import partial
from typing import Any

from servekit.observe.payloads.journal import Journal
from servekit.observe.payloads.metrics import PayloadMetrics
from servekit.observe.payloads.record import InferenceRecord, decode
from servekit.observe.payloads.sinks.base import RejectedEvents, Sink

logger = logging.getLogger("servekit.payloads")

IDLE_POLL_SECONDS = 0.02
SKIP_POLL_SECONDS = 0.5
"""How often a consumer that wants none of the records moves its cursor to the end: often
enough to free the spool's segments, rarely enough to cost nothing per inference."""
BATCH_BYTES = 8 * 1024 * 1024
"""Most bytes of records read for one delivery (at least one record), whatever the sink's
batch size: a batch of large payloads stays bounded in memory."""
FIRST_BACKOFF_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 5.0


def sampled(event_id: str, rate: float) -> bool:
    """Keep an inference when its id hashes under ``rate`` (stable: both halves, every sink)."""
    return rate >= 1.0 or zlib.crc32(event_id.encode()) < rate * 0x1_0000_0000


def lower_priority(nice: int) -> None:
    """Run the calling thread at ``nice`` (never higher priority than it has): on a busy core
    the event loop's thread, woken by a request, then gets the CPU before a delivering sink."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return  # elsewhere the id of a thread is not a target of setpriority
    thread = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, thread)
        if nice > current:
            os.setpriority(os.PRIO_PROCESS, thread, nice)
    except OSError as exc:  # not Linux's per-thread semantics, or a sandbox that forbids it
        logger.debug("could not lower the sink thread's priority: %s", exc)


class SinkWorker(threading.Thread):
    def __init__(
        self, sink: Sink, journal: Journal, metrics: PayloadMetrics, nice: int = 0
    ) -> None:
        super().__init__(name=f"servekit-sink-{sink.name}", daemon=True)
        self.sink = sink
        self._nice = nice
        self._journal = journal
        self._metrics = metrics
        self._stop_requested = threading.Event()
        self._models = frozenset(sink.options.models) if sink.options.models else None
        self._filters = self._models is not None or sink.options.sample_rate < 1.0
        self._deliver_encoded = None if self._filters else getattr(sink, "deliver_encoded", None)
        self._wants_none = getattr(sink, "wants_none", None)
        journal.register(sink.name)
        self._reader = journal.reader(sink.name)
        self._in_memory = 0
        metrics.queued.labels(sink.name).set_function(lambda: self._in_memory)
        metrics.spooled.labels(sink.name).set_function(lambda: self.pending - self._in_memory)

    @property
    def pending(self) -> int:
        return self._journal.end - self._journal.cursor(self.sink.name)

    def stop(self) -> None:
        self._stop_requested.set()

    def run(self) -> None:
        name = self.sink.name
        lower_priority(self._nice)
        try:
            if not self._retry(self.sink.open, "open"):
                return
            while not self._stop_requested.is_set():
                if self._wants_none is not None and self._wants_none():
                    self._skip_to_end()
                    continue
                batch = self._reader.read(self.sink.options.batch_size, BATCH_BYTES)
                self._in_memory = len(batch)
                if not batch:
                    self._stop_requested.wait(IDLE_POLL_SECONDS)
                    continue
                if self._deliver_encoded is not None:
                    payloads = [p for _, p in batch]
                    deliver = partial(self._deliver, payloads, self._deliver_encoded)
                else:
                    records = [decode(p) for _, p in batch]
                    if self._filters:
                        records = [r for r in records if self._wanted(r)]
                    deliver = partial(self._deliver, records, self.sink.deliver)
                if deliver.args[0] and not self._retry(deliver, "deliver"):
                    return
                self._journal.commit(name, batch[-1][0] + 1)
                self._in_memory = 0
                if len(batch) < self.sink.options.batch_size:
                    # Not full: bigger batches cost less per event (one transaction, one POST,
                    # one cursor commit), for this much more delivery delay.
                    self._stop_requested.wait(self.sink.options.linger_seconds)
                self._metrics.spool_bytes.set(self._journal.size)
            self._sync_dropped()
        finally:
            self._reader.close()
            self.sink.close()

    def _skip_to_end(self) -> None:
        end = self._journal.end
        if end > self._journal.cursor(self.sink.name):
            self._journal.commit(self.sink.name, end)
            self._reader.rewind()
        self._stop_requested.wait(SKIP_POLL_SECONDS)

    def _wanted(self, record: InferenceRecord) -> bool:
        if self._models is not None and record.model not in self._models:
            return False
        return sampled(record.id, self.sink.options.sample_rate)

    def _deliver(self, records: list[Any], deliver: Callable[[list[Any]], None]) -> None:
        try:
            deliver(records)
        except RejectedEvents as exc:
            logger.error(
                "sink %r refused %d events for good: %s", self.sink.name, len(records), exc
            )
            self._metrics.dropped.labels(self.sink.name, "rejected").inc(len(records))
            return
        self._metrics.delivered.labels(self.sink.name).inc(len(records))
        self._sync_dropped()

    def _sync_dropped(self) -> None:
        lost = self._journal.take_dropped(self.sink.name)
        if lost:
            self._metrics.dropped.labels(self.sink.name, "spool_full").inc(lost)

    def _retry(self, action: Callable[[], None], what: str) -> bool:
        """Run ``action`` until it succeeds (True) or the worker is stopped (False)."""
        delay = FIRST_BACKOFF_SECONDS
        while True:
            try:
                action()
                return True
            except Exception as exc:  # noqa: BLE001 - any failure of a sink means 'retry'
                if self._stop_requested.is_set():
                    return False
                self._metrics.retried.labels(self.sink.name).inc()
                logger.warning(
                    "sink %r: %s failed (%s: %s); retrying in %.1fs",
                    self.sink.name,
                    what,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                if self._stop_requested.wait(delay):
                    return False
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)

    def wait_caught_up(self, deadline: float) -> bool:
        while self.pending and time.monotonic() < deadline:
            time.sleep(IDLE_POLL_SECONDS)
        return not self.pending
