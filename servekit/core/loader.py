"""Turn repository entries into loaded model handles. A failure stays with its model."""

from __future__ import annotations

import inspect
import logging
import time

from servekit.core.batching import AdaptiveBatcher, BatchingPolicy
from servekit.core.executor import INLINE_BUDGET_SECONDS, AsyncCallable, Executor
from servekit.core.heap import HeapFreezer
from servekit.core.lifecycle import ModelState
from servekit.core.registry import ModelHandle, ModelRegistry
from servekit.core.warmup import sample_inputs, warmup_inputs
from servekit.observe.metrics import Metrics
from servekit.repository.integrity import verify_artifacts
from servekit.repository.local import ModelSource, VersionSource
from servekit.runtimes import ModelSpec, Runtime, resolve_runtime

logger = logging.getLogger("servekit.loader")


class ModelLoader:
    def __init__(
        self,
        registry: ModelRegistry,
        executor: Executor,
        metrics: Metrics,
        heap: HeapFreezer | None = None,
    ) -> None:
        self._registry = registry
        self._executor = executor
        self._metrics = metrics
        self._heap = heap or HeapFreezer(enabled=False)

    def set_state(self, handle: ModelHandle, state: ModelState, error: str | None = None) -> None:
        handle.state = state
        handle.error = error
        self._registry.refresh(handle.name)
        self._metrics.set_state(handle.name, handle.version, state)

    def new_handle(self, source: ModelSource, version: VersionSource) -> ModelHandle:
        """A LOADING handle, or FAILED when the repository already says why it cannot load."""
        handle = ModelHandle(
            name=source.name,
            version=version.version,
            platform=source.config.platform or version.format or "unknown",
            inputs=[t.to_spec() for t in source.config.inputs or []],
            outputs=[t.to_spec() for t in source.config.outputs or []],
            lineage=dict(source.config.lineage),
            fingerprint=version.fingerprint,
            payload_log=source.config.payload_log,
            feedback=source.config.feedback,
            monitoring=source.config.monitoring,
        )
        error = source.error or version.error
        if error:
            self.set_state(handle, ModelState.FAILED, error)
            logger.error("model %s version %s cannot load: %s", handle.name, handle.version, error)
        else:
            self.set_state(handle, ModelState.LOADING)
        return handle

    async def load_all(self, sources: list[ModelSource]) -> None:
        """Register and load every version in ``sources`` (used by tools; the server's
        ModelManager applies version policies and reloads on top of ``load``)."""
        # One at a time: framework imports are not safe to run concurrently in threads
        # (two threads importing scikit-learn at once see a half-initialised module).
        for source in sources:
            versions = source.versions or [
                VersionSource(
                    "1", source.config.format, None, f"{source.path}: no versions to serve"
                )
            ]
            for version in versions:
                handle = self.new_handle(source, version)
                self._registry.add(handle)
                if handle.state is ModelState.LOADING:
                    await self.load(handle, source, version)

    async def load(self, handle: ModelHandle, source: ModelSource, version: VersionSource) -> None:
        """Load ``handle``'s runtime: READY when it can serve, FAILED (with the reason) if not."""
        self.set_state(handle, ModelState.LOADING)
        await self._load(handle, source, version)

    async def unload(self, handle: ModelHandle, state: ModelState = ModelState.UNLOADED) -> None:
        """Stop the batcher and release the runtime; the handle stays usable for a reload."""
        if handle.batcher is not None:
            await handle.batcher.stop()
            handle.batcher = None
        runtime, handle.runtime, handle.predict = handle.runtime, None, None
        if runtime is not None:
            try:
                await self._executor.run(runtime.unload)
            except Exception:  # noqa: BLE001 - log and go on: the version is gone either way
                logger.exception(
                    "model %s version %s failed to unload", handle.name, handle.version
                )
            del runtime  # the last reference, so that the collection below can free it
            self._heap.after_unload()
        self.set_state(handle, state)

    async def _load(self, handle: ModelHandle, source: ModelSource, version: VersionSource) -> None:
        started = time.perf_counter()
        try:
            verify_artifacts(version.directory or source.path, source.config.sha256)
            runtime_cls = resolve_runtime(version.format or "")
            spec = ModelSpec(
                name=source.name,
                version=version.version,
                path=version.artifact or source.path,
                parameters=dict(source.config.parameters),
                inputs=handle.inputs or None,
                outputs=handle.outputs or None,
            )
            instances = source.config.worker_count()
            if instances:  # copies in worker processes, forked from one loaded model
                from servekit.workers import WorkerPoolRuntime

                runtime: Runtime = WorkerPoolRuntime(runtime_cls, spec, instances)
            else:
                runtime = runtime_cls(spec)
            await self._executor.run(runtime.load)
            signature = runtime.signature()
        except Exception as exc:  # noqa: BLE001 - any load failure belongs to this model only
            message = f"{type(exc).__name__}: {exc}"
            self.set_state(handle, ModelState.FAILED, message)
            logger.exception("model %s version %s failed to load", handle.name, handle.version)
            return
        handle.runtime = runtime
        handle.platform = source.config.platform or runtime.platform
        handle.inputs = handle.inputs or signature.inputs
        handle.outputs = handle.outputs or signature.outputs
        handle.predict = await self._bind_predict(handle, runtime, source.config.execution)
        warmup = source.config.warmup
        if warmup is not None:
            try:
                sample = warmup_inputs(
                    warmup.sample, version.directory or source.path, handle.inputs
                )
                for _ in range(warmup.repeat):
                    await handle.predict(sample, None, {})
            except Exception as exc:  # noqa: BLE001 - a version that cannot warm up never serves
                await self.unload(handle, ModelState.FAILED)
                handle.error = f"warm-up failed: {type(exc).__name__}: {exc}"
                logger.error("model %s version %s %s", handle.name, handle.version, handle.error)
                return
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
                    concurrency=max(source.config.worker_count(), 1),
                ),
                model=handle.name,
                on_batch=self._metrics.batch_size.labels(handle.name, handle.version).observe,
            )
            handle.predict = handle.batcher.predict
        handle.load_seconds = time.perf_counter() - started
        self._metrics.load_seconds.labels(handle.name, handle.version).set(handle.load_seconds)
        handle.loaded_at = time.monotonic()
        self._heap.after_load()
        self.set_state(handle, ModelState.READY)
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

        def timed(*args: object) -> float:
            """How long predict itself takes, timed in the pool thread: a thread hand-off
            delayed by a busy machine must not decide where every later request runs."""
            started = time.perf_counter()
            predict(*args)
            return time.perf_counter() - started

        timed_in_thread = self._executor.bind(timed)
        timings = []
        try:
            for _ in range(5):
                timings.append(await timed_in_thread(sample, None, {}))
        except Exception as exc:  # noqa: BLE001 - a model may refuse zeros; then stay on threads
            # Said at INFO with the reason: the same failure can mean the model cannot answer
            # at all (pickled by another scikit-learn version, say), not only that it refuses
            # zeros.
            logger.info(
                "%s: a timing call with zeros failed (%s: %s); predict runs in threads",
                handle.name, type(exc).__name__, exc,
            )  # fmt: skip
            return threaded
        if min(timings) < INLINE_BUDGET_SECONDS:
            logger.debug(
                "%s predict runs on the event loop (%.0f us)", handle.name, min(timings) * 1e6
            )
            return Executor.inline(predict)
        return threaded

    async def unload_all(self) -> None:
        for handle in list(self._registry):
            if handle.runtime is not None or handle.batcher is not None:
                await self.unload(handle)
