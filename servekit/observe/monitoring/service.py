"""Model monitoring as one object: a consumer of the payload journal, the monitors it feeds,
the inline hook the DataPlane calls, and the state the API shows.

Why a journal consumer: every inference is already written to the on-disk journal before its
response leaves; reading it from a cursor, in a thread of its own, gives the detectors every
event at least once, in order, across restarts, without adding anything to the request path.
The detectors themselves run in a child process (``process.DetectorProcess``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
import uuid
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from prometheus_client import CollectorRegistry

from servekit.core.executor import INLINE_BUDGET_SECONDS
from servekit.core.registry import ModelHandle, ModelRegistry
from servekit.errors import NotFound, Unavailable
from servekit.observe.monitoring.alerts import AlertNotifier
from servekit.observe.monitoring.config import MonitoringConfig
from servekit.observe.monitoring.extract import Extractor, Observed, as_rows
from servekit.observe.monitoring.feeds import Outcome
from servekit.observe.monitoring.inline import score_rows
from servekit.observe.monitoring.metrics import MonitoringMetrics
from servekit.observe.monitoring.monitor import ModelMonitor, build_monitor
from servekit.observe.monitoring.outbox import Delivery, Outbox
from servekit.observe.monitoring.process import DetectorProcess, Reply
from servekit.observe.monitoring.store import ResultStore, result_dict
from servekit.observe.payloads.config import HTTPSinkConfig, PayloadLogSettings, SinkOptions
from servekit.observe.payloads.record import InferenceRecord, decode, decode_routing
from servekit.types.inference import InferenceResponse
from servekit.types.tensors import NUMPY_DTYPES

logger = logging.getLogger("servekit.monitoring")

RESULT_TYPE = "org.servekit.monitoring.result"
PACE_SECONDS = 1.0
"""Least time between two reads of the journal: the detectors then get large batches, so their
fixed cost per call (milliseconds for a forest) is paid once a second, not per request."""
BATCH_SIZE = 8192
CHUNK = 256
"""Events handled between two yields of the GIL."""
SINK_NAME = "monitoring"
_HOST = socket.gethostname()


class MonitorNotReady(Exception):
    """A monitored model's detectors are still being fitted: the journal keeps its events."""


class _Prepared:
    """What is known of one model's monitor: being built, built, or failed (and why)."""

    def __init__(self, key: tuple, status: str, monitor: ModelMonitor | None = None) -> None:
        self.key = key
        self.status = status
        self.monitor = monitor
        self.error: str | None = None
        self.notifier: AlertNotifier | None = None


