"""What the payload log keeps of one inference, and how it is written to the journal.

One record per inference holds both halves (request and response): the sinks expand it into
the request event and the response event, which share its id. Tensors are kept as raw bytes
(msgpack, no per-element work on the hot path); rendering to JSON happens off the hot path.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from servekit.types.tensors import NUMPY_DTYPES, Tensor, from_raw, to_json_data, to_raw

REDACTED = "[redacted]"


class TensorRecord(msgspec.Struct, array_like=True, omit_defaults=True):
    name: str
    datatype: str
    shape: list[int]
    data: bytes = b""
    state: str = ""
    """'' when ``data`` holds the tensor, 'redacted' or 'truncated' when it was left out."""


class InferenceRecord(msgspec.Struct, omit_defaults=True, kw_only=True):
    id: str
    model: str
    version: str
    service: str
    variant: str = "default"
    protocol: str
    time: float
    """Unix time the request arrived."""
    latency_ms: float
    status: str = "ok"
    """'ok', or the error code's name (invalid_argument, not_found, unavailable, internal...)."""
    http_status: int = 200
    error: str | None = None
    inputs: list[TensorRecord] | None = None
    outputs: list[TensorRecord] | None = None
    parameters: dict[str, Any] = {}

    @property
    def response_time(self) -> float:
        return self.time + self.latency_ms / 1000.0


class IndexedFields(msgspec.Struct, kw_only=True):
    """The fields the embedded store indexes: decoding only these skips building the rest."""

    id: str
    model: str
    version: str
    time: float
    status: str = "ok"
    outputs: list[TensorRecord] | None = None


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(InferenceRecord)
_indexed_decoder = msgspec.msgpack.Decoder(IndexedFields)


def encode(record: InferenceRecord) -> bytes:
    return _encoder.encode(record)


def decode(payload: bytes | memoryview) -> InferenceRecord:
    return _decoder.decode(payload)


def decode_indexed(payload: bytes | memoryview) -> IndexedFields:
    return _indexed_decoder.decode(payload)


def capture(
    tensors: list[Tensor] | None, redact: frozenset[str], max_bytes: int
) -> list[TensorRecord] | None:
    """Raw copies of ``tensors``, leaving out redacted names and tensors over ``max_bytes``."""
    if tensors is None:
        return None
    captured = []
    for tensor in tensors:
        raw, state = b"", ""
        if tensor.name in redact:
            state = "redacted"
        elif tensor.datatype != "BYTES" and tensor.data.nbytes > max_bytes:
            state = "truncated"  # known without copying it
        else:
            raw = to_raw(tensor.data, tensor.datatype)
            if len(raw) > max_bytes:
                raw, state = b"", "truncated"
        shape = list(tensor.data.shape)
        captured.append(TensorRecord(tensor.name, tensor.datatype, shape, raw, state))
    return captured


def redact_parameters(parameters: dict[str, Any], redact: frozenset[str]) -> dict[str, Any]:
    if not redact or not parameters.keys() & redact:
        return parameters
    return {k: (REDACTED if k in redact else v) for k, v in parameters.items()}


def values(tensor: TensorRecord, arrays: bool = False) -> Any:
    """The tensor's flat values, or None when left out: a list, or with ``arrays`` a numpy
    view for ``orjson.OPT_SERIALIZE_NUMPY`` (no Python object per element)."""
    if tensor.state:
        return None
    if tensor.datatype == "BYTES":
        array = from_raw(tensor.name, "BYTES", tensor.shape, tensor.data)
        return to_json_data(array, "BYTES")
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
    "TensorRecord",
    "capture",
    "decode",
    "decode_indexed",
    "encode",
    "first_values",
    "redact_parameters",
    "request_json",
    "response_json",
    "tensor_json",
    "values",
]
