"""The zygote: a clean process that loads one model once, then forks the workers that serve it.

Why a zygote: forking the server itself is unsafe (gRPC, threads and the event loop do not
survive a fork), while spawning N fresh processes loads the model N times (MLServer's M x N
memory). The zygote is started fresh (``python -c``), so it holds no server state; it loads the
model, freezes the garbage collector's view of the loaded objects (so collections in the
workers do not write to, and so un-share, those pages), and forks each worker on demand. The
workers share the model's memory copy-on-write, and a crashed worker is replaced by one more
fork, in milliseconds, without loading anything.

The server talks to it over a control link: it sends ``("fork", slot)`` and ``("stop", grace)``;
the zygote answers ``("loaded", signature, platform)`` or ``("failed", error)`` once, then
``("forked", slot, pid)`` with the worker's socket attached, ``("fork_failed", slot, text)`` and
``("exited", slot, pid, exit code)`` (negative: the signal that killed it).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

from servekit.runtimes import resolve_runtime
from servekit.runtimes.base import ModelSpec, Runtime
from servekit.workers.channel import Channel, Receiver, close_fds, send
from servekit.workers.remote import RemoteError
from servekit.workers.worker import serve

LOST_PARENT_GRACE = 5.0
"""When the server is gone, workers still busy get this long to finish before SIGKILL."""

BOOTSTRAP = (
    "import pickle, socket, sys\n"
    "link = socket.socket(fileno=int(sys.argv[1]))\n"
    "sys.path[:] = pickle.loads(link.recv(1 << 20))\n"
    "from servekit.workers.zygote import main\n"
    "main(link)\n"
)
"""What the server runs with ``python -c``: adopt the server's ``sys.path`` before importing
anything from servekit or the model, so import strings resolve as they do in the server."""


def _settle(value: Any) -> Any:
    """The value, awaited first if a runtime method was ``async``."""
    if not inspect.isawaitable(value):
        return value

    async def wait() -> Any:
        return await value

    return asyncio.run(wait())


def set_process_name(name: str) -> None:
    """Name the process in ``top`` and ``ps -o comm`` (the kernel keeps 15 characters)."""
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
        comm.write(name[:15])


def _send(
    link: socket.socket, channel: Channel, message: tuple, extra_fds: Sequence[int] = ()
) -> None:
    record, fds = channel.pack(message)
    channel.seal(record)
    try:
        send(link, record, [*fds, *extra_fds])
    finally:
        close_fds(fds)


class Zygote:
    def __init__(self, runtime: Runtime, spec: ModelSpec, link: socket.socket, channel: Channel):
        self._runtime = runtime
        self._spec = spec
        self._link = link
        self._channel = channel
        self._receive = Receiver(link)
        self._children: dict[int, tuple[int, int]] = {}  # pid -> (slot, pidfd)
        self._selector = selectors.DefaultSelector()
        self._selector.register(link, selectors.EVENT_READ)

    def run(self) -> None:
        try:
            while True:
                for key, _ in self._selector.select():
                    if key.fileobj is self._link:
                        if not self._command():
                            return
                    else:
                        self._reap(key.data)
        except OSError:  # the link to the server broke mid-message: it is gone
            self._stop(LOST_PARENT_GRACE, report=False)

    def _command(self) -> bool:
        """Handle one message from the server; False once it is time to exit."""
        record, fds = self._receive()
        if not record:  # the server is gone
            self._stop(LOST_PARENT_GRACE, report=False)
            return False
        message, _, extra = self._channel.unpack(record, fds)
        close_fds(extra)
        if message[0] == "fork":
            self._fork(message[1])
            return True
        self._stop(float(message[1]), report=True)
        return False

    def _fork(self, slot: int) -> None:
        server_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            pid = os.fork()
        except OSError as exc:
            server_end.close()
            worker_end.close()
            _send(self._link, self._channel, ("fork_failed", slot, f"fork failed: {exc}"))
            return
        if pid == 0:
            self._become_worker(slot, server_end, worker_end)
        worker_end.close()
        try:
            pidfd = os.pidfd_open(pid)
            self._children[pid] = (slot, pidfd)
            self._selector.register(pidfd, selectors.EVENT_READ, pid)
            _send(self._link, self._channel, ("forked", slot, pid), [server_end.fileno()])
        finally:
            server_end.close()  # the server holds it now; the next fork must not inherit it

    def _become_worker(self, slot: int, server_end: socket.socket, link: socket.socket) -> None:
        code = 0
        try:
            server_end.close()
            self._link.close()  # else the server would not see EOF when the zygote dies
            self._selector.close()
            for _, pidfd in self._children.values():
                os.close(pidfd)
            set_process_name(f"sk-{slot}-{self._spec.name}")
            serve(self._runtime, link)
        except OSError:
            code = 0  # the server closed the link while we answered: nothing left to do
        except BaseException:  # noqa: BLE001 - report, then exit without running zygote code
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _reap(self, pid: int) -> int:
        slot, pidfd = self._children.pop(pid)
        self._selector.unregister(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        with contextlib.suppress(OSError):
            _send(self._link, self._channel, ("exited", slot, pid, code))
        return code

    def _stop(self, grace: float, report: bool) -> None:
        """Wait for the workers (their links are closed, so they exit when idle), kill what
        remains after ``grace``, then unload the model."""
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(self._link)
        deadline = time.monotonic() + grace
        while self._children and (left := deadline - time.monotonic()) > 0:
            for key, _ in self._selector.select(left):
                self._reap(key.data)
        for pid, (_, pidfd) in list(self._children.items()):
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            self._reap(pid)
        try:
            _settle(self._runtime.unload())
        except Exception:  # noqa: BLE001 - shutting down: report and go on
            traceback.print_exc()
        if report:
            with contextlib.suppress(OSError):
                _send(self._link, self._channel, ("stopped",))


def main(link: socket.socket) -> None:
    """Entry point in the fresh interpreter (see ``BOOTSTRAP``)."""
    # Lifetime follows the server through the link, not signals sent to the process group:
    # a Ctrl-C or SIGTERM meant for the server must not kill workers while it drains.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    channel = Channel()
    record, fds = Receiver(link)()
    if not record:
        return
    (target, spec), _, _ = channel.unpack(record, fds)
    set_process_name(f"sk-z-{spec.name}")
    try:
        runtime = resolve_runtime(target)(spec)
        _settle(runtime.load())
        signature = runtime.signature()
    except BaseException as exc:  # noqa: BLE001 - the server raises it as the load error
        _send(link, channel, ("failed", RemoteError.capture(exc)))
        return
    gc.collect()
    gc.freeze()
    _send(link, channel, ("loaded", signature, type(runtime).platform))
    Zygote(runtime, spec, link, channel).run()
