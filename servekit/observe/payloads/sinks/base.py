"""What a sink is: something that takes a batch of records and either stores all of it or raises."""

from __future__ import annotations

from typing import Protocol

from servekit.observe.payloads.config import SinkOptions
from servekit.observe.payloads.record import InferenceRecord


class RejectedEvents(Exception):
    """The destination refused these events for good (e.g. HTTP 400): retrying cannot help.

    The delivery loop counts them as dropped (reason 'rejected') and logs an error, so a poison
    event never blocks the events behind it.
    """


class Sink(Protocol):
    name: str
    options: SinkOptions

    def open(self) -> None:
        """Connect or create what the sink needs; raising means 'retry later'."""

    def deliver(self, records: list[InferenceRecord]) -> None:
        """Store every record, or raise (the whole batch is then retried).

        Delivery is at least once: after a crash a batch may come again, and consumers
        deduplicate by event id.
        """

    def close(self) -> None: ...


class EncodedSink(Sink, Protocol):
    """A sink that can take records as the journal holds them (msgpack): when it filters
    nothing (no ``models``, ``sample_rate`` 1), the delivery loop skips decoding them."""

    def deliver_encoded(self, payloads: list[bytes]) -> None: ...


class SelectiveSink(Sink, Protocol):
    """A consumer that may want none of the records for a while (monitoring with no monitored
    model): while ``wants_none()`` is true the delivery loop moves its cursor past the journal's
    end without reading, so an unused consumer costs the server's core nothing per event."""

    def wants_none(self) -> bool: ...
