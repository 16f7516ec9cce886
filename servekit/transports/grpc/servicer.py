"""The six V2 RPCs. Each one translates, calls the ``DataPlane`` and translates back: readiness,
routing, validation and metrics all live in the core, exactly as for REST."""

from __future__ import annotations

from functools import partial
from typing import Any

import grpc

from servekit.core.dataplane import DataPlane
from servekit.transports.grpc import converters
from servekit.transports.grpc.errors import map_errors
from servekit.transports.grpc.stubs import pb2
from servekit.types.inference import RequestContext

Context = grpc.aio.ServicerContext


def _headers(context: Context) -> dict[str, str]:
    """Text invocation metadata (binary ``-bin`` entries are left out)."""
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


class InferenceServicer:
    """``inference.GRPCInferenceService`` on top of one DataPlane."""

    def __init__(self, dataplane: DataPlane) -> None:
        self._dataplane = dataplane

    @map_errors
    async def ServerLive(self, request: Any, context: Context) -> Any:
        return pb2.ServerLiveResponse(live=self._dataplane.live())

    @map_errors
    async def ServerReady(self, request: Any, context: Context) -> Any:
        return pb2.ServerReadyResponse(ready=self._dataplane.ready())

    @map_errors
    async def ModelReady(self, request: Any, context: Context) -> Any:
        ready = self._dataplane.model_ready(request.name, request.version or None)
        return pb2.ModelReadyResponse(ready=ready)

    @map_errors
    async def ServerMetadata(self, request: Any, context: Context) -> Any:
        return converters.from_server_metadata(self._dataplane.metadata)

    @map_errors
    async def ModelMetadata(self, request: Any, context: Context) -> Any:
        metadata = self._dataplane.model_metadata(request.name, request.version or None)
        return converters.from_model_metadata(metadata)

    @map_errors
    async def ModelInfer(self, request: Any, context: Context) -> Any:
        request_context = RequestContext(
            protocol="grpc", request_id=request.id or None, headers=self._routing_headers(context)
        )
        response = await self._dataplane.infer(
            request.model_name,
            request.model_version or None,
            partial(converters.to_request, request),  # decode errors count with the model
            request_context,
        )
        trailing = [
            (key, value)
            for key, value in (
                ("x-request-id", request_context.request_id),
                ("x-servekit-served-by", request_context.served_by),
            )
            if value and value.isascii()
        ]
        if trailing:
            context.set_trailing_metadata(tuple(trailing))
        return converters.from_response(response, raw=converters.wants_raw_output(request))

    def _routing_headers(self, context: Context) -> dict[str, str]:
        """The metadata that deployments route on (variant, sticky, graph conditions), as REST
        passes them; nothing is read when no deployment is served (most calls)."""
        deployments = self._dataplane.deployments
        routing = deployments.routing_headers if deployments else ()
        if not routing:
            return {}
        return {k: v for k, v in _headers(context).items() if k.encode() in routing}

    # -- model repository extension ----------------------------------------------------------

    @map_errors
    async def RepositoryIndex(self, request: Any, context: Context) -> Any:
        rows = self._dataplane.repository_index(_token(context), request.ready)
        return pb2.RepositoryIndexResponse(
            models=[pb2.RepositoryIndexResponse.ModelIndex(**row) for row in rows]
        )

    @map_errors
    async def RepositoryModelLoad(self, request: Any, context: Context) -> Any:
        await self._dataplane.load_model(request.model_name, _token(context))
        return pb2.RepositoryModelLoadResponse()

    @map_errors
    async def RepositoryModelUnload(self, request: Any, context: Context) -> Any:
        await self._dataplane.unload_model(request.model_name, _token(context))
        return pb2.RepositoryModelUnloadResponse()


def _token(context: Context) -> str | None:
    """The admin token from an ``authorization`` metadata entry (``Bearer <token>`` or bare)."""
    value = _headers(context).get("authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token else value.strip()
