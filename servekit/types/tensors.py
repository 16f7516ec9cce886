"""V2 datatypes <-> numpy, and the tensor value that flows through the core.

Conversions are vectorised: JSON arrays go through ``np.asarray`` once, raw bytes (gRPC
``raw_*_contents`` and the REST binary extension) become ``np.frombuffer`` views. Only BYTES
tensors need a per-element loop, because each element carries its own length.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servekit.errors import InvalidInput

# Little-endian dtypes, as the protocol's raw representation requires.
NUMPY_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
DATATYPES: tuple[str, ...] = tuple(NUMPY_DTYPES)
_INTEGER_DATATYPES = frozenset(d for d, t in NUMPY_DTYPES.items() if t.kind in "iu")
_NUMERIC_KINDS = frozenset("iuf")


def datatype_kind(datatype: str) -> str:
    """'numeric', 'bool' or 'bytes': the families between which no implicit cast happens."""
    if datatype == "BYTES":
        return "bytes"
    if datatype == "BOOL":
        return "bool"
    return "numeric"


def numpy_dtype(datatype: str, *, name: str = "") -> np.dtype:
    try:
        return NUMPY_DTYPES[datatype]
    except (KeyError, TypeError):
        where = f"input '{name}': " if name else ""
        raise InvalidInput(
            f"{where}unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}"
        ) from None


def datatype_of(array: np.ndarray) -> str:
    """The V2 datatype that represents ``array``'s dtype."""
    kind = array.dtype.kind
    if kind == "b":
        return "BOOL"
    if kind in "OUS":
        return "BYTES"
    if kind == "f":
        return {2: "FP16", 4: "FP32"}.get(array.dtype.itemsize, "FP64")
    if kind in "iu":
        prefix = "INT" if kind == "i" else "UINT"
        return f"{prefix}{array.dtype.itemsize * 8}"
    raise TypeError(f"numpy dtype {array.dtype} has no V2 datatype")


def element_count(shape: tuple[int, ...] | list[int]) -> int:
    return math.prod(shape)


@dataclass(slots=True)
class Tensor:
    """A named, typed n-d array. ``data.shape`` is the tensor's shape."""

    name: str
    datatype: str
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @classmethod
    def from_array(cls, name: str, array: Any, parameters: dict | None = None) -> Tensor:
        array = np.asarray(array)
        return cls(name, datatype_of(array), array, parameters or {})


