"""The server's side of the worker processes: the zygote's control link and each worker's link.

Both are read with ``loop.add_reader`` on non-blocking sockets, so nothing here blocks the event
loop; each callback reads one record and resolves a future or reports an event to the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

from servekit.errors import ModelLoadError
from servekit.runtimes.base import ModelSpec, Signature
from servekit.workers.channel import Channel, Receiver, close_fds, send
from servekit.workers.worker import OK, PREDICT
from servekit.workers.zygote import BOOTSTRAP

logger = logging.getLogger("servekit.workers")

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
EXIT_WAIT = 10.0
"""How long ``stop`` waits for the zygote beyond its grace period before killing it."""


def describe_exit(code: int | None) -> str:
    """'crashed (signal 9: SIGKILL, ...)', 'exited with code 1' or 'exited unexpectedly'."""
    if code is None:
        return "exited unexpectedly"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        hint = ", e.g. the out-of-memory killer" if -code == signal.SIGKILL else ""
        return f"crashed (signal {-code}: {name}{hint})"
    return f"exited with code {code}"


def _environment(threads: int) -> dict[str, str]:
    """The server's environment, with the math libraries capped before they are imported."""
    env = dict(os.environ)
    env.update(dict.fromkeys(THREAD_VARIABLES, str(threads)))
    return env


class ZygoteEvents(Protocol):
    def on_forked(
        self, zygote: ZygoteProcess, slot: int, pid: int, sock: socket.socket
    ) -> None: ...

    def on_fork_failed(self, zygote: ZygoteProcess, slot: int, reason: str) -> None: ...

    def on_exited(self, zygote: ZygoteProcess, slot: int, pid: int, code: int) -> None: ...

    def on_zygote_lost(self, zygote: ZygoteProcess, code: int | None) -> None: ...


class ZygoteProcess:
    """Starts the zygote, asks it for workers, and relays what it reports."""

    def __init__(self, target: str, spec: ModelSpec, events: ZygoteEvents) -> None:
        self._target = target
        self._spec = spec
        self._events = events
        self._channel = Channel()
        self._sock: socket.socket | None = None
        self._receive: Receiver | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._loaded: asyncio.Future[tuple[Signature, str]] | None = None
        self._exited: asyncio.Future[int | None] | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._serving = False
        self._stopping = False
        self.alive = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self) -> tuple[Signature, str]:
        """Start the process and wait until it has loaded the model: (signature, platform)."""
        loop = asyncio.get_running_loop()
        self._loaded = loop.create_future()
        self._exited = loop.create_future()
        server_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock = server_end
        threads = int(self._spec.parameters.get("threads", 1))
        try:
            with zygote_end:
                self._process = subprocess.Popen(
                    [sys.executable, "-c", BOOTSTRAP, str(zygote_end.fileno())],
                    pass_fds=[zygote_end.fileno()],
                    stdin=subprocess.DEVNULL,
                    env=_environment(threads),
                )
            self.alive = True
            server_end.send(pickle.dumps(sys.path))
            self._send((self._target, self._spec))
            server_end.setblocking(False)
            self._receive = Receiver(server_end)
            loop.add_reader(server_end.fileno(), self._on_readable)
            result = await self._loaded
            self._serving = True
            return result
        except BaseException:
            await asyncio.shield(self.kill())
            raise

    def fork(self, slot: int) -> None:
        """Ask for a worker; the answer arrives as ``on_forked`` or ``on_fork_failed``."""
        try:
            self._send(("fork", slot))
        except OSError as exc:  # the zygote is dying: its EOF is on the way
            logger.debug("cannot ask the zygote for worker %d: %s", slot, exc)

    async def stop(self, grace: float) -> None:
        """Let busy workers finish for up to ``grace`` seconds, then end every process."""
        self._stopping = True
        if self.alive:
            with contextlib.suppress(OSError):
                self._send(("stop", grace))
        if self._exited is not None and self._process is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._exited), grace + EXIT_WAIT)
                return
            except TimeoutError:
                logger.warning("model %s: zygote did not stop; killing it", self._spec.name)
        await self.kill()

    async def kill(self) -> None:
        self._stopping = True
        self._close_link()
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            code = await asyncio.to_thread(self._process.wait)
            if self._exited is not None and not self._exited.done():
                self._exited.set_result(code)

    def _send(self, message: tuple) -> None:
        assert self._sock is not None
        record, fds = self._channel.pack(message)
        self._channel.seal(record)
        try:
            send(self._sock, record, fds)
        finally:
            close_fds(fds)

    def _on_readable(self) -> None:
        assert self._receive is not None
        try:
            record, fds = self._receive()
        except BlockingIOError:
            return
        except OSError:
            record, fds = memoryview(b""), []
        if not record:
            self._close_link()
            self._reaper = asyncio.get_running_loop().create_task(self._reap())
            return
        try:
            message, _, extra = self._channel.unpack(record, fds)
        except Exception as exc:  # noqa: BLE001 - cannot happen unless versions differ
            logger.exception("model %s: unreadable message from the zygote", self._spec.name)
            if self._loaded is not None and not self._loaded.done():
                self._loaded.set_exception(exc)
            return
        kind = message[0]
        if kind == "forked":
            self._events.on_forked(self, message[1], message[2], socket.socket(fileno=extra[0]))
            extra = extra[1:]
        elif kind == "exited":
            self._events.on_exited(self, *message[1:])
        elif kind == "fork_failed":
            self._events.on_fork_failed(self, *message[1:])
        elif kind == "loaded" and self._loaded is not None and not self._loaded.done():
            self._loaded.set_result((message[1], message[2]))
        elif kind == "failed" and self._loaded is not None and not self._loaded.done():
            self._loaded.set_exception(message[1].rebuild())
        close_fds(extra)

    def _close_link(self) -> None:
        self.alive = False
        if self._sock is not None:
            with contextlib.suppress(ValueError, RuntimeError):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        self._channel.close()

    async def _reap(self) -> None:
        """The link closed: the zygote has exited (or is exiting). Collect its status."""
        assert self._process is not None
        try:
            code: int | None = await asyncio.to_thread(self._process.wait, EXIT_WAIT)
        except subprocess.TimeoutExpired:
            await self.kill()
            code = self._process.returncode
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(code)
        if self._loaded is not None and not self._loaded.done():
            self._loaded.set_exception(
                ModelLoadError(
                    f"model '{self._spec.name}' version '{self._spec.version}': the worker "
                    f"process {describe_exit(code)} while loading the model"
                )
            )
        elif self._serving and not self._stopping:
            self._events.on_zygote_lost(self, code)


