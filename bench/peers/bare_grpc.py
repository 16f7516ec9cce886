"""Ceiling: a bare grpc.aio V2 server; ModelInfer decodes the request, returns a fixed reply.

    python bench/peers/bare_grpc.py PORT PROTO_FILE tiny:4 medium:32

The V2 .proto is compiled at start-up into a temporary folder (grpcio-tools), so nothing is
generated in the repository. Health and metadata calls answer as a load generator needs.
"""

from __future__ import annotations

import asyncio
import importlib
import shutil
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

import grpc
from grpc_tools import protoc


def compile_proto(proto: Path) -> tuple[Any, Any]:
    """Generate and import ``*_pb2`` and ``*_pb2_grpc`` for ``proto``."""
    out = Path(tempfile.mkdtemp(prefix="bench-proto-"))
    shutil.copy(proto, out / "bench_v2.proto")
    include = str(Path(protoc.__file__).parent / "_proto")
    args = ["protoc", f"-I{out}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}"]
    if protoc.main([*args, str(out / "bench_v2.proto")]) != 0:
        raise RuntimeError(f"protoc failed on {proto}")
    sys.path.insert(0, str(out))
    return importlib.import_module("bench_v2_pb2"), importlib.import_module("bench_v2_pb2_grpc")


async def serve(port: int, proto: Path, models: dict[str, int]) -> None:
    pb2, pb2_grpc = compile_proto(proto)
    reply = pb2.ModelInferResponse(model_name="bare", model_version="1")
    reply.outputs.add(name="predict", datatype="INT64", shape=[1])
    reply.raw_output_contents.append(struct.pack("<q", 0))  # raw, as perf_analyzer's requests

    class Servicer(pb2_grpc.GRPCInferenceServiceServicer):
        async def ServerLive(self, request: Any, context: Any) -> Any:
            return pb2.ServerLiveResponse(live=True)

        async def ServerReady(self, request: Any, context: Any) -> Any:
            return pb2.ServerReadyResponse(ready=True)

        async def ModelReady(self, request: Any, context: Any) -> Any:
            return pb2.ModelReadyResponse(ready=request.name in models)

        async def ServerMetadata(self, request: Any, context: Any) -> Any:
            return pb2.ServerMetadataResponse(name="bare-grpc", version="0")

        async def ModelMetadata(self, request: Any, context: Any) -> Any:
            if request.name not in models:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.name}")
            meta = pb2.ModelMetadataResponse(name=request.name, versions=["1"], platform="bare")
            meta.inputs.add(name="input-0", datatype="FP32", shape=[-1, models[request.name]])
            meta.outputs.add(name="predict", datatype="INT64", shape=[-1])
            return meta

        async def ModelInfer(self, request: Any, context: Any) -> Any:
            return reply

    server = grpc.aio.server()
    pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    specs = dict(arg.split(":") for arg in sys.argv[3:])
    asyncio.run(serve(int(sys.argv[1]), Path(sys.argv[2]), {k: int(v) for k, v in specs.items()}))
