"""The sink threads: batches from the journal, filters, retry with backoff, rejected events,
stop, and resuming after a restart."""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from servekit.observe.payloads import delivery
from servekit.observe.payloads.config import SinkOptions
from servekit.observe.payloads.delivery import SinkWorker, sampled
from servekit.observe.payloads.journal import Journal
from servekit.observe.payloads.metrics import PayloadMetrics
from servekit.observe.payloads.record import InferenceRecord, encode
from servekit.observe.payloads.sinks.base import RejectedEvents

TIMEOUT = 10.0


class FakeSink:
    """A Sink that keeps what it is given; ``fail`` decides whether a delivery raises."""

    def __init__(
        self,
        name: str = "fake",
        *,
        fail: Callable[[list[InferenceRecord], int], BaseException | None] | None = None,
        open_failures: int = 0,
        **options: Any,
    ) -> None:
        self.name = name
        self.options = SinkOptions(name=name, **options)
        self._fail = fail
        self._open_failures = open_failures
        self.open_attempts: list[float] = []
        self.attempts: list[tuple[float, list[str]]] = []
        self.delivered: list[InferenceRecord] = []
        self.opened = self.closed = False
        self._changed = threading.Condition()

    def open(self) -> None:
        self.open_attempts.append(time.monotonic())
        if len(self.open_attempts) <= self._open_failures:
            raise ConnectionError("destination down")
        self.opened = True

    def deliver(self, records: list[InferenceRecord]) -> None:
        assert self.opened and not self.closed
        with self._changed:
            self.attempts.append((time.monotonic(), [r.id for r in records]))
            error = self._fail(records, len(self.attempts)) if self._fail else None
            if error is None:
                self.delivered.extend(records)
            self._changed.notify_all()
        if error is not None:
            raise error

    def close(self) -> None:
        self.closed = True

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.delivered]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        with self._changed:
            assert self._changed.wait_for(predicate, timeout), "timed out waiting for the sink"


def make_record(n: int, model: str = "iris") -> InferenceRecord:
    return InferenceRecord(
        id=f"req-{n}",
        model=model,
        version="1",
        service=model,
        protocol="v2",
        time=1_700_000_000.0 + n,
        latency_ms=1.0,
    )


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "FIRST_BACKOFF_SECONDS", 0.01)
    monkeypatch.setattr(delivery, "MAX_BACKOFF_SECONDS", 0.2)


