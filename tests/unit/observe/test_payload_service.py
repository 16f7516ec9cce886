"""PayloadLog end to end on real files: capture policies (redaction, truncation, sampling,
per-model switches), the store sink, find_version, admission control on a full spool, the
directory lock, shutdown flushing, and feedback that arrives before its prediction is stored."""

from __future__ import annotations

import asyncio
import os
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry

from servekit.errors import ConfigError, InferenceError, Unavailable
from servekit.observe.payloads import delivery, service
from servekit.observe.payloads.config import FileSinkConfig, ModelPayloadLog, PayloadLogSettings
from servekit.observe.payloads.delivery import sampled
from servekit.observe.payloads.record import REDACTED, InferenceRecord, capture, decode
from servekit.observe.payloads.service import PayloadLog
from servekit.observe.payloads.store import LogQuery
from servekit.types.inference import InferenceRequest, InferenceResponse, RequestContext
from servekit.types.tensors import Tensor, from_raw

TIMEOUT = 10.0
T0 = float(int(time.time()) - 3600)
"""Recent: the store sink's retention (7 days by default) deletes older rows when it opens."""
SSN = "123-45-6789-SECRET"
API_KEY = "sk-live-0123456789abcdef"


def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def default_inputs() -> list[Tensor]:
    return [
        Tensor.from_array("x", np.array([[5.1, 3.5, 1.4, 0.2]])),
        Tensor.from_array("ssn", np.array([SSN], dtype=object)),
    ]


def default_outputs(n: int) -> list[Tensor]:
    return [Tensor.from_array("label", np.array([n % 3], dtype=np.int64))]


