"""The file sink: CloudEvents as JSON lines or Parquet, rotation, and nothing lost to a crash."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest

from servekit.observe.payloads.cloudevents import (
    REQUEST_TYPE,
    RESPONSE_TYPE,
    event_dict,
    to_events,
)
from servekit.observe.payloads.config import FileSinkConfig
from servekit.observe.payloads.record import InferenceRecord, capture
from servekit.observe.payloads.sinks import build_sink, files
from servekit.observe.payloads.sinks.files import STAGING, FileSink
from servekit.types.tensors import Tensor

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

NAME = re.compile(r"^events-\d{8}T\d{6}-\d+\.(jsonl|parquet)$")
T0 = 1_700_000_000.25


def make_record(n: int, **overrides: Any) -> InferenceRecord:
    inputs = [Tensor.from_array("x", np.array([[float(n), 2.5]]))]
    outputs = [Tensor.from_array("label", np.array([n % 3], dtype=np.int64))]
    fields: dict[str, Any] = {
        "id": f"req-{n}",
        "model": "iris",
        "version": "2",
        "service": "iris-svc",
        "protocol": "v2",
        "time": T0 + n,
        "latency_ms": 1.5 + n,
        "inputs": capture(inputs, frozenset(), 1 << 20),
        "outputs": capture(outputs, frozenset(), 1 << 20),
    }
    fields.update(overrides)
    return InferenceRecord(**fields)


def make_sink(tmp_path: Path, **options: Any) -> FileSink:
    return FileSink(FileSinkConfig(type="file", path=tmp_path / "out", **options))


def event_files(folder: Path, extension: str) -> list[Path]:
    """The finished files, oldest first (by the time and counter in the name)."""
    found = [p for p in folder.iterdir() if p.name.endswith(f".{extension}")]
    assert all(NAME.match(p.name) for p in found), [p.name for p in found]
    return sorted(found, key=lambda p: (p.name.split("-")[1], int(p.stem.split("-")[2])))


def read_lines(path: Path) -> list[dict[str, Any]]:
    content = path.read_bytes()
    assert content.endswith(b"\n")
    return [orjson.loads(line) for line in content.splitlines()]


def expected(records: list[InferenceRecord], mode: str = "all") -> list[dict[str, Any]]:
    """The structured events, JSON round-tripped as a consumer would read them."""
    return [orjson.loads(orjson.dumps(event_dict(e))) for r in records for e in to_events(r, mode)]


def test_name_and_options(tmp_path: Path) -> None:
    sink = make_sink(tmp_path)
    assert sink.name == "file"
    assert sink.options.format == "jsonl"
    named = make_sink(tmp_path, name="archive")
    assert named.name == "archive"
    config = FileSinkConfig(type="file", path=tmp_path, format="parquet")
    built = build_sink(config)
    assert isinstance(built, FileSink)
    assert built.options is config


def test_jsonl_lines_are_structured_cloudevents(tmp_path: Path) -> None:
    sink = make_sink(tmp_path)
    sink.open()
    records = [make_record(1), make_record(2)]
    sink.deliver(records)
    sink.deliver([make_record(3)])
    sink.close()

    (path,) = event_files(tmp_path / "out", "jsonl")
    events = read_lines(path)
    assert [e["type"] for e in events] == [REQUEST_TYPE, RESPONSE_TYPE] * 3
    assert [e["id"] for e in events] == ["req-1", "req-1", "req-2", "req-2", "req-3", "req-3"]
    assert events == expected([*records, make_record(3)])

    request, response = events[0], events[1]
    assert request["specversion"] == "1.0"
    assert request["datacontenttype"] == "application/json"
    assert request["modelid"] == "iris" and request["modelversion"] == "2"
    assert request["inferenceservicename"] == "iris-svc"
    assert request["time"] == "2023-11-14T22:13:21.250000Z"
    assert request["data"]["inputs"] == [
        {"name": "x", "datatype": "FP64", "shape": [1, 2], "data": [1.0, 2.5]}
    ]
    assert response["time"] == "2023-11-14T22:13:21.252500Z"  # arrival + latency
    assert response["data"]["outputs"][0]["data"] == [1]
    assert response["latencyms"] == "2.500"


@pytest.mark.parametrize(("mode", "kind"), [("request", REQUEST_TYPE), ("response", RESPONSE_TYPE)])
def test_mode_keeps_one_half(tmp_path: Path, mode: str, kind: str) -> None:
    sink = make_sink(tmp_path, mode=mode)
    sink.open()
    sink.deliver([make_record(1), make_record(2)])
    sink.close()

    (path,) = event_files(tmp_path / "out", "jsonl")
    events = read_lines(path)
    assert [(e["type"], e["id"]) for e in events] == [(kind, "req-1"), (kind, "req-2")]
    assert events == expected([make_record(1), make_record(2)], mode)


def test_delivered_lines_are_in_the_file_before_close(tmp_path: Path) -> None:
    """The delivery loop commits its cursor when deliver returns: the bytes must be written."""
    sink = make_sink(tmp_path)
    sink.open()
    assert list((tmp_path / "out").iterdir()) == []  # no file before there is an event
    sink.deliver([])
    assert list((tmp_path / "out").iterdir()) == []
    sink.deliver([make_record(1)])
    (path,) = event_files(tmp_path / "out", "jsonl")
    assert [e["id"] for e in read_lines(path)] == ["req-1", "req-1"]
    sink.close()


def test_jsonl_rotates_by_bytes(tmp_path: Path) -> None:
    sink = make_sink(tmp_path, rotate_bytes=1)
    sink.open()
    batches = [[make_record(1), make_record(2)], [make_record(3)], [make_record(4)]]
    for batch in batches:
        sink.deliver(batch)
    sink.close()

    paths = event_files(tmp_path / "out", "jsonl")
    assert len(paths) == 3  # started within the same second: the counter tells them apart
    assert [read_lines(p) for p in paths] == [expected(b) for b in batches]


def test_jsonl_rotates_by_age(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(files, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    sink = make_sink(tmp_path, rotate_seconds=60)
    sink.open()
    sink.deliver([make_record(1)])
    clock[0] += 59
    sink.deliver([make_record(2)])  # younger than 60 s: same file
    assert len(event_files(tmp_path / "out", "jsonl")) == 1
    clock[0] += 1
    sink.deliver([make_record(3)])
    sink.close()

    first, second = event_files(tmp_path / "out", "jsonl")
    assert read_lines(first) == expected([make_record(1), make_record(2)])
    assert read_lines(second) == expected([make_record(3)])


def test_parquet_columns_match_the_events(tmp_path: Path) -> None:
    sink = make_sink(tmp_path, format="parquet")
    sink.open()
    failed = make_record(2, status="internal", http_status=500, error="boom", outputs=None)
    records = [make_record(1), failed]
    sink.deliver(records)
    staged = tmp_path / "out" / STAGING
    assert staged.exists() and event_files(tmp_path / "out", "parquet") == []
    assert read_lines(staged) == expected(records)  # staged as lines, durable before close
    sink.close()

    assert not staged.exists()
    (path,) = event_files(tmp_path / "out", "parquet")
    assert [p.name for p in (tmp_path / "out").iterdir()] == [path.name]  # no temporary left
    table = pq.read_table(path)
    assert table.column_names == [
        "id", "type", "source", "time", "model", "version", "service",
        "endpoint", "protocol", "status", "latency_ms", "data",
    ]  # fmt: skip
    assert table.schema.field("time").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("latency_ms").type == pa.float64()
    rows = table.to_pylist()
    events = expected(records)
    assert len(rows) == len(events) == 4
    for row, event in zip(rows, events, strict=True):
        assert row["id"] == event["id"]
        assert row["type"] == event["type"]
        assert row["source"] == event["source"]
        assert row["model"] == "iris" and row["version"] == "2" and row["service"] == "iris-svc"
        assert row["endpoint"] == "default" and row["protocol"] == "v2"
        assert row["status"] == event["status"]
        assert row["latency_ms"] == float(event["latencyms"])
        assert orjson.loads(row["data"]) == event["data"]
    assert rows[0]["time"] == datetime.fromtimestamp(T0 + 1, UTC)
    assert rows[1]["time"] == datetime.fromtimestamp(T0 + 1 + 2.5 / 1000, UTC)
    assert [r["status"] for r in rows] == ["ok", "ok", "internal", "internal"]
    assert orjson.loads(rows[3]["data"])["error"] == "boom"


def test_parquet_rotates_by_bytes(tmp_path: Path) -> None:
    sink = make_sink(tmp_path, format="parquet", rotate_bytes=1)
    sink.open()
    sink.deliver([make_record(1)])
    sink.deliver([make_record(2)])  # the first file is over the limit: it becomes Parquet
    (first,) = event_files(tmp_path / "out", "parquet")
    assert pq.read_table(first).column("id").to_pylist() == ["req-1", "req-1"]
    assert read_lines(tmp_path / "out" / STAGING) == expected([make_record(2)])
    sink.close()

    first_again, second = event_files(tmp_path / "out", "parquet")
    assert first_again == first
    assert pq.read_table(second).column("id").to_pylist() == ["req-2", "req-2"]
    assert not (tmp_path / "out" / STAGING).exists()


def test_parquet_rotates_by_age(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(files, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    sink = make_sink(tmp_path, format="parquet", rotate_seconds=10)
    sink.open()
    sink.deliver([make_record(1)])
    clock[0] = 10.0
    sink.deliver([make_record(2)])
    assert len(event_files(tmp_path / "out", "parquet")) == 1
    sink.close()
    paths = event_files(tmp_path / "out", "parquet")
    ids = [pq.read_table(p).column("id").to_pylist() for p in paths]
    assert ids == [["req-1", "req-1"], ["req-2", "req-2"]]


def test_staging_left_by_a_crash_becomes_parquet_at_open(tmp_path: Path) -> None:
    crashed = make_sink(tmp_path, format="parquet")
    crashed.open()
    records = [make_record(n) for n in range(5)]
    crashed.deliver(records[:3])
    crashed.deliver(records[3:])  # never closed: the process died here
    try:
        assert event_files(tmp_path / "out", "parquet") == []
        restarted = make_sink(tmp_path, format="parquet")
        restarted.open()
        (path,) = event_files(tmp_path / "out", "parquet")
        assert not (tmp_path / "out" / STAGING).exists()
        rows = pq.read_table(path).to_pylist()
        assert [(r["id"], r["type"]) for r in rows] == [
            (e["id"], e["type"]) for e in expected(records)
        ]
        restarted.deliver([make_record(9)])
        restarted.close()
        assert len(event_files(tmp_path / "out", "parquet")) == 2
    finally:
        crashed._file.close()  # type: ignore[union-attr]  # what the dead process held


def test_open_drops_a_torn_last_line(tmp_path: Path) -> None:
    """A write killed midway leaves half a line; its batch is delivered again, so drop it."""
    sink = make_sink(tmp_path)
    sink.open()
    sink.deliver([make_record(1)])
    sink.close()
    (path,) = event_files(tmp_path / "out", "jsonl")
    with open(path, "ab") as file:
        file.write(b'{"specversion":"1.0","id":"req-2"')
    make_sink(tmp_path).open()
    assert read_lines(path) == expected([make_record(1)])

    staged = make_sink(tmp_path / "p", format="parquet")
    staged.open()
    staged.deliver([make_record(1)])
    staged._file.write(b'{"specversion":"1.0","id":"re')  # type: ignore[union-attr]
    staged._file.close()  # type: ignore[union-attr]
    staged._file = None
    make_sink(tmp_path / "p", format="parquet").open()
    (converted,) = event_files(tmp_path / "p" / "out", "parquet")
    assert pq.read_table(converted).column("id").to_pylist() == ["req-1", "req-1"]


def test_a_failed_write_leaves_no_partial_line(tmp_path: Path) -> None:
    sink = make_sink(tmp_path)
    sink.open()
    sink.deliver([make_record(1)])
    real = sink._file
    assert real is not None

    class DiskFull:
        def write(self, data: memoryview) -> int:
            real.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

        def truncate(self, size: int) -> int:
            return real.truncate(size)

    sink._file = DiskFull()  # type: ignore[assignment]
    with pytest.raises(OSError, match="No space"):
        sink.deliver([make_record(2)])
    sink._file = real
    sink.deliver([make_record(2)])  # the retry
    sink.close()
    (path,) = event_files(tmp_path / "out", "jsonl")
    assert read_lines(path) == expected([make_record(1), make_record(2)])


CRASH = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_file_sink import make_record
    from servekit.observe.payloads.config import FileSinkConfig
    from servekit.observe.payloads.sinks.files import FileSink

    sink = FileSink(FileSinkConfig(type="file", path={folder!r}, format={format!r}))
    sink.open()
    sink.deliver([make_record(1), make_record(2)])
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.parametrize("format", ["jsonl", "parquet"])
def test_delivered_events_survive_sigkill(tmp_path: Path, format: str) -> None:
    folder = tmp_path / "out"
    script = CRASH.format(tests=str(Path(__file__).parent), folder=str(folder), format=format)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()

    sink = make_sink(tmp_path, format=format)
    sink.open()
    sink.close()
    if format == "jsonl":
        (path,) = event_files(folder, "jsonl")
        assert read_lines(path) == expected([make_record(1), make_record(2)])
    else:
        (path,) = event_files(folder, "parquet")
        rows = pq.read_table(path).to_pylist()
        assert [orjson.loads(r["data"]) for r in rows] == [
            e["data"] for e in expected([make_record(1), make_record(2)])
        ]
    assert sorted(os.listdir(folder)) == [path.name]
