"""CloudEvents over HTTP: one event per POST (binary or structured mode) or a batch per POST."""

from __future__ import annotations

import httpx

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


class HTTPSink:
    def __init__(self, config: HTTPSinkConfig) -> None:
        self.name = sink_name(config)
        self.options = config
        self._url = str(config.url)
        self._client: httpx.Client | None = None

    def open(self) -> None:
        self._client = httpx.Client(
            timeout=self.options.timeout_seconds, headers=self.options.headers
        )

    def deliver(self, records: list[InferenceRecord]) -> None:
        assert self._client is not None
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
        response = self._client.post(self._url, content=body, headers=headers)  # type: ignore[union-attr]
        if response.is_success:
            return
        detail = f"{self._url} answered {response.status_code}: {response.text[:200]}"
        if 400 <= response.status_code < 500 and response.status_code not in (
            _RETRYABLE_CLIENT_ERRORS
        ):
            raise RejectedEvents(detail)
        raise ConnectionError(detail)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
