"""The model repository extension (as Triton and MLServer expose it): index, load, unload."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from servekit.errors import InvalidInput
from servekit.transports.http.codecs import loads
from servekit.transports.http.v2 import dataplane_of, json_response


def bearer_token(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


async def index(request: Request) -> Response:
    body = await request.body()
    document = loads(body) if body.strip() else {}
    if not isinstance(document, dict):
        raise InvalidInput("request body must be a JSON object")
    ready_only = bool(document.get("ready", False))
    return json_response(dataplane_of(request).repository_index(bearer_token(request), ready_only))


async def load(request: Request) -> Response:
    await dataplane_of(request).load_model(request.path_params["name"], bearer_token(request))
    return json_response({})


async def unload(request: Request) -> Response:
    await dataplane_of(request).unload_model(request.path_params["name"], bearer_token(request))
    return json_response({})


routes = [
    Route("/v2/repository/index", index, methods=["POST"]),
    Route("/v2/repository/models/{name}/load", load, methods=["POST"]),
    Route("/v2/repository/models/{name}/unload", unload, methods=["POST"]),
]
