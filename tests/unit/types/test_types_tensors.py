"""V2 datatypes <-> numpy: JSON and raw round trips for every datatype, and every way to fail."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from servekit.errors import InvalidInput
from servekit.types.tensors import (
    DATATYPES,
    Tensor,
    cast_to,
    check_shape,
    datatype_kind,
    datatype_of,
    from_json_data,
    from_raw,
    numpy_dtype,
    to_json_data,
    to_raw,
)

# datatype -> (flat JSON values, numpy dtype the decoded array must have, struct format per element)
SAMPLES: dict[str, tuple[list, np.dtype, str]] = {
    "BOOL": ([True, False, False, True], np.dtype(bool), "?"),
    "UINT8": ([0, 1, 254, 255], np.dtype(np.uint8), "B"),
    "UINT16": ([0, 1, 258, 65535], np.dtype(np.uint16), "H"),
    "UINT32": ([0, 1, 16909060, 2**32 - 1], np.dtype(np.uint32), "I"),
    "UINT64": ([0, 1, 2**40 + 3, 2**64 - 1], np.dtype(np.uint64), "Q"),
    "INT8": ([-128, -1, 0, 127], np.dtype(np.int8), "b"),
    "INT16": ([-32768, -2, 258, 32767], np.dtype(np.int16), "h"),
    "INT32": ([-(2**31), -3, 16909060, 2**31 - 1], np.dtype(np.int32), "i"),
    "INT64": ([-(2**63), -4, 2**40 + 5, 2**63 - 1], np.dtype(np.int64), "q"),
    "FP16": ([1.5, -2.25, 0.0, 65504.0], np.dtype(np.float16), "e"),
    "FP32": ([0.5, -1.25, 2.0**100, 2.0**-20], np.dtype(np.float32), "f"),  # exact in float32
    "FP64": ([0.1, -1.0e300, 2.5, 1.0e-300], np.dtype(np.float64), "d"),
}


def _little_endian(values: list, fmt: str) -> bytes:
    return struct.pack("<" + fmt * len(values), *values)


def _bytes_raw(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def _json_round_trip(array: np.ndarray, datatype: str) -> list:
    """What a client receives: the flat data serialised and parsed as JSON."""
    return orjson.loads(
        orjson.dumps(to_json_data(array, datatype), option=orjson.OPT_SERIALIZE_NUMPY)
    )


def test_datatypes_are_exactly_the_v2_set():
    assert set(DATATYPES) == {*SAMPLES, "BYTES"}
    assert len(DATATYPES) == 13


@pytest.mark.parametrize("datatype", list(SAMPLES))
@pytest.mark.parametrize("shape", [[4], [2, 2], [1, 4, 1]])
def test_numeric_json_round_trip_flat(datatype, shape):
    values, dtype, _ = SAMPLES[datatype]
    array = from_json_data("x", datatype, shape, values)
    assert array.dtype == dtype
    assert array.shape == tuple(shape)
    assert array.reshape(-1).tolist() == values
    decoded = _json_round_trip(array, datatype)
    if dtype.kind == "f":  # written as the shortest text that reads back to the same float
        np.testing.assert_array_equal(np.array(decoded, dtype=dtype), array.reshape(-1))
    else:
        assert decoded == values
    again = from_json_data("x", datatype, shape, decoded)
    np.testing.assert_array_equal(again, array)
    assert again.dtype == dtype


@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_numeric_json_nested_data_matches_flat(datatype):
    values, dtype, _ = SAMPLES[datatype]
    nested = [values[:2], values[2:]]
    array = from_json_data("x", datatype, [2, 2], nested)
    assert array.dtype == dtype
    assert array.tolist() == nested
    np.testing.assert_array_equal(array, from_json_data("x", datatype, [2, 2], values))


@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_numeric_raw_round_trip_is_little_endian(datatype):
    values, dtype, fmt = SAMPLES[datatype]
    expected = _little_endian(values, fmt)
    array = from_json_data("x", datatype, [2, 2], values)
    raw = to_raw(array, datatype)
    assert raw == expected
    decoded = from_raw("x", datatype, [2, 2], raw)
    assert decoded.dtype == dtype
    assert decoded.shape == (2, 2)
    np.testing.assert_array_equal(decoded, array)
    assert from_raw("x", datatype, [4], memoryview(expected)).tolist() == values


@pytest.mark.parametrize("datatype", [d for d in SAMPLES if d != "BOOL"])
def test_to_raw_writes_little_endian_from_big_endian_arrays(datatype):
    values, dtype, fmt = SAMPLES[datatype]
    big = np.array(values, dtype=dtype.newbyteorder(">"))
    assert to_raw(big, datatype) == _little_endian(values, fmt)
    np.testing.assert_array_equal(np.array(_json_round_trip(big, datatype), dtype=dtype), big)


@pytest.mark.parametrize(
    ("datatype", "value", "raw"),
    [
        ("UINT16", 258, b"\x02\x01"),
        ("INT32", 1, b"\x01\x00\x00\x00"),
        ("INT32", -2, b"\xfe\xff\xff\xff"),
        ("UINT64", 1, b"\x01" + b"\x00" * 7),
        ("FP32", 1.0, b"\x00\x00\x80\x3f"),
        ("FP64", 2.0, b"\x00" * 7 + b"\x40"),
        ("FP16", 1.0, b"\x00\x3c"),
    ],
)
def test_raw_byte_order_literal(datatype, value, raw):
    assert to_raw(from_json_data("x", datatype, [1], [value]), datatype) == raw
    assert from_raw("x", datatype, [1], raw).tolist() == [value]


@pytest.mark.parametrize(
    ("shape", "data", "expected"),
    [
        ([2], ["a", "bc"], [b"a", b"bc"]),
        ([2, 2], [["a", ""], ["héllo", "d"]], [[b"a", b""], ["héllo".encode(), b"d"]]),
        ([2, 2], ["a", "", "héllo", "d"], [[b"a", b""], ["héllo".encode(), b"d"]]),
        ([1], "solo", [b"solo"]),
        ([0], [], []),
    ],
)
def test_bytes_json_round_trip(shape, data, expected):
    array = from_json_data("s", "BYTES", shape, data)
    assert array.dtype == object
    assert array.shape == tuple(shape)
    assert array.tolist() == expected
    flat = [item.decode() for item in array.reshape(-1)]
    assert _json_round_trip(array, "BYTES") == flat
    np.testing.assert_array_equal(from_json_data("s", "BYTES", shape, flat), array)


@pytest.mark.parametrize(
    "items",
    [[b"a", b"bc"], [b"", b"\x00\xff binary", b"x" * 300], ["héllo".encode()], []],
)
def test_bytes_raw_round_trip(items):
    raw = _bytes_raw(items)
    array = from_raw("s", "BYTES", [len(items)], raw)
    assert array.dtype == object
    assert array.tolist() == items
    assert to_raw(array, "BYTES") == raw


def test_bytes_raw_nested_shape_is_row_major():
    items = [b"a", b"b", b"c", b"d", b"e", b"f"]
    array = from_raw("s", "BYTES", [2, 3], _bytes_raw(items))
    assert array.tolist() == [[b"a", b"b", b"c"], [b"d", b"e", b"f"]]
    assert to_raw(array, "BYTES") == _bytes_raw(items)


def test_to_raw_bytes_encodes_str_items_as_utf8():
    array = np.array(["hé", b"x"], dtype=object)
    assert to_raw(array, "BYTES") == _bytes_raw(["hé".encode(), b"x"])


def test_scalar_shape_and_zero_sized_tensors():
    assert from_json_data("x", "FP32", [], 3.0).shape == ()
    assert from_json_data("x", "FP32", [], [3.0]).tolist() == 3.0
    assert from_json_data("x", "INT8", [0], []).dtype == np.int8
    assert from_json_data("x", "FP32", [2, 0], [[], []]).shape == (2, 0)
    assert from_raw("x", "FP64", [0, 3], b"").shape == (0, 3)


def test_fp64_accepts_integers_beyond_int64():
    assert from_json_data("x", "FP64", [2], [2**70, 1]).tolist() == [float(2**70), 1.0]


def test_fp32_accepts_mixed_int_and_float_json():
    assert from_json_data("x", "FP32", [3], [1, 2.5, -3]).tolist() == [1.0, 2.5, -3.0]


# -- errors: each message names the input -----------------------------------------------------


def _fails(fn, *args) -> str:
    with pytest.raises(InvalidInput) as info:
        fn(*args)
    message = str(info.value)
    assert "'my_input'" in message, message
    return message


@pytest.mark.parametrize("datatype", ["FP128", "float32", "", "STRING", None, 7])
@pytest.mark.parametrize("fn", [from_json_data, from_raw])
def test_unknown_datatype(fn, datatype):
    payload = [1] if fn is from_json_data else b"\x00"
    message = _fails(fn, "my_input", datatype, [1], payload)
    assert "unknown datatype" in message
    assert "FP32" in message  # lists what is accepted


@pytest.mark.parametrize(
    ("datatype", "shape", "data"),
    [
        ("FP32", [3], [1.0, 2.0]),
        ("FP32", [2, 2], [1.0, 2.0, 3.0]),
        ("INT64", [1], [1, 2]),
        ("BOOL", [2, 3], [True] * 5),
        ("BYTES", [3], ["a", "b"]),
        ("UINT8", [0], [1]),
        ("FP64", [], [1.0, 2.0]),
    ],
)
def test_shape_data_count_mismatch(datatype, shape, data):
    message = _fails(from_json_data, "my_input", datatype, shape, data)
    assert str(shape) in message
    assert "elements" in message


@pytest.mark.parametrize("shape", [[-1], [2, -3], [1.5], ["2"], [True], "2", 2, None, {"a": 1}])
@pytest.mark.parametrize("fn", [from_json_data, from_raw])
def test_bad_shape(fn, shape):
    payload = [1.0] if fn is from_json_data else b"\x00" * 4
    message = _fails(fn, "my_input", "FP32", shape, payload)
    assert "shape" in message
    assert "non-negative integers" in message


def test_check_shape_accepts_tuples_and_lists():
    assert check_shape("x", [1, 2]) == (1, 2)
    assert check_shape("x", (0,)) == (0,)
    assert check_shape("x", []) == ()


@pytest.mark.parametrize(
    ("datatype", "data", "found"),
    [
        ("FP32", ["abc"], "string"),
        ("FP32", ["1.5"], "string"),  # numeric-looking strings are still strings
        ("FP64", [1.0, "2"], "string"),
        ("FP16", [None], "mixed or nested"),
        ("FP32", [True, False], "boolean"),
        ("FP32", [{"a": 1}], "mixed or nested"),
        ("INT32", [1.5], "floating-point"),
        ("INT32", [1.0, 2.0], "floating-point"),
        ("INT64", ["1"], "string"),
        ("UINT8", [True], "boolean"),
        ("BOOL", [1, 0], "'i'"),
        ("BOOL", [1.0], "floating-point"),
        ("BOOL", ["true"], "string"),
        ("BOOL", [None], "mixed or nested"),
    ],
)
def test_data_of_the_wrong_kind(datatype, data, found):
    message = _fails(from_json_data, "my_input", datatype, [len(data)], data)
    assert f"does not match datatype {datatype}" in message
    assert found in message


@pytest.mark.parametrize(
    ("datatype", "value"),
    [
        ("UINT8", 256),
        ("UINT8", -1),
        ("UINT16", 65536),
        ("UINT32", 2**32),
        ("UINT64", -1),
        ("INT8", 128),
        ("INT8", -129),
        ("INT16", 32768),
        ("INT32", 2**31),
        ("INT32", -(2**31) - 1),
        ("INT64", 2**63),
        ("FP16", 70000.0),
        ("FP32", 1.0e300),
    ],
)
def test_values_out_of_range(datatype, value):
    message = _fails(from_json_data, "my_input", datatype, [2], [0, value])
    assert "out of range" in message
    assert datatype in message


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1])
@pytest.mark.parametrize("datatype", ["INT64", "UINT64"])
def test_integers_beyond_64_bits_are_rejected(datatype, value):
    for data in ([value], [0, value], [[1], [value]]):
        message = _fails(from_json_data, "my_input", datatype, [len(data)], data)
        assert f"out of range for {datatype}" in message


@pytest.mark.parametrize(
    ("datatype", "data"),
    [
        ("UINT64", [0, 2**64 - 1]),  # numpy alone would make these float64 and lose precision
        ("UINT64", [[1, 2**63 + 1], [3, 4]]),
        ("INT64", [-(2**63), 2**63 - 1]),
    ],
)
def test_64_bit_extremes_mixed_with_small_values_are_exact(datatype, data):
    array = from_json_data("x", datatype, [len(data), *np.shape(data)[1:]], data)
    assert array.dtype == SAMPLES[datatype][1]
    assert array.tolist() == data


def test_ragged_nested_data_is_rejected():
    _fails(from_json_data, "my_input", "FP32", [2, 2], [[1.0], [2.0, 3.0]])
    _fails(from_json_data, "my_input", "INT32", [2, 2], [[1], [2, 3]])


@pytest.mark.parametrize("item", [1, 1.5, None, True, {"a": "b"}])
def test_bytes_json_needs_strings(item):
    message = _fails(from_json_data, "my_input", "BYTES", [2], ["ok", item])
    assert "BYTES data must be strings" in message
    assert type(item).__name__ in message


@pytest.mark.parametrize(
    ("datatype", "shape", "size"),
    [
        ("FP32", [2], 7),
        ("FP32", [2], 9),
        ("FP64", [1, 2], 8),
        ("INT8", [3], 0),
        ("UINT16", [1], 1),
        ("BOOL", [4], 5),
        ("FP16", [2], 2),
    ],
)
def test_raw_buffer_size_mismatch(datatype, shape, size):
    message = _fails(from_raw, "my_input", datatype, shape, b"\x00" * size)
    assert f"got {size}" in message
    assert "bytes" in message


@pytest.mark.parametrize(
    ("buffer", "expected"),
    [
        (_bytes_raw([b"a"]) + b"\x02\x00", "truncated BYTES element length"),
        (b"\x01\x00\x00", "truncated BYTES element length"),
        (_bytes_raw([b"a"]) + struct.pack("<I", 5) + b"bc", "overruns the buffer"),
        (struct.pack("<I", 1), "overruns the buffer"),
    ],
)
def test_truncated_bytes_raw(buffer, expected):
    message = _fails(from_raw, "my_input", "BYTES", [2], buffer)
    assert expected in message


def test_bytes_raw_element_count_must_match_shape():
    message = _fails(from_raw, "my_input", "BYTES", [3], _bytes_raw([b"a", b"b"]))
    assert "needs 3 elements, got 2" in message


# -- helpers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "datatype"),
    [
        (np.bool_, "BOOL"),
        (np.uint8, "UINT8"),
        (np.uint16, "UINT16"),
        (np.uint32, "UINT32"),
        (np.uint64, "UINT64"),
        (np.int8, "INT8"),
        (np.int16, "INT16"),
        (np.int32, "INT32"),
        (np.int64, "INT64"),
        (np.float16, "FP16"),
        (np.float32, "FP32"),
        (np.float64, "FP64"),
        (object, "BYTES"),
        ("U3", "BYTES"),
        ("S3", "BYTES"),
    ],
)
def test_datatype_of_every_dtype(dtype, datatype):
    assert datatype_of(np.zeros(2, dtype=dtype)) == datatype
    if datatype != "BYTES":
        assert numpy_dtype(datatype) == np.dtype(dtype).newbyteorder("<")


def test_datatype_of_unsupported_dtype():
    with pytest.raises(TypeError, match="complex128"):
        datatype_of(np.zeros(1, dtype=np.complex128))


@pytest.mark.parametrize(
    ("datatype", "kind"),
    [("BYTES", "bytes"), ("BOOL", "bool"), ("FP32", "numeric"), ("UINT8", "numeric")],
)
def test_datatype_kind(datatype, kind):
    assert datatype_kind(datatype) == kind


def test_tensor_from_array():
    tensor = Tensor.from_array("t", [[1.0, 2.0]], {"p": 1})
    assert (tensor.name, tensor.datatype, tensor.shape, tensor.parameters) == (
        "t",
        "FP64",
        (1, 2),
        {"p": 1},
    )
    assert Tensor.from_array("t", np.array([1], dtype=np.int32)).parameters == {}


@pytest.mark.parametrize(
    ("array", "datatype", "expected_dtype", "expected"),
    [
        (np.array([1, 2], dtype=np.int64), "INT32", np.int32, [1, 2]),
        (np.array([1.5, 2.5]), "FP32", np.float32, [1.5, 2.5]),
        (np.array(["a", "b"]), "BYTES", object, [b"a", b"b"]),
        (np.array([1, 2]), "BYTES", object, [b"1", b"2"]),
        (np.array([b"a"], dtype=object), "BYTES", object, [b"a"]),
    ],
)
def test_cast_to(array, datatype, expected_dtype, expected):
    out = cast_to("o", array, datatype)
    assert out.dtype == np.dtype(expected_dtype)
    assert out.tolist() == expected


def test_cast_to_impossible_conversion_names_the_tensor():
    with pytest.raises(InvalidInput, match="tensor 'o': cannot convert to FP32"):
        cast_to("o", np.array(["abc"]), "FP32")


def test_fp16_json_is_written_as_exact_floats():
    array = from_json_data("x", "FP16", [2], [0.1, 1.5])
    decoded = _json_round_trip(array, "FP16")
    np.testing.assert_array_equal(np.array(decoded, dtype=np.float16), array)