class Logs:
    """PayloadLogs a test starts; each is stopped (once) and its store closed at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.directory = tmp_path / "payloads"
        self.started: list[PayloadLog] = []
        self.stopped: set[int] = set()
        self.registries: dict[int, CollectorRegistry] = {}

    def settings(self, **options: Any) -> PayloadLogSettings:
        options.setdefault("shutdown_flush_seconds", 5.0)
        options.setdefault("delivery", "thread")  # in-process, so tests can pause the store
        return PayloadLogSettings(directory=self.directory, **options)

    def start(self, settings: PayloadLogSettings | None = None, **options: Any) -> PayloadLog:
        registry = CollectorRegistry()
        log = PayloadLog(settings or self.settings(**options), registry)
        log.start()
        self.started.append(log)
        self.registries[id(log)] = registry
        return log

    def value(self, log: PayloadLog, name: str, **labels: str) -> float:
        return self.registries[id(log)].get_sample_value(name, labels) or 0.0

    def stop(self, log: PayloadLog) -> None:
        if id(log) not in self.stopped:
            self.stopped.add(id(log))
            log.stop()
            if log.store is not None:
                log.store.close()  # this thread's connection (the worker closed its own)

    def close(self) -> None:
        for log in self.started:
            self.stop(log)


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[Logs]:
    manager = Logs(tmp_path)
    yield manager
    manager.close()


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "FIRST_BACKOFF_SECONDS", 0.01)
    monkeypatch.setattr(delivery, "MAX_BACKOFF_SECONDS", 0.05)


def record(
    log: PayloadLog,
    n: int,
    policy: ModelPayloadLog | None = None,
    *,
    model: str = "iris",
    version: str = "1",
    status: str = "ok",
    event_id: str | None = None,
    inputs: list[Tensor] | None = None,
    outputs: list[Tensor] | None = None,
    parameters: dict[str, Any] | None = None,
) -> str:
    event_id = event_id or f"req-{n}"
    failed = status != "ok"
    request = InferenceRequest(
        inputs=default_inputs() if inputs is None else inputs,
        parameters={} if parameters is None else parameters,
    )
    response = None
    if not failed:
        produced = default_outputs(n) if outputs is None else outputs
        response = InferenceResponse(model_name=model, model_version=version, outputs=produced)
    log.log_inference(
        policy,
        model,
        version,
        request,
        response,
        RequestContext(protocol="v2", request_id=event_id),
        T0 + n,
        0.002,
        status,
        InferenceError("model raised") if failed else None,
    )
    return event_id


def flushed(log: PayloadLog) -> None:
    wait_until(lambda: not any(log.pending().values()))


def stored(log: PayloadLog, **query: Any) -> list[dict[str, Any]]:
    assert log.store is not None
    rows = log.store.query(LogQuery(limit=10_000, **query))
    return sorted(rows, key=lambda row: row["time"])


def bytes_on_disk(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


def spooled(directory: Path) -> list[InferenceRecord]:
    """The records in the spool's segment files: ``u32 length | u32 Adler-32 | payload`` frames,
    up to the zeros that fill the rest of each preallocated segment."""
    out = []
    segments = sorted((directory / "spool" / "segments").glob("*.seg"), key=lambda p: int(p.stem))
    for path in segments:
        raw = path.read_bytes()
        position = 0
        while position + 8 <= len(raw):
            length, checksum = struct.unpack_from("<II", raw, position)
            if length == 0:
                break
            data = raw[position + 8 : position + 8 + length]
            assert zlib.adler32(data) == checksum, (path, position)
            out.append(decode(data))
            position += 8 + length
        assert raw[position:] == bytes(len(raw) - position), path  # zeros after the records
    return out


def test_inferences_reach_the_store_and_other_sinks(logs: Logs, tmp_path: Path) -> None:
    out = tmp_path / "events"
    log = logs.start(sinks=[FileSinkConfig(type="file", path=out, models=["iris"])])
    assert log.sink_names == ["store", "file"]
    for n in range(3):
        record(log, n, parameters={"temperature": 0.5})
    record(log, 3, model="wine")
    flushed(log)
    assert log.pending() == {"store": 0, "file": 0}

    rows = stored(log)
    assert [r["id"] for r in rows] == ["req-0", "req-1", "req-2", "req-3"]
    first = rows[0]
    assert first["model"] == "iris" and first["version"] == "1" and first["status"] == "ok"
    assert first["request"]["parameters"] == {"temperature": 0.5}
    assert first["request"]["inputs"][0] == {
        "name": "x", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]
    }  # fmt: skip
    assert first["response"]["outputs"][0]["data"] == [0]
    assert [r["prediction"] for r in rows] == [[0], [1], [2], [0]]
    assert [r["id"] for r in stored(log, prediction="1")] == ["req-1"]
    assert log.store.counts() == {"inferences": 4, "feedback": 0}  # type: ignore[union-attr]

    logs.stop(log)  # the file sink finishes its file on close
    events = [
        orjson.loads(line)
        for p in sorted(out.glob("events-*.jsonl"))
        for line in p.read_bytes().splitlines()
    ]
    assert [e["id"] for e in events] == ["req-0", "req-0", "req-1", "req-1", "req-2", "req-2"]


def test_global_redaction_of_tensors_and_parameters(logs: Logs) -> None:
    log = logs.start(redact=["ssn", "api_key"])
    record(log, 1, parameters={"api_key": API_KEY, "temperature": 0.5})
    flushed(log)

    (row,) = stored(log)
    x, ssn = row["request"]["inputs"]
    assert x["data"] == [5.1, 3.5, 1.4, 0.2]
    assert ssn == {
        "name": "ssn", "datatype": "BYTES", "shape": [1], "data": None,
        "parameters": {"servekit_payload": "redacted"},
    }  # fmt: skip
    assert row["request"]["parameters"] == {"api_key": REDACTED, "temperature": 0.5}
    # Never written anywhere: not in the spool, the cursors or the SQLite files.
    (event,) = spooled(logs.directory)  # the spool does hold the event, redacted
    assert event.id == "req-1"
    assert event.parameters == {"api_key": REDACTED, "temperature": 0.5}
    on_disk = bytes_on_disk(logs.directory)
    assert b"req-1" in on_disk
    assert SSN.encode() not in on_disk
    assert API_KEY.encode() not in on_disk


def test_per_model_redaction_adds_to_the_global_list(logs: Logs) -> None:
    log = logs.start(redact=["ssn"])
    policy = ModelPayloadLog(redact=["x", "api_key"])
    record(log, 1, policy, parameters={"api_key": API_KEY})
    record(log, 2, model="wine", parameters={"api_key": API_KEY})  # no policy: global list only
    flushed(log)

    iris, wine = stored(log)
    assert [t["parameters"] for t in iris["request"]["inputs"]] == [
        {"servekit_payload": "redacted"}
    ] * 2
    assert iris["request"]["parameters"] == {"api_key": REDACTED}
    assert wine["request"]["inputs"][0]["data"] == [5.1, 3.5, 1.4, 0.2]
    assert wine["request"]["inputs"][1]["parameters"] == {"servekit_payload": "redacted"}
    assert wine["request"]["parameters"] == {"api_key": API_KEY}


def test_an_output_can_be_redacted(logs: Logs) -> None:
    log = logs.start(redact=["label"])
    record(log, 1)
    flushed(log)
    (row,) = stored(log)
    assert row["response"]["outputs"][0]["data"] is None
    assert row.get("prediction") is None


def test_tensors_over_max_payload_bytes_are_kept_as_shape_and_type(logs: Logs) -> None:
    log = logs.start(max_payload_bytes=64)
    inputs = [
        Tensor.from_array("exact", np.arange(8, dtype=np.float64)),  # 64 bytes: kept
        Tensor.from_array("big", np.zeros((10, 10), dtype=np.float32)),  # 400 bytes
        Tensor.from_array("short_text", np.array(["hello"], dtype=object)),  # 9 raw bytes
        Tensor.from_array("long_text", np.array(["y" * 100], dtype=object)),  # 104 raw bytes
    ]
    outputs = [Tensor.from_array("scores", np.ones(17, dtype=np.float32))]  # 68 bytes
    record(log, 1, inputs=inputs, outputs=outputs)
    flushed(log)

    (row,) = stored(log)
    exact, big, short_text, long_text = row["request"]["inputs"]
    assert exact["data"] == list(range(8))
    assert big == {
        "name": "big", "datatype": "FP32", "shape": [10, 10], "data": None,
        "parameters": {"servekit_payload": "truncated"},
    }  # fmt: skip
    assert short_text["data"] == ["hello"]
    assert long_text["data"] is None
    assert long_text["parameters"] == {"servekit_payload": "truncated"}
    (scores,) = row["response"]["outputs"]
    assert scores["shape"] == [17] and scores["data"] is None
    assert row.get("prediction") is None


def test_a_model_can_turn_logging_off(logs: Logs) -> None:
    log = logs.start()
    off = ModelPayloadLog(enabled=False)
    record(log, 1, off)
    record(log, 2, off, status="internal")
    record(log, 3, model="wine")
    flushed(log)
    assert [r["id"] for r in stored(log)] == ["req-3"]
    assert log.find_version("iris", "req-1") is None
    assert log.find_version("wine", "req-3") == "1"


def test_sampling_by_id(logs: Logs) -> None:
    log = logs.start(sample_rate=0.5)
    event_ids = [record(log, n) for n in range(300)]
    flushed(log)
    kept = [r["id"] for r in stored(log)]
    assert kept == [e for e in event_ids if sampled(e, 0.5)]
    assert 100 < len(kept) < 200
    assert all(log.find_version("iris", e) == "1" for e in kept)
    assert all(log.find_version("iris", e) is None for e in set(event_ids) - set(kept))


@pytest.mark.parametrize(
    ("global_rate", "model_rate", "expected"),
    [(0.0, 1.0, 50), (1.0, 0.0, 0), (0.0, None, 0), (1.0, None, 50)],
)
def test_a_models_sample_rate_overrides_the_servers(
    logs: Logs, global_rate: float, model_rate: float | None, expected: int
) -> None:
    log = logs.start(sample_rate=global_rate)
    policy = ModelPayloadLog(sample_rate=model_rate)
    for n in range(50):
        record(log, n, policy)
    record(log, 99, model="other")  # no policy: the server's rate
    flushed(log)
    rows = stored(log)
    assert len([r for r in rows if r["model"] == "iris"]) == expected
    assert len([r for r in rows if r["model"] == "other"]) == int(global_rate)


def break_store(log: PayloadLog) -> Callable[[], None]:
    """Make every insert into the store fail (the store sink then retries); returns a repair."""
    store = log.store
    assert store is not None

    def broken_write(values: Any) -> None:
        raise OSError("disk I/O error")

    store._write = broken_write  # type: ignore[method-assign]

    def repair() -> None:
        del store._write

    return repair


def pause_store(
    log: PayloadLog, monkeypatch: pytest.MonkeyPatch
) -> tuple[threading.Event, threading.Event]:
    """Make the store sink's insert wait for ``release``; ``entered`` is set once it waits."""
    store = log.store
    assert store is not None
    original = store._write
    release, entered = threading.Event(), threading.Event()

    def paused_write(values: Any) -> None:
        entered.set()
        release.wait(TIMEOUT)
        original(values)

    monkeypatch.setattr(store, "_write", paused_write)
    return release, entered


