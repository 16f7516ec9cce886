"""Ground truth for logged predictions, and the live performance it reveals per model version.

Feedback is stored as it arrives, joined to its prediction by event id when figures are
computed: a label that arrives before its prediction reached the store joins as soon as the
prediction lands, and one that arrives days later joins as long as the prediction is retained.
Windows count feedback by when it arrived, so late labels show up in the current figures.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from servekit.core.registry import ModelRegistry
from servekit.errors import InvalidInput, NotFound, Unavailable
from servekit.observe import performance
from servekit.observe.payloads.config import FeedbackConfig
from servekit.observe.payloads.service import PayloadLog
from servekit.observe.payloads.store import LabelledPrediction, PayloadStore

logger = logging.getLogger("servekit.feedback")

RewardListener = Callable[[str, str, float, str], None]
"""(model, version, reward, request id): how bandit routers learn from feedback."""
TruthListener = Callable[[str, str, str, Any], None]
"""(model, version, event id, truth): how monitoring turns feedback into an error stream."""
Estimator = Callable[[str], dict[str, Any] | None]
"""model -> label-free performance estimates shown next to the realised figures."""


@dataclass(slots=True)
class Feedback:
    id: str
    truth: Any
    reward: float | None


def parse_feedback(document: Any, header_id: str | None = None) -> Feedback:
    """servekit's shape ``{"id", "truth", "reward"}`` or Seldon Core's
    ``{"request", "response", "truth", "reward"}`` (the id is the response's ``meta.puid``)."""
    if not isinstance(document, dict):
        raise InvalidInput("feedback must be a JSON object")
    event_id = document.get("id") or _seldon_puid(document) or header_id
    if not isinstance(event_id, str) or not event_id:
        raise InvalidInput(
            "feedback needs the request id: 'id', Seldon's response.meta.puid, or an "
            "X-Request-Id header (the id every inference response carries)"
        )
    truth = document.get("truth")
    if isinstance(truth, dict):
        truth = _seldon_data(truth)
    if isinstance(truth, list):
        truth = [_scalar(v) for v in truth]
    elif truth is not None:
        truth = _scalar(truth)
    reward = document.get("reward")
    if reward is not None and (
        isinstance(reward, bool) or not isinstance(reward, int | float) or not math.isfinite(reward)
    ):
        raise InvalidInput("'reward' must be a finite number")
    if truth is None and reward is None:
        raise InvalidInput("feedback needs 'truth', 'reward' or both")
    return Feedback(event_id, truth, float(reward) if reward is not None else None)


def _seldon_puid(document: dict) -> str | None:
    for part in ("response", "request"):
        message = document.get(part)
        meta = message.get("meta") if isinstance(message, dict) else None
        if isinstance(meta, dict) and isinstance(meta.get("puid"), str):
            return meta["puid"]
    return None


def _seldon_data(message: dict) -> Any:
    """The values of a SeldonMessage: data.ndarray, data.tensor.values, or jsonData."""
    data = message.get("data")
    if isinstance(data, dict):
        if "ndarray" in data:
            values = data["ndarray"]
        elif isinstance(data.get("tensor"), dict):
            values = data["tensor"].get("values")
        else:
            raise InvalidInput("Seldon truth needs data.ndarray or data.tensor.values")
    elif "jsonData" in message:
        values = message["jsonData"]
    else:
        raise InvalidInput("'truth' must be a value, a list, or a SeldonMessage with data")
    array = np.asarray(values, dtype=object)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim > 1:
        raise InvalidInput("'truth' must hold one value per row of the request")
    return array.tolist()


def _scalar(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidInput(f"truth values must be numbers or strings, got {value!r}")
    return value


class FeedbackService:
    def __init__(
        self,
        payload_log: PayloadLog | None,
        registry: ModelRegistry,
        metrics_registry: CollectorRegistry,
        windows: list[float],
    ) -> None:
        self._log = payload_log
        self._models = registry
        self.windows = sorted(windows)
        self.reward_listeners: list[RewardListener] = []
        self.truth_listeners: list[TruthListener] = []
        self.estimators: list[Estimator] = []
        self._dirty: set[str] = set()
        self.received = Counter(
            "servekit_feedback",
            "Feedback received, by model and the version that made the prediction.",
            ["model", "version"],
            registry=metrics_registry,
        )
        self.gauge = Gauge(
            "servekit_model_performance",
            "Live performance from feedback, by model, version, window and metric "
            "(accuracy, f1_macro, log_loss, rmse, mae, r2, reward_mean...).",
            ["model", "version", "window", "metric"],
            registry=metrics_registry,
        )

    def _store(self) -> PayloadStore:
        if self._log is None or self._log.store is None:
            raise Unavailable(
                "feedback needs the embedded payload store (payload_log.enabled and "
                "payload_log.store.enabled)"
            )
        return self._log.store

    async def submit(self, model: str, document: Any, header_id: str | None) -> dict[str, Any]:
        feedback = parse_feedback(document, header_id)
        store = self._store()
        assert self._log is not None
        # Feedback may name the service (or graph) that was called: it goes to its model.
        model = self._log.served_model(model, feedback.id) or model
        self._models.versions(model)  # raises ModelNotFound for an unknown model
        version = await asyncio.to_thread(self._log.find_version, model, feedback.id)
        if version is None:
            raise NotFound(
                f"no logged prediction of model '{model}' has id '{feedback.id}' (unknown, "
                "older than the retention, or not logged)"
            )
        await asyncio.to_thread(
            store.add_feedback, model, feedback.id, feedback.truth, feedback.reward
        )
        self.received.labels(model, version).inc()
        self._dirty.add(model)
        if feedback.reward is not None:
            for listener in self.reward_listeners:
                listener(model, version, feedback.reward, feedback.id)
        if feedback.truth is not None:
            for truth_listener in self.truth_listeners:
                truth_listener(model, version, feedback.id, feedback.truth)
        return {"id": feedback.id, "model_name": model, "model_version": version}

    async def performance(
        self, model: str, baseline: str | None = None, candidate: str | None = None
    ) -> dict[str, Any]:
        self._models.versions(model)
        store = self._store()
        report = await asyncio.to_thread(self._report, store, model, baseline, candidate)
        self._publish(model, report)
        for estimator in self.estimators:
            estimated = estimator(model)
            if estimated:
                report.setdefault("estimated", {}).update(estimated)
        return report

    def _report(
        self, store: PayloadStore, model: str, baseline: str | None, candidate: str | None
    ) -> dict[str, Any]:
        rows = store.labelled(model)
        now = time.time()
        config = self._config(model)
        windows: dict[str, Any] = {}
        for seconds in [*self.windows, None]:
            label = "all" if seconds is None else _window_label(seconds)
            recent = [r for r in rows if seconds is None or r.feedback_time >= now - seconds]
            windows[label] = self._by_version(recent, config)
        versions = sorted(windows["all"])
        report: dict[str, Any] = {"model_name": model, "windows": windows}
        if len(versions) >= 2 or (baseline and candidate):
            base = baseline or versions[0]
            cand = candidate or versions[-1]
            report["comparison"] = self._compare(rows, config, base, cand)
        return report

    def _config(self, model: str) -> FeedbackConfig:
        for handle in self._models:
            if handle.name == model and handle.feedback is not None:
                return handle.feedback
        return FeedbackConfig()

    def _by_version(self, rows: list[LabelledPrediction], config: FeedbackConfig) -> dict:
        grouped: dict[str, list[LabelledPrediction]] = defaultdict(list)
        for row in rows:
            grouped[row.version].append(row)
        return {v: _figures(grouped[v], config) for v in sorted(grouped)}

    def _compare(self, rows: list, config: FeedbackConfig, base: str, cand: str) -> dict:
        a = _samples([r for r in rows if r.version == base], config)
        b = _samples([r for r in rows if r.version == cand], config)
        task = a["task"] if a["samples"] and a["task"] == b["task"] else b["task"]
        result = performance.compare_versions(a["samples"], b["samples"], task)
        return {"baseline_version": base, "candidate_version": cand, **result}

    def _publish(self, model: str, report: dict[str, Any]) -> None:
        for window, versions in report["windows"].items():
            for version, figures in versions.items():
                for metric, value in _flat_metrics(figures):
                    self.gauge.labels(model, version, window, metric).set(value)

    async def refresh_forever(self, interval: float = 5.0) -> None:
        """Keep the Prometheus gauges current for models that received feedback."""
        while True:
            await asyncio.sleep(interval)
            dirty, self._dirty = self._dirty, set()
            for model in dirty:
                try:
                    await self.performance(model)
                except Exception:  # noqa: BLE001 - a bad row must not stop the refresher
                    logger.exception("feedback: could not compute performance of %s", model)


# -- joining truth to what the model answered --------------------------------------------------


@dataclass(slots=True)
class _Joined:
    task: str
    truth: list[Any]
    predicted: list[Any]
    probabilities: list[list[float]] | None
    rewards: list[float]
    unmatched: int


def _window_label(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _output(response: dict[str, Any], name: str | None, proba: bool) -> dict[str, Any] | None:
    outputs = response.get("outputs") or []
    if name is not None:
        return next((o for o in outputs if o.get("name") == name), None)
    if not proba:
        return outputs[0] if outputs else None
    for output in outputs[1:]:
        shape = output.get("shape") or []
        if "proba" in output.get("name", "") and len(shape) == 2:
            return output
    return None


def _join(rows: list[LabelledPrediction], config: FeedbackConfig) -> _Joined:
    """Flatten feedback rows to one (truth, prediction[, probabilities]) per request row."""
    joined = _Joined(config.task or "", [], [], [], [], 0)
    with_proba = True
    for row in rows:
        if row.reward is not None:
            joined.rewards.append(row.reward)
        if row.truth is None:
            continue
        prediction = _output(row.response, config.prediction_output, proba=False)
        data = (prediction or {}).get("data")
        truth = row.truth if isinstance(row.truth, list) else [row.truth]
        if not isinstance(data, list) or len(data) != len(truth):
            joined.unmatched += 1  # truth for a different number of rows, or no prediction
            continue
        if not joined.task:
            regression = str(prediction.get("datatype", "")).startswith("FP")  # type: ignore[union-attr]
            joined.task = "regression" if regression else "classification"
        joined.truth.extend(truth)
        joined.predicted.extend(data)
        proba = _output(row.response, config.probability_output, proba=True)
        if with_proba and proba is not None and isinstance(proba.get("data"), list):
            columns = proba["shape"][1]
            values = proba["data"]
            joined.probabilities.extend(  # type: ignore[union-attr]
                values[i : i + columns] for i in range(0, len(values), columns)
            )
        else:
            with_proba = False
    if not with_proba or not joined.probabilities:
        joined.probabilities = None
    return joined


def _figures(rows: list[LabelledPrediction], config: FeedbackConfig) -> dict[str, Any]:
    joined = _join(rows, config)
    figures: dict[str, Any] = {"feedback": len(rows), "unmatched": joined.unmatched}
    if joined.truth:
        figures["task"] = joined.task
        if joined.task == "classification":
            probabilities = (
                np.asarray(joined.probabilities, dtype=float) if joined.probabilities else None
            )
            figures["metrics"] = performance.classification_metrics(
                joined.truth, joined.predicted, probabilities, config.classes
            )
        else:
            figures["metrics"] = performance.regression_metrics(joined.truth, joined.predicted)
    if joined.rewards:
        figures["reward"] = performance.reward_summary(joined.rewards)
    return figures


def _samples(rows: list[LabelledPrediction], config: FeedbackConfig) -> dict[str, Any]:
    joined = _join(rows, config)
    if not joined.truth and joined.rewards:
        return {"task": "reward", "samples": performance.samples("reward", rewards=joined.rewards)}
    task = joined.task or "classification"
    return {"task": task, "samples": performance.samples(task, joined.truth, joined.predicted)}


def _flat_metrics(figures: dict[str, Any]) -> list[tuple[str, float]]:
    """(metric, value) pairs for the gauges: scalar metrics and the reward mean."""
    pairs = [
        (name, float(value))
        for name, value in (figures.get("metrics") or {}).items()
        if isinstance(value, int | float) and not isinstance(value, bool) and name != "count"
    ]
    for label, values in ((figures.get("metrics") or {}).get("per_class") or {}).items():
        pairs.append((f"f1_class_{label}", float(values["f1"])))
    if figures.get("reward") and figures["reward"].get("mean") is not None:
        pairs.append(("reward_mean", float(figures["reward"]["mean"])))
    pairs.append(("labelled", float(figures.get("feedback", 0))))
    return pairs
