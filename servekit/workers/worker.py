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

import numpy as np

from servekit.runtimes.base import Runtime
from servekit.workers.channel import INBAND_MAX, Channel, close_fds, recv, send
from servekit.workers.remote import RemoteError

PREDICT = "predict"
OK = "ok"
ERROR = "error"


def _contiguous(outputs: Any) -> Any:
    """Large non-contiguous arrays would be pickled in-band; copy them once into C order."""
    if not isinstance(outputs, Mapping):
        return outputs
    prepared = {}
    for name, value in outputs.items():
        if (
            isinstance(value, np.ndarray)
            and value.nbytes > INBAND_MAX
            and value.dtype.kind != "O"
            and not (value.flags.c_contiguous or value.flags.f_contiguous)
        ):
            value = np.ascontiguousarray(value)
        prepared[name] = value
    return prepared


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
    try:
        while True:
            record, fds = recv(sock)
            if not record:
                return
            (op, *args), extra = channel.unpack(record, fds)
            close_fds(extra)
            if op != PREDICT:
                return
            try:
                reply: tuple[str, Any] = (OK, _contiguous(predict(*args)))
            except BaseException as exc:  # noqa: BLE001 - a model error is an answer, not a crash
                reply = (ERROR, RemoteError.capture(exc))
            del args  # release the views of the request before packing (see Channel)
            record, fds = channel.pack(reply)
            del reply
            try:
                send(sock, record, fds)
            finally:
                close_fds(fds)
    finally:
        predict.close()
        channel.close()
