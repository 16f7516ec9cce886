"""The HTTP sink's connection handling against a real socket server: kept-alive connections that
the receiver drops, refusals for good (4xx) and failures worth a retry (5xx)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import orjson
import pytest

from servekit.observe.payloads.cloudevents import REQUEST_TYPE, RESPONSE_TYPE
from servekit.observe.payloads.config import HTTPSinkConfig
from servekit.observe.payloads.record import InferenceRecord, capture
from servekit.observe.payloads.sinks.base import RejectedEvents
from servekit.observe.payloads.sinks.http import HTTPSink
from servekit.types.tensors import Tensor

NOTHING: frozenset[str] = frozenset()
LIMIT = 1 << 20


def make_record(n: int) -> InferenceRecord:
    inputs = [Tensor.from_array("x", np.array([[float(n), 2.5]]))]
    outputs = [Tensor.from_array("y", np.array([n % 3]))]
    return InferenceRecord(
        id=f"req-{n}", model="m", version="1", service="m", protocol="rest-v2",
        time=1_700_000_000.0 + n, latency_ms=1.5,
        inputs=capture(inputs, NOTHING, LIMIT), outputs=capture(outputs, NOTHING, LIMIT),
    )  # fmt: skip


class OneShotServer:
    """Answers each connection's first request with ``status``, then closes the connection
    although HTTP/1.1 keeps it alive: what a receiver's idle timeout does to a client."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.bodies: list[bytes] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                self.connections += 1
                self.bodies.append(_read_request(conn))
                reason = b"OK" if self.status == 200 else b"Nope"
                answer = b"HTTP/1.1 %d %s\r\ncontent-length: 2\r\n\r\nno" % (self.status, reason)
                conn.sendall(answer)

    @contextmanager
    def running(self) -> Iterator[OneShotServer]:
        self._thread.start()
        try:
            yield self
        finally:
            self._listener.close()


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += conn.recv(65536)
    return body


def sink_for(port: int) -> HTTPSink:
    config = HTTPSinkConfig(
        type="http", url=f"http://127.0.0.1:{port}/events", content_mode="batch"
    )
    sink = HTTPSink(config)
    sink.open()
    return sink


def test_a_connection_the_receiver_dropped_is_replaced_without_failing_the_batch() -> None:
    with OneShotServer().running() as server:
        sink = sink_for(server.port)
        try:
            for n in range(3):
                sink.deliver([make_record(n)])
        finally:
            sink.close()
    assert server.connections == 3
    batches = [orjson.loads(body) for body in server.bodies]
    assert [[e["id"] for e in batch] for batch in batches] == [[f"req-{n}"] * 2 for n in range(3)]
    assert [e["type"] for e in batches[0]] == [REQUEST_TYPE, RESPONSE_TYPE]
    assert batches[2][0]["data"]["inputs"][0]["data"] == [2.0, 2.5]


@pytest.mark.parametrize(("status", "error"), [(400, RejectedEvents), (503, ConnectionError)])
def test_refusals_for_good_and_failures_worth_a_retry(status: int, error: type) -> None:
    with OneShotServer(status).running() as server:
        sink = sink_for(server.port)
        try:
            with pytest.raises(error, match=f"answered {status}"):
                sink.deliver([make_record(1)])
        finally:
            sink.close()


def test_an_unreachable_receiver_raises_so_that_the_batch_is_retried() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    sink = sink_for(port)
    try:
        with pytest.raises(ConnectionRefusedError):
            sink.deliver([make_record(1)])
    finally:
        sink.close()
