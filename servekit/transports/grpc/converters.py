"""V2 gRPC messages <-> servekit types.

Inputs come either as ``raw_input_contents`` (what tritonclient always sends; the only way to
send FP16) or as the typed ``InferTensorContents`` field of their datatype. Raw inputs become
zero-copy, read-only ``np.frombuffer`` views; typed ones one ``np.asarray`` over the repeated
field (protobuf's upb backend hands numpy the values without a Python loop).

Outputs use the representation the client used for its inputs:

* raw ``raw_output_contents`` when the request sent ``raw_input_contents``: one memcpy per
  tensor, the fastest form, and the only numeric form tritonclient's ``InferResult.as_numpy``
  reads (it returns typed numeric contents as empty arrays);
* typed contents otherwise, so a client that builds typed messages by hand (or grpcurl) reads
  the answer the same way.

A request parameter ``binary_data_output`` (bool, the name the REST binary extension uses)
overrides the choice. An FP16 output has no typed field, so it makes the whole response raw:
the protocol lets a response use raw or typed contents, never both.

Typed FP32/FP64 outputs, and BOOL or integer outputs whose values all fit in one varint byte
(0..127: class labels, counts), are written as protobuf's packed wire bytes straight from numpy
and parsed in one call, 3-10x faster than ``RepeatedField.extend``; other integers use
``extend(array.tolist())``, a loop in C. Only BYTES tensors take a per-element Python step.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from servekit.errors import InvalidInput
from servekit.transports.grpc.stubs import pb2
from servekit.types.inference import (
    InferenceRequest,
    InferenceResponse,
    Parameters,
    RequestedOutput,
)
from servekit.types.metadata import ModelMetadata, ServerMetadata, TensorSpec
from servekit.types.tensors import (
    NUMPY_DTYPES,
    Tensor,
    check_shape,
    element_count,
    numpy_dtype,
    to_raw,
    view_raw,
)

RAW_OUTPUT_PARAMETER = "binary_data_output"

# datatype -> (InferTensorContents field, the numpy dtype of that field's values)
_CONTENTS: dict[str, tuple[str, np.dtype]] = {
    "BOOL": ("bool_contents", np.dtype("?")),
    "INT8": ("int_contents", np.dtype("<i4")),
    "INT16": ("int_contents", np.dtype("<i4")),
    "INT32": ("int_contents", np.dtype("<i4")),
    "INT64": ("int64_contents", np.dtype("<i8")),
    "UINT8": ("uint_contents", np.dtype("<u4")),
    "UINT16": ("uint_contents", np.dtype("<u4")),
    "UINT32": ("uint_contents", np.dtype("<u4")),
    "UINT64": ("uint64_contents", np.dtype("<u8")),
    "FP32": ("fp32_contents", np.dtype("<f4")),
    "FP64": ("fp64_contents", np.dtype("<f8")),
    "BYTES": ("bytes_contents", np.dtype(object)),
}
_FIELD_NUMBER = {f.name: f.number for f in pb2.InferTensorContents.DESCRIPTOR.fields}
_LENGTH_DELIMITED = 2

# -- parameters ------------------------------------------------------------------------------


def to_parameters(params: Mapping[str, Any]) -> Parameters:
    """A ``map<string, InferParameter>`` as plain Python values; unset values are dropped."""
    out: Parameters = {}
    for key, param in params.items():
        which = param.WhichOneof("parameter_choice")
        if which is not None:
            out[key] = getattr(param, which)
    return out


def set_parameters(target: Any, params: Mapping[str, Any]) -> None:
    """Fill a ``map<string, InferParameter>``. ``None`` is skipped; values the protocol has no
    field for (lists, dicts) are sent as JSON strings."""
    for key, value in params.items():
        if value is not None:
            _set_parameter(target[str(key)], value)


def _set_parameter(param: Any, value: Any) -> None:
    if isinstance(value, bool | np.bool_):
        param.bool_param = bool(value)
    elif isinstance(value, int | np.integer):
        number = int(value)
        if -(2**63) <= number < 2**63:
            param.int64_param = number
        elif 0 <= number < 2**64:
            param.uint64_param = number
        else:
            param.string_param = str(number)
    elif isinstance(value, float | np.floating):
        param.double_param = float(value)
    elif isinstance(value, str):
        param.string_param = value
    elif isinstance(value, bytes):
        param.string_param = value.decode("utf-8", errors="replace")
    else:
        param.string_param = json.dumps(value, default=str)


# -- requests --------------------------------------------------------------------------------


def to_request(message: Any) -> InferenceRequest:
    """Decode a ``ModelInferRequest``; every problem is an InvalidInput naming the input.

    Empty maps and lists are not walked: most requests carry no parameters and ask for no
    outputs by name, and on a loaded server each skipped protobuf access counts."""
    raw = message.raw_input_contents
    declared = message.inputs
    if raw:
        if len(raw) != len(declared):
            raise InvalidInput(
                f"raw_input_contents has {len(raw)} entries for {len(declared)} inputs; "
                "send one per input, in input order"
            )
        inputs = [_to_tensor(tensor, data) for tensor, data in zip(declared, raw, strict=True)]
    else:
        inputs = [_to_tensor(tensor, None) for tensor in declared]
    parameters, outputs = message.parameters, message.outputs
    return InferenceRequest(
        inputs=inputs,
        id=message.id or None,
        parameters=to_parameters(parameters) if parameters else {},
        outputs=[RequestedOutput(o.name, to_parameters(o.parameters)) for o in outputs]
        if outputs
        else [],
    )


def _to_tensor(tensor: Any, raw: bytes | None) -> Tensor:
    name, datatype = tensor.name, tensor.datatype
    if raw is not None:
        if tensor.HasField("contents") and (given := tensor.contents.ListFields()):
            raise InvalidInput(
                f"input '{name}': both raw_input_contents and contents.{given[0][0].name} "
                "are given; use one"
            )
        shape = tuple(tensor.shape)  # protobuf ints: only their sign needs checking
        if shape and min(shape) < 0:
            check_shape(name, list(shape))  # raises, with the usual message
        data = view_raw(name, datatype, shape, raw)
    else:
        data = _from_contents(name, datatype, list(tensor.shape), tensor.contents)
    parameters = tensor.parameters
    return Tensor(name, datatype, data, to_parameters(parameters) if parameters else {})


def _from_contents(name: str, datatype: str, shape: list[int], contents: Any) -> np.ndarray:
    checked = check_shape(name, shape)
    dtype = numpy_dtype(datatype, name=name)
    if datatype not in _CONTENTS:
        raise InvalidInput(f"input '{name}': {datatype} data must be sent in raw_input_contents")
    field, wire_dtype = _CONTENTS[datatype]
    wrong = [f.name for f, _ in contents.ListFields() if f.name != field]
    if wrong:
        raise InvalidInput(f"input '{name}': datatype {datatype} takes {field}, got {wrong[0]}")
    values = getattr(contents, field)
    if datatype == "BYTES":
        array = np.empty(len(values), dtype=object)
        array[:] = list(values)
    else:
        wide = np.asarray(values, dtype=wire_dtype)
        array = wide.astype(dtype, copy=False)
        if dtype.itemsize < wire_dtype.itemsize and not np.array_equal(array, wide):
            raise InvalidInput(f"input '{name}': values out of range for {datatype}")
    expected = element_count(checked)
    if array.size != expected:
        raise InvalidInput(
            f"input '{name}': shape {shape} needs {expected} elements, got {array.size}"
        )
    return array.reshape(checked)


def wants_raw_output(message: Any) -> bool:
    """Raw outputs if the request asks (``binary_data_output``) or itself used raw inputs."""
    params = message.parameters
    if params and RAW_OUTPUT_PARAMETER in params:
        param = params[RAW_OUTPUT_PARAMETER]
        if param.WhichOneof("parameter_choice") == "bool_param":
            return bool(param.bool_param)
    return len(message.raw_input_contents) > 0


# -- responses -------------------------------------------------------------------------------


def from_response(response: InferenceResponse, *, raw: bool) -> Any:
    """Encode a ``ModelInferResponse``; see the module docstring for raw versus typed."""
    message = pb2.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version or "",
        id=response.id or "",
    )
    if response.parameters:
        set_parameters(message.parameters, response.parameters)
    tensors = response.outputs
    if not raw:
        raw = not all(t.datatype in _CONTENTS for t in tensors)
    added = message.outputs
    for tensor in tensors:
        out = added.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.data.shape)
        if tensor.parameters:
            set_parameters(out.parameters, tensor.parameters)
        if not raw:
            fill_contents(out.contents, tensor)
    if raw:
        message.raw_output_contents.extend([to_raw(t.data, t.datatype) for t in tensors])
    return message


def contents_field(datatype: str) -> str:
    """The ``InferTensorContents`` field that carries ``datatype`` (KeyError for FP16)."""
    return _CONTENTS[datatype][0]


def fill_contents(contents: Any, tensor: Tensor) -> None:
    """Write ``tensor`` into an ``InferTensorContents`` (see the module docstring for how)."""
    field, wire_dtype = _CONTENTS[tensor.datatype]
    values = getattr(contents, field)
    if tensor.datatype == "BYTES":
        values.extend(
            [x if isinstance(x, bytes) else str(x).encode() for x in tensor.data.reshape(-1)]
        )
        return
    flat = np.asarray(tensor.data, dtype=NUMPY_DTYPES[tensor.datatype]).reshape(-1)
    if flat.size == 0:
        return
    if wire_dtype.kind == "f":  # float and double are packed as fixed-width little-endian
        payload = flat.astype(wire_dtype, copy=False).tobytes()
    elif wire_dtype.kind == "b" or (flat.min() >= 0 and flat.max() < 0x80):
        payload = flat.astype(np.uint8).tobytes()  # varints of 0..127 are one byte each
    else:  # larger varints: protobuf's own C loop (no Python work per element)
        values.extend(flat.tolist())
        return
    tag = _FIELD_NUMBER[field] << 3 | _LENGTH_DELIMITED
    contents.MergeFromString(_varint(tag) + _varint(len(payload)) + payload)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# -- metadata --------------------------------------------------------------------------------


def from_server_metadata(metadata: ServerMetadata) -> Any:
    return pb2.ServerMetadataResponse(
        name=metadata.name, version=metadata.version, extensions=list(metadata.extensions)
    )


def from_model_metadata(metadata: ModelMetadata) -> Any:
    return pb2.ModelMetadataResponse(
        name=metadata.name,
        versions=metadata.versions,
        platform=metadata.platform,
        inputs=[_tensor_metadata(spec) for spec in metadata.inputs],
        outputs=[_tensor_metadata(spec) for spec in metadata.outputs],
        properties={str(k): str(v) for k, v in metadata.properties.items()},
    )


def _tensor_metadata(spec: TensorSpec) -> Any:
    return pb2.ModelMetadataResponse.TensorMetadata(
        name=spec.name, datatype=spec.datatype, shape=list(spec.shape)
    )
