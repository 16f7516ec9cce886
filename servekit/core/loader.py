"""Turn repository entries into loaded model handles. A failure stays with its model."""

from __future__ import annotations

import logging
import time

from servekit.core.batching import AdaptiveBatcher, BatchingPolicy
from servekit.core.executor import Executor
from servekit.core.lifecycle import ModelState
from servekit.core.registry import ModelHandle, ModelRegistry
from servekit.observe.metrics import Metrics
from servekit.repository.local import ModelSource, VersionSource
from servekit.runtimes import ModelSpec, resolve_runtime

logger = logging.getLogger("servekit.loader")


class ModelLoader:
    def __init__(self, registry: ModelRegistry, executor: Executor, metrics: Metrics) -> None:
        self._registry = registry
        self._executor = executor
        self._metrics = metrics

    def _set_state(self, handle: ModelHandle, state: ModelState, error: str | None = None) -> None:
        handle.state = state
        handle.error = error
        self._metrics.set_state(handle.name, handle.version, state)

    def register(self, sources: list[ModelSource]) -> list[ModelHandle]:
        """Add every version as LOADING (or FAILED when the repository already says why)."""
        handles = []
        for source in sources:
            versions = source.versions or [VersionSource("1", source.config.format, None)]
            for version in versions:
                declared_in = [t.to_spec() for t in source.config.inputs or []]
                declared_out = [t.to_spec() for t in source.config.outputs or []]
                handle = ModelHandle(
                    name=source.name,
                    version=version.version,
                    platform=source.config.platform or version.format or "unknown",
                    inputs=declared_in,
                    outputs=declared_out,
                    lineage=dict(source.config.lineage),
                )
                self._registry.add(handle)
                error = source.error or version.error
                if error is None and not source.versions:
                    error = f"{source.path}: no versions to serve"
                if error:
                    self._set_state(handle, ModelState.FAILED, error)
                    logger.error(
                        "model %s version %s cannot load: %s", handle.name, handle.version, error
                    )
                else:
                    self._set_state(handle, ModelState.LOADING)
                    handles.append(handle)
        return handles

    async def load_all(self, sources: list[ModelSource]) -> None:
        by_key = {(s.name, v.version): (s, v) for s in sources for v in s.versions}
        # One at a time: framework imports are not safe to run concurrently in threads
        # (two threads importing scikit-learn at once see a half-initialised module).
        for handle in self.register(sources):
            await self._load(handle, *by_key[(handle.name, handle.version)])

    async def _load(self, handle: ModelHandle, source: ModelSource, version: VersionSource) -> None:
        started = time.perf_counter()
        try:
            runtime_cls = resolve_runtime(version.format or "")
            runtime = runtime_cls(
                ModelSpec(
                    name=source.name,
                    version=version.version,
                    path=version.artifact or source.path,
                    parameters=dict(source.config.parameters),
                    inputs=handle.inputs or None,
                    outputs=handle.outputs or None,
                )
            )
            await self._executor.run(runtime.load)
            signature = runtime.signature()
        except Exception as exc:  # noqa: BLE001 - any load failure belongs to this model only
            message = f"{type(exc).__name__}: {exc}"
            self._set_state(handle, ModelState.FAILED, message)
            logger.exception("model %s version %s failed to load", handle.name, handle.version)
            return
        handle.runtime = runtime
        handle.platform = source.config.platform or runtime_cls.platform
        handle.inputs = handle.inputs or signature.inputs
        handle.outputs = handle.outputs or signature.outputs
        handle.predict = self._executor.bind(runtime.predict)
        batching = source.config.batching
        if batching is not None:
            handle.batcher = AdaptiveBatcher(
                handle.predict,
                BatchingPolicy(
                    max_batch_size=batching.max_batch_size,
                    max_batch_delay_ms=batching.max_batch_delay_ms,
                    preferred_batch_sizes=tuple(batching.preferred_batch_sizes),
                    max_queue_size=batching.max_queue_size,
                    timeout_ms=batching.timeout_ms,
                    concurrency=max(source.config.instances, 1),
                ),
                model=handle.name,
                on_batch=self._metrics.batch_size.labels(handle.name, handle.version).observe,
            )
            handle.predict = handle.batcher.predict
        handle.load_seconds = time.perf_counter() - started
        self._metrics.load_seconds.labels(handle.name, handle.version).set(handle.load_seconds)
        self._set_state(handle, ModelState.READY)
        logger.info(
            "model %s version %s ready (%s, %.3fs)",
            handle.name,
            handle.version,
            handle.platform,
            handle.load_seconds,
        )

    async def unload_all(self) -> None:
        for handle in list(self._registry):
            if handle.batcher is not None:
                await handle.batcher.stop()
                handle.batcher = None
            if handle.runtime is not None:
                try:
                    await self._executor.run(handle.runtime.unload)
                except Exception:  # noqa: BLE001 - shutting down: log and go on
                    logger.exception(
                        "model %s version %s failed to unload", handle.name, handle.version
                    )
                handle.runtime = None
                handle.predict = None
                self._set_state(handle, ModelState.UNLOADED)
