"""V1 / TF-Serving REST API, as KServe and TF Serving speak it.

``{"instances": [...]}`` (row format) answers ``{"predictions": [...]}`` with the model's first
output, as KServe's framework servers do. ``{"inputs": ...}`` (columnar) answers
``{"outputs": ...}``: the bare output when the model has one, ``{name: value}`` when several.
Both go through the same DataPlane as V2 and gRPC.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from servekit.core.dataplane import DataPlane
from servekit.errors import InvalidInput
from servekit.transports.http.codecs import JSON_CONTENT_TYPE, dumps, loads
from servekit.transports.http.v2 import dataplane_of, json_response
from servekit.types.inference import InferenceRequest, RequestContext, RequestedOutput
from servekit.types.metadata import TensorSpec
from servekit.types.tensors import Tensor, datatype_of, to_json_data

PROTOCOL = "rest-v1"


async def list_models(request: Request) -> Response:
    """Every name ``:predict`` answers: the models, then the deployments (services, graphs)."""
    dataplane = dataplane_of(request)
    names = list(dataplane.registry.names())
    if dataplane.deployments is not None:
        names += [n for n in dataplane.deployments.names() if n not in names]
    return json_response({"models": names})


async def model_status(request: Request) -> Response:
    """KServe's ``{name, ready}`` and TF Serving's ``model_version_status`` in one answer."""
    dataplane = dataplane_of(request)
    name = request.path_params["name"]
    version = request.path_params.get("version")
    if dataplane.deployments is not None and dataplane.deployments.get(name) is not None:
        ready = dataplane.model_ready(name)  # a service or graph: ready when what it calls is
        return json_response({"name": name, "ready": ready}, 200 if ready else 503)
    default = dataplane.registry.get(name, version)
    versions = [version] if version else dataplane.registry.versions(name)
    statuses = []
    for v in versions:
        handle = dataplane.registry.get(name, v)
        statuses.append(
            {
                "version": handle.version,
                "state": "AVAILABLE" if handle.ready else handle.state.value,
                "status": {
                    "error_code": "OK" if not handle.error else "UNKNOWN",
                    "error_message": handle.error or "",
                },
            }
        )
    return json_response(
        {"name": name, "ready": default.ready, "model_version_status": statuses},
        200 if default.ready else 503,
    )


def _array(name: str, values: Any) -> Tensor:
    try:
        array = np.asarray(values)
    except ValueError as exc:
        raise InvalidInput(f"input '{name}': ragged data: {exc}") from None
    if array.dtype.kind not in "biufUS":
        raise InvalidInput(f"input '{name}': values must be numbers, booleans or strings")
    if array.dtype.kind == "U":
        array = np.char.encode(array, "utf-8").astype(object)
    return Tensor(name, datatype_of(array), array)


def _to_request(document: Any, declared: list[TensorSpec]) -> tuple[InferenceRequest, bool]:
    if not isinstance(document, dict):
        raise InvalidInput("request body must be a JSON object")
    row_format = "instances" in document
    if row_format == ("inputs" in document):
        raise InvalidInput("request must have exactly one of 'instances' or 'inputs'")
    payload = document["instances" if row_format else "inputs"]
    default_name = declared[0].name if declared else "input-0"
    if row_format and isinstance(payload, list) and payload and isinstance(payload[0], dict):
        names = list(payload[0])
        try:
            columns = {n: [row[n] for row in payload] for n in names}
        except (KeyError, TypeError):
            raise InvalidInput("every instance must be an object with the same keys") from None
        tensors = [_array(n, v) for n, v in columns.items()]
    elif not row_format and isinstance(payload, dict):
        tensors = [_array(n, v) for n, v in payload.items()]
    else:
        if not isinstance(payload, list):
            raise InvalidInput(
                "'instances' must be a list"
                if row_format
                else "'inputs' must be a list or an object"
            )
        tensors = [_array(default_name, payload)]
    return InferenceRequest(inputs=tensors), row_format


async def predict(
    dataplane: DataPlane,
    name: str,
    version: str | None,
    body: bytes,
    headers: dict[bytes, bytes],
    context: RequestContext,
) -> tuple[bytes, dict[str, str]]:
    """POST /v1/models/{name}[/versions/{version}]:predict (routed by ``asgi.InferenceASGI``)."""
    row_format = True

    def decode() -> InferenceRequest:
        nonlocal row_format
        inputs, outputs = dataplane.declared_io(name, version)
        decoded, row_format = _to_request(loads(body), inputs)
        if row_format and outputs:
            decoded.outputs = [RequestedOutput(outputs[0].name)]
        return decoded

    response = await dataplane.infer(name, version, decode, context)
    values = {o.name: _nested(o) for o in response.outputs}
    if row_format:
        document: dict[str, Any] = {"predictions": next(iter(values.values()), [])}
    else:
        document = {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    return dumps(document), {"content-type": JSON_CONTENT_TYPE}


def _nested(tensor: Tensor) -> Any:
    data = to_json_data(tensor.data, tensor.datatype)
    if isinstance(data, np.ndarray):
        return data.reshape(tensor.shape).tolist()
    return np.asarray(data, dtype=object).reshape(tensor.shape).tolist()


routes = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{name}", model_status, methods=["GET"]),
    Route("/v1/models/{name}/versions/{version}", model_status, methods=["GET"]),
]
