"""``WorkerPoolRuntime``: a Runtime that serves a model from N worker processes.

It wraps the model's real runtime the way the batcher does: same interface, so the core does not
know. Each request goes to an idle worker (a worker takes one request at a time, so an idle one
is the least busy; when all are busy, requests queue here in arrival order and the first worker
to finish takes the next). Why one at a time: no head-of-line blocking behind a slow request,
and each link needs just one shared-memory arena per direction.

Failures are contained: a worker that dies fails only its own request, with a 503 that names
the model and how the worker died, and the zygote forks a replacement (backing off if the
worker keeps dying young). While no worker is alive, requests wait up to ``restart_wait``
seconds for one, then get a 503. If the zygote dies, the workers keep serving while a new
zygote reloads the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from servekit.errors import ConfigError, Unavailable
from servekit.runtimes.base import ModelSpec, Runtime, Signature
from servekit.workers.process import WorkerLink, ZygoteProcess, describe_exit

logger = logging.getLogger("servekit.workers")

OFFLOAD_BYTES = 1 << 20
"""Requests with more array bytes than this are copied to shared memory off the event loop."""
EXIT_STATUS_WAIT = 0.5
"""How long a crash report waits for the zygote to say how the worker died."""
YOUNG = 1.0
"""A worker that dies sooner than this after starting is restarted with a growing delay."""
MAX_BACKOFF = 5.0
ZYGOTE_BACKOFF = (0.5, 30.0)


def _import_string(target: str | type[Runtime]) -> str:
    if isinstance(target, str):
        return target
    return f"{target.__module__}:{target.__qualname__}"


class WorkerPoolRuntime(Runtime):
    """Serve ``target`` (a runtime class, its import string or a format name) from
    ``instances`` worker processes forked from one process that loaded the model once."""

    platform = "servekit_workers"  # replaced at load by the served runtime's platform

    def __init__(
        self,
        target: str | type[Runtime],
        spec: ModelSpec,
        instances: int,
        *,
        restart_wait: float = 5.0,
        stop_grace: float = 5.0,
    ) -> None:
        super().__init__(spec)
        if instances < 1:
            raise ConfigError(f"model '{spec.name}': instances must be at least 1")
        self.target = _import_string(target)
        self.instances = instances
        self.restart_wait = restart_wait
        self.stop_grace = stop_grace
        self._zygote: ZygoteProcess | None = None
        self._signature: Signature | None = None
        self._links: dict[int, WorkerLink] = {}
        self._idle: deque[WorkerLink] = deque()
        self._waiters: deque[asyncio.Future[WorkerLink | None]] = deque()
        self._exit_codes: dict[int, asyncio.Future[int]] = {}
        self._young_deaths: dict[int, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reporting: set[WorkerLink] = set()  # dead, their crash report not yet sent
        self._all_started: asyncio.Future[None] | None = None
        self._closing = False

    # -- what the core sees -------------------------------------------------------------------

    async def load(self) -> None:
        """Start the zygote, load the model there, fork the workers; raise the load error."""
        loop = asyncio.get_running_loop()
        self._all_started = loop.create_future()
        self._zygote = ZygoteProcess(self.target, self.spec, self)
        try:
            # Known only now, from the zygote: shadows the class attribute for this instance.
            self._signature, self.platform = await self._zygote.start()  # type: ignore[misc]
            for slot in range(self.instances):
                self._zygote.fork(slot)
            await self._all_started
        except BaseException:
            await asyncio.shield(self.unload())
            raise
        logger.info(
            "model %s version %s: %d workers started (pids %s)",
            self.spec.name,
            self.spec.version,
            self.instances,
            ", ".join(map(str, self.pids)),
        )

    async def predict(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> dict[str, np.ndarray]:
        args = (
            dict(inputs),
            list(outputs) if outputs is not None else None,
            dict(parameters) if parameters is not None else None,
        )
        size = sum(getattr(a, "nbytes", 0) for a in args[0].values())
        idle = self._idle
        link = idle.popleft() if idle and not self._closing else None
        if link is None or not link.alive:
            link = await self._acquire()
        return await link.submit(args, offload=size > OFFLOAD_BYTES)

    def signature(self) -> Signature:
        if self._signature is None:
            raise RuntimeError("load() must run before signature()")
        return self._signature

    async def unload(self) -> None:
        """Stop taking requests, close every worker, stop the zygote (which unloads the model)."""
        self._closing = True
        self._wake_waiters()
        for task in list(self._tasks):
            task.cancel()
        gone = self._unloaded()
        links = [*self._links.values(), *self._reporting]
        for link in links:
            link.close(gone)
        self._links.clear()
        self._reporting.clear()
        self._idle.clear()
        if self._zygote is not None:
            await self._zygote.stop(self.stop_grace)
            self._zygote = None
        for link in links:
            link.kill()  # only workers whose zygote died earlier can still be running
        self._exit_codes.clear()

    # -- introspection ------------------------------------------------------------------------

    @property
    def pids(self) -> list[int]:
        """The live workers' process ids, by slot."""
        return [self._links[slot].pid for slot in sorted(self._links)]

    @property
    def zygote_pid(self) -> int | None:
        return self._zygote.pid if self._zygote is not None else None

    # -- dispatch -----------------------------------------------------------------------------

    async def _acquire(self) -> WorkerLink:
        """An idle worker; waits while all are busy, and at most ``restart_wait`` seconds while
        none is alive."""
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while True:
            if self._closing:
                raise Unavailable(f"{self._model()} is unloading")
            while self._idle:
                link = self._idle.popleft()
                if link.alive:
                    return link
            timeout = None
            if not self._links:
                deadline = deadline if deadline is not None else loop.time() + self.restart_wait
                timeout = deadline - loop.time()
                if timeout <= 0:
                    raise Unavailable(
                        f"{self._model()} has no live worker (restarting); try again shortly"
                    )
            waiter: asyncio.Future[WorkerLink | None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(timeout):
                    handed = await waiter
            except TimeoutError:
                continue  # the deadline check above raises
            except BaseException:
                late = waiter.result() if waiter.done() and not waiter.cancelled() else None
                if late is not None:
                    self._on_idle(late)  # handed over as we were cancelled
                raise
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if handed is not None and handed.alive:
                return handed

    def _on_idle(self, link: WorkerLink) -> None:
        if not link.alive or self._closing:
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(link)
                return
        self._idle.append(link)

    def _wake_waiters(self) -> None:
        """Make waiters look again (no worker left, or unloading)."""
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _model(self) -> str:
        return f"model '{self.spec.name}' version '{self.spec.version}'"

    def _unloaded(self) -> Unavailable:
        return Unavailable(f"{self._model()} was unloaded before the request completed")

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- events from the zygote (see ZygoteEvents) --------------------------------------------

    def on_forked(self, zygote: ZygoteProcess, slot: int, pid: int, sock: socket.socket) -> None:
        if self._closing or zygote is not self._zygote or slot in self._links:
            sock.close()  # the worker exits when it sees the link close
            return
        link = WorkerLink(zygote, slot, pid, sock, self._on_idle, self._on_lost)
        self._links[slot] = link
        logger.debug("%s: worker %d started (pid %d)", self._model(), slot, pid)
        self._on_idle(link)
        started = self._all_started
        if started is not None and not started.done() and len(self._links) == self.instances:
            started.set_result(None)

    def on_fork_failed(self, zygote: ZygoteProcess, slot: int, reason: str) -> None:
        started = self._all_started
        if started is not None and not started.done():
            started.set_exception(RuntimeError(f"{self._model()}: {reason}"))
            return
        logger.error("%s: cannot start worker %d: %s", self._model(), slot, reason)
        self._spawn(self._restart(slot, self._backoff(slot, young=True)))

    def on_exited(self, zygote: ZygoteProcess, slot: int, pid: int, code: int) -> None:
        future = self._exit_codes.setdefault(pid, asyncio.get_running_loop().create_future())
        if not future.done():
            future.set_result(code)

    def on_zygote_lost(self, zygote: ZygoteProcess, code: int | None) -> None:
        if self._closing or zygote is not self._zygote:
            return
        logger.error(
            "%s: the zygote process %s; reloading the model in a new one while the workers "
            "keep serving",
            self._model(),
            describe_exit(code),
        )
        self._zygote = None
        self._spawn(self._restart_zygote())

    # -- recovery -----------------------------------------------------------------------------

    def _on_lost(self, link: WorkerLink) -> None:
        """A worker's link closed: it died. Fail its request and start a replacement."""
        if self._links.get(link.slot) is link:
            del self._links[link.slot]
        with contextlib.suppress(ValueError):
            self._idle.remove(link)
        if not self._links:
            self._wake_waiters()  # they now wait at most restart_wait
        if self._closing:
            link.fail(self._unloaded())
            link.kill()
            return
        self._reporting.add(link)
        self._spawn(self._report_and_restart(link))

    async def _report_and_restart(self, link: WorkerLink) -> None:
        code: int | None = None
        if link.zygote.alive:  # else nobody can tell us how it died
            future = self._exit_codes.setdefault(
                link.pid, asyncio.get_running_loop().create_future()
            )
            with contextlib.suppress(TimeoutError):
                code = await asyncio.wait_for(asyncio.shield(future), EXIT_STATUS_WAIT)
        self._exit_codes.pop(link.pid, None)
        link.kill()
        what = f"{self._model()} worker {link.slot} (pid {link.pid}) {describe_exit(code)}"
        link.fail(Unavailable(f"{what}; the request was not completed"))
        self._reporting.discard(link)
        young = time.monotonic() - link.started < YOUNG
        delay = self._backoff(link.slot, young)
        logger.error("%s; restarting it%s", what, f" in {delay:.1f}s" if delay else "")
        await self._restart(link.slot, delay)

    def _backoff(self, slot: int, young: bool) -> float:
        deaths = self._young_deaths.get(slot, 0) + 1 if young else 0
        self._young_deaths[slot] = deaths
        return 0.0 if deaths <= 1 else min(MAX_BACKOFF, 0.1 * 2 ** (deaths - 2))

    async def _restart(self, slot: int, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        zygote = self._zygote
        if self._closing or slot in self._links or zygote is None or not zygote.alive:
            return  # a new zygote forks every empty slot once it has loaded
        zygote.fork(slot)

    async def _restart_zygote(self) -> None:
        delay, longest = ZYGOTE_BACKOFF
        while not self._closing:
            zygote = ZygoteProcess(self.target, self.spec, self)
            self._zygote = zygote
            try:
                await zygote.start()
            except Exception as exc:  # noqa: BLE001 - keep trying; the workers still serve
                self._zygote = None
                logger.error(
                    "%s: reloading failed (%s); retrying in %.1fs", self._model(), exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(longest, delay * 2)
                continue
            logger.info("%s: model reloaded in a new zygote (pid %s)", self._model(), zygote.pid)
            # Workers of the old zygote keep serving; their slots refill from this one.
            for slot in range(self.instances):
                if slot not in self._links:
                    zygote.fork(slot)
            return
