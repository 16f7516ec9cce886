"""The payload log as one object: spool, sinks and the hand-off the DataPlane calls.

``log_inference()`` runs on the event loop for every inference. It copies the tensors' bytes,
encodes them with the other fields as one msgpack array (no structs built) and appends that to
the journal before the response is sent; everything slower (JSON, CloudEvents, SQL, HTTP) happens
in the sink threads.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sys
import time
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from servekit.errors import ConfigError, ServekitError, Unavailable
from servekit.observe.payloads.config import ModelPayloadLog, PayloadLogSettings
from servekit.observe.payloads.delivery import SinkWorker, sampled
from servekit.observe.payloads.journal import Journal, JournalFull, Prefaulter
from servekit.observe.payloads.metrics import PayloadMetrics
from servekit.observe.payloads.record import (
    capture_raw,
    decode_routing,
    encode_fields,
    redact_parameters,
)
from servekit.observe.payloads.shipper import ShipperProcess, sink_names, store_path
from servekit.observe.payloads.sinks import Sink, build_sink, unique_names
from servekit.observe.payloads.sinks.store import StoreSink
from servekit.observe.payloads.store import PayloadStore
from servekit.types.inference import InferenceRequest, InferenceResponse, RequestContext

logger = logging.getLogger("servekit.payloads")

SWITCH_INTERVAL_SECONDS = 0.0005
"""The GIL switch interval while sink threads run. A request that arrives while a sink thread
holds the GIL waits up to this long for it (Python's default is 5 ms, which became the p99 at
concurrency 1 with logging on)."""

RECENT_IDS = 100_000
"""At least this many of the latest ids answered through a service are kept in memory (at most
twice as many), so feedback that names the service finds the model that answered."""

SPOOL_LOOKUP_RECORDS = 200_000
"""Feedback for an id the store does not have yet looks through at most this many spooled
records that the store has not taken (about 0.1 s); further behind, it answers 503."""


class RecentIds:
    """The latest ids answered through services and the model that answered, in two
    generations of plain dicts: a full generation replaces the older one. Per call that is
    one dict store; an LRU (an ``OrderedDict`` evicting one entry per insert) cost twice as
    much.

    Keys are one string (scope, NUL, id), not a tuple: a dict of strings only is not tracked
    by the garbage collector, while 10^5 tuple keys were rescanned by every full collection.
    (In one side-by-side run a server without the maps at all was 8 µs per inference cheaper;
    what the string keys gained was within that benchmark's noise.)
    """

    def __init__(self, keep: int | None = None) -> None:
        self._keep = keep or RECENT_IDS
        self._current: dict[str, str] = {}
        self._previous: dict[str, str] = {}

    def add(self, scope: str, event_id: str, value: str) -> None:
        current = self._current
        current[f"{scope}\0{event_id}"] = value
        if len(current) >= self._keep:
            self._previous, self._current = current, {}

    def get(self, scope: str, event_id: str) -> str | None:
        key = f"{scope}\0{event_id}"
        found = self._current.get(key)
        return found if found is not None else self._previous.get(key)


class PayloadLog:
    def __init__(self, settings: PayloadLogSettings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.metrics = PayloadMetrics(registry)
        self.store: PayloadStore | None = None
        self._journal: Journal | None = None
        self._workers: list[SinkWorker] = []
        self._served_by = RecentIds()
        """(service, id) -> the model that answered, so feedback may name the service."""
        self._redact = frozenset(settings.redact)
        self._rate = settings.sample_rate
        self._max_payload = settings.max_payload_bytes
        self._lock_fd: int | None = None
        self._shipper: ShipperProcess | None = None
        self._prefaulter: Prefaulter | None = None
        self._pending: list[tuple] = []
        """Inferences of this loop turn waiting for the group commit (``log_inference``)."""
        self._switch_interval: float | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, consumers: Sequence[Sink] = ()) -> None:
        """Open the spool and start delivering: the configured sinks in the shipper process
        (or in threads, ``delivery: thread``); ``consumers`` are in-process readers of the same
        journal (model monitoring), delivered to by a thread each like a sink."""
        settings = self.settings
        directory = settings.directory.expanduser()
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_directory(directory)
        try:
            unique_names(settings.sinks, {"store", *(c.name for c in consumers)})
            # Built here in either mode: a missing client library fails the start, not the
            # shipper over and over (in process mode these objects are only a check).
            sinks = [build_sink(config) for config in settings.sinks]
            if settings.store.enabled:
                self.store = PayloadStore(store_path(settings))
            self._journal = Journal(
                directory / "spool",
                max_bytes=settings.spool_max_bytes,
                on_full=settings.on_spool_full,
                fsync=settings.fsync,
            )
            if settings.delivery == "thread":
                if self.store is not None:
                    sinks.insert(0, StoreSink(self.store, settings.store))
                sinks.extend(consumers)
            else:
                sinks = list(consumers)
                if sink_names(settings):
                    self._shipper = ShipperProcess(settings, self._journal, self.metrics)
            self._workers = [
                SinkWorker(sink, self._journal, self.metrics, settings.sink_nice) for sink in sinks
            ]
        except BaseException:
            if self.store is not None:
                self.store.close()
                self.store = None
            if self._journal is not None:
                self._journal.close()
                self._journal = None
            assert self._lock_fd is not None
            os.close(self._lock_fd)
            self._lock_fd = None
            raise
        if self._workers and sys.getswitchinterval() > SWITCH_INTERVAL_SECONDS:
            self._switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
        self._prefaulter = Prefaulter(self._journal)
        self._prefaulter.start()
        for worker in self._workers:
            worker.start()
        if self._shipper is not None:
            self._shipper.start()
        backlog = {name: count for name, count in self.pending().items() if count}
        if backlog:
            logger.info("payload log: replaying spooled events %s", backlog)

    def _lock_directory(self, directory: os.PathLike[str]) -> None:
        fd = os.open(os.path.join(directory, ".lock"), os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"payload log directory {str(directory)!r} is used by another servekit process; "
                "give each server its own payload_log.directory"
            ) from None
        self._lock_fd = fd

    def stop(self) -> None:
        """Let the sinks catch up for a while; what is left stays spooled for the next start."""
        deadline = time.monotonic() + self.settings.shutdown_flush_seconds
        if self._shipper is not None:
            self._shipper.stop(deadline)
        for worker in self._workers:
            if not worker.wait_caught_up(deadline):
                logger.warning(
                    "payload log: sink %r still has %d events; they stay spooled for the next "
                    "start", worker.sink.name, worker.pending,
                )  # fmt: skip
        for worker in self._workers:
            worker.stop()
        for worker in self._workers:
            worker.join(timeout=10)
        if self._prefaulter is not None:
            self._prefaulter.stop()
        if self._journal is not None:
            self._journal.close()
        if self.store is not None:
            self.store.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None

    @property
    def sink_names(self) -> list[str]:
        shipped = self._shipper.names if self._shipper is not None else []
        return [*shipped, *(w.sink.name for w in self._workers)]

    def pending(self) -> dict[str, int]:
        """Records journaled but not delivered yet, per sink."""
        found = {w.sink.name: w.pending for w in self._workers}
        if self._shipper is not None:
            found |= {name: self._shipper.pending(name) for name in self._shipper.names}
        return found

    # -- the hot path -------------------------------------------------------------------------

    def admit(self) -> None:
        """Refuse a new inference while the spool is full and the policy is 'block'."""
        if self._journal is not None and self._journal.full:
            self.metrics.blocked.inc()
            raise Unavailable(
                "the payload log spool is full because a sink is not keeping up; "
                "requests are refused so that no event is lost (retry later)"
            )

    def log_inference(
        self,
        policy: ModelPayloadLog | None,
        model: str,
        version: str,
        request: InferenceRequest | None,
        response: InferenceResponse | None,
        context: RequestContext,
        started: float,
        elapsed: float,
        status: str,
        error: ServekitError | None,
    ) -> None:
        """Append one inference to the journal; the event loop's whole share of the log.

        ``request`` is None when it could not be decoded, ``response`` when the inference
        failed (``error`` says why); ``started`` is Unix time, ``elapsed`` seconds. With
        ``context.group_commit`` the transport yields to the loop before it replies: the
        inference joins the others of this loop turn, appended together by one callback that
        runs before any of them is answered. Once per turn, the code and data this takes stay
        in the CPU's caches; per inference, between two requests, they were evicted, and every
        call and temporary cost several times its figure in a loop (14 against 2.6 µs here)."""
        if context.group_commit:
            pending = self._pending
            pending.append((
                policy, model, version, request, response, context, started, elapsed, status,
                error,
            ))  # fmt: skip
            if len(pending) == 1:
                asyncio.get_running_loop().call_soon(self._commit_pending)
            return
        self._append(
            policy, model, version, request, response, context, started, elapsed, status, error
        )

    def _commit_pending(self) -> None:
        """The group commit: every inference of the last loop turn, in order."""
        pending, self._pending = self._pending, []
        for inference in pending:
            try:
                self._append(*inference)
            except Exception:  # noqa: BLE001 - logged loudly, never the client's problem
                logger.exception("payload log: could not record %s", inference[5].request_id)

    def _append(
        self,
        policy: ModelPayloadLog | None,
        model: str,
        version: str,
        request: InferenceRequest | None,
        response: InferenceResponse | None,
        context: RequestContext,
        started: float,
        elapsed: float,
        status: str,
        error: ServekitError | None,
    ) -> None:
        if policy is None:
            rate, redact = self._rate, self._redact
        else:
            if not policy.enabled:
                return
            rate = self._rate if policy.sample_rate is None else policy.sample_rate
            redact = self._redact | frozenset(policy.redact) if policy.redact else self._redact
        event_id = context.request_id or ""
        if rate < 1.0 and not sampled(event_id, rate):
            return
        limit = self._max_payload
        if request is None:
            inputs, parameters = None, {}
        else:
            inputs, parameters = capture_raw(request.inputs, redact, limit), request.parameters
            if redact and parameters:
                parameters = redact_parameters(parameters, redact)
        service, variant = context.service, context.variant
        payload = encode_fields((
            event_id, model, version, started, status, service or model, variant or "default",
            context.protocol, elapsed * 1000.0,
            200 if error is None else error.code.http_status,
            None if error is None else error.message,
            inputs,
            None if response is None else capture_raw(response.outputs, redact, limit),
            parameters,
        ))  # fmt: skip
        journal = self._journal
        assert journal is not None
        try:
            journal.append(payload)
        except JournalFull:
            if status != "ok":  # refused while full: counted, not spooled
                self.metrics.dropped.labels("*", "spool_full").inc()
                return
            journal.append(payload, force=True)  # admitted before it filled up
        if service and service != model and status == "ok" and variant != "shadow":
            self._served_by.add(service, event_id, model)

    # -- feedback support ---------------------------------------------------------------------

    def served_model(self, service: str, event_id: str) -> str | None:
        """The model that answered ``event_id`` for a deployment (among the recent ids)."""
        return self._served_by.get(service, event_id)

    def find_version(self, model: str, event_id: str) -> str | None:
        """The version that answered ``event_id``: from the store, or, for a prediction that
        is spooled but not stored yet (feedback right after the response), from the spool's
        records the store has not taken. Blocking: call it in a thread."""
        store = self.store
        if store is None:
            return None
        version = store.has_inference(model, event_id)
        if version is not None or self._journal is None:
            return version
        if not sampled(event_id, self.settings.store.sample_rate):
            return None  # the store will not keep it: nothing for feedback to join
        journal = self._journal
        end = journal.end
        start = journal.committed(StoreSink.name)
        if end - start > SPOOL_LOOKUP_RECORDS:
            raise Unavailable(
                f"prediction '{event_id}' is not in the payload store and the store is "
                f"{end - start} events behind the spool; retry later"
            )
        for _, payload in journal.records(start, end):
            found = decode_routing(payload)
            if found.id == event_id and found.model == model and found.status == "ok":
                version = found.version
        return version if version is not None else store.has_inference(model, event_id)
