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
            protocol="grpc", request_id=request.id or None, headers=_headers(context)
        )
        response = await self._dataplane.infer(
            request.model_name,
            request.model_version or None,
            partial(converters.to_request, request),  # decode errors count with the model
            request_context,
        )
        return converters.from_response(response, raw=converters.wants_raw_output(request))
