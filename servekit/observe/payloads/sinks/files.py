"""Events as files in a folder: JSON lines, or Parquet for analytics tools.

A batch counts as delivered once its bytes are in the file (page cache), so the delivery loop
may commit its cursor and a SIGKILL right afterwards loses nothing. A Parquet file cannot be
appended to and is unreadable until its footer is written, so Parquet events are staged as JSON
lines in ``.staging.jsonl`` and converted when the file rotates, on close, and at the next
``open()`` after a crash. One sink per folder: the staging file is not shared.
"""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from servekit.observe.payloads.cloudevents import event_lines
from servekit.observe.payloads.config import FileSinkConfig
from servekit.observe.payloads.record import InferenceRecord
from servekit.observe.payloads.sinks import sink_name

STAGING = ".staging.jsonl"
_NAME = re.compile(r"^events-(\d{8}T\d{6})-(\d+)\.jsonl$")
_TAIL_CHUNK = 64 * 1024


class FileSink:
    def __init__(self, config: FileSinkConfig) -> None:
        self.name = sink_name(config)
        self.options = config
        self._folder = Path(config.path)
        self._file: IO[bytes] | None = None
        self._size = 0
        self._started = 0.0

    def open(self) -> None:
        """Create the folder and finish what a crash left: a staging file, a torn last line."""
        self._folder.mkdir(parents=True, exist_ok=True)
        if self.options.format == "parquet":
            self._finish()
        else:
            written = [p for p in self._folder.glob("events-*.jsonl") if _NAME.match(p.name)]
            if written:
                _trim_torn_line(max(written, key=_order))

    def deliver(self, records: list[InferenceRecord]) -> None:
        """Append the batch's events with one unbuffered write, so nothing waits in a buffer.

        A failed write is cut off the file again: a retried batch must not follow a torn line.
        """
        if self._file is not None and (
            self._size >= self.options.rotate_bytes
            or time.monotonic() - self._started >= self.options.rotate_seconds
        ):
            self._finish()
        lines = [e + b"\n" for r in records for e in event_lines(r, self.options.mode)]
        if not lines:
            return
        if self._file is None:
            self._start()
        assert self._file is not None
        data = b"".join(lines)
        view = memoryview(data)
        try:
            while view:
                view = view[self._file.write(view) or 0 :]
        except BaseException:
            self._file.truncate(self._size)
            raise
        self._size += len(data)

    def close(self) -> None:
        self._finish()

    def _start(self) -> None:
        parquet = self.options.format == "parquet"
        path = self._folder / STAGING if parquet else self._new_path("jsonl")
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 - kept open across calls
        self._size = self._file.seek(0, os.SEEK_END)
        self._started = time.monotonic()

    def _finish(self) -> None:
        """Close the current file; the staging file (even one a failed try left) becomes Parquet."""
        if self._file is not None:
            self._file.close()
            self._file = None
        staging = self._folder / STAGING
        if self.options.format == "parquet" and staging.exists():
            _to_parquet(staging, self._new_path("parquet"))

    def _new_path(self, extension: str) -> Path:
        """``events-<UTC time>-<n>``: n tells apart files started within the same second."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        n = 0
        while (self._folder / f"events-{stamp}-{n}.{extension}").exists():
            n += 1
        return self._folder / f"events-{stamp}-{n}.{extension}"


def _order(path: Path) -> tuple[str, int]:
    match = _NAME.match(path.name)
    assert match is not None
    return match.group(1), int(match.group(2))


def _trim_torn_line(path: Path) -> None:
    """Cut an incomplete last line (a write killed midway; its batch is delivered again)."""
    with open(path, "r+b") as file:
        end = file.seek(0, os.SEEK_END)
        position = end
        while position > 0:
            start = max(0, position - _TAIL_CHUNK)
            file.seek(start)
            chunk = file.read(position - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                if start + newline + 1 < end:
                    file.truncate(start + newline + 1)
                return
            position = start
        file.truncate(0)


def _to_parquet(staging: Path, target: Path) -> None:
    """Convert the staged events; the staging file is deleted only once the Parquet file exists.

    A crash between the two converts it again at the next open: events are delivered at least
    once, and consumers deduplicate by id.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    content = staging.read_bytes()
    complete = content[: content.rfind(b"\n") + 1]  # a torn last line was never delivered
    events = [orjson.loads(line) for line in complete.splitlines() if line]
    if events:
        table = pa.table(_columns(events), schema=_schema(pa))
        temporary = target.with_name(f".{target.name}.tmp")
        pq.write_table(table, temporary)
        os.replace(temporary, target)
    staging.unlink()


def _columns(events: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {
        "id": [e["id"] for e in events],
        "type": [e["type"] for e in events],
        "source": [e["source"] for e in events],
        "time": [datetime.fromisoformat(e["time"]) for e in events],
        "model": [e.get("modelid") for e in events],
        "version": [e.get("modelversion") for e in events],
        "service": [e.get("inferenceservicename") for e in events],
        "endpoint": [e.get("endpoint") for e in events],
        "protocol": [e.get("protocol") for e in events],
        "status": [e.get("status") for e in events],
        "latency_ms": [float(e["latencyms"]) if "latencyms" in e else None for e in events],
        "data": [orjson.dumps(e["data"]).decode() if "data" in e else None for e in events],
    }


def _schema(pa: Any) -> Any:
    text = pa.string()
    return pa.schema(
        [("id", text), ("type", text), ("source", text), ("time", pa.timestamp("us", tz="UTC"))]
        + [(name, text) for name in ("model", "version", "service", "endpoint", "protocol")]
        + [("status", text), ("latency_ms", pa.float64()), ("data", text)]
    )


__all__ = ["STAGING", "FileSink"]