class Harness:
    """A journal and the workers on it, all stopped and closed at the end of the test."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.registry = CollectorRegistry()
        self.metrics = PayloadMetrics(self.registry)
        self.journals: list[Journal] = []
        self.workers: list[SinkWorker] = []

    def journal(self, **options: Any) -> Journal:
        options.setdefault("max_bytes", 1 << 30)
        journal = Journal(self.directory, **options)
        self.journals.append(journal)
        return journal

    def worker(self, sink: FakeSink, journal: Journal, *, start: bool = True) -> SinkWorker:
        worker = SinkWorker(sink, journal, self.metrics)  # type: ignore[arg-type]
        self.workers.append(worker)
        if start:
            worker.start()
        return worker

    def stop(self, worker: SinkWorker) -> None:
        worker.stop()
        worker.join(timeout=TIMEOUT)
        assert not worker.is_alive()

    def close(self) -> None:
        for worker in self.workers:
            if worker.is_alive():
                self.stop(worker)
        for journal in list(self.journals):
            self.close_journal(journal)

    def close_journal(self, journal: Journal) -> None:
        self.journals.remove(journal)
        journal.close()

    def value(self, name: str, **labels: str) -> float:
        return sample(self.registry, name, **labels)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path / "spool")
    yield h
    h.close()


def append(journal: Journal, numbers: range, model: str = "iris") -> None:
    for n in numbers:
        journal.append(encode(make_record(n, model)))


def ids(numbers: range) -> list[str]:
    return [f"req-{n}" for n in numbers]


def test_delivers_in_order_in_batches_and_commits(harness: Harness) -> None:
    journal = harness.journal(segment_bytes=1024)
    append(journal, range(300))  # spooled before the worker starts
    sink = FakeSink(batch_size=64)
    worker = harness.worker(sink, journal)
    sink.wait_for(lambda: len(sink.delivered) == 300)
    append(journal, range(300, 400))  # and while it runs
    sink.wait_for(lambda: len(sink.delivered) == 400)
    wait_until(lambda: worker.pending == 0)

    assert sink.ids == ids(range(400))
    assert sink.delivered[7] == make_record(7)  # decoded intact
    assert all(0 < len(batch) <= 64 for _, batch in sink.attempts)
    assert journal.cursor("fake") == 400
    cursor_file = harness.directory / "cursors" / "fake"
    # Written just after the memory copy: fixed width, in place.
    wait_until(lambda: cursor_file.read_bytes() == b"00000000000000000400")
    segments = harness.directory / "segments"
    wait_until(lambda: len(list(segments.glob("*.seg"))) == 1)  # all delivered: trimmed
    (last,) = segments.glob("*.seg")
    first = int(last.stem)
    payloads = [encode(make_record(n)) for n in range(first, 400)]
    frames = b"".join(struct.pack("<II", len(p), zlib.adler32(p)) + p for p in payloads)
    assert journal.size == len(frames)  # the records the segment holds, not its file's size
    raw = last.read_bytes()
    assert len(raw) == 1024  # preallocated
    assert raw[: len(frames)] == frames
    assert raw[len(frames) :] == bytes(1024 - len(frames))
    assert harness.value("servekit_payload_events_delivered_total", sink="fake") == 400
    assert harness.value("servekit_payload_delivery_retries_total", sink="fake") == 0
    wait_until(lambda: harness.value("servekit_payload_events_spooled", sink="fake") == 0)
    wait_until(lambda: harness.value("servekit_payload_spool_bytes") == journal.size)
    assert worker.wait_caught_up(time.monotonic() + 1)
    harness.stop(worker)
    assert sink.closed


def test_a_failing_sink_gets_every_record_once_in_order_after_retries(
    harness: Harness,
) -> None:
    journal = harness.journal()
    append(journal, range(100))

    def fail_three_times(records: list[InferenceRecord], attempt: int) -> BaseException | None:
        return ConnectionError("503 from the collector") if attempt <= 3 else None

    sink = FakeSink(batch_size=40, fail=fail_three_times)
    worker = harness.worker(sink, journal)
    sink.wait_for(lambda: len(sink.delivered) == 100)
    wait_until(lambda: worker.pending == 0)

    assert sink.ids == ids(range(100))  # exactly once, in order
    assert harness.value("servekit_payload_delivery_retries_total", sink="fake") == 3
    assert harness.value("servekit_payload_events_delivered_total", sink="fake") == 100
    # The same batch was retried each time, with a doubling delay (0.01, 0.02, 0.04 s).
    first_four = sink.attempts[:4]
    assert [batch for _, batch in first_four] == [ids(range(40))] * 4
    gaps = [b[0] - a[0] for a, b in zip(first_four, first_four[1:], strict=False)]
    for gap, delay in zip(gaps, (0.01, 0.02, 0.04), strict=True):
        assert gap >= delay * 0.9, gaps
    assert [batch for _, batch in sink.attempts[4:]] == [ids(range(40, 80)), ids(range(80, 100))]


def test_the_backoff_is_capped(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "MAX_BACKOFF_SECONDS", 0.03)
    journal = harness.journal()
    append(journal, range(1))
    sink = FakeSink(fail=lambda records, attempt: OSError("down") if attempt <= 6 else None)
    harness.worker(sink, journal)
    sink.wait_for(lambda: len(sink.delivered) == 1)
    times = [t for t, _ in sink.attempts]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(gaps) == 6
    assert all(gap < 0.03 + 0.5 for gap in gaps)  # capped (with slack for a busy machine)
    assert min(gaps[2:]) >= 0.03 * 0.9  # 0.01, 0.02, then 0.03 each time


def test_open_is_retried_until_the_destination_is_up(harness: Harness) -> None:
    journal = harness.journal()
    append(journal, range(5))
    sink = FakeSink(open_failures=2)
    harness.worker(sink, journal)
    sink.wait_for(lambda: len(sink.delivered) == 5)
    assert len(sink.open_attempts) == 3
    assert harness.value("servekit_payload_delivery_retries_total", sink="fake") == 2
    assert sink.ids == ids(range(5))


def test_rejected_events_are_dropped_and_do_not_block_the_rest(harness: Harness) -> None:
    journal = harness.journal()
    append(journal, range(10))

    def reject_poison(records: list[InferenceRecord], attempt: int) -> BaseException | None:
        if any(r.id in {"req-3", "req-7"} for r in records):
            return RejectedEvents("HTTP 400: bad event")
        return None

    sink = FakeSink(batch_size=1, fail=reject_poison)
    worker = harness.worker(sink, journal)
    wait_until(lambda: worker.pending == 0)
    append(journal, range(10, 12))  # later records still flow
    wait_until(lambda: worker.pending == 0)

    assert sink.ids == [i for i in ids(range(12)) if i not in {"req-3", "req-7"}]
    assert [batch for _, batch in sink.attempts].count(["req-3"]) == 1  # never retried
    assert (
        harness.value("servekit_payload_events_dropped_total", sink="fake", reason="rejected") == 2
    )
    assert harness.value("servekit_payload_events_delivered_total", sink="fake") == 10
    assert harness.value("servekit_payload_delivery_retries_total", sink="fake") == 0
    assert journal.cursor("fake") == 12


def test_the_models_filter(harness: Harness) -> None:
    journal = harness.journal()
    for n in range(30):
        journal.append(encode(make_record(n, ("iris", "wine", "digits")[n % 3])))
    sink = FakeSink(models=["iris", "digits"], batch_size=7)
    everything = FakeSink("all")
    worker = harness.worker(sink, journal)
    harness.worker(everything, journal)
    wait_until(lambda: worker.pending == 0)
    everything.wait_for(lambda: len(everything.delivered) == 30)

    assert sink.ids == [f"req-{n}" for n in range(30) if n % 3 != 1]
    assert {r.model for r in sink.delivered} == {"iris", "digits"}
    assert journal.cursor("fake") == 30  # filtered-out records are committed too
    assert harness.value("servekit_payload_events_delivered_total", sink="fake") == 20


def test_a_batch_with_nothing_wanted_is_committed_without_a_delivery(harness: Harness) -> None:
    journal = harness.journal()
    append(journal, range(20), model="wine")
    sink = FakeSink(models=["iris"])
    worker = harness.worker(sink, journal)
    wait_until(lambda: worker.pending == 0)
    assert sink.attempts == []
    assert journal.cursor("fake") == 20


def test_the_sample_rate_filter(harness: Harness) -> None:
    journal = harness.journal()
    append(journal, range(1000))
    sink = FakeSink(sample_rate=0.3)
    none = FakeSink("none", sample_rate=0.0)
    worker = harness.worker(sink, journal)
    idle = harness.worker(none, journal)
    wait_until(lambda: worker.pending == 0 and idle.pending == 0)

    expected = [i for i in ids(range(1000)) if sampled(i, 0.3)]
    assert sink.ids == expected
    assert 200 < len(expected) < 400
    assert none.delivered == []


def test_sampled_is_deterministic_and_close_to_the_rate() -> None:
    event_ids = [f"7f3c{n:08x}-inference" for n in range(10_000)]
    for rate in (0.1, 0.3, 0.5, 0.9):
        kept = [e for e in event_ids if sampled(e, rate)]
        assert abs(len(kept) / len(event_ids) - rate) < 0.03, rate
        assert kept == [e for e in event_ids if sampled(e, rate)]  # same ids every time
    # A smaller rate keeps a subset of a larger one (both halves, every sink agree).
    low = {e for e in event_ids if sampled(e, 0.2)}
    high = {e for e in event_ids if sampled(e, 0.6)}
    assert low < high
    assert all(sampled(e, 1.0) for e in event_ids)
    assert not any(sampled(e, 0.0) for e in event_ids)
    # It is the crc32 of the id against the rate's share of 2**32.
    assert sampled("x", 0.5) == (zlib.crc32(b"x") < 0.5 * 2**32)


def test_stop_ends_an_idle_worker(harness: Harness) -> None:
    journal = harness.journal()
    sink = FakeSink()
    worker = harness.worker(sink, journal)
    wait_until(lambda: sink.opened)
    started = time.monotonic()
    harness.stop(worker)
    assert time.monotonic() - started < 1.0
    assert sink.closed


def test_stop_interrupts_the_backoff_and_commits_nothing(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery, "FIRST_BACKOFF_SECONDS", 30.0)
    journal = harness.journal()
    append(journal, range(3))
    sink = FakeSink(fail=lambda records, attempt: TimeoutError("slow collector"))
    worker = harness.worker(sink, journal)
    sink.wait_for(lambda: len(sink.attempts) == 1)
    started = time.monotonic()
    harness.stop(worker)
    assert time.monotonic() - started < 2.0  # not the 30 s backoff
    assert journal.cursor("fake") == 0
    assert worker.pending == 3
    assert sink.closed


def test_stop_interrupts_a_failing_open(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "FIRST_BACKOFF_SECONDS", 30.0)
    journal = harness.journal()
    sink = FakeSink(open_failures=1_000)
    worker = harness.worker(sink, journal)
    wait_until(lambda: len(sink.open_attempts) == 1)
    started = time.monotonic()
    harness.stop(worker)
    assert time.monotonic() - started < 2.0


def test_undelivered_records_are_delivered_after_a_restart(harness: Harness) -> None:
    journal = harness.journal(segment_bytes=512)
    append(journal, range(100))
    # The destination takes two batches of 10, then goes down for good.
    first = FakeSink(
        batch_size=10, fail=lambda r, attempt: OSError("down") if attempt > 2 else None
    )
    worker = harness.worker(first, journal)
    first.wait_for(lambda: len(first.attempts) >= 4)  # two delivered, then failing retries
    harness.stop(worker)
    size = journal.size
    harness.close_journal(journal)
    assert first.ids == ids(range(20))
    committed = (harness.directory / "cursors" / "fake").read_text()
    assert committed == "00000000000000000020" and int(committed) == 20

    # A new process: a new journal on the same directory and a new worker for the same sink.
    reopened = harness.journal(segment_bytes=512)
    assert reopened.end == 100
    assert reopened.size == size  # whole records, found again by scanning the segments
    append(reopened, range(100, 110))
    second = FakeSink(batch_size=10)
    worker = harness.worker(second, reopened)
    second.wait_for(lambda: len(second.delivered) == 90)
    wait_until(lambda: worker.pending == 0)
    assert second.ids == ids(range(20, 110))  # resumes at the committed cursor, in order
    assert set(first.ids) | set(second.ids) == set(ids(range(110)))  # at least once
    assert reopened.cursor("fake") == 110


def test_a_crash_between_delivery_and_commit_delivers_again(harness: Harness) -> None:
    """At least once: a batch delivered but not committed comes again after a restart."""
    journal = harness.journal()
    append(journal, range(10))
    journal.register("fake")
    reader = journal.reader("fake")
    batch = reader.read(5)  # delivered by the sink, then the process died before the commit
    reader.close()
    assert [o for o, _ in batch] == [0, 1, 2, 3, 4]
    harness.close_journal(journal)

    reopened = harness.journal()
    second = FakeSink(batch_size=5)
    harness.worker(second, reopened)
    second.wait_for(lambda: len(second.delivered) == 10)
    assert second.ids == ids(range(10))


def test_spool_full_drops_are_counted_for_the_sink(harness: Harness) -> None:
    journal = harness.journal(max_bytes=4 * 4096, segment_bytes=4096, on_full="drop")
    release = threading.Event()

    def blocked(records: list[InferenceRecord], attempt: int) -> BaseException | None:
        release.wait(TIMEOUT)
        return None

    sink = FakeSink(batch_size=10, fail=blocked)
    worker = harness.worker(sink, journal)
    total = 2000  # about 60 KB through a 16 KB spool while the sink is stuck
    append(journal, range(total))
    release.set()
    wait_until(lambda: worker.pending == 0)
    harness.stop(worker)  # syncs the last drops into the metric

    dropped = harness.value(
        "servekit_payload_events_dropped_total", sink="fake", reason="spool_full"
    )
    assert dropped > 0
    numbers = [int(i.split("-")[1]) for i in sink.ids]
    assert numbers == sorted(set(numbers))  # in order, no repeat
    assert numbers[-1] == total - 1
    assert len(numbers) + dropped >= total  # every missing record was counted
    assert journal.size <= 4 * 4096


class SelectiveSink(FakeSink):
    """A consumer that wants nothing while ``idle`` is set (monitoring with no monitored model)."""

    def __init__(self, **options: Any) -> None:
        super().__init__("selective", **options)
        self.idle = threading.Event()
        self.idle.set()

    def wants_none(self) -> bool:
        return self.idle.is_set()


def test_a_consumer_that_wants_nothing_is_moved_past_the_records_unread(harness: Harness) -> None:
    journal = harness.journal(segment_bytes=1024)
    sink = SelectiveSink(batch_size=64)
    worker = harness.worker(sink, journal)
    append(journal, range(200))
    wait_until(lambda: journal.cursor("selective") == 200)
    assert sink.attempts == [] and worker.pending == 0

    sink.idle.clear()  # a model became monitored: the records after this point are read
    append(journal, range(200, 250))
    sink.wait_for(lambda: len(sink.delivered) == 50)
    assert sink.ids == ids(range(200, 250))
    wait_until(lambda: worker.pending == 0)
