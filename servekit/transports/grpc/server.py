"""Build the gRPC server: the V2 inference service plus the standard ``grpc.health.v1`` service.

Health answers from ``DataPlane.ready()`` on every call instead of a status table that
something must keep in sync, so it can never disagree with ``ServerReady`` or REST's
``/v2/health/ready``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from servekit.core.dataplane import DataPlane
from servekit.errors import ConfigError
from servekit.settings import Settings
from servekit.transports.grpc.servicer import InferenceServicer
from servekit.transports.grpc.stubs import SERVICE_NAME, pb2_grpc

HEALTH_WATCH_INTERVAL = 1.0
"""Seconds between readiness checks while a client watches the health status."""

_Status = health_pb2.HealthCheckResponse.ServingStatus
_KNOWN_SERVICES = ("", SERVICE_NAME)  # "" is the whole server, as the health protocol says


class ReadinessHealthServicer(health_pb2_grpc.HealthServicer):
    """SERVING when the DataPlane is ready, NOT_SERVING otherwise."""

    def __init__(self, dataplane: DataPlane) -> None:
        self._dataplane = dataplane

    def _status(self, service: str) -> int:
        if service not in _KNOWN_SERVICES:
            return _Status.SERVICE_UNKNOWN
        return _Status.SERVING if self._dataplane.ready() else _Status.NOT_SERVING

    async def Check(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        status = self._status(request.service)
        if status == _Status.SERVICE_UNKNOWN:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def List(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        statuses = {
            name: health_pb2.HealthCheckResponse(status=self._status(name))
            for name in _KNOWN_SERVICES
        }
        return health_pb2.HealthListResponse(statuses=statuses)

    async def Watch(self, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        """Send the status now and again whenever it changes, until the client hangs up."""
        last = None
        while True:
            status = self._status(request.service)
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            await asyncio.sleep(HEALTH_WATCH_INTERVAL)


def _address(host: str, port: int) -> str:
    if ":" in host and not host.startswith("["):  # a bare IPv6 address
        host = f"[{host}]"
    return f"{host}:{port}"


def create_grpc_server(dataplane: DataPlane, settings: Settings) -> tuple[grpc.aio.Server, int]:
    """A bound, not yet started server and its port (useful when ``grpc_port`` is 0).

    Call it from the event loop that will run the server, then ``await server.start()``.
    Messages over ``max_request_bytes`` are refused by gRPC itself with RESOURCE_EXHAUSTED.
    The port is bound exclusively: gRPC's default (``SO_REUSEPORT``) lets a second server bind
    the same port and silently take a share of its calls.
    """
    limit = settings.max_request_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),
        ]
    )
    pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(dataplane), server)
    health_pb2_grpc.add_HealthServicer_to_server(ReadinessHealthServicer(dataplane), server)
    address = _address(settings.host, settings.grpc_port)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        raise ConfigError(
            f"cannot listen for gRPC on {address}: the port is in use or the address is not "
            "this machine's (choose another with --grpc-port)"
        ) from None
    return server, port
