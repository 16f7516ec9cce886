"""Open Inference Protocol (V2) REST endpoints: decode -> DataPlane -> encode."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from servekit.core.dataplane import DataPlane
from servekit.observe.monitoring.inline import outlier_header
from servekit.transports.http.codecs import (
    HEADER_LENGTH,
    JSON_CONTENT_TYPE,
    decode_infer_request,
    dumps,
    encode_infer_response,
)
from servekit.types.inference import InferenceRequest, RequestContext

PROTOCOL = "rest-v2"


def json_response(body: object, status: int = 200) -> Response:
    return Response(dumps(body), status_code=status, media_type=JSON_CONTENT_TYPE)


def dataplane_of(request: Request) -> DataPlane:
    return request.app.state.dataplane


def _version(request: Request) -> str | None:
    return request.path_params.get("version")


async def server_metadata(request: Request) -> Response:
    return json_response(dataplane_of(request).metadata.to_dict())


async def server_live(request: Request) -> Response:
    live = dataplane_of(request).live()
    return json_response({"live": live}, 200 if live else 503)


async def server_ready(request: Request) -> Response:
    ready = dataplane_of(request).ready()
    return json_response({"ready": ready}, 200 if ready else 503)


async def model_ready(request: Request) -> Response:
    name = request.path_params["name"]
    ready = dataplane_of(request).model_ready(name, _version(request))
    return json_response({"name": name, "ready": ready}, 200 if ready else 503)


async def model_metadata(request: Request) -> Response:
    metadata = dataplane_of(request).model_metadata(request.path_params["name"], _version(request))
    return json_response(metadata.to_dict())


def request_id(headers: dict[bytes, bytes]) -> str | None:
    value = headers.get(b"x-request-id")
    return value.decode(errors="replace") if value is not None else None


async def infer(
    dataplane: DataPlane,
    name: str,
    version: str | None,
    body: bytes,
    headers: dict[bytes, bytes],
    context: RequestContext,
) -> tuple[bytes, dict[str, str]]:
    """POST /v2/models/{name}[/versions/{version}]/infer (routed by ``asgi.InferenceASGI``)."""
    raw_length = headers.get(HEADER_LENGTH.encode())
    header_length = raw_length.decode(errors="replace") if raw_length is not None else None
    decoded: list[InferenceRequest] = []

    def decode() -> InferenceRequest:
        decoded.append(decode_infer_request(body, header_length))
        return decoded[0]

    response = await dataplane.infer(name, version, decode, context)
    content, extra = encode_infer_response(response, decoded[0].parameters)
    if response.parameters:
        extra.update(outlier_header(response.parameters))
    return content, extra


MODEL = "/v2/models/{name}"
VERSION = "/v2/models/{name}/versions/{version}"

routes = [
    Route("/v2", server_metadata, methods=["GET"]),
    Route("/v2/health/live", server_live, methods=["GET"]),
    Route("/v2/health/ready", server_ready, methods=["GET"]),
    Route(MODEL, model_metadata, methods=["GET"]),
    Route(VERSION, model_metadata, methods=["GET"]),
    Route(MODEL + "/ready", model_ready, methods=["GET"]),
    Route(VERSION + "/ready", model_ready, methods=["GET"]),
]
