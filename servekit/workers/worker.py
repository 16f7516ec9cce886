"""The loop a forked worker runs: receive a request, predict, send the outputs back.

It runs in a process forked from the zygote, so the model is already loaded (shared
copy-on-write). It is single-threaded and blocks on its socket, which costs nothing here: the
process exists to serve this one link. It exits when the server closes the link.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import Mapping
from typing import Any

from servekit.runtimes.base import Runtime
from servekit.workers.channel import Channel, Receiver, close_fds, send
from servekit.workers.remote import RemoteError

PREDICT = "predict"
OK = "ok"
ERROR = "error"


class _Predictor:
    """Calls the runtime's predict, sync or async, the way the executor would in-process."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._loop: asyncio.AbstractEventLoop | None = None

    def __call__(self, inputs: Any, outputs: Any, parameters: Any) -> Any:
        result = self._runtime.predict(inputs, outputs, parameters)
        if inspect.isawaitable(result):
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
            result = self._loop.run_until_complete(result)
        return result

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()


def serve(runtime: Runtime, sock: socket.socket) -> None:
    """Answer requests until the server closes the link."""
    channel = Channel()
    predict = _Predictor(runtime)
    receive = Receiver(sock)
    try:
        while True:
            received, fds = receive()
            if not received:
                return
            (op, outputs, parameters), inputs, extra = channel.unpack(received, fds)
            close_fds(extra)
            if op != PREDICT:
                return
            result = None
            try:
                result = predict(inputs, outputs, parameters)
                if isinstance(result, Mapping):
                    reply: tuple[tuple, Mapping | None] = ((OK, None), result)
                else:  # not what a runtime should return; the core reports it
                    reply = ((OK, result), None)
            except BaseException as exc:  # noqa: BLE001 - a model error is an answer, not a crash
                reply = ((ERROR, RemoteError.capture(exc)), None)
            del inputs, parameters
            try:
                record, fds = channel.pack(*reply)
            except Exception as exc:  # noqa: BLE001 - e.g. outputs that cannot be pickled
                reply = ((ERROR, RemoteError.capture(exc)), None)
                record, fds = channel.pack(*reply)
            # Drop the arrays (the outputs may be views of the request) before sealing, so the
            # channel sees whether the model kept the inputs: then the server must not
            # overwrite that memory with the next request.
            del reply, result
            channel.seal(record)
            try:
                send(sock, record, fds)
            finally:
                close_fds(fds)
    finally:
        predict.close()
        channel.close()
