"""Records as CloudEvents, with KServe's logger types and extensions so its consumers work.

Each inference record becomes a request event and a response event that share the record's id
(``type`` tells them apart, as in KServe: ``org.kubeflow.serving.inference.request|response``).
"""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from cloudevents.core.bindings.http import HTTPMessage, to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from servekit.observe.payloads.record import (
    InferenceRecord,
    TensorRecord,
    request_json,
    response_json,
    values,
)
from servekit.types.tensors import NUMPY_DTYPES

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
    """The structured-mode JSON of a record's events, one document each."""
    return render_lines([record], mode)


def render_lines(records: list[InferenceRecord], mode: str = "all") -> list[bytes]:
    """The structured-mode JSON of the records' events, in order, one document each.

    Written as bytes from cached pieces (the attributes of each model, version and variant;
    each tensor's name, type and shape) around what changes per event, with the times of the
    whole batch converted at once and the tensors of one name, type and shape written as one
    array: building a dict per event, then a JSON document of it, cost more than the rest of
    delivery.
    """
    requests, responses = mode != "response", mode != "request"
    arrived = [r.time for r in records]
    answered = [r.response_time for r in records] if responses else []
    times = _iso_times(arrived + answered)
    answered_at = len(arrived)
    inputs = iter(_tensor_texts([t for r in records for t in r.inputs or ()] if requests else []))
    outputs = iter(
        _tensor_texts([t for r in records for t in r.outputs or ()] if responses else [])
    )
    lines = []
    for index, record in enumerate(records):
        heads = _heads(record)
        event_id = dumps(record.id)
        latency = b'"%.3f"' % record.latency_ms
        if requests:
            tensors = [next(inputs) for _ in record.inputs or ()]
            data = _request_data(record, event_id, tensors)
            lines.append(b"".join((b'{"id":', event_id, b',"time":"', times[index],
                                   b'","latencyms":', latency, heads[0], data)))  # fmt: skip
        if responses:
            tensors = [next(outputs) for _ in record.outputs or ()]
            data = _response_data(record, event_id, tensors)
            when = times[answered_at + index]
            lines.append(b"".join((b'{"id":', event_id, b',"time":"', when,
                                   b'","latencyms":', latency, heads[1], data)))  # fmt: skip
    return lines


def _request_data(record: InferenceRecord, event_id: bytes, tensors: list[bytes]) -> bytes:
    parts = [b',"data":{"id":', event_id]
    if record.parameters:
        parts += (b',"parameters":', dumps(record.parameters))
    parts += (b',"inputs":[', b",".join(tensors), b"]}}")
    return b"".join(parts)


def _response_data(record: InferenceRecord, event_id: bytes, tensors: list[bytes]) -> bytes:
    if record.error is not None:
        rest = b',"error":%s,"status":%d}}' % (dumps(record.error), record.http_status)
    else:
        rest = b',"outputs":[' + b",".join(tensors) + b"]}}"
    return b"".join((_response_head(record.model, record.version), event_id, rest))


def _tensor_texts(tensors: list[TensorRecord]) -> list[bytes]:
    """Each tensor in V2 JSON form (``tensor_json``'s document), in order.

    Tensors of one name, datatype and shape (a model's inputs, request after request) are
    stacked into one array that orjson writes at once, then cut at its rows: per tensor that
    is a slice instead of a numpy view and an orjson call (the rows of a numeric array never
    contain ``],[``, so the cut is exact).
    """
    texts: list[bytes] = [b""] * len(tensors)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for position, tensor in enumerate(tensors):
        if tensor.state or tensor.datatype not in _PLAIN_DTYPES:
            texts[position] = _tensor(tensor)
        else:
            key = (tensor.name, tensor.datatype, len(tensor.data), *tensor.shape)
            groups.setdefault(key, []).append(position)
    for members in groups.values():
        first = tensors[members[0]]
        if len(members) == 1:
            texts[members[0]] = _tensor(first)
            continue
        head = _tensor_head(first)
        data = b"".join([tensors[p].data for p in members])
        stacked = np.frombuffer(data, _PLAIN_DTYPES[first.datatype]).reshape(len(members), -1)
        rows = orjson.dumps(stacked, option=_NUMPY)[2:-2].split(b"],[")
        for position, row in zip(members, rows, strict=True):
            texts[position] = b"%s[%s]}" % (head, row)
    return texts


_tensor_heads: dict[tuple[Any, ...], bytes] = {}
_response_heads: dict[tuple[str, str], bytes] = {}


def _tensor_head(tensor: TensorRecord) -> bytes:
    """``{"name":...,"datatype":...,"shape":[...],"data":`` for the tensor, cached."""
    key = (tensor.name, tensor.datatype, *tensor.shape)
    head = _tensor_heads.get(key)
    if head is None:
        head = dumps({"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape})
        head = head[:-1] + b',"data":'
        if len(_tensor_heads) < 10_000:
            _tensor_heads[key] = head
    return head


def _tensor(tensor: TensorRecord) -> bytes:
    """A tensor in V2 JSON form (``tensor_json``'s document), from a cached head."""
    head = _tensor_head(tensor)
    dtype = _PLAIN_DTYPES.get(tensor.datatype)
    if dtype is not None and not tensor.state:
        return b"%s%s}" % (head, orjson.dumps(np.frombuffer(tensor.data, dtype), option=_NUMPY))
    if tensor.state:
        return b'%snull,"parameters":{"servekit_payload":%s}}' % (head, dumps(tensor.state))
    return b"%s%s}" % (head, dumps(values(tensor, arrays=True)))


_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_PLAIN_DTYPES = {
    name: dtype for name, dtype in NUMPY_DTYPES.items() if name not in ("BYTES", "FP16")
}
"""The datatypes orjson writes straight from a numpy view of the raw bytes."""


def _response_head(model: str, version: str) -> bytes:
    head = _response_heads.get((model, version))
    if head is None:
        head = dumps({"model_name": model, "model_version": version})
        head = b',"data":' + head[:-1] + b',"id":'
        if len(_response_heads) < 10_000:
            _response_heads[(model, version)] = head
    return head


_second_texts: dict[int, bytes] = {}


def _iso_times(seconds: list[float]) -> list[bytes]:
    """Unix times as RFC 3339 UTC text with microseconds (what ``dumps`` writes for a datetime,
    rounded the same way), converted as one array: most of a batch shares its second."""
    micros = np.rint(np.array(seconds, dtype=np.float64) * 1e6).astype(np.int64)
    whole, fraction = np.divmod(micros, 1_000_000)
    texts = _second_texts
    out = []
    for second, micro in zip(whole.tolist(), fraction.tolist(), strict=True):
        text = texts.get(second)
        if text is None:
            if len(texts) > 4096:
                texts.clear()
            text = texts[second] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        out.append(b"%s.%06dZ" % (text, micro) if micro else text + b"Z")
    return out


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


def _heads(record: InferenceRecord) -> tuple[bytes, bytes]:
    """The request's and the response's attribute members, spliced after id, time and latency."""
    key = (record.service, record.variant, record.model, record.version, record.protocol,
           record.status)  # fmt: skip
    found = _head_pairs.get(key)
    if found is None:
        found = (_template(record, REQUEST_TYPE)[1], _template(record, RESPONSE_TYPE)[1])
        if len(_head_pairs) < 10_000:
            _head_pairs[key] = found
    return found


_head_pairs: dict[tuple[str, ...], tuple[bytes, bytes]] = {}


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
    return b"[" + b",".join(render_lines(records, mode)) + b"]"