def test_find_version_from_the_spool_then_from_the_store(
    logs: Logs, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = logs.start()
    release, entered = pause_store(log, monkeypatch)
    try:
        record(log, 0, version="3")
        assert entered.wait(TIMEOUT)
        assert log.store.has_inference("iris", "req-0") is None  # type: ignore[union-attr]
        assert log.find_version("iris", "req-0") == "3"  # spooled, not stored: found there
        assert log.find_version("wine", "req-0") is None  # ids are per model
        record(log, 1, status="internal")  # a failed inference predicted nothing
        assert log.find_version("iris", "req-1") is None
    finally:
        release.set()
    for n in range(2, 12):
        record(log, n, version="4")
    flushed(log)
    assert log.find_version("iris", "req-0") == "3"  # now from the store
    assert log.find_version("iris", "req-1") is None
    assert log.find_version("iris", "req-11") == "4"
    assert log.find_version("iris", "unknown") is None

    logs.stop(log)  # after a restart the store answers
    again = logs.start()
    assert again.find_version("iris", "req-0") == "3"
    assert again.find_version("iris", "req-7") == "4"
    assert again.find_version("iris", "nope") is None


def test_find_version_answers_503_when_the_store_is_far_behind(
    logs: Logs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "SPOOL_LOOKUP_RECORDS", 5)
    log = logs.start()
    release, entered = pause_store(log, monkeypatch)
    try:
        for n in range(10):
            record(log, n)
        assert entered.wait(TIMEOUT)
        with pytest.raises(Unavailable, match="events behind the spool"):
            log.find_version("iris", "req-9")
    finally:
        release.set()
    flushed(log)
    assert log.find_version("iris", "req-9") == "1"


def test_admit_refuses_while_the_spool_is_full(logs: Logs) -> None:
    log = logs.start(spool_max_bytes=8192, on_spool_full="block", shutdown_flush_seconds=0.0)
    repair = break_store(log)  # the store sink never succeeds

    admitted = []
    for n in range(1000):
        try:
            log.admit()
        except Unavailable as exc:
            assert "spool is full" in str(exc)
            break
        admitted.append(record(log, n))
    else:
        pytest.fail("the spool never filled up")
    assert 10 < len(admitted) < 100
    blocked = "servekit_payload_blocked_requests_total"
    assert logs.value(log, blocked) == 1
    with pytest.raises(Unavailable):
        log.admit()
    assert logs.value(log, blocked) == 2

    # A request admitted just before the limit is still logged; a failed one is dropped.
    late = record(log, 5000)
    record(log, 5001, status="internal")
    dropped = "servekit_payload_events_dropped_total"
    assert logs.value(log, dropped, sink="*", reason="spool_full") == 1
    assert log.pending()["store"] == len(admitted) + 1
    wait_until(lambda: logs.value(log, "servekit_payload_delivery_retries_total", sink="store") > 0)

    # The store comes back: the backlog drains and requests are admitted again.
    repair()
    flushed(log)
    segments = logs.directory / "spool" / "segments"
    wait_until(lambda: len(list(segments.glob("*.seg"))) == 1)  # the commit trims just after
    (segment,) = segments.glob("*.seg")
    assert segment.stat().st_size == 4096  # preallocated: a quarter of the spool, at least 4 KiB
    kept = [r.id for r in spooled(logs.directory)]
    assert kept and kept == [*admitted, late][-len(kept) :]  # the newest records, in order
    log.admit()
    assert logs.value(log, blocked) == 2
    assert [r["id"] for r in stored(log)] == [*admitted, late]
    assert (
        logs.value(log, "servekit_payload_events_delivered_total", sink="store")
        == len(admitted) + 1
    )


def test_one_payload_log_per_directory(logs: Logs) -> None:
    first = logs.start()
    second = PayloadLog(logs.settings(), CollectorRegistry())
    with pytest.raises(ConfigError, match="used by another servekit process"):
        second.start()
    assert second.store is None  # nothing was built
    logs.stop(first)
    third = logs.start()  # the lock is released by stop()
    assert third.sink_names == ["store"]


def test_a_failed_start_releases_the_directory_lock(logs: Logs, tmp_path: Path) -> None:
    """BUG: start() takes the lock first and does not release it when building the sinks
    fails, so the process cannot start a payload log on that directory again."""
    bad = PayloadLog(
        logs.settings(sinks=[FileSinkConfig(type="file", name="store", path=tmp_path / "o")]),
        CollectorRegistry(),
    )
    try:
        with pytest.raises(ConfigError, match="two sinks are named 'store'"):
            bad.start()
        assert bad._lock_fd is None  # fails: the lock's descriptor is still open
        good = logs.start()  # and this raises 'used by another servekit process'
        assert good.sink_names == ["store"]
    finally:
        if bad._lock_fd is not None:
            os.close(bad._lock_fd)  # release what the failed start leaked


def test_stop_waits_for_sinks_then_leaves_the_rest_spooled(logs: Logs) -> None:
    log = logs.start(shutdown_flush_seconds=0.3)
    break_store(log)
    for n in range(5):
        record(log, n)
    wait_until(lambda: logs.value(log, "servekit_payload_delivery_retries_total", sink="store") > 0)
    started = time.monotonic()
    logs.stop(log)
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 3.0
    assert log.pending() == {"store": 5}  # what was left stays in the spool
    assert [r.id for r in spooled(logs.directory)] == [f"req-{n}" for n in range(5)]

    again = logs.start()
    flushed(again)
    assert [r["id"] for r in stored(again)] == [f"req-{n}" for n in range(5)]  # replayed


def test_stop_returns_once_the_sinks_caught_up(logs: Logs) -> None:
    log = logs.start(shutdown_flush_seconds=5.0)
    for n in range(50):
        record(log, n)
    started = time.monotonic()
    logs.stop(log)
    assert time.monotonic() - started < 3.0
    assert log.pending() == {"store": 0}


def test_feedback_before_its_prediction_is_stored_joins_when_it_lands(
    logs: Logs, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = logs.start()
    store = log.store
    assert store is not None
    release, entered = pause_store(log, monkeypatch)
    try:
        record(log, 2, version="7")  # predicts label 2
        assert entered.wait(TIMEOUT)  # appended and read, but not in the store yet
        assert log.find_version("iris", "req-2") == "7"
        store.add_feedback("iris", "req-2", truth=2, reward=1.0)
        assert store.counts() == {"inferences": 0, "feedback": 1}
        assert store.labelled("iris") == []  # nothing to join yet
    finally:
        release.set()
    flushed(log)

    (labelled,) = store.labelled("iris")
    assert labelled.id == "req-2"
    assert labelled.version == "7"
    assert labelled.truth == 2
    assert labelled.reward == 1.0
    assert labelled.response["outputs"][0]["data"] == [2]
    assert labelled.time == T0 + 2
    assert store.labelled("iris", since=labelled.feedback_time + 1) == []
    (row,) = stored(log)
    assert row["truth"] == 2 and row["reward"] == 1.0


@pytest.mark.parametrize(
    ("datatype", "array"),
    [
        ("FP32", np.array([[1.5, -2.0]], dtype=np.float32)),  # as declared: copied as is
        ("FP32", np.array([[1.5, -2.0]], dtype=np.float64)),  # converted to the datatype
        ("FP32", np.array([[1.5, -2.0]], dtype=">f4")),  # big-endian: converted
        ("INT64", np.arange(6, dtype=np.int64).reshape(2, 3).T),  # not contiguous
        ("BOOL", np.array([True, False, True])),
        ("BYTES", np.array([b"ab", "c\u00e9"], dtype=object)),  # never the object pointers
    ],
)
def test_captured_tensors_decode_to_what_was_served(datatype: str, array: np.ndarray) -> None:
    (captured,) = capture([Tensor("x", datatype, array)], frozenset(), 1 << 20)
    decoded = from_raw("x", datatype, tuple(captured.shape), captured.data)
    if datatype == "BYTES":
        assert [bytes(v) for v in decoded.reshape(-1)] == [b"ab", "c\u00e9".encode()]
    else:
        assert np.array_equal(decoded, array.astype(decoded.dtype))
        assert decoded.dtype.byteorder in "<=|"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")
def test_sink_threads_yield_the_core_and_the_gil_to_requests(logs: Logs) -> None:
    before = sys.getswitchinterval()
    log = logs.start(sink_nice=12)
    sink_threads = [t for t in threading.enumerate() if t.name.startswith("servekit-sink-")]
    assert sink_threads
    for thread in sink_threads:
        assert thread.native_id is not None
        wait_until(lambda t=thread: os.getpriority(os.PRIO_PROCESS, t.native_id) >= 12)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < 12  # the caller's own
    assert sys.getswitchinterval() == pytest.approx(service.SWITCH_INTERVAL_SECONDS)
    logs.stop(log)
    assert sys.getswitchinterval() == pytest.approx(before)


@pytest.mark.parametrize("delivery", ["process", "thread"])
def test_a_sink_whose_library_is_missing_fails_the_start(
    logs: Logs, monkeypatch: pytest.MonkeyPatch, delivery: str
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg -> ImportError
    monkeypatch.delitem(sys.modules, "servekit.observe.payloads.sinks.postgres", raising=False)
    settings = logs.settings(
        delivery=delivery, sinks=[{"type": "postgres", "dsn": "postgresql://nowhere/db"}]
    )
    with pytest.raises(ConfigError, match=r"pip install 'servekit\[postgres\]'"):
        PayloadLog(settings, CollectorRegistry()).start()
    again = logs.start(delivery=delivery)  # the directory lock was released
    assert again.sink_names == ["store"]


def test_a_group_commit_appends_the_turns_inferences_before_a_yielding_task_resumes(
    logs: Logs,
) -> None:
    """With ``context.group_commit`` (a transport that yields before replying) the records wait
    for the end of the loop turn, then are appended together, in order, before any task that
    yielded after logging goes on to reply."""
    log = logs.start(store={"enabled": False})
    spooled_at_log: list[int] = []
    spooled_at_reply: list[int] = []

    async def answer(n: int) -> None:
        log.log_inference(
            None, "iris", "1",
            InferenceRequest(inputs=default_inputs()),
            InferenceResponse(model_name="iris", model_version="1", outputs=default_outputs(n)),
            RequestContext(protocol="v2", request_id=f"req-{n}", group_commit=True),
            T0 + n, 0.002, "ok", None,
        )  # fmt: skip
        spooled_at_log.append(len(spooled(logs.directory)))
        await asyncio.sleep(0)  # what the lane does between answering and writing
        spooled_at_reply.append(len(spooled(logs.directory)))

    async def turn() -> list[int]:
        await asyncio.gather(*(answer(n) for n in range(3)))
        return [len(spooled(logs.directory))]

    assert asyncio.run(turn()) == [3]
    assert spooled_at_log == [0, 0, 0]  # one append for the turn, not one per inference
    assert spooled_at_reply == [3, 3, 3]  # every reply came after its record was spooled
    assert [r.id for r in spooled(logs.directory)] == ["req-0", "req-1", "req-2"]
