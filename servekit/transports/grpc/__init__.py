"""The Open Inference Protocol (V2) over gRPC, plus the standard gRPC health service."""

from servekit.transports.grpc.poller import lower_poller_priority
from servekit.transports.grpc.server import create_grpc_server

__all__ = ["create_grpc_server", "lower_poller_priority"]
