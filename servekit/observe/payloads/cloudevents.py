"""Records as CloudEvents, with KServe's logger types and extensions so its consumers work.

Each inference record becomes a request event and a response event that share the record's id
(``type`` tells them apart, as in KServe: ``org.kubeflow.serving.inference.request|response``).
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any

import orjson
from cloudevents.core.bindings.http import HTTPMessage, to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from servekit.observe.payloads.record import InferenceRecord, request_json, response_json

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
_HOST = socket.gethostname()


class FastJSONFormat(JSONFormat):
    """The SDK's JSON format, written with orjson (the SDK's own uses the stdlib encoder)."""

    def write(self, event: Any) -> bytes:
        return dumps(event_dict(event))

    def write_data(self, data: Any, datacontenttype: str | None) -> bytes:
        if isinstance(data, dict | list):
            return dumps(data)
        return super().write_data(data, datacontenttype)


FORMAT = FastJSONFormat()


def to_events(record: InferenceRecord, mode: str = "all") -> list[CloudEvent]:
    """The request and/or response events of one record (``mode``: all, request, response)."""
    return [_Event(attributes, data) for attributes, data in _halves(record, mode)]


def event_lines(record: InferenceRecord, mode: str = "all") -> list[bytes]:
    """The structured-mode JSON of a record's events, one document each.

    Written as bytes around a cached rendering of the attributes that only change with the
    model, version or variant: building a dict per event cost more than the rest of delivery.
    """
    lines = []
    event_id = dumps(record.id)
    latency = b'"%.3f"' % record.latency_ms
    if mode != "response":
        data = dumps(request_json(record, arrays=True))
        lines.append(_line(record, REQUEST_TYPE, record.time, event_id, latency, data))
    if mode != "request":
        data = dumps(response_json(record, arrays=True))
        lines.append(_line(record, RESPONSE_TYPE, record.response_time, event_id, latency, data))
    return lines


def _line(
    record: InferenceRecord, kind: str, at: float, event_id: bytes, latency: bytes, data: bytes
) -> bytes:
    when = dumps(datetime.fromtimestamp(at, UTC))
    return b"".join((b'{"id":', event_id, b',"time":', when, b',"latencyms":', latency,
                     _head(record, kind), b',"data":', data, b"}"))  # fmt: skip


def _halves(record: InferenceRecord, mode: str) -> list[tuple[dict, dict]]:
    """(attributes, data) per event, for the SDK's binary and structured bindings."""
    halves = []
    if mode != "response":
        attributes = _attributes(record, REQUEST_TYPE, record.time)
        halves.append((attributes, request_json(record)))
    if mode != "request":
        attributes = _attributes(record, RESPONSE_TYPE, record.response_time)
        halves.append((attributes, response_json(record)))
    return halves


def dumps(value: Any) -> bytes:
    """JSON with numpy tensor data and UTC times (RFC 3339 with Z)."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_UTC_Z)


class _Event(CloudEvent):
    """A CloudEvent whose attributes were validated once for the record's attribute set.

    The SDK validates every attribute of every event (regular expressions over each extension
    name), which costs more than the inference it describes; the set only changes with the
    model, version or variant, so it is validated the first time each set is seen.
    """

    def __init__(self, attributes: dict[str, Any], data: dict[str, Any]) -> None:
        self._attributes = attributes
        self._data = data


_templates: dict[tuple[str, ...], tuple[dict[str, Any], bytes]] = {}


def _template(record: InferenceRecord, kind: str) -> tuple[dict[str, Any], bytes]:
    """The attributes every event of this attribute set shares, as a dict and as JSON members
    (``,"type":...``) to splice after id, time and latency."""
    key = (kind, record.service, record.variant, record.model, record.version, record.protocol,
           record.status)  # fmt: skip
    found = _templates.get(key)
    if found is None:
        template = {
            "specversion": "1.0",
            "type": kind,
            "source": f"http://{_HOST}/servekit/{record.service}",
            "datacontenttype": "application/json",
            # KServe logger extensions
            "inferenceservicename": record.service,
            "namespace": "default",
            "component": "predictor",
            "endpoint": record.variant,
            # servekit's own
            "modelid": record.model,
            "modelversion": record.version,
            "protocol": record.protocol,
            "status": record.status,
        }
        # Validated once per attribute set: raises on an invalid attribute.
        CloudEvent({**template, "id": "x", "time": datetime.now(UTC), "latencyms": "0"}, None)
        found = (template, b"," + dumps(template)[1:-1])
        if len(_templates) < 10_000:
            _templates[key] = found
    return found


def _attributes(record: InferenceRecord, kind: str, at: float) -> dict[str, Any]:
    attributes = _template(record, kind)[0].copy()
    attributes["id"] = record.id
    attributes["time"] = datetime.fromtimestamp(at, UTC)
    attributes["latencyms"] = f"{record.latency_ms:.3f}"
    return attributes


def _head(record: InferenceRecord, kind: str) -> bytes:
    return _template(record, kind)[1]


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def event_dict(event: CloudEvent) -> dict[str, Any]:
    """The structured-mode JSON object of an event."""
    document = dict(event.get_attributes())
    when = document.get("time")
    if isinstance(when, datetime):
        document["time"] = _iso(when)
    data = event.get_data()
    if data is not None:
        document["data"] = data
    return document


def binary_message(event: CloudEvent) -> HTTPMessage:
    return to_binary(event, FORMAT)


def structured_message(event: CloudEvent) -> HTTPMessage:
    return to_structured(event, FORMAT)


def batch_body(records: list[InferenceRecord], mode: str = "all") -> bytes:
    """An ``application/cloudevents-batch+json`` body: a JSON array of structured events."""
    return b"[" + b",".join([line for r in records for line in event_lines(r, mode)]) + b"]"
