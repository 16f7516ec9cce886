"""Ceiling: a thin hand-written V2 REST server that calls ``model.predict`` per request.

    python bench/peers/thin_http.py PORT tiny=/path/tiny.joblib medium=/path/medium.joblib

uvloop + httptools, the JSON body parsed with orjson, one ``predict`` per request, the V2
answer written in one piece. No validation, no metrics, no logging, no batching: the target
"medium model with adaptive batching above the thin server" asks whether batching pays for
everything servekit does on top of this.
"""

from __future__ import annotations

import asyncio
import sys
import warnings

import httptools
import joblib
import numpy as np
import orjson
import uvloop

PREFIX, SUFFIX = b"/v2/models/", b"/infer"


def response(status: bytes, body: bytes) -> bytes:
    head = b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
    return head + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body


class Protocol(asyncio.Protocol):
    def __init__(self, models: dict[bytes, object]) -> None:
        self.models = models
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(response(b"400 Bad Request", b'{"error": "bad request"}'))
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        self.transport.write(self.answer(self.parser.get_method(), self.url, body))
        if not self.parser.should_keep_alive():
            self.transport.close()

    def answer(self, method: bytes, url: bytes, body: bytes) -> bytes:
        if method == b"GET":  # health: ready once listening
            return response(b"200 OK", b"{}")
        name = url[len(PREFIX) : -len(SUFFIX)] if url.startswith(PREFIX) else b""
        model = self.models.get(name)
        if model is None or not url.endswith(SUFFIX):
            return response(b"404 Not Found", b'{"error": "unknown model"}')
        try:
            tensor = orjson.loads(body)["inputs"][0]
            rows = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
            predicted = model.predict(rows)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - the client's mistake or the model's
            return response(b"400 Bad Request", orjson.dumps({"error": str(exc)}))
        output = {"name": "predict", "datatype": "INT64", "shape": [len(predicted)]}
        output["data"] = predicted.tolist()
        reply = {"model_name": name.decode(), "outputs": [output]}
        return response(b"200 OK", orjson.dumps(reply))


async def serve(port: int, models: dict[bytes, object]) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Protocol(models), "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    warnings.simplefilter("ignore")  # scikit-learn's feature-name warnings, per request
    specs = dict(arg.split("=", 1) for arg in sys.argv[2:])
    loaded = {name.encode(): joblib.load(path) for name, path in specs.items()}
    uvloop.run(serve(int(sys.argv[1]), loaded))
