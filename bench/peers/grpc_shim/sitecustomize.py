"""Lets Triton's perf_analyzer drive V2 gRPC servers that lack Triton's ``ModelConfig`` RPC.

perf_analyzer calls ``ModelConfig`` (and ``ModelStatistics``) once per run before it sends any
inference. The V2 protocol does not have these RPCs, so servekit, MLServer and KServe answer
UNIMPLEMENTED and perf_analyzer stops. With this folder on PYTHONPATH, Python imports this module
at start-up; it makes every gRPC server add, when it starts and after the server's own handlers,
one generic handler that answers exactly those two methods with empty messages (an empty model
config: no batching, no scheduler; no statistics). ``ModelInfer`` and every other method are
still found among the server's own handlers first, so the inference path is untouched.

The patch is applied when the server imports ``grpc``, not at start-up: gRPC reads its
``GRPC_EXPERIMENTS`` once, at import, and a server may set it first (servekit does).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from typing import Any

_SERVICE = "/inference.GRPCInferenceService/"
_METHODS = {_SERVICE + "ModelConfig", _SERVICE + "ModelStatistics"}


def _install() -> None:
    try:
        import grpc
        from grpc import _server as sync_server
        from grpc.aio import _server as aio_server
    except ImportError:
        return

    async def empty_async(request: bytes, context: Any) -> bytes:
        return b""

    def empty_sync(request: bytes, context: Any) -> bytes:
        return b""

    class ConfigShim(grpc.GenericRpcHandler):
        def __init__(self, behaviour: Any) -> None:
            self._handler = grpc.unary_unary_rpc_method_handler(behaviour)

        def service(self, handler_call_details: Any) -> Any:
            return self._handler if handler_call_details.method in _METHODS else None

    def patch(cls: Any, behaviour: Any) -> None:
        original = cls.start

        def start(self: Any) -> Any:
            self.add_generic_rpc_handlers((ConfigShim(behaviour),))
            return original(self)

        cls.start = start

    patch(aio_server.Server, empty_async)
    patch(sync_server._Server, empty_sync)


class _AfterGrpcImport(importlib.abc.MetaPathFinder):
    """Runs ``_install`` right after the ``grpc`` package itself has been executed."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "grpc":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("grpc")
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            execute(module)
            _install()

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if "grpc" in sys.modules:
    _install()
else:
    sys.meta_path.insert(0, _AfterGrpcImport())
