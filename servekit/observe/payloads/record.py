"""What the payload log keeps of one inference, and how it is written to the journal.

One record per inference holds both halves (request and response): the sinks expand it into
the request event and the response event, which share its id. Tensors are kept as raw bytes
(msgpack, no per-element work on the hot path); rendering to JSON happens off the hot path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np

from servekit.types.tensors import NUMPY_DTYPES, Tensor, from_raw, to_json_data, to_raw

REDACTED = "[redacted]"


class TensorRecord(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    name: str
    datatype: str
    shape: list[int]
    data: bytes = b""
    state: str = ""
    """'' when ``data`` holds the tensor, 'redacted' or 'truncated' when it was left out."""


class InferenceRecord(msgspec.Struct, array_like=True, kw_only=True, gc=False):
    """One inference, written as a msgpack array in this field order (the journal's format 2).

    Records and tensors are not tracked by the garbage collector (``gc=False``: they never
    form reference cycles): a sink decodes thousands at a time, and tracked ones made the young
    collections run that much more often (decoding 0.9-1.5 against 0.7 µs per record here).

    The fields the store indexes and the sinks route on come first, so a reader that needs
    only those decodes a prefix (``Routing``, ``IndexedFields``). New fields go at the end:
    a shorter array from an older server decodes with their defaults. Format 1 was a map,
    still read by ``decode`` (spools and stores written before the change).
    """

    id: str
    model: str
    version: str
    time: float
    """Unix time the request arrived."""
    status: str = "ok"
    """'ok', or the error code's name (invalid_argument, not_found, unavailable, internal...)."""
    service: str
    variant: str = "default"
    protocol: str
    latency_ms: float
    http_status: int = 200
    error: str | None = None
    inputs: list[TensorRecord] | None = None
    outputs: list[TensorRecord] | None = None
    parameters: dict[str, Any] = {}

    @property
    def response_time(self) -> float:
        return self.time + self.latency_ms / 1000.0


class Routing(msgspec.Struct, array_like=True, gc=False):
    """The leading fields of a record: enough to skip it without decoding its tensors."""

    id: str
    model: str
    version: str
    time: float
    status: str = "ok"


class IndexedFields(Routing):
    """The fields the embedded store indexes (``Routing``'s, then up to the outputs, which give
    the prediction): decoding only these skips building the rest."""

    service: str = ""
    variant: str = ""
    protocol: str = ""
    latency_ms: float = 0.0
    http_status: int = 0
    error: str | None = None
    inputs: msgspec.Raw = msgspec.Raw()
    """Left undecoded (a view of its bytes)."""
    outputs: list[TensorRecord] | None = None


class _MapRecord(msgspec.Struct, kw_only=True):
    """Format 1 (a msgpack map), as written before 2026-12: read, never written."""

    id: str
    model: str
    version: str
    service: str
    variant: str = "default"
    protocol: str
    time: float
    latency_ms: float
    status: str = "ok"
    http_status: int = 200
    error: str | None = None
    inputs: list[TensorRecord] | None = None
    outputs: list[TensorRecord] | None = None
    parameters: dict[str, Any] = {}


_RAW_DTYPES = {name: dtype for name, dtype in NUMPY_DTYPES.items() if name != "BYTES"}
"""The datatypes whose raw form is the array's own bytes (``tobytes``) when it has this dtype
(numpy's dtype objects for these are singletons: ``is`` is the whole test)."""
_FIELDS = tuple(f.name for f in msgspec.structs.fields(InferenceRecord))
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(InferenceRecord)
_routing_decoder = msgspec.msgpack.Decoder(Routing)
_indexed_decoder = msgspec.msgpack.Decoder(IndexedFields)
_map_decoder = msgspec.msgpack.Decoder(_MapRecord)


def encode(record: InferenceRecord) -> bytes:
    return _encoder.encode(record)


encode_fields: Callable[[tuple], bytes] = _encoder.encode
"""A record from a tuple of its fields in ``InferenceRecord``'s order, tensors as
``(name, datatype, shape, data, state)`` tuples: what the hot path writes, without building
the structs (the same bytes as ``encode``). The encoder's own method: no Python frame."""


def _is_map(payload: bytes | memoryview) -> bool:
    first = payload[0]
    return 0x80 <= first <= 0x8F or first in (0xDE, 0xDF)


def _from_map(payload: bytes | memoryview) -> InferenceRecord:
    old = _map_decoder.decode(payload)
    return InferenceRecord(**{name: getattr(old, name) for name in _FIELDS})


def decode(payload: bytes | memoryview) -> InferenceRecord:
    if _is_map(payload):
        return _from_map(payload)
    return _decoder.decode(payload)


def decode_routing(payload: bytes | memoryview) -> Routing:
    if _is_map(payload):
        r = _from_map(payload)
        return Routing(r.id, r.model, r.version, r.time, r.status)
    return _routing_decoder.decode(payload)


def decode_indexed(payload: bytes | memoryview) -> IndexedFields:
    if _is_map(payload):
        r = _from_map(payload)
        return IndexedFields(r.id, r.model, r.version, r.time, r.status, outputs=r.outputs)
    return _indexed_decoder.decode(payload)


def capture(
    tensors: list[Tensor] | None, redact: frozenset[str], max_bytes: int
) -> list[TensorRecord] | None:
    """Raw copies of ``tensors``, leaving out redacted names and tensors over ``max_bytes``."""
    raw = capture_raw(tensors, redact, max_bytes)
    if raw is None:
        return None
    return [
        TensorRecord(n, datatype, list(shape), data, state)
        for n, datatype, shape, data, state in raw
    ]


def capture_raw(
    tensors: list[Tensor] | None, redact: frozenset[str], max_bytes: int
) -> list[tuple] | None:
    """``capture`` as ``TensorRecord``-ordered tuples, for ``encode_fields`` on the hot path.

    It runs twice per inference: the common tensor (numeric, in its datatype's dtype, within
    ``max_bytes``, not redacted) takes one test and ``tobytes``; the rest go through
    ``_capture_one``."""
    if tensors is None:
        return None
    captured = []  # a loop, not a comprehension: Python 3.11 makes a function call of those
    for tensor in tensors:
        data = tensor.data
        if (
            data.dtype is _RAW_DTYPES.get(tensor.datatype)
            and data.nbytes <= max_bytes
            and not (redact and tensor.name in redact)
        ):
            captured.append((tensor.name, tensor.datatype, data.shape, data.tobytes(), ""))
        else:
            captured.append(_capture_one(tensor, redact, max_bytes))
    return captured


def _capture_one(tensor: Tensor, redact: frozenset[str], max_bytes: int) -> tuple:
    data = tensor.data
    if tensor.name in redact:
        return (tensor.name, tensor.datatype, data.shape, b"", "redacted")
    if data.nbytes <= max_bytes or tensor.datatype == "BYTES":  # BYTES: pointers' size
        raw = to_raw(data, tensor.datatype)
        if len(raw) <= max_bytes:
            return (tensor.name, tensor.datatype, data.shape, raw, "")
    return (tensor.name, tensor.datatype, data.shape, b"", "truncated")


def redact_parameters(parameters: dict[str, Any], redact: frozenset[str]) -> dict[str, Any]:
    if not redact or not parameters.keys() & redact:
        return parameters
    return {k: (REDACTED if k in redact else v) for k, v in parameters.items()}


_NATIVE_FORMATS = {
    "BOOL": "?", "UINT8": "B", "UINT16": "H", "UINT32": "I", "UINT64": "Q", "INT8": "b",
    "INT16": "h", "INT32": "i", "INT64": "q", "FP32": "f", "FP64": "d",
}  # fmt: skip
"""``memoryview.cast`` formats of the datatypes whose raw bytes (numpy's native layout) it reads
as they are; FP16 and BYTES go through numpy."""


def values(tensor: TensorRecord, arrays: bool = False) -> Any:
    """The tensor's flat values, or None when left out: a list, or with ``arrays`` a numpy
    view for ``orjson.OPT_SERIALIZE_NUMPY`` (no Python object per element)."""
    if tensor.state:
        return None
    if tensor.datatype == "BYTES":
        array = from_raw(tensor.name, "BYTES", tensor.shape, tensor.data)
        return to_json_data(array, "BYTES")
    if not arrays and (code := _NATIVE_FORMATS.get(tensor.datatype)) is not None:
        return memoryview(tensor.data).cast(code).tolist()  # what numpy gives, a third the cost
    flat = np.frombuffer(tensor.data, NUMPY_DTYPES[tensor.datatype])
    if not arrays:
        return flat.tolist()
    return flat.astype(np.float32) if tensor.datatype == "FP16" else flat


def tensor_json(tensor: TensorRecord, arrays: bool = False) -> dict[str, Any]:
    """The tensor in V2 JSON form (``data`` flat); left-out data is marked."""
    entry: dict[str, Any] = {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": tensor.shape,
        "data": values(tensor, arrays),
    }
    if tensor.state:
        entry["parameters"] = {"servekit_payload": tensor.state}
    return entry


def request_json(record: InferenceRecord, arrays: bool = False) -> dict[str, Any]:
    """The request in V2 JSON form, as the request event's data."""
    document: dict[str, Any] = {"id": record.id}
    if record.parameters:
        document["parameters"] = record.parameters
    document["inputs"] = [tensor_json(t, arrays) for t in record.inputs or ()]
    return document


def response_json(record: InferenceRecord, arrays: bool = False) -> dict[str, Any]:
    """The response in V2 JSON form, or the error the client got."""
    document: dict[str, Any] = {
        "model_name": record.model,
        "model_version": record.version,
        "id": record.id,
    }
    if record.error is not None:
        document["error"] = record.error
        document["status"] = record.http_status
    else:
        document["outputs"] = [tensor_json(t, arrays) for t in record.outputs or ()]
    return document


def first_values(tensors: list[TensorRecord] | None, limit: int = 1024) -> list[Any] | None:
    """The first tensor's values (the prediction, for most models), flat and bounded."""
    if not tensors:
        return None
    found = values(tensors[0])
    return found[:limit] if found is not None else None


__all__ = [
    "IndexedFields",
    "InferenceRecord",
    "Routing",
    "TensorRecord",
    "capture",
    "capture_raw",
    "decode",
    "decode_indexed",
    "decode_routing",
    "encode",
    "encode_fields",
    "first_values",
    "redact_parameters",
    "request_json",
    "response_json",
    "tensor_json",
    "values",
]
