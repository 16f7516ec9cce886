"""Message classes and service glue for ``inference.proto``, built when this module is imported.

No generated ``*_pb2.py`` is written anywhere: the bundled protoc of grpcio-tools compiles the
.proto into a descriptor set in a throw-away temporary folder (a few milliseconds), so nothing
is ever written next to the package (read-only site-packages and zip installs work) and no
generated code can fall out of step with the installed protobuf runtime.

Why a private descriptor pool: tritonclient.grpc registers its ``grpc_service.proto`` in
protobuf's *default* pool with the same ``inference.*`` message names. Adding ours to that pool
fails in either import order ("duplicate symbol 'inference.ServerLiveRequest'"), which would
make servekit and tritonclient unusable in one process. Classes from a private pool encode the
same bytes on the wire, and the method paths (``/inference.GRPCInferenceService/ModelInfer``)
come from the same full names, so every V2 client still talks to us.

``pb2`` and ``pb2_grpc`` mimic the modules protoc would generate: ``pb2.ModelInferRequest``,
``pb2_grpc.GRPCInferenceServiceStub(channel)``,
``pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)``.
"""

from __future__ import annotations

import tempfile
import types
from importlib import resources
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FileDescriptor, ServiceDescriptor

PROTO_FILE = "inference.proto"


def _compile(proto: Path) -> bytes:
    """Serialized FileDescriptorSet for ``proto``, compiled by grpcio-tools' protoc."""
    from grpc_tools import protoc  # only needed once, at import

    with tempfile.TemporaryDirectory(prefix="servekit-grpc-") as tmp:
        out = Path(tmp) / "inference.pb"
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"--proto_path={proto.parent}",
                f"--descriptor_set_out={out}",
                proto.name,
            ]
        )
        if status != 0 or not out.is_file():
            raise RuntimeError(f"protoc could not compile {proto} (exit status {status})")
        return out.read_bytes()


def _load_file_descriptor() -> FileDescriptor:
    source = resources.files(__package__).joinpath(PROTO_FILE)
    with resources.as_file(source) as proto:  # a real file even from a zip install
        serialized = _compile(proto)
    pool = descriptor_pool.DescriptorPool()
    for file in descriptor_pb2.FileDescriptorSet.FromString(serialized).file:
        pool.Add(file)
    return pool.FindFileByName(PROTO_FILE)


def _build_pb2(file: FileDescriptor) -> types.ModuleType:
    module = types.ModuleType(f"{__package__}.inference_pb2", "Messages of inference.proto.")
    module.DESCRIPTOR = file  # type: ignore[attr-defined]
    for name, message in file.message_types_by_name.items():
        setattr(module, name, message_factory.GetMessageClass(message))
    return module


def _codec(method: Any) -> tuple[Any, Any]:
    """(request class, response class) of one RPC."""
    return (
        message_factory.GetMessageClass(method.input_type),
        message_factory.GetMessageClass(method.output_type),
    )


def _method_handlers(service: ServiceDescriptor, servicer: Any) -> dict[str, grpc.RpcMethodHandler]:
    handlers = {}
    for method in service.methods:
        request, response = _codec(method)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )
    return handlers


def _build_pb2_grpc(service: ServiceDescriptor) -> types.ModuleType:
    module = types.ModuleType(f"{__package__}.inference_pb2_grpc", "Service glue.")

    class GRPCInferenceServiceStub:
        """Client: one callable attribute per RPC, for ``grpc`` and ``grpc.aio`` channels."""

        def __init__(self, channel: grpc.Channel | grpc.aio.Channel) -> None:
            for method in service.methods:
                request, response = _codec(method)
                call = channel.unary_unary(
                    f"/{service.full_name}/{method.name}",
                    request_serializer=request.SerializeToString,
                    response_deserializer=response.FromString,
                    _registered_method=True,
                )
                setattr(self, method.name, call)

    def add_GRPCInferenceServiceServicer_to_server(
        servicer: Any, server: grpc.Server | grpc.aio.Server
    ) -> None:
        handlers = _method_handlers(service, servicer)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service.full_name, handlers),)
        )
        server.add_registered_method_handlers(service.full_name, handlers)

    module.GRPCInferenceServiceStub = GRPCInferenceServiceStub  # type: ignore[attr-defined]
    module.add_GRPCInferenceServiceServicer_to_server = (  # type: ignore[attr-defined]
        add_GRPCInferenceServiceServicer_to_server
    )
    return module


DESCRIPTOR: FileDescriptor = _load_file_descriptor()
pb2: Any = _build_pb2(DESCRIPTOR)
SERVICE: ServiceDescriptor = DESCRIPTOR.services_by_name["GRPCInferenceService"]
SERVICE_NAME: str = SERVICE.full_name
pb2_grpc: Any = _build_pb2_grpc(SERVICE)

__all__ = ["DESCRIPTOR", "SERVICE", "SERVICE_NAME", "pb2", "pb2_grpc"]
