"""HTTP/1.1 framing of inference POSTs, spoken byte by byte over a raw socket.

Inference POSTs are answered by servekit's own short lane in the HTTP protocol
(``transports/http/lane.py``), not by uvicorn's ASGI cycle, so what uvicorn guaranteed must hold
there too: keep-alive, pipelining (in order, mixed with requests that take the ASGI path),
chunked and slow bodies, ``Expect: 100-continue``, the size limit, HTTP/1.0 and
``Connection: close``, clients that vanish, and draining in-flight requests on shutdown.
"""

from __future__ import annotations

import socket
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from conftest import MAX_REQUEST_BYTES

from servekit.testing import ServerProcess

ROW = [5.1, 3.5, 1.4, 0.2]


def iris_body(row: list[float]) -> bytes:
    return orjson.dumps(
        {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": row}]}
    )


BODY = iris_body(ROW)
PATH = "/v2/models/iris/versions/1/infer"


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> dict:
        return orjson.loads(self.body)


class RawConnection:
    """One TCP connection; requests written as given, responses parsed in order."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.reader = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> Response:
        status_line = self.reader.readline()
        assert status_line, "connection closed before a response"
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        while (line := self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        return Response(status, headers, self.reader.read(length))

    def closed_by_server(self) -> bool:
        return self.reader.read(1) == b""

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def post(
    body: bytes = BODY, path: str = PATH, extra: str = "", version: str = "1.1", length: bool = True
) -> bytes:
    head = f"POST {path} HTTP/{version}\r\nhost: test\r\ncontent-type: application/json\r\n"
    if length:
        head += f"content-length: {len(body)}\r\n"
    return (head + extra + "\r\n").encode() + body


def chunked(body: bytes, size: int) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


@pytest.fixture
def conn(server: ServerProcess) -> Iterator[RawConnection]:
    connection = RawConnection(server.http_url)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def expected(server: ServerProcess) -> list:
    """The outputs for BODY as an ordinary httpx client gets them."""
    reply = httpx.post(server.http_url + PATH, content=BODY, timeout=10)
    assert reply.status_code == 200
    return reply.json()["outputs"]


def test_many_requests_on_one_keep_alive_connection(conn: RawConnection, expected: list) -> None:
    for _ in range(20):
        conn.send(post())
        reply = conn.response()
        assert reply.status == 200
        assert reply.json()["outputs"] == expected
        assert reply.headers["content-type"] == "application/json"
        assert reply.headers["x-request-id"] == reply.json()["id"]
        assert reply.headers["x-servekit-served-by"] == "iris/1"
        assert "date" in reply.headers
        assert "connection" not in reply.headers


def test_pipelined_requests_are_answered_in_order(conn: RawConnection, expected: list) -> None:
    """Inference POSTs (the lane) and GETs (the ASGI path) pipelined on one connection."""
    conn.send(
        post(extra="x-request-id: first\r\n")
        + b"GET /v2/health/live HTTP/1.1\r\nhost: test\r\n\r\n"
        + post(b"{not json", extra="x-request-id: third\r\n")
        + b"GET /v2/models/iris HTTP/1.1\r\nhost: test\r\n\r\n"
        + post(extra="x-request-id: fifth\r\n")
    )
    first, second, third, fourth, fifth = (conn.response() for _ in range(5))
    assert (first.status, first.headers["x-request-id"]) == (200, "first")
    assert first.json()["outputs"] == expected
    assert (second.status, second.json()) == (200, {"live": True})
    assert (third.status, third.headers["x-request-id"]) == (400, "third")
    assert "not valid JSON" in third.json()["error"]
    assert (fourth.status, fourth.json()["name"]) == (200, "iris")
    assert (fifth.status, fifth.headers["x-request-id"]) == (200, "fifth")


def test_chunked_body(conn: RawConnection, expected: list) -> None:
    conn.send(post(b"", extra="transfer-encoding: chunked\r\n", length=False) + chunked(BODY, 7))
    reply = conn.response()
    assert (reply.status, reply.json()["outputs"]) == (200, expected)


def test_body_trickling_in_over_many_writes(conn: RawConnection, expected: list) -> None:
    request = post()
    for start in range(0, len(request), 16):
        conn.send(request[start : start + 16])
        time.sleep(0.005)
    reply = conn.response()
    assert (reply.status, reply.json()["outputs"]) == (200, expected)


def test_expect_100_continue(conn: RawConnection, expected: list) -> None:
    request = post(extra="expect: 100-continue\r\n")
    head, body = request[: -len(BODY)], BODY
    conn.send(head)
    interim = conn.response()
    assert interim.status == 100
    conn.send(body)
    reply = conn.response()
    assert (reply.status, reply.json()["outputs"]) == (200, expected)


def test_declared_length_over_the_limit_is_413_without_reading_it(conn: RawConnection) -> None:
    """Refused from the headers alone: no 100 Continue, no need to send the body."""
    too_big = MAX_REQUEST_BYTES + 1
    conn.send(
        f"POST {PATH} HTTP/1.1\r\nhost: test\r\ncontent-length: {too_big}\r\n"
        "expect: 100-continue\r\n\r\n".encode()
    )
    reply = conn.response()
    assert reply.status == 413
    assert str(MAX_REQUEST_BYTES) in reply.json()["error"]


def test_chunked_body_over_the_limit_is_413(conn: RawConnection) -> None:
    body = b" " * (MAX_REQUEST_BYTES + 10)
    conn.send(post(b"", extra="transfer-encoding: chunked\r\n", length=False))
    conn.send(chunked(body, 64 * 1024))
    reply = conn.response()
    assert reply.status == 413
    assert "exceeds the limit" in reply.json()["error"]


def test_bad_content_length_is_400(conn: RawConnection) -> None:
    conn.send(f"POST {PATH} HTTP/1.1\r\nhost: test\r\ncontent-length: ten\r\n\r\n".encode())
    reply = conn.response()
    assert reply.status == 400
    assert conn.closed_by_server()


@pytest.mark.parametrize(
    "request_bytes",
    [post(version="1.0"), post(extra="connection: close\r\n")],
    ids=["http-1.0", "connection-close"],
)
def test_the_answer_comes_and_the_connection_closes(
    conn: RawConnection, expected: list, request_bytes: bytes
) -> None:
    """HTTP/1.0 and ``Connection: close`` both end the connection after the answer."""
    conn.send(request_bytes)
    reply = conn.response()
    assert (reply.status, reply.json()["outputs"]) == (200, expected)
    assert reply.headers["connection"] == "close"
    assert conn.closed_by_server()


def test_percent_encoded_path_reaches_the_model(conn: RawConnection, expected: list) -> None:
    conn.send(post(path="/v2/models/%69ris/versions/1/infer"))
    reply = conn.response()
    assert (reply.status, reply.json()["outputs"]) == (200, expected)


def test_v1_predict_takes_the_lane_too(conn: RawConnection) -> None:
    conn.send(post(orjson.dumps({"instances": [ROW]}), path="/v1/models/iris:predict"))
    reply = conn.response()
    assert reply.status == 200
    assert reply.json() == {"predictions": [0]}


def test_other_methods_on_an_inference_path_are_405(conn: RawConnection) -> None:
    conn.send(f"GET {PATH} HTTP/1.1\r\nhost: test\r\n\r\n".encode())
    reply = conn.response()
    assert reply.status == 405
    assert reply.headers["allow"] == "POST"


H2C_OFFER = (
    "connection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\n"
    "http2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
)


def test_a_declined_h2c_upgrade_keeps_the_body(conn: RawConnection, expected: list) -> None:
    """``curl --http2`` and Java's RestClient offer h2c on ordinary POSTs; the offer is declined
    and the request answered over HTTP/1.1 with its body (uvicorn alone dropped the body)."""
    conn.send(
        post(extra=H2C_OFFER + "x-request-id: offered\r\n")
        + b"GET /v2/health/live HTTP/1.1\r\nhost: test\r\n\r\n"
    )
    reply, live = conn.response(), conn.response()
    assert (reply.status, reply.json()["outputs"]) == (200, expected)
    assert reply.headers["x-request-id"] == "offered"
    assert (live.status, live.json()) == (200, {"live": True})


def test_a_declined_h2c_upgrade_with_a_chunked_body_sent_later(
    conn: RawConnection, expected: list
) -> None:
    conn.send(post(b"", extra=H2C_OFFER + "transfer-encoding: chunked\r\n", length=False))
    time.sleep(0.05)  # headers and body in separate packets, as Ktor's clients write them
    conn.send(chunked(BODY, 10))
    reply = conn.response()
    assert (reply.status, reply.json()["outputs"]) == (200, expected)
    conn.send(post())  # the connection goes on as HTTP/1.1
    assert conn.response().json()["outputs"] == expected


def test_a_declined_h2c_upgrade_on_another_route_keeps_the_body(conn: RawConnection) -> None:
    """Not only inference: a feedback POST (the ASGI path) reads its body too."""
    body = orjson.dumps({"id": "never-served", "truth": 1})
    conn.send(post(body, path="/v2/models/iris/feedback", extra=H2C_OFFER))
    reply = conn.response()
    assert reply.status == 404, reply.body
    assert "never-served" in reply.json()["error"]


def test_a_client_that_vanishes_mid_body_leaves_the_server_serving(
    server: ServerProcess, expected: list
) -> None:
    for _ in range(5):
        gone = RawConnection(server.http_url)
        gone.send(post()[:-10])  # the body's last bytes never come
        gone.close()
    reply = httpx.post(server.http_url + PATH, content=BODY, timeout=10)
    assert (reply.status_code, reply.json()["outputs"]) == (200, expected)


def test_concurrent_connections_each_get_their_own_answers(server: ServerProcess) -> None:
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    with httpx.Client(base_url=server.http_url, timeout=10) as client:
        singles = [client.post(PATH, content=iris_body(row)).json()["outputs"] for row in rows]
    failures: list[str] = []

    def worker(index: int) -> None:
        connection = RawConnection(server.http_url)
        try:
            for round_ in range(30):
                pick = (index + round_) % len(rows)
                tag = f"x-request-id: {index}-{round_}\r\n"
                connection.send(post(iris_body(rows[pick]), extra=tag))
                reply = connection.response()
                if reply.headers.get("x-request-id") != f"{index}-{round_}":
                    failures.append(f"{index}-{round_}: wrong id {reply.headers}")
                elif reply.json()["outputs"] != singles[pick]:
                    failures.append(f"{index}-{round_}: wrong answer")
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures[:5]


SLOW_MODEL = textwrap.dedent(
    """
    import time
    import servekit
    from servekit.types import TensorSpec


    class Slow(servekit.Model):
        '''Answers after a second: long enough to be in flight when the server is stopped.'''

        inputs = [TensorSpec("x", "FP64", (-1,))]
        outputs = [TensorSpec("y", "FP64", (-1,))]

        def predict(self, inputs):
            time.sleep(1.0)
            return {"y": inputs["x"] + 1}
    """
)


def test_shutdown_drains_inference_in_flight(tmp_path: Path) -> None:
    (tmp_path / "slow").mkdir()
    (tmp_path / "slow" / "model.py").write_text(SLOW_MODEL)
    body = orjson.dumps(
        {"inputs": [{"name": "x", "shape": [2], "datatype": "FP64", "data": [1, 2]}]}
    )
    server = ServerProcess(tmp_path).start()
    try:
        connection = RawConnection(server.http_url)
        connection.send(post(body, path="/v2/models/slow/infer"))
        time.sleep(0.3)  # the request is in predict now
        assert server.process is not None
        server.process.terminate()
        reply = connection.response()
        assert reply.status == 200
        assert reply.json()["outputs"][0]["data"] == [2.0, 3.0]
        assert reply.headers["connection"] == "close"  # the server is going away
        assert connection.closed_by_server()
        assert server.process.wait(20) == 0
        connection.close()
    finally:
        server.stop()
