"""The model manager: applies what the repository says to the registry, while serving.

Aspired versions, as TF Serving calls them: a new or changed version is loaded and warmed up
*before* it takes traffic, and only then is the old one drained (its in-flight requests finish)
and unloaded. A version that fails to load never takes traffic. With the resource-preserving
policy the old version is unloaded first instead. Scale to zero unloads idle models and loads
them again on the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from servekit.core.lifecycle import ModelState
from servekit.core.loader import ModelLoader
from servekit.core.registry import ModelHandle, ModelRegistry
from servekit.errors import ModelNotFound, Unavailable
from servekit.observe.metrics import Metrics
from servekit.repository.local import ModelSource, VersionSource, scan_repository

logger = logging.getLogger("servekit.manager")


@dataclass(slots=True)
class ManagerPolicy:
    explicit: bool = False
    """Serve only models loaded through the control API (Triton's explicit mode)."""
    poll_seconds: float = 0.0
    """Re-read the repository this often (0: only on demand)."""
    drain_seconds: float = 30.0
    preserve_resources: bool = False
    """Unload the old version before loading its replacement (less memory, brief 503s)."""
    cold_start_timeout: float = 60.0


RootResolver = Callable[[], Awaitable[Path]]
"""Returns the local folder to scan; for a remote repository, a fresh snapshot of it."""


def _fixed(path: Path) -> RootResolver:
    async def resolve() -> Path:
        return path

    return resolve


@dataclass(slots=True)
class _Model:
    source: ModelSource
    sources: dict[str, VersionSource] = field(default_factory=dict)


class ModelManager:
    def __init__(
        self,
        root: Path | RootResolver,
        registry: ModelRegistry,
        loader: ModelLoader,
        metrics: Metrics,
        policy: ManagerPolicy | None = None,
    ) -> None:
        self._resolve = _fixed(Path(root)) if isinstance(root, str | Path) else root
        self._root = Path(root) if isinstance(root, str | Path) else Path()
        self._registry = registry
        self._loader = loader
        self._metrics = metrics
        self.policy = policy or ManagerPolicy()
        self._wanted: set[str] = set()  # explicit mode: models loaded on request
        self._models: dict[str, _Model] = {}
        self._lock = asyncio.Lock()  # one sync at a time: loads are serialised anyway
        self._activations: dict[int, asyncio.Task] = {}
        self._tasks: list[asyncio.Task] = []

    # -- startup and background work ---------------------------------------------------------

    async def start(self) -> None:
        await self.sync()
        loop = asyncio.get_running_loop()
        if self.policy.poll_seconds > 0:
            self._tasks.append(loop.create_task(self._poll(), name="repository-poll"))
        self._tasks.append(loop.create_task(self._scale_to_zero(), name="scale-to-zero"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._loader.unload_all()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.policy.poll_seconds)
            try:
                await self.sync()
            except Exception:  # noqa: BLE001 - a bad scan must not stop future polls
                logger.exception("repository poll failed")

    # -- applying the repository -------------------------------------------------------------

    async def sync(self, only: str | None = None, force: bool = False) -> None:
        """Bring the registry in line with the repository (for one model, or all)."""
        async with self._lock:
            self._root = await self._resolve()  # a remote repository syncs its cache here
            found = {s.name: s for s in await asyncio.to_thread(scan_repository, self._root)}
            names = {only} if only else set(found) | set(self._models)
            for name in sorted(names):
                source = found.get(name)
                if source is None or (self.policy.explicit and name not in self._wanted):
                    if name in self._models or self._registry.handles(name):
                        await self._retire_model(name)
                    continue
                await self._apply(source, force)

    async def _apply(self, source: ModelSource, force: bool) -> None:
        previous = self._models.get(source.name)
        self._models[source.name] = _Model(source, {v.version: v for v in source.versions})
        self._registry.route(source.name, source.config.labels, source.config.default_version)
        aspired = {v.version: v for v in source.versions}
        if not aspired:
            aspired = {
                "1": VersionSource(
                    "1",
                    source.config.format,
                    None,
                    source.error or f"{source.path}: no versions to serve",
                )
            }
        current = {h.version: h for h in self._registry.handles(source.name)}
        for version, version_source in aspired.items():
            handle = current.get(version)
            unchanged = (
                handle is not None
                and previous is not None
                and not force
                and handle.fingerprint == version_source.fingerprint
            )
            if unchanged:
                handle.activator = self._activator(source)
                continue
            await self._replace(source, version_source, handle)
        # Availability first: versions the policy no longer wants keep serving until one it
        # wants is ready (a broken new version must not take the old one down with it).
        if any(h.ready for h in self._registry.handles(source.name) if h.version in aspired):
            for version, handle in current.items():
                if version not in aspired:
                    await self._retire(handle)

    async def _replace(
        self, source: ModelSource, version: VersionSource, old: ModelHandle | None
    ) -> None:
        new = self._loader.new_handle(source, version)
        new.activator = self._activator(source)
        if old is None or old.state is not ModelState.READY:
            self._registry.add(new)  # nothing serving: show LOADING/FAILED right away
            if old is not None:
                await self._retire(old, remove=False)
            if new.state is ModelState.LOADING:
                await self._loader.load(new, source, version)
            return
        if self.policy.preserve_resources:
            await self._retire(old, remove=False)
            self._registry.add(new)
            await self._loader.load(new, source, version)
            return
        if new.state is ModelState.LOADING:
            await self._loader.load(new, source, version)  # old keeps serving meanwhile
        if new.state is not ModelState.READY:
            old.error = f"reload failed, still serving the previous load: {new.error}"
            old.fingerprint = version.fingerprint  # retry when the files change again
            self._metrics.reload_failures.labels(source.name, version.version).inc()
            logger.error(
                "model %s version %s: new artifact failed to load; keeping the old one",
                source.name,
                version.version,
            )
            return
        self._registry.add(new)  # atomic swap: new requests go to the new handle
        await self._retire(old, remove=False)

    async def _retire_model(self, name: str) -> None:
        self._models.pop(name, None)
        for handle in self._registry.handles(name):
            await self._retire(handle)

    async def _retire(self, handle: ModelHandle, remove: bool = True) -> None:
        """Drain (no new requests, wait for in-flight ones), unload, and forget ``handle``."""
        handle.activator = None
        if handle.state is ModelState.READY:
            self._loader.set_state(handle, ModelState.DRAINING)
        deadline = time.monotonic() + self.policy.drain_seconds
        while handle.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        await self._loader.unload(handle)
        if remove:
            self._registry.remove(handle)
        logger.info("model %s version %s unloaded", handle.name, handle.version)

    # -- control API -------------------------------------------------------------------------

    async def load_model(self, name: str) -> None:
        """Load (or reload) ``name`` from the repository now."""
        if not (self._root / name).is_dir() and name not in {
            s.name for s in await asyncio.to_thread(scan_repository, self._root)
        }:
            raise ModelNotFound(name)
        self._wanted.add(name)
        await self.sync(only=name, force=True)
        if not any(h.ready for h in self._registry.handles(name)):
            errors = "; ".join(h.error or h.state.value for h in self._registry.handles(name))
            raise Unavailable(f"model '{name}' failed to load: {errors}")

    async def unload_model(self, name: str) -> None:
        if not self._registry.handles(name):
            raise ModelNotFound(name)
        self._wanted.discard(name)
        async with self._lock:
            await self._retire_model(name)

    def index(self) -> list[dict[str, str]]:
        """Every model the repository holds, loaded or not, with its state."""
        rows = []
        names = (
            {
                p.name
                for p in self._root.iterdir()
                if p.is_dir() and not p.name.startswith((".", "_"))
            }
            if self._root.is_dir()
            else set()
        )
        names |= set(self._registry.names())
        for name in sorted(names):
            handles = self._registry.handles(name)
            if not handles:
                rows.append(
                    {"name": name, "version": "", "state": "UNAVAILABLE", "reason": "not loaded"}
                )
            for handle in sorted(handles, key=lambda h: h.version):
                rows.append(
                    {
                        "name": name,
                        "version": handle.version,
                        "state": handle.state.value,
                        "reason": handle.error or "",
                    }
                )
        return rows

    # -- scale to zero -----------------------------------------------------------------------

    def _activator(self, source: ModelSource):
        if source.config.idle_unload_after is None:
            return None
        return self._activate

    async def _activate(self, handle: ModelHandle) -> None:
        """Load a scaled-to-zero version for a waiting request; concurrent callers share one
        load (single flight) and wait at most ``cold_start_timeout``."""
        task = self._activations.get(id(handle))
        if task is None or task.done():
            if handle.state is ModelState.LOADING:  # a load is already under way elsewhere
                task = asyncio.get_running_loop().create_task(self._until_loaded(handle))
            else:
                task = asyncio.get_running_loop().create_task(self._cold_start(handle))
                self._activations[id(handle)] = task
        try:
            await asyncio.wait_for(asyncio.shield(task), self.policy.cold_start_timeout)
        except TimeoutError:
            raise Unavailable(
                f"model '{handle.name}' is still loading after "
                f"{self.policy.cold_start_timeout:g} s; retry later"
            ) from None
        if not handle.ready:
            raise Unavailable(f"model '{handle.name}' failed to load: {handle.error}")

    @staticmethod
    async def _until_loaded(handle: ModelHandle) -> None:
        while handle.state is ModelState.LOADING:
            await asyncio.sleep(0.01)

    async def _cold_start(self, handle: ModelHandle) -> None:
        model = self._models.get(handle.name)
        version = model.sources.get(handle.version) if model else None
        if model is None or version is None:
            raise Unavailable(f"model '{handle.name}' version '{handle.version}' is gone")
        started = time.perf_counter()
        await self._loader.load(handle, model.source, version)
        handle.last_used = time.monotonic()
        self._metrics.cold_starts.labels(handle.name).observe(time.perf_counter() - started)
        logger.info(
            "model %s version %s woke up in %.3fs",
            handle.name,
            handle.version,
            time.perf_counter() - started,
        )

    async def _scale_to_zero(self) -> None:
        while True:
            await asyncio.sleep(self._idle_check_seconds())
            now = time.monotonic()
            for name, model in list(self._models.items()):
                idle = model.source.config.idle_unload_after
                if idle is None:
                    continue
                for handle in self._registry.handles(name):
                    if (
                        handle.ready
                        and not handle.in_flight
                        and now - max(handle.last_used, handle.loaded_at) > idle
                    ):
                        logger.info(
                            "model %s version %s idle for %gs: unloading",
                            name,
                            handle.version,
                            idle,
                        )
                        await self._loader.unload(handle)

    def _idle_check_seconds(self) -> float:
        idles = [
            m.source.config.idle_unload_after
            for m in self._models.values()
            if m.source.config.idle_unload_after
        ]
        return max(min(idles) / 4, 0.05) if idles else 1.0
