"""REST V2 JSON bodies <-> servekit types, including the binary tensor data extension."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest

from servekit.errors import InvalidInput
from servekit.transports.http.codecs import (
    BINARY_CONTENT_TYPE,
    HEADER_LENGTH,
    JSON_CONTENT_TYPE,
    decode_infer_request,
    encode_infer_response,
    split_body,
)
from servekit.types.inference import InferenceResponse, RequestedOutput
from servekit.types.tensors import NUMPY_DTYPES, Tensor, from_raw


def _json(document: Any) -> bytes:
    return orjson.dumps(document)


def _binary_body(document: dict, *chunks: bytes) -> tuple[bytes, str]:
    header = _json(document)
    return header + b"".join(chunks), str(len(header))


def _bytes_raw(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def _input(name="x", datatype="FP32", shape=(2,), data=(1.0, 2.0), **extra) -> dict:
    item = {"name": name, "datatype": datatype, "shape": list(shape), "data": list(data)}
    item.update(extra)
    return item


def _decode_error(body: bytes, header: str | None = None) -> str:
    with pytest.raises(InvalidInput) as info:
        decode_infer_request(body, header)
    return str(info.value)


# -- decode: JSON ---------------------------------------------------------------------------------


def test_decode_minimal_request():
    request = decode_infer_request(_json({"inputs": [_input()]}))
    assert request.id is None
    assert request.parameters == {}
    assert request.outputs == []
    [tensor] = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("x", "FP32", (2,))
    assert tensor.data.dtype == np.float32
    assert tensor.data.tolist() == [1.0, 2.0]
    assert tensor.parameters == {}


def test_decode_id_parameters_outputs_and_input_parameters():
    body = _json(
        {
            "id": "req-42",
            "parameters": {"binary_data_output": True, "custom": [1, 2]},
            "inputs": [
                _input("a", "INT64", [2, 2], [[1, 2], [3, 4]], parameters={"content_type": "np"}),
                _input("b", "BYTES", [2], ["hi", "there"]),
                _input("c", "BOOL", [1], [True]),
            ],
            "outputs": [
                {"name": "y", "parameters": {"binary_data": True}},
                {"name": "z"},
            ],
        }
    )
    request = decode_infer_request(body)
    assert request.id == "req-42"
    assert request.parameters == {"binary_data_output": True, "custom": [1, 2]}
    assert request.outputs == [
        RequestedOutput("y", {"binary_data": True}),
        RequestedOutput("z", {}),
    ]
    a, b, c = request.inputs
    assert a.data.dtype == np.int64 and a.data.tolist() == [[1, 2], [3, 4]]
    assert a.parameters == {"content_type": "np"}
    assert b.data.tolist() == [b"hi", b"there"]
    assert c.data.tolist() == [True]


def test_decode_without_header_reads_the_whole_body_as_json():
    body = _json({"inputs": [_input()]})
    assert decode_infer_request(body, None).inputs[0].data.tolist() == [1.0, 2.0]
    assert decode_infer_request(body).inputs[0].data.tolist() == [1.0, 2.0]


def test_decode_with_header_length_equal_to_the_whole_body():
    body = _json({"inputs": [_input()]})
    request = decode_infer_request(body, str(len(body)))
    assert request.inputs[0].data.tolist() == [1.0, 2.0]


# -- decode: binary extension ---------------------------------------------------------------------


def test_decode_binary_inputs_of_several_datatypes_in_order():
    a = np.array([[1.5, -2.0], [3.25, 4.0]], dtype="<f4")
    b_items = [b"hello", b"", b"\x00\xffraw"]
    c = np.array([1, -2, 3], dtype="<i8")
    document = {
        "inputs": [
            {
                "name": "a",
                "datatype": "FP32",
                "shape": [2, 2],
                "parameters": {"binary_data_size": a.nbytes},
            },
            {"name": "j", "datatype": "INT32", "shape": [2], "data": [7, 8]},  # JSON in between
            {
                "name": "b",
                "datatype": "BYTES",
                "shape": [3],
                "parameters": {"binary_data_size": len(_bytes_raw(b_items)), "other": 1},
            },
            {
                "name": "c",
                "datatype": "INT64",
                "shape": [3],
                "parameters": {"binary_data_size": c.nbytes},
            },
        ]
    }
    body, header = _binary_body(document, a.tobytes(), _bytes_raw(b_items), c.tobytes())
    request = decode_infer_request(body, header)
    by_name = {t.name: t for t in request.inputs}
    assert [t.name for t in request.inputs] == ["a", "j", "b", "c"]
    np.testing.assert_array_equal(by_name["a"].data, a)
    assert by_name["a"].data.dtype == np.float32
    assert by_name["j"].data.tolist() == [7, 8]
    assert by_name["b"].data.tolist() == b_items
    np.testing.assert_array_equal(by_name["c"].data, c)
    # binary_data_size is transport framing, not a parameter the model sees
    assert by_name["a"].parameters == {}
    assert by_name["b"].parameters == {"other": 1}


def test_decode_binary_zero_sized_input():
    document = {
        "inputs": [
            {"name": "e", "datatype": "FP64", "shape": [0], "parameters": {"binary_data_size": 0}}
        ]
    }
    body, header = _binary_body(document)
    assert decode_infer_request(body, header).inputs[0].shape == (0,)


def test_decode_binary_leftover_bytes_are_an_error():
    document = {
        "inputs": [
            {"name": "a", "datatype": "INT8", "shape": [2], "parameters": {"binary_data_size": 2}}
        ]
    }
    body, header = _binary_body(document, b"\x01\x02\x03\x04\x05")
    message = _decode_error(body, header)
    assert "3 bytes not claimed" in message


def test_decode_binary_data_without_any_binary_input_is_an_error():
    body, header = _binary_body({"inputs": [_input()]}, b"\x00\x00")
    assert "2 bytes not claimed" in _decode_error(body, header)


@pytest.mark.parametrize("size", [5, 100])
def test_decode_binary_size_past_the_end(size):
    document = {
        "inputs": [
            {
                "name": "a",
                "datatype": "INT8",
                "shape": [4],
                "parameters": {"binary_data_size": size},
            }
        ]
    }
    body, header = _binary_body(document, b"\x01\x02\x03\x04")
    message = _decode_error(body, header)
    assert "input 'a'" in message
    assert "runs past the end" in message


def test_decode_binary_size_without_the_header_is_an_error():
    document = {
        "inputs": [
            {"name": "a", "datatype": "INT8", "shape": [1], "parameters": {"binary_data_size": 1}}
        ]
    }
    assert "runs past the end" in _decode_error(_json(document))


@pytest.mark.parametrize("size", [-1, 1.5, "4", True, [4]])
def test_decode_binary_size_must_be_a_non_negative_int(size):
    document = {
        "inputs": [
            {
                "name": "a",
                "datatype": "INT8",
                "shape": [4],
                "parameters": {"binary_data_size": size},
            }
        ]
    }
    body, header = _binary_body(document, b"\x01\x02\x03\x04")
    message = _decode_error(body, header)
    assert "input 'a': binary_data_size must be a non-negative integer" in message


def test_decode_binary_size_that_does_not_fit_the_shape():
    document = {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 4}}
        ]
    }
    body, header = _binary_body(document, b"\x00" * 4)
    message = _decode_error(body, header)
    assert "input 'a'" in message and "needs 8 bytes, got 4" in message


def test_decode_binary_truncated_bytes_element():
    raw = struct.pack("<I", 10) + b"abc"
    document = {
        "inputs": [
            {
                "name": "s",
                "datatype": "BYTES",
                "shape": [1],
                "parameters": {"binary_data_size": len(raw)},
            }
        ]
    }
    body, header = _binary_body(document, raw)
    message = _decode_error(body, header)
    assert "input 's'" in message and "overruns" in message


@pytest.mark.parametrize("header", ["abc", "", "1.5", "0x10", "ten"])
def test_decode_header_length_not_an_integer(header):
    body = _json({"inputs": [_input()]})
    message = _decode_error(body, header)
    assert "Inference-Header-Content-Length must be an integer" in message
    assert repr(header) in message


@pytest.mark.parametrize("delta", ["zero", "negative", "past_end"])
def test_decode_header_length_out_of_range(delta):
    body = _json({"inputs": [_input()]})
    header = {"zero": "0", "negative": "-5", "past_end": str(len(body) + 1)}[delta]
    message = _decode_error(body, header)
    assert f"Inference-Header-Content-Length {header} is outside the body" in message
    assert f"length {len(body)}" in message


def test_decode_header_length_cutting_the_json_is_an_error():
    body = _json({"inputs": [_input()]})
    assert "not valid JSON" in _decode_error(body, str(len(body) - 3))


def test_split_body_returns_the_binary_remainder():
    document, rest = split_body(b'{"a":1}XYZ', "7")
    assert document == {"a": 1}
    assert bytes(rest) == b"XYZ"
    document, rest = split_body(b'{"a":1}', None)
    assert document == {"a": 1} and bytes(rest) == b""


# -- decode: malformed bodies ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'"inputs"', "must be a JSON object"),
        (b"42", "must be a JSON object"),
        (b"null", "must be a JSON object"),
        (b"{}", "non-empty 'inputs' list"),
        (b'{"inputs": []}', "non-empty 'inputs' list"),
        (b'{"inputs": {"name": "x"}}', "non-empty 'inputs' list"),
        (b'{"inputs": null}', "non-empty 'inputs' list"),
        (b'{"inputs": [1]}', "inputs[0] must be an object"),
        (
            b'{"inputs": [{"datatype": "FP32", "shape": [1], "data": [1]}]}',
            "inputs[0] needs a 'name' string",
        ),
        (
            b'{"inputs": [{"name": "", "datatype": "FP32", "shape": [1], "data": [1]}]}',
            "inputs[0] needs a 'name' string",
        ),
        (
            b'{"inputs": [{"name": 3, "datatype": "FP32", "shape": [1], "data": [1]}]}',
            "inputs[0] needs a 'name' string",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1], "data": [1]}]}',
            "input 'x': needs a 'datatype' string",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": 11, "shape": [1], "data": [1]}]}',
            "input 'x': needs a 'datatype' string",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "data": [1]}]}',
            "input 'x': needs a 'shape'",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}',
            "input 'x': needs 'data'",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP99", "shape": [1], "data": [1]}]}',
            "input 'x': unknown datatype 'FP99'",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [3], "data": [1]}]}',
            "input 'x': shape [3] needs 3 elements, got 1",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": "1", "data": [1]}]}',
            "input 'x': shape must be a list",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1],'
            b' "parameters": []}]}',
            "input 'x': 'parameters' must be an object",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],'
            b' "parameters": 5}',
            "request: 'parameters' must be an object",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}], "id": 5}',
            "'id' must be a string",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],'
            b' "outputs": {"name": "y"}}',
            "'outputs' must be a list",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],'
            b' "outputs": [{"name": "y"}, {"parameters": {}}]}',
            "outputs[1] must be an object with a 'name' string",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],'
            b' "outputs": ["y"]}',
            "outputs[0] must be an object with a 'name' string",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}],'
            b' "outputs": [{"name": "y", "parameters": 1}]}',
            "output 'y': 'parameters' must be an object",
        ),
    ],
)
def test_decode_malformed(body, expected):
    message = _decode_error(body)
    assert expected in message, message


def test_decode_null_parameters_are_empty():
    body = _json({"inputs": [_input(parameters=None)], "parameters": None, "outputs": None})
    request = decode_infer_request(body)
    assert request.parameters == {} and request.outputs == []
    assert request.inputs[0].parameters == {}


# -- encode -------------------------------------------------------------------------------------


def _response(*outputs: Tensor, **kwargs: Any) -> InferenceResponse:
    return InferenceResponse("m", list(outputs), **kwargs)


def _fp(values, dtype="<f4") -> np.ndarray:
    return np.array(values, dtype=dtype)


def _parse(body: bytes, headers: dict[str, str]) -> tuple[dict, dict[str, np.ndarray]]:
    """Parse a response as a client would: JSON header, then the raw outputs in order."""
    if HEADER_LENGTH not in headers:
        assert headers["content-type"] == JSON_CONTENT_TYPE
        return orjson.loads(body), {}
    assert headers["content-type"] == BINARY_CONTENT_TYPE
    length = int(headers[HEADER_LENGTH])
    document = orjson.loads(body[:length])
    offset = length
    raw: dict[str, np.ndarray] = {}
    for output in document["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is None:
            continue
        raw[output["name"]] = from_raw(
            output["name"], output["datatype"], output["shape"], body[offset : offset + size]
        )
        offset += size
    assert offset == len(body), "every raw byte is announced by a binary_data_size"
    return document, raw


def test_encode_json_by_default():
    response = _response(
        Tensor("y", "FP32", _fp([[1.5, 2.0]])),
        Tensor("label", "BYTES", np.array([b"cat", b"dog"], dtype=object)),
        Tensor("flag", "BOOL", np.array([True, False])),
        model_version="3",
        id="abc",
        parameters={"took_ms": 1},
    )
    body, headers = encode_infer_response(response, {})
    assert headers == {"content-type": JSON_CONTENT_TYPE}
    assert orjson.loads(body) == {
        "model_name": "m",
        "model_version": "3",
        "id": "abc",
        "parameters": {"took_ms": 1},
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.0]},
            {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["cat", "dog"]},
            {"name": "flag", "datatype": "BOOL", "shape": [2], "data": [True, False]},
        ],
    }


def test_encode_omits_absent_version_id_and_parameters():
    body, _ = encode_infer_response(_response(Tensor("y", "INT32", np.array([1], "<i4"))), {})
    assert orjson.loads(body) == {
        "model_name": "m",
        "outputs": [{"name": "y", "datatype": "INT32", "shape": [1], "data": [1]}],
    }


def test_encode_per_output_binary_data():
    y = _fp([[1.5, -2.0], [0.25, 8.0]])
    z = np.array([7, 8, 9], dtype="<i8")
    response = _response(
        Tensor("y", "FP32", y, {"binary_data": True}),
        Tensor("z", "INT64", z),
        Tensor("s", "BYTES", np.array([b"ab", b""], dtype=object), {"binary_data": True}),
    )
    body, headers = encode_infer_response(response, {})
    assert headers["content-type"] == BINARY_CONTENT_TYPE
    header_length = int(headers[HEADER_LENGTH])
    document = orjson.loads(body[:header_length])
    assert document["outputs"] == [
        {"name": "y", "datatype": "FP32", "shape": [2, 2], "parameters": {"binary_data_size": 16}},
        {"name": "z", "datatype": "INT64", "shape": [3], "data": [7, 8, 9]},
        {
            "name": "s",
            "datatype": "BYTES",
            "shape": [2],
            "parameters": {"binary_data_size": 4 + 2 + 4},
        },
    ]
    assert body[header_length:] == y.tobytes() + struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0)
    _, raw = _parse(body, headers)
    np.testing.assert_array_equal(raw["y"], y)
    assert raw["s"].tolist() == [b"ab", b""]


def test_encode_binary_data_output_makes_every_output_raw():
    y = _fp([1.0, 2.0, 3.0], "<f8")
    u = np.array([[1, 2]], dtype="<u2")
    response = _response(Tensor("y", "FP64", y), Tensor("u", "UINT16", u))
    body, headers = encode_infer_response(response, {"binary_data_output": True})
    document, raw = _parse(body, headers)
    assert all("data" not in o for o in document["outputs"])
    assert [o["parameters"]["binary_data_size"] for o in document["outputs"]] == [24, 4]
    np.testing.assert_array_equal(raw["y"], y)
    np.testing.assert_array_equal(raw["u"], u)
    assert raw["u"].shape == (1, 2)


def test_encode_per_output_false_overrides_binary_data_output():
    response = _response(
        Tensor("y", "FP32", _fp([1.0]), {"binary_data": False}),
        Tensor("z", "FP32", _fp([2.0])),
    )
    body, headers = encode_infer_response(response, {"binary_data_output": True})
    document, raw = _parse(body, headers)
    assert document["outputs"][0]["data"] == [1.0]
    assert list(raw) == ["z"] and raw["z"].tolist() == [2.0]


def test_encode_binary_data_output_false_is_json():
    response = _response(Tensor("y", "FP32", _fp([1.0])))
    body, headers = encode_infer_response(response, {"binary_data_output": False})
    assert headers == {"content-type": JSON_CONTENT_TYPE}
    assert orjson.loads(body)["outputs"][0]["data"] == [1.0]


@pytest.mark.parametrize(
    ("datatype", "values"),
    [
        ("BOOL", [True, False, True, True]),
        ("UINT8", [0, 1, 200, 255]),
        ("UINT16", [0, 1, 300, 65535]),
        ("UINT32", [0, 1, 70000, 2**32 - 1]),
        ("UINT64", [0, 1, 2**40, 2**64 - 1]),
        ("INT8", [-128, 0, 1, 127]),
        ("INT16", [-32768, 0, 1, 32767]),
        ("INT32", [-(2**31), 0, 1, 2**31 - 1]),
        ("INT64", [-(2**63), 0, 1, 2**63 - 1]),
        ("FP16", [0.5, -1.0, 2.0, 65504.0]),
        ("FP32", [0.5, -1.0, 2.0**100, 2.0**-20]),
        ("FP64", [0.1, -1e300, 2.5, 1e-300]),
        ("BYTES", [b"a", b"", b"hello", "é".encode()]),
    ],
)
@pytest.mark.parametrize("binary", [False, True])
def test_encode_round_trip_every_datatype(datatype, values, binary):
    array = np.array(values, dtype=NUMPY_DTYPES[datatype]).reshape(2, 2)
    response = _response(Tensor("out", datatype, array))
    body, headers = encode_infer_response(response, {"binary_data_output": binary})
    document, raw = _parse(body, headers)
    [output] = document["outputs"]
    assert output["shape"] == [2, 2] and output["datatype"] == datatype
    if binary:
        decoded = raw["out"]
    else:
        data = output["data"]
        if datatype == "BYTES":
            data = [item.encode() for item in data]
        decoded = np.array(data, dtype=NUMPY_DTYPES[datatype]).reshape(output["shape"])
    assert decoded.tolist() == array.tolist()


def test_encoded_request_and_response_share_framing():
    """A response body is decodable by the request decoder's framing rules (same extension)."""
    y = _fp([3.0, 4.0])
    body, headers = encode_infer_response(
        _response(Tensor("y", "FP32", y, {"binary_data": True})), {}
    )
    document, rest = split_body(body, headers[HEADER_LENGTH])
    assert document["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert bytes(rest) == y.tobytes()
