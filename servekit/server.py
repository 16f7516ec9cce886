"""Composition root: build everything from settings, serve REST and gRPC, drain on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from servekit.core.dataplane import DataPlane
from servekit.core.executor import Executor
from servekit.core.heap import HeapFreezer
from servekit.core.loader import ModelLoader
from servekit.core.manager import ManagerPolicy, ModelManager
from servekit.core.registry import ModelRegistry
from servekit.deploy.manager import DeploymentManager
from servekit.errors import ConfigError
from servekit.observe.feedback import FeedbackService
from servekit.observe.metrics import Metrics
from servekit.observe.monitoring.service import MonitorService
from servekit.observe.payloads.service import PayloadLog
from servekit.repository.local import scan_repository
from servekit.settings import Settings
from servekit.storage import materialize_async
from servekit.transports.grpc_listener import choose_listener
from servekit.transports.http import create_app
from servekit.transports.http.lane import InferenceProtocol

logger = logging.getLogger("servekit.server")


class _UvicornServer(uvicorn.Server):
    """Signals are ours: one handler stops REST and gRPC together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class InferenceServer:
    def __init__(self, settings: Settings) -> None:
        if not settings.model_repository:
            raise ConfigError("no model repository given")
        self.settings = settings
        self.metrics = Metrics()
        self.registry = ModelRegistry()
        self.executor = Executor(settings.inference_threads)
        self.loader = ModelLoader(
            self.registry, self.executor, self.metrics, HeapFreezer(settings.freeze_heap)
        )
        self.manager = ModelManager(
            self._resolve_repository,
            self.registry,
            self.loader,
            self.metrics,
            ManagerPolicy(
                explicit=settings.model_control == "explicit",
                poll_seconds=settings.repository_poll_seconds,
                drain_seconds=settings.drain_seconds,
                preserve_resources=settings.reload_policy == "resources",
                cold_start_timeout=settings.cold_start_timeout_seconds,
            ),
        )
        token = settings.admin_token.get_secret_value() if settings.admin_token else None
        self.payload_log = (
            PayloadLog(settings.payload_log, self.metrics.registry)
            if settings.payload_log.enabled
            else None
        )
        self.deployments = self._deployment_manager()
        self.monitor = (
            MonitorService(self.registry, settings.payload_log, self.metrics.registry)
            if self.payload_log is not None
            else None
        )
        self.dataplane = DataPlane(
            self.registry,
            self.metrics,
            strict_readiness=settings.strict_readiness,
            manager=self.manager if settings.management_api else None,
            admin_token=token,
            payload_log=self.payload_log,
            deployments=self.deployments,
            monitor=self.monitor,
        )
        self._stop = asyncio.Event()
        self.http_port: int | None = None
        self.grpc_port: int | None = None

    async def serve(self) -> None:
        settings = self.settings
        sources = scan_repository(await self._resolve_repository())  # fail fast on a bad one
        scanned = {source.name for source in sources}
        watcher = None
        if self.deployments is not None:
            self.deployments.load(scanned)  # a bad spec stops the start, naming file and field
            watcher = asyncio.create_task(
                self.deployments.watch(
                    settings.deployments_poll_seconds,
                    lambda: scanned | set(self.registry.names()),
                )
            )
        if self.monitor is not None:
            self.monitor.start()
        if self.payload_log is not None:
            self.payload_log.start([self.monitor] if self.monitor is not None else [])
        feedback = FeedbackService(
            self.payload_log,
            self.registry,
            self.metrics.registry,
            settings.payload_log.performance_windows_seconds,
        )
        if self.deployments is not None:
            feedback.reward_listeners.append(self.deployments.reward)
        monitoring = None
        if self.monitor is not None:
            feedback.truth_listeners.append(self.monitor.on_truth)
            feedback.estimators.append(self.monitor.estimates)
        app = create_app(self.dataplane, self.metrics, settings, feedback, self.monitor)
        refresher = asyncio.create_task(feedback.refresh_forever())
        http = _UvicornServer(
            uvicorn.Config(
                app,
                host=settings.host,
                port=settings.http_port,
                loop="none",
                http=InferenceProtocol,  # httptools, with a short lane for inference POSTs
                lifespan="off",
                log_config=None,
                access_log=False,
                proxy_headers=False,  # nothing here reads the client address
                server_header=False,
                timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
            )
        )
        grpc_server = None
        if settings.grpc_enabled:
            logger.info(choose_listener(settings.grpc_legacy_listener))  # before grpc loads
            from servekit.transports.grpc import create_grpc_server, lower_poller_priority

            grpc_server, self.grpc_port = create_grpc_server(self.dataplane, settings)
            await grpc_server.start()
            lower_poller_priority(settings.grpc_poller_nice)
        http_task = asyncio.create_task(http.serve())
        self._install_signal_handlers()
        while not http.started and not http_task.done():
            await asyncio.sleep(0.01)
        if http_task.done():  # failed to bind: surface uvicorn's error
            await http_task
            raise SystemExit(1)
        self.http_port = http.servers[0].sockets[0].getsockname()[1]
        logger.info("REST on http://%s:%s", settings.host, self.http_port)
        if grpc_server is not None:
            logger.info("gRPC on %s:%s", settings.host, self.grpc_port)
        await self.manager.start()
        if self.monitor is not None:  # after loading: monitors fit the versions that serve
            monitoring = asyncio.create_task(self.monitor.watch_forever())
        self.dataplane.loading_complete = True
        logger.info(
            "serving %d model versions (%d ready)",
            len(self.registry),
            sum(h.ready for h in self.registry),
        )
        await self._stop.wait()
        logger.info("shutting down: draining in-flight requests")
        http.should_exit = True
        if grpc_server is not None:
            await grpc_server.stop(settings.graceful_shutdown_seconds)
        await http_task
        refresher.cancel()
        if watcher is not None:
            watcher.cancel()
        if self.deployments is not None:
            self.deployments.save_state()
        await self.manager.stop()
        if monitoring is not None:
            monitoring.cancel()
        if self.payload_log is not None:
            await asyncio.to_thread(self.payload_log.stop)
        if self.monitor is not None:
            await asyncio.to_thread(self.monitor.stop)
        self.executor.shutdown()

    def _deployment_manager(self) -> DeploymentManager | None:
        """From the ``deployments`` setting, else a ``deployments`` folder next to a local
        repository; None when there is neither."""
        settings = self.settings
        source = Path(settings.deployments) if settings.deployments else None
        if source is None and "://" not in (settings.model_repository or ""):
            sibling = Path(settings.model_repository or ".").resolve().parent / "deployments"
            source = sibling if sibling.is_dir() else None
        if source is None:
            return None
        state_dir = settings.deployment_state_dir or settings.payload_log.directory
        return DeploymentManager(source, self.metrics.registry, state_dir / "routers.json")

    async def _resolve_repository(self) -> Path:
        """The local folder to serve: the path itself, or a synced snapshot of a remote URI."""
        settings = self.settings
        options = settings.storage_options()
        return await materialize_async(
            settings.model_repository or "", settings.storage_cache_dir, options
        )

    def stop(self) -> None:
        self._stop.set()

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)


def run(settings: Settings) -> None:
    """Run the server until SIGINT or SIGTERM, on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        asyncio.run(InferenceServer(settings).serve())
    else:
        uvloop.run(InferenceServer(settings).serve())
