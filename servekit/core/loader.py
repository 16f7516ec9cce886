"""Turn repository entries into loaded model handles. A failure stays with its model."""

from __future__ import annotations

import inspect
import logging
import time

from servekit.core.batching import AdaptiveBatcher, BatchingPolicy
from servekit.core.executor import INLINE_BUDGET_SECONDS, AsyncCallable, Executor
from servekit.core.lifecycle import ModelState
from servekit.core.registry import ModelHandle, ModelRegistry
from servekit.core.warmup import sample_inputs
from servekit.observe.metrics import Metrics
from servekit.repository.local import ModelSource, VersionSource
from servekit.runtimes import ModelSpec, Runtime, resolve_runtime

logger = logging.getLogger("servekit.loader")


class ModelLoader:
    def __init__(self, registry: ModelRegistry, executor: Executor, metrics: Metrics) -> None:
        self._registry = registry
        self._executor = executor
        self._metrics = metrics

    def _set_state(self, handle: ModelHandle, state: ModelState, error: str | None = None) -> None:
        handle.state = state
        handle.error = error
        self._registry.refresh(handle.name)
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
        handle.predict = await self._bind_predict(handle, runtime, source.config.execution)
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

    async def _bind_predict(
        self, handle: ModelHandle, runtime: Runtime, mode: str
    ) -> AsyncCallable:
        """Decide once where predict runs; 'auto' times a warm-up call built from the signature.

        The warm-up also pays for lazy initialisation before the first user request does.
        """
        predict = runtime.predict
        if inspect.iscoroutinefunction(predict) or mode == "threads":
            return self._executor.bind(predict)
        if mode == "event_loop":
            return Executor.inline(predict)
        sample = sample_inputs(handle.inputs)
        if sample is None:
            return self._executor.bind(predict)
        threaded = self._executor.bind(predict)
        timings = []
        try:
            for _ in range(3):
                started = time.perf_counter()
                await threaded(sample, None, {})
                timings.append(time.perf_counter() - started)
        except Exception:  # noqa: BLE001 - a model may refuse zeros; then stay on threads
            logger.debug("warm-up of %s failed; predict runs in threads", handle.name)
            return threaded
        if min(timings) < INLINE_BUDGET_SECONDS:
            logger.debug(
                "%s predict runs on the event loop (%.0f us)", handle.name, min(timings) * 1e6
            )
            return Executor.inline(predict)
        return threaded

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
