"""The journal's record format: the hot path's tuples are the structs' bytes, prefixes decode on
their own, and records written as maps (format 1, before 2026-12) are still read everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from servekit.observe.payloads import record as records
from servekit.observe.payloads.record import (
    InferenceRecord,
    TensorRecord,
    capture,
    capture_raw,
    decode,
    decode_indexed,
    decode_routing,
    encode,
    encode_fields,
)
from servekit.observe.payloads.store import LogQuery, PayloadStore
from servekit.types.tensors import Tensor

INPUTS = [
    Tensor.from_array("features", np.array([[1.5, 2.0, -3.25]], np.float32)),
    Tensor.from_array("secret", np.array([[7, 8]], np.int64)),
    Tensor.from_array("big", np.zeros((1, 64), np.float64)),
]
OUTPUTS = [Tensor.from_array("label", np.array([2], np.int64))]
REDACT = frozenset({"secret"})
LIMIT = 256


def fields(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": "req-1", "model": "m", "version": "2", "time": 1_700_000_000.5, "status": "ok",
        "service": "svc", "variant": "canary", "protocol": "rest-v2", "latency_ms": 1.25,
        "http_status": 200, "error": None, "parameters": {"p": 1},
    }  # fmt: skip
    values.update(overrides)
    return values


def test_the_hot_path_writes_the_bytes_the_struct_encodes_to() -> None:
    for status, error in (("ok", None), ("invalid_argument", "bad input")):
        base = fields(status=status, error=error, http_status=200 if error is None else 400)
        struct = InferenceRecord(
            **base, inputs=capture(INPUTS, REDACT, LIMIT), outputs=capture(OUTPUTS, REDACT, LIMIT)
        )
        order = [f.name for f in msgspec.structs.fields(InferenceRecord)]
        raw = {"inputs": capture_raw(INPUTS, REDACT, LIMIT),
               "outputs": capture_raw(OUTPUTS, REDACT, LIMIT)}  # fmt: skip
        payload = encode_fields(tuple(raw[name] if name in raw else base[name] for name in order))
        assert payload == encode(struct)
        assert decode(payload) == struct
    states = [t.state for t in struct.inputs or ()]
    assert states == ["", "redacted", "truncated"]
    assert np.frombuffer(struct.inputs[0].data, np.float32).tolist() == [1.5, 2.0, -3.25]
    assert struct.inputs[0].shape == [1, 3]


def test_prefix_readers_decode_only_the_leading_fields() -> None:
    struct = InferenceRecord(
        **fields(), inputs=capture(INPUTS, REDACT, LIMIT), outputs=capture(OUTPUTS, REDACT, LIMIT)
    )
    payload = encode(struct)
    routing = decode_routing(payload)
    assert (routing.id, routing.model, routing.version, routing.status) == ("req-1", "m", "2", "ok")
    indexed = decode_indexed(payload)
    assert (indexed.id, indexed.time) == ("req-1", 1_700_000_000.5)
    assert indexed.outputs == [TensorRecord("label", "INT64", [1], np.int64(2).tobytes())]


class FormatOne(msgspec.Struct, omit_defaults=True, kw_only=True):
    """The record as servekit wrote it until 2026-12 (a map)."""

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


def test_records_written_as_maps_are_still_read(tmp_path: Path) -> None:
    old = FormatOne(
        **fields(), inputs=capture(INPUTS, REDACT, LIMIT), outputs=capture(OUTPUTS, REDACT, LIMIT)
    )
    payload = msgspec.msgpack.encode(old)
    assert records._is_map(payload)
    record = decode(payload)
    assert msgspec.structs.asdict(record) == msgspec.structs.asdict(old)
    assert decode_routing(payload).model == "m"
    assert decode_indexed(payload).outputs == old.outputs

    store = PayloadStore(tmp_path / "store.sqlite")
    try:
        store.insert_encoded([payload, encode(InferenceRecord(**fields(id="req-2")))])
        rows = store.query(LogQuery(model="m"))
        assert sorted(row["id"] for row in rows) == ["req-1", "req-2"]
        first = next(row for row in rows if row["id"] == "req-1")
        assert first["response"]["outputs"][0]["data"] == [2]
        assert store.query(LogQuery(prediction="2"))[0]["id"] == "req-1"
    finally:
        store.close()


def test_values_read_every_datatype_as_numpy_does() -> None:
    arrays = {
        "BOOL": np.array([True, False]), "UINT8": np.array([0, 255], np.uint8),
        "UINT16": np.array([1, 65535], np.uint16), "UINT32": np.array([7, 2**32 - 1], np.uint32),
        "UINT64": np.array([9, 2**64 - 1], np.uint64), "INT8": np.array([-128, 5], np.int8),
        "INT16": np.array([-3, 300], np.int16), "INT32": np.array([-2**31, 8], np.int32),
        "INT64": np.array([-2**63, 2**40], np.int64),
        "FP16": np.array([0.5, -2.25], np.float16), "FP32": np.array([0.1, -3.5], np.float32),
        "FP64": np.array([0.1, 1e300]),
    }  # fmt: skip
    for datatype, array in arrays.items():
        tensor = TensorRecord("t", datatype, [2], array.tobytes())
        found = records.values(tensor)
        assert found == array.tolist(), datatype
        assert [type(v) for v in found] == [type(v) for v in array.tolist()], datatype
