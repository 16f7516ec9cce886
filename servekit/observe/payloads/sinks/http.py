"""CloudEvents over HTTP: one event per POST (binary or structured mode) or a batch per POST.

The POSTs go through the standard library's ``http.client`` on one kept-alive connection: the
sink thread shares the server's core and GIL, and a POST cost it a third of httpx's CPU time
(about 180 against 590 µs measured here), which is most of what delivery costs per batch.
"""

from __future__ import annotations

import http.client
import ssl
from urllib.parse import urlsplit

from servekit.observe.payloads.cloudevents import (
    BATCH_CONTENT_TYPE,
    batch_body,
    binary_message,
    structured_message,
    to_events,
)
from servekit.observe.payloads.config import HTTPSinkConfig
from servekit.observe.payloads.record import InferenceRecord
from servekit.observe.payloads.sinks import sink_name
from servekit.observe.payloads.sinks.base import RejectedEvents

_RETRYABLE_CLIENT_ERRORS = frozenset({408, 409, 425, 429})
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class HTTPSink:
    def __init__(self, config: HTTPSinkConfig) -> None:
        self.name = sink_name(config)
        self.options = config
        self._url = str(config.url)
        parts = urlsplit(self._url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._headers = dict(config.headers)
        self._connection: http.client.HTTPConnection | None = None

    def open(self) -> None:
        self._connection = self._connect()

    def _connect(self) -> http.client.HTTPConnection:
        timeout = self.options.timeout_seconds
        if self._https:
            context = ssl.create_default_context()
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout, context=context
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def deliver(self, records: list[InferenceRecord]) -> None:
        if self.options.content_mode == "batch":
            body = batch_body(records, self.options.mode)
            self._post(body, {"content-type": BATCH_CONTENT_TYPE})
            return
        events = [e for r in records for e in to_events(r, self.options.mode)]
        render = binary_message if self.options.content_mode == "binary" else structured_message
        for event in events:
            message = render(event)
            self._post(message.body, message.headers)

    def _post(self, body: bytes, headers: dict[str, str]) -> None:
        headers = {**self._headers, **headers}
        reused = self._connection is not None and self._connection.sock is not None
        try:
            response, text = self._exchange(body, headers)
        except _STALE:
            if not reused:
                raise
            # The receiver closed the kept-alive connection while it was idle: once more on a
            # fresh one (delivery is at least once, so a POST that did arrive is harmless).
            response, text = self._exchange(body, headers)
        status = response.status
        if 200 <= status < 300:
            return
        detail = f"{self._url} answered {status}: {text[:200].decode(errors='replace')}"
        if 400 <= status < 500 and status not in _RETRYABLE_CLIENT_ERRORS:
            raise RejectedEvents(detail)
        raise ConnectionError(detail)

    def _exchange(
        self, body: bytes, headers: dict[str, str]
    ) -> tuple[http.client.HTTPResponse, bytes]:
        if self._connection is None:
            self._connection = self._connect()
        connection = self._connection
        try:
            connection.request("POST", self._target, body, headers)
            response = connection.getresponse()
            text = response.read()
        except (OSError, http.client.HTTPException):
            connection.close()  # a fresh connection next time; the delivery loop retries
            self._connection = None
            raise
        if response.will_close:
            connection.close()
            self._connection = None
        return response, text

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
