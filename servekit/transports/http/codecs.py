"""V2 JSON bodies <-> servekit types, with the binary tensor data extension in both directions.

Binary extension (as Triton defines it): the body starts with a JSON header whose length is in
the ``Inference-Header-Content-Length`` HTTP header; the raw tensors follow in input order, each
announced by ``parameters.binary_data_size``. Outputs are sent raw when the requested output has
``binary_data: true`` or the request has ``binary_data_output: true``.
"""

from __future__ import annotations

from typing import Any

import orjson

from servekit.errors import InvalidInput
from servekit.types.inference import InferenceRequest, InferenceResponse, RequestedOutput
from servekit.types.tensors import Tensor, from_json_data, from_raw, to_json_data, to_raw

HEADER_LENGTH = "inference-header-content-length"
BINARY_CONTENT_TYPE = "application/octet-stream"
JSON_CONTENT_TYPE = "application/json"
_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def loads(body: bytes | memoryview) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=_ORJSON_OPTIONS)


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: 'parameters' must be an object")
    return value


def _header_length(raw: str | None, body_length: int) -> int | None:
    if raw is None:
        return None
    try:
        length = int(raw)
    except ValueError:
        raise InvalidInput(
            f"Inference-Header-Content-Length must be an integer, got {raw!r}"
        ) from None
    if not 0 < length <= body_length:
        raise InvalidInput(
            f"Inference-Header-Content-Length {length} is outside the body (length {body_length})"
        )
    return length


def split_body(body: bytes, header_length: str | None) -> tuple[Any, memoryview]:
    """The parsed JSON part and the binary remainder (empty without the extension)."""
    length = _header_length(header_length, len(body))
    view = memoryview(body)
    if length is None:
        return loads(body), view[len(body) :]
    return loads(view[:length]), view[length:]


def decode_infer_request(body: bytes, header_length: str | None = None) -> InferenceRequest:
    document, binary = split_body(body, header_length)
    if not isinstance(document, dict):
        raise InvalidInput("request body must be a JSON object")
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("request must have a non-empty 'inputs' list")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("'id' must be a string")
    offset = 0
    tensors = []
    for index, item in enumerate(inputs):
        tensor, offset = _decode_input(item, index, binary, offset)
        tensors.append(tensor)
    if offset != len(binary):
        raise InvalidInput(
            f"binary data has {len(binary) - offset} bytes not claimed by any input's "
            "binary_data_size"
        )
    return InferenceRequest(
        inputs=tensors,
        id=request_id,
        parameters=_parameters(document.get("parameters"), "request"),
        outputs=_decode_requested_outputs(document.get("outputs")),
    )


def _decode_input(item: Any, index: int, binary: memoryview, offset: int) -> tuple[Tensor, int]:
    if not isinstance(item, dict):
        raise InvalidInput(f"inputs[{index}] must be an object")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"inputs[{index}] needs a 'name' string")
    datatype = item.get("datatype")
    if not isinstance(datatype, str):
        raise InvalidInput(f"input '{name}': needs a 'datatype' string")
    if "shape" not in item:
        raise InvalidInput(f"input '{name}': needs a 'shape'")
    parameters = _parameters(item.get("parameters"), f"input '{name}'")
    size = parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInput(f"input '{name}': binary_data_size must be a non-negative integer")
        if offset + size > len(binary):
            raise InvalidInput(
                f"input '{name}': binary_data_size {size} runs past the end of the body"
            )
        array = from_raw(name, datatype, item["shape"], binary[offset : offset + size])
        parameters = {k: v for k, v in parameters.items() if k != "binary_data_size"}
        return Tensor(name, datatype, array, parameters), offset + size
    if "data" not in item:
        raise InvalidInput(f"input '{name}': needs 'data' (or parameters.binary_data_size)")
    array = from_json_data(name, datatype, item["shape"], item["data"])
    return Tensor(name, datatype, array, parameters), offset


def _decode_requested_outputs(value: Any) -> list[RequestedOutput]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInput("'outputs' must be a list")
    outputs = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInput(f"outputs[{index}] must be an object with a 'name' string")
        outputs.append(
            RequestedOutput(
                item["name"], _parameters(item.get("parameters"), f"output '{item['name']}'")
            )
        )
    return outputs


def _wants_binary(output: Tensor, binary_by_default: bool) -> bool:
    flag = output.parameters.get("binary_data")
    return binary_by_default if flag is None else bool(flag)


def encode_infer_response(
    response: InferenceResponse, request_parameters: dict[str, Any]
) -> tuple[bytes, dict[str, str]]:
    """The body and the extra headers (the binary extension's header length, content type)."""
    binary_by_default = bool(request_parameters.get("binary_data_output", False))
    chunks: list[bytes] = []
    outputs = []
    for output in response.outputs:
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": output.shape,
        }
        if _wants_binary(output, binary_by_default):
            raw = to_raw(output.data, output.datatype)
            chunks.append(raw)
            entry["parameters"] = {"binary_data_size": len(raw)}
        else:
            entry["data"] = to_json_data(output.data, output.datatype)
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": response.model_name}
    if response.model_version is not None:
        document["model_version"] = response.model_version
    if response.id is not None:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = response.parameters
    document["outputs"] = outputs
    header = dumps(document)
    if not chunks:
        return header, {"content-type": JSON_CONTENT_TYPE}
    return b"".join([header, *chunks]), {
        "content-type": BINARY_CONTENT_TYPE,
        HEADER_LENGTH: str(len(header)),
    }