class WorkerLink:
    """One worker process as the pool sees it: one request at a time, answered by a future."""

    def __init__(
        self,
        zygote: ZygoteProcess,
        slot: int,
        pid: int,
        sock: socket.socket,
        on_idle: Callable[[WorkerLink], None],
        on_lost: Callable[[WorkerLink], None],
    ) -> None:
        self.zygote = zygote
        self.slot = slot
        self.pid = pid
        self.started = time.monotonic()
        self.alive = True
        self._sock = sock
        self._receive = Receiver(sock)
        self._channel = Channel()
        self._pending: asyncio.Future[Any] | None = None
        self._failure: BaseException | None = None
        self._on_idle = on_idle
        self._on_lost = on_lost
        self._loop = asyncio.get_running_loop()
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except OSError:  # already gone: the EOF below reports it
            self._pidfd = None
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._on_readable)

    def submit(self, args: tuple, offload: bool) -> asyncio.Future[Any]:
        """Send one request. ``offload`` packs it in a thread (large arrays are copied)."""
        self._pending = future = self._loop.create_future()
        if offload:
            sending = self._loop.run_in_executor(None, self._send, args)
            sending.add_done_callback(self._after_send)
        else:
            try:
                self._send(args)
            except Exception as exc:  # noqa: BLE001 - reported through the future
                self._send_failed(exc)
        return future

    def _send(self, args: tuple) -> None:
        inputs, outputs, parameters = args
        record, fds = self._channel.pack((PREDICT, outputs, parameters), inputs)
        self._channel.seal(record)
        try:
            send(self._sock, record, fds)
        finally:
            close_fds(fds)

    def _after_send(self, sending: asyncio.Future[None]) -> None:
        if not sending.cancelled() and sending.exception() is not None:
            self._send_failed(sending.exception())  # type: ignore[arg-type]

    def _send_failed(self, exc: BaseException) -> None:
        if isinstance(exc, OSError) or not self.alive:
            # The link broke: the report of the worker's exit fails the request (or has).
            if self._failure is not None:
                self.fail(self._failure)
            return
        future, self._pending = self._pending, None
        if future is not None and not future.done():
            future.set_exception(exc)
        self._on_idle(self)  # nothing reached the worker

    def _on_readable(self) -> None:
        try:
            record, fds = self._receive()
        except BlockingIOError:
            return
        except OSError:
            record, fds = memoryview(b""), []
        if not record:
            self._detach()
            self._on_lost(self)
            return
        future, self._pending = self._pending, None
        result: Any = None
        error: BaseException | None = None
        try:
            (status, payload), tensors, extra = self._channel.unpack(record, fds)
            close_fds(extra)
            if status == OK:
                result = tensors if tensors is not None else payload
            else:
                error = payload.rebuild()
        except Exception as exc:  # noqa: BLE001 - e.g. outputs the server cannot unpickle
            error = exc
        if future is not None and not future.done():
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
        self._on_idle(self)

    def fail(self, exc: BaseException) -> None:
        """Fail the request in flight, if any (the worker is gone)."""
        self._failure = exc
        future, self._pending = self._pending, None
        if future is not None and not future.done():
            future.set_exception(exc)

    def close(self, exc: BaseException) -> None:
        """Stop using the worker: it exits once idle (it sees the link close)."""
        if self.alive:
            self._detach()
        self.fail(exc)

    def kill(self) -> None:
        """SIGKILL the worker if it still runs (the pidfd cannot hit a recycled pid)."""
        if self._pidfd is not None:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            os.close(self._pidfd)
            self._pidfd = None

    def _detach(self) -> None:
        self.alive = False
        with contextlib.suppress(ValueError, RuntimeError):
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        self._channel.close()