def check_shape(name: str, shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidInput(
            f"input '{name}': shape must be a list of non-negative integers, got {shape!r}"
        )
    return tuple(shape)


def _reshape(name: str, array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    expected = element_count(shape)
    if array.size != expected:
        raise InvalidInput(
            f"input '{name}': shape {list(shape)} needs {expected} elements, got {array.size}"
        )
    return array.reshape(shape)


def from_json_data(name: str, datatype: str, shape: Any, data: Any) -> np.ndarray:
    """Build the array for a JSON ``data`` field (flat or nested) and check it fits ``shape``."""
    shape = check_shape(name, shape)
    dtype = numpy_dtype(datatype, name=name)
    if not isinstance(data, list):
        data = [data]
    if datatype == "BYTES":
        return _reshape(name, _bytes_from_json(name, data), shape)
    try:
        if datatype in _INTEGER_DATATYPES or datatype == "BOOL":
            raw = np.asarray(data)
            if datatype != "BOOL" and raw.size and raw.dtype.kind in "fO":
                exact = _large_integers(name, datatype, data)
                if exact is not None:
                    return _reshape(name, exact, shape)
            if raw.size and not _json_kind_fits(raw.dtype.kind, datatype):
                raise InvalidInput(
                    f"input '{name}': data does not match datatype {datatype} "
                    f"(found {_describe_kind(raw.dtype.kind)} values)"
                )
            array = raw.astype(dtype, casting="unsafe") if raw.size else raw.astype(dtype)
            if datatype != "BOOL" and raw.size and not np.array_equal(array, raw):
                raise InvalidInput(f"input '{name}': values out of range for {datatype}")
        else:
            raw = np.asarray(data)
            if raw.size and not _json_kind_fits(raw.dtype.kind, datatype, raw):
                raise InvalidInput(
                    f"input '{name}': data does not match datatype {datatype} "
                    f"(found {_describe_kind(raw.dtype.kind)} values)"
                )
            with np.errstate(over="raise"):
                array = raw.astype(dtype, copy=False)
    except InvalidInput:
        raise
    except FloatingPointError:
        raise InvalidInput(f"input '{name}': values out of range for {datatype}") from None
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(
            f"input '{name}': data does not match datatype {datatype}: {exc}"
        ) from None
    return _reshape(name, array, shape)


def _large_integers(name: str, datatype: str, data: list) -> np.ndarray | None:
    """Ints numpy only holds as float64 or object (``[0, 2**64 - 1]``, ``[-1, 2**63]``), exactly."""
    exact = np.asarray(data, dtype=object)
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in exact.flat):
        return None
    info = np.iinfo(NUMPY_DTYPES[datatype])
    if any(x < info.min or x > info.max for x in exact.flat):
        raise InvalidInput(f"input '{name}': values out of range for {datatype}")
    return exact.astype(NUMPY_DTYPES[datatype])


def _json_kind_fits(kind: str, datatype: str, raw: np.ndarray | None = None) -> bool:
    if datatype == "BOOL":
        return kind == "b"
    if datatype in _INTEGER_DATATYPES:
        return kind in "iu"
    if kind == "O" and raw is not None:  # ints too large for int64/uint64 are still numbers
        return all(isinstance(x, int | float) and not isinstance(x, bool) for x in raw.flat)
    return kind in "iuf"


def _describe_kind(kind: str) -> str:
    return {"f": "floating-point", "b": "boolean", "U": "string", "O": "mixed or nested"}.get(
        kind, f"'{kind}'"
    )


def _bytes_from_json(name: str, data: list) -> np.ndarray:
    try:
        nested = np.array(data, dtype=object)
    except ValueError as exc:
        raise InvalidInput(f"input '{name}': ragged nested data: {exc}") from None
    flat = nested.reshape(-1)
    out = np.empty(flat.size, dtype=object)
    for i, item in enumerate(flat):
        if isinstance(item, str):
            out[i] = item.encode()
        elif isinstance(item, bytes):
            out[i] = item
        else:
            raise InvalidInput(
                f"input '{name}': BYTES data must be strings, got {type(item).__name__}"
            )
    return out.reshape(nested.shape)


def from_raw(name: str, datatype: str, shape: Any, buffer: bytes | memoryview) -> np.ndarray:
    """View raw little-endian bytes as the tensor (no copy for fixed-size datatypes)."""
    return view_raw(name, datatype, check_shape(name, shape), buffer)


def view_raw(
    name: str, datatype: str, shape: tuple[int, ...], buffer: bytes | memoryview
) -> np.ndarray:
    """``from_raw`` for a shape already known to be non-negative ints (``check_shape``'s
    result, or a protobuf's repeated int64 whose signs were checked)."""
    dtype = numpy_dtype(datatype, name=name)
    if datatype == "BYTES":
        return _reshape(name, _split_length_prefixed(name, buffer), shape)
    expected = element_count(shape) * dtype.itemsize
    if len(buffer) != expected:
        raise InvalidInput(
            f"input '{name}': shape {list(shape)} of {datatype} needs {expected} bytes, "
            f"got {len(buffer)}"
        )
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def _split_length_prefixed(name: str, buffer: bytes | memoryview) -> np.ndarray:
    view = memoryview(buffer)
    items: list[bytes] = []
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise InvalidInput(f"input '{name}': truncated BYTES element length")
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidInput(f"input '{name}': BYTES element overruns the buffer")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def to_raw(array: np.ndarray, datatype: str) -> bytes:
    """Serialise a tensor to the protocol's flat, row-major, little-endian raw form."""
    if datatype == "BYTES":
        parts: list[bytes] = []
        for item in array.reshape(-1):
            encoded = _as_bytes(item)
            parts.append(struct.pack("<I", len(encoded)))
            parts.append(encoded)
        return b"".join(parts)
    dtype = NUMPY_DTYPES[datatype]
    if array.dtype == dtype:  # the common case: tobytes() already writes row-major order
        return array.tobytes()
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def _as_bytes(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode()
    return str(item).encode()


def to_json_data(array: np.ndarray, datatype: str) -> Any:
    """A flat value orjson can write: numpy arrays natively, BYTES as a list of strings."""
    if datatype == "BYTES":
        return [
            item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)
            for item in array.reshape(-1)
        ]
    if datatype == "FP16":
        return array.reshape(-1).astype(np.float32)
    flat = array.reshape(-1)
    if not flat.dtype.isnative:
        flat = flat.astype(flat.dtype.newbyteorder("="))
    return np.ascontiguousarray(flat)


def cast_to(name: str, array: np.ndarray, datatype: str) -> np.ndarray:
    """Cast an output array to a declared datatype (e.g. int64 labels declared INT32)."""
    try:
        if datatype == "BYTES":
            if array.dtype.kind in "OS":
                return array
            return np.array([_as_bytes(x) for x in array.reshape(-1)], dtype=object).reshape(
                array.shape
            )
        return array.astype(NUMPY_DTYPES[datatype], copy=False)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"tensor '{name}': cannot convert to {datatype}: {exc}") from None


def is_numeric_kind(array: np.ndarray) -> bool:
    return array.dtype.kind in _NUMERIC_KINDS