class MonitorService:
    def __init__(
        self,
        registry: ModelRegistry,
        payload_settings: PayloadLogSettings,
        metrics_registry: CollectorRegistry,
        *,
        pace_seconds: float = PACE_SECONDS,
    ) -> None:
        self._registry = registry
        self._pace_seconds = pace_seconds
        self._stopping = threading.Event()
        self._watching = threading.Event()
        """Set once the models are loaded and watched: before, no record can be routed (a
        replay after a restart arrives before the models are back)."""
        self._settings = payload_settings
        self.metrics = MonitoringMetrics(metrics_registry)
        self.outbox = Outbox()
        self.detectors = DetectorProcess()
        self.store: ResultStore | None = None
        self._models: dict[str, _Prepared] = {}
        self._tasks: set[asyncio.Task] = set()
        self._feedback = ThreadPoolExecutor(1, thread_name_prefix="servekit-monitoring-feedback")
        self._event_urls = [s for s in payload_settings.sinks if isinstance(s, HTTPSinkConfig)]
        # What the journal needs of a consumer (the Sink protocol).
        self.name = SINK_NAME
        self.options = SinkOptions(name=SINK_NAME, batch_size=BATCH_SIZE)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, store_path: Path | None = None) -> None:
        directory = self._settings.directory.expanduser()
        retention = self._settings.store.retention_seconds
        self.store = ResultStore(store_path or directory / "monitoring.sqlite", retention)
        self.outbox.start()

    def stop(self) -> None:
        self._stopping.set()
        self._feedback.shutdown(wait=True)
        self.detectors.stop()
        self.outbox.stop()
        if self.store is not None:
            self.store.close()

    async def watch_forever(self, interval: float = 0.5) -> None:
        """Build a monitor when a monitored model (or a new version of it) becomes ready.
        Started once the repository is loaded."""
        while True:
            try:
                self._refresh()
            except Exception:  # noqa: BLE001 - never stop watching
                logger.exception("monitoring: refresh failed")
            self._watching.set()
            await asyncio.sleep(interval)

    async def refresh(self) -> None:
        """One pass of ``watch_forever``, waiting for the monitors it starts to be fitted."""
        self._refresh()
        self._watching.set()
        await asyncio.gather(*self._tasks)

    def _refresh(self) -> None:
        names = set()
        for name in self._registry.names():
            handle = self._default(name)
            config = _config_of(handle)
            if handle is None or config is None:
                continue
            names.add(name)
            key = (handle.version, handle.fingerprint, id(config))
            known = self._models.get(name)
            if handle.ready and (known is None or known.key != key):
                self._models[name] = _Prepared(key, "preparing", known.monitor if known else None)
                task = asyncio.create_task(self._prepare(name, handle, config, key))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        for name in set(self._models) - names:
            del self._models[name]

    def _default(self, name: str) -> ModelHandle | None:
        try:
            return self._registry.get(name)
        except Exception:  # noqa: BLE001 - removed meanwhile
            return None

    async def _prepare(
        self, name: str, handle: ModelHandle, config: MonitoringConfig, key: tuple
    ) -> None:
        predict = self._predictor(handle, config)
        try:
            monitor = await asyncio.to_thread(build_monitor, name, handle.version, config, predict)
            monitor.remote = await asyncio.to_thread(self.detectors.install, name, monitor.feeds)
            monitor.inline_on_loop = await asyncio.to_thread(_cheap_inline, monitor)
        except Exception as exc:  # noqa: BLE001 - a bad reference fails its monitor only
            logger.error("monitoring: cannot monitor model %s: %s", name, exc)
            prepared = _Prepared(key, "failed")
            prepared.error = f"{type(exc).__name__}: {exc}"
        else:
            prepared = _Prepared(key, "ready", monitor)
            previous = self._models.get(name)
            if previous is not None and previous.monitor is not None:  # a new version
                monitor.last.update(previous.monitor.last)  # the state shows what was seen
                monitor.counts.update(previous.monitor.counts)
            prepared.notifier = AlertNotifier(
                name,
                config.alerts,
                self.outbox,
                firing=previous.notifier.since if previous and previous.notifier else None,
            )
            logger.info(
                "monitoring model %s version %s: %d detectors, reference of %d rows",
                name, handle.version, len(monitor.feeds), len(monitor.reference.features),
            )  # fmt: skip
        if self._models.get(name) is not None and self._models[name].key == key:
            self._models[name] = prepared

    def _predictor(self, handle: ModelHandle, config: MonitoringConfig) -> Any:
        """A blocking predict for threads: runs the handle's predict on the event loop."""
        loop = asyncio.get_running_loop()
        spec = next((s for s in handle.inputs if s.name == config.input), None) or (
            handle.inputs[0] if handle.inputs else None
        )
        if spec is None or handle.predict is None:
            return None
        dtype = NUMPY_DTYPES.get(spec.datatype, np.float64)

        def predict(rows: np.ndarray) -> Observed:
            assert handle.predict is not None
            batch = {spec.name: np.ascontiguousarray(rows, dtype=dtype)}
            call: Coroutine[Any, Any, Any] = handle.predict(batch, None, {})  # type: ignore[assignment]
            future = asyncio.run_coroutine_threadsafe(call, loop)
            produced = dict(_named_outputs(future.result(timeout=120), handle))
            return Extractor(config, rows.shape[1]).observe_arrays({}, produced)

        return predict

    # -- the journal consumer (a SinkWorker thread) --------------------------------------------

    def open(self) -> None:
        return None

    def close(self) -> None:
        return None

    def wants_none(self) -> bool:
        """No model is monitored (checked from the sink thread: a registry changing under the
        scan answers 'maybe', and the records are read as usual)."""
        if self._models or not self._watching.is_set():
            return False
        try:
            return not any(_config_of(handle) is not None for handle in self._registry)
        except RuntimeError:  # changed size during iteration
            return False

    def deliver_encoded(self, payloads: list[bytes]) -> None:
        started = time.monotonic()
        if not self._watching.is_set():
            raise MonitorNotReady("the models are loading")
        monitored: dict[str, bool] = {}
        wanted = []
        for payload in payloads:
            routing = decode_routing(payload)
            if routing.status != "ok":
                continue
            if (keep := monitored.get(routing.model)) is None:
                keep = monitored[routing.model] = self._monitored(routing.model)
            if keep:
                wanted.append(decode(payload))
        self._check_ready({r.model for r in wanted})
        for start in range(0, len(wanted), CHUNK):
            time.sleep(0)  # let the event loop have the GIL between chunks: no latency spike
            self.deliver(wanted[start : start + CHUNK])
        if len(payloads) < BATCH_SIZE:  # caught up: let the next batch grow
            self._stopping.wait(self._pace_seconds - (time.monotonic() - started))

    def deliver(self, records: Sequence[InferenceRecord]) -> None:
        if not self._watching.is_set():
            raise MonitorNotReady("the models are loading")
        self._check_ready({r.model for r in records})
        by_model: dict[str, list[InferenceRecord]] = {}
        for record in records:
            prepared = self._models.get(record.model)
            if record.status == "ok" and prepared is not None and prepared.monitor is not None:
                by_model.setdefault(record.model, []).append(record)
        for model, batch in by_model.items():
            prepared = self._models[model]
            monitor = prepared.monitor
            assert monitor is not None
            try:
                observed = [
                    (r.id, monitor.extractor.observe(r.inputs, r.outputs), r.time) for r in batch
                ]
                outcome = monitor.observe(observed, self._failed(model))
                if monitor.remote:
                    timed = [(o, t) for _, o, t in observed]
                    self._merge(monitor, outcome, self.detectors.observe(model, timed))
                self._handle(prepared, outcome, batch)
            except Exception:  # noqa: BLE001 - retrying would feed the windows twice
                self.metrics.failures.labels(model, "*").inc()
                logger.exception("monitoring: %d events of %s skipped", len(batch), model)

    def _merge(self, monitor: ModelMonitor, outcome: Outcome, reply: Reply) -> None:
        """Add what the detector process computed to what was computed here."""
        remote, failures, described = reply
        outcome.results.extend(remote.results)
        outcome.flagged.extend(remote.flagged)
        monitor.described.update(described)
        for detector, error in failures:
            self._failed(monitor.model)(detector, RuntimeError(error))

    def _monitored(self, model: str) -> bool:
        return model in self._models or _config_of(self._default(model)) is not None

    def _check_ready(self, models: set[str]) -> None:
        """Raise (the journal retries the batch later) while a monitor is being fitted, or
        not yet started for a monitored model that just became ready."""
        for model in models:
            prepared = self._models.get(model)
            handle = self._default(model) if prepared is None else None
            waiting = handle is not None and handle.ready and _config_of(handle) is not None
            if waiting or (prepared is not None and prepared.status == "preparing"):
                raise MonitorNotReady(f"the monitor of model {model!r} is being prepared")

    def _failed(self, model: str) -> Any:
        def failed(detector: str, exc: Exception) -> None:
            self.metrics.failures.labels(model, detector).inc()
            logger.error("monitoring: detector %s of %s failed: %r", detector, model, exc)

        return failed

    def _handle(
        self,
        prepared: _Prepared,
        outcome: Outcome,
        records: Sequence[InferenceRecord],
    ) -> None:
        monitor = prepared.monitor
        assert monitor is not None and self.store is not None
        model = monitor.model
        if outcome.flagged:
            rows = []
            inline = {f.name for f in monitor.inline}
            for detector, index, row, score in outcome.flagged:
                record = records[index]
                shape = record.inputs[0].shape if record.inputs else []
                event = f"{record.id}#{row}" if len(shape) > 1 and shape[0] > 1 else record.id
                rows.append((detector, event, record.time, score, detector in inline))
                self.metrics.outliers.labels(model, detector, "async").inc()
            self.store.add_outliers(model, rows)
        if not outcome.results:
            return
        now = time.time()
        results = [result_dict(r, now) for r in outcome.results]
        self.store.add_results(model, results)
        for result, raw in zip(results, outcome.results, strict=True):
            monitor.remember(result)
            self.metrics.publish(model, raw)
            if prepared.notifier is not None:
                status = prepared.notifier.update(result)
                if status is not None:
                    self.metrics.alerts.labels(model, result["detector"], status).inc()
            if monitor.config.events:
                self._emit(model, result)

    def _emit(self, model: str, result: dict[str, Any]) -> None:
        """The result as a structured-mode CloudEvent to each HTTP sink of the payload log."""
        for sink in self._event_urls:
            if sink.models is not None and model not in sink.models:
                continue
            event = {
                "specversion": "1.0",
                "id": str(uuid.uuid4()),
                "source": f"http://{_HOST}/servekit/monitoring",
                "type": RESULT_TYPE,
                "subject": model,
                "time": datetime.fromtimestamp(result["time"], UTC).isoformat(),
                "datacontenttype": "application/json",
                "data": {"model_name": model, **result},
            }
            headers = {"content-type": "application/cloudevents+json", **sink.headers}
            self.outbox.put(
                Delivery(str(sink.url), orjson.dumps(event), headers, timeout=sink.timeout_seconds)
            )

    # -- feedback: the error stream -----------------------------------------------------------

    def on_truth(self, model: str, version: str, event_id: str, truth: Any) -> None:
        """Called by the feedback service; the work happens in this service's thread."""
        prepared = self._models.get(model)
        if prepared is None or prepared.monitor is None or truth is None:
            return
        self._feedback.submit(self._errors, prepared, event_id, truth)

    def _errors(self, prepared: _Prepared, event_id: str, truth: Any) -> None:
        assert prepared.monitor is not None
        try:
            monitor = prepared.monitor
            outcome, values = monitor.errors(event_id, truth, self._failed(monitor.model))
            if values is not None and monitor.remote:
                self._merge(monitor, outcome, self.detectors.errors(monitor.model, values))
            self._handle(prepared, outcome, [])
        except Exception:  # noqa: BLE001 - feedback must never fail because of monitoring
            logger.exception("monitoring: error stream of %s failed", prepared.monitor.model)

    # -- inline scoring (the DataPlane hook) --------------------------------------------------

    async def score_inline(
        self, handle: ModelHandle, inputs: dict[str, np.ndarray], response: InferenceResponse
    ) -> None:
        """Score the request with the inline detectors; the result goes into the response's
        parameters. Runs in a thread unless timed cheap: isolation forests take milliseconds."""
        prepared = self._models.get(handle.name)
        if prepared is None or prepared.monitor is None or not prepared.monitor.inline:
            return
        monitor = prepared.monitor
        name = monitor.config.input
        data = inputs[name] if name in inputs else next(iter(inputs.values()))
        rows = as_rows(np.asarray(data, dtype=np.float64), monitor.reference.features.shape[1])
        try:
            if monitor.inline_on_loop:
                parameters = score_rows(monitor.inline, rows)
            else:
                parameters = await asyncio.to_thread(score_rows, monitor.inline, rows)
        except Exception as exc:  # noqa: BLE001 - monitoring never fails a request
            for detector in monitor.inline:
                self._failed(handle.name)(detector.name, exc)
            return
        for detector in monitor.inline:
            flagged = parameters.get(f"{detector.name}_outliers", 0)
            if flagged:
                self.metrics.outliers.labels(handle.name, detector.name, "inline").inc(flagged)
        response.parameters.update(parameters)

    # -- the API ------------------------------------------------------------------------------

    def estimates(self, model: str) -> dict[str, Any] | None:
        """The last label-free performance estimates (CBPE) of ``model``, by detector."""
        prepared = self._models.get(model)
        if prepared is None or prepared.monitor is None:
            return None
        found = {
            name: {"time": r["time"], "window_size": r["window_size"], **r["values"]}
            for name, r in prepared.monitor.last.items()
            if r["kind"] == "performance_estimate"
        }
        return found or None

    def state(self, model: str, history: int = 20) -> dict[str, Any]:
        """What ``GET /v2/models/<name>/monitoring`` shows."""
        handle = self._default(model)
        if handle is None:
            self._registry.versions(model)  # raises ModelNotFound
        config = _config_of(handle)
        if config is None:
            raise NotFound(f"model '{model}' has no monitoring section in its model.yaml")
        if self.store is None:
            raise Unavailable("monitoring needs the payload log (payload_log.enabled)")
        prepared = self._models.get(model)
        state: dict[str, Any] = {
            "model_name": model,
            "status": prepared.status if prepared is not None else "waiting",
        }
        if prepared is not None and prepared.error:
            state["error"] = prepared.error
        monitor = prepared.monitor if prepared is not None else None
        if monitor is None:
            return state
        reference = monitor.reference
        state["model_version"] = monitor.version
        state["reference"] = {
            "source": config.reference,
            "rows": int(reference.features.shape[0]),
            "features": [
                {"name": n, "type": t}
                for n, t in zip(reference.names, reference.types, strict=True)
            ],
        }
        detectors: list[dict[str, Any]] = []
        drifted: set[str] = set()
        by_name = {d.label: d for d in config.detectors}
        for feed in monitor.feeds:
            last = monitor.last.get(feed.name)
            if last is not None and last["alarm"]:
                drifted.update(f["name"] for f in last["features"] if f["drifted"])
            detectors.append(
                {
                    "name": feed.name,
                    "type": by_name[feed.name].type,
                    "kind": feed.detector.kind,
                    **(monitor.described.get(feed.name) or feed.describe()),
                    "isolated": feed.name in monitor.remote,
                    "results": monitor.counts.get(feed.name, 0),
                    "alarm": bool(last and last["alarm"]),
                    "last_result": last,
                }
            )
        state["alarm"] = any(d["alarm"] for d in detectors)
        state["drifted_features"] = sorted(drifted)
        state["firing"] = prepared.notifier.firing if prepared and prepared.notifier else []
        state["detectors"] = detectors
        state["history"] = self.store.history(model, limit=history)
        state["outliers"] = self.store.outliers(model, limit=history)
        return state


def _cheap_inline(monitor: ModelMonitor) -> bool:
    """Time the inline detectors on one reference row (best of five) against the loader's
    budget for running predict on the event loop: a thread hop costs more than a fast score."""
    if not monitor.inline:
        return False
    row = np.asarray(monitor.reference.features[:1], dtype=np.float64)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        score_rows(monitor.inline, row)
        best = min(best, time.perf_counter() - started)
    return best < INLINE_BUDGET_SECONDS


def _config_of(handle: ModelHandle | None) -> MonitoringConfig | None:
    config = getattr(handle, "monitoring", None) if handle is not None else None
    return config if config is not None and config.enabled else None


def _named_outputs(produced: Any, handle: ModelHandle) -> list[tuple[str, Any]]:
    if isinstance(produced, dict):
        declared = [n for n in handle.output_names or () if n in produced]
        return [(n, produced[n]) for n in [*declared, *(n for n in produced if n not in declared)]]
    names = handle.output_names or [f"output-{i}" for i in range(len(produced))]
    return list(zip(names, produced, strict=False))


__all__ = [
    "RESULT_TYPE",
    "MonitorNotReady",
    "MonitorService",
]
