"""The monitor of one model: its reference, its fitted detectors and what they said last."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from servekit.observe.monitoring.config import MonitoringConfig
from servekit.observe.monitoring.extract import Extractor, Observed
from servekit.observe.monitoring.feeds import Feed, InstanceFeed, Outcome, StreamFeed, feed_for

if TYPE_CHECKING:
    from servekit.observe.monitoring.reference import Reference

logger = logging.getLogger("servekit.monitoring")

RECENT_PREDICTIONS = 20_000
"""Predictions kept per model so feedback can be turned into an error stream."""

Predict = Callable[[np.ndarray], Observed]
"""Runs the model on feature rows (from a thread, never the event loop)."""


@dataclass(slots=True)
class ModelMonitor:
    model: str
    version: str
    config: MonitoringConfig
    reference: Reference
    feeds: list[Feed]
    extractor: Extractor
    lock: threading.Lock = field(default_factory=threading.Lock)
    last: dict[str, dict[str, Any]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    recent: OrderedDict[str, np.ndarray] = field(default_factory=OrderedDict)
    remote: set[str] = field(default_factory=set)
    """Feeds computed in the detector process (the others run here)."""
    described: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The remote feeds' describe(), as of their last reply."""
    inline_on_loop: bool = False
    """Inline scoring is cheap enough (Mahalanobis: microseconds) to skip the thread hop."""

    @property
    def keeps_predictions(self) -> bool:
        """Whether feedback is turned into an error stream (some detector follows errors)."""
        return any(getattr(f, "source", "") == "errors" for f in self.feeds)

    @property
    def local(self) -> list[Feed]:
        return [f for f in self.feeds if f.name not in self.remote]

    @property
    def inline(self) -> list[InstanceFeed]:
        return [f for f in self.feeds if isinstance(f, InstanceFeed) and f.inline]

    def observe(self, batch: list[tuple[str, Observed, float]], failed: Callable) -> Outcome:
        """Feed inferences (id, arrays, request time) to every detector; a detector that
        raises is reported to ``failed(name, exc)`` and skipped, the others go on."""
        outcome = Outcome()
        with self.lock:
            if self.keeps_predictions:
                for event_id, observed, _ in batch:
                    if observed.prediction is not None:
                        self.recent[event_id] = observed.prediction
                while len(self.recent) > RECENT_PREDICTIONS:
                    self.recent.popitem(last=False)
            timed = [(observed, when) for _, observed, when in batch]
            for feed in self.local:
                try:
                    feed.observe(timed, outcome)
                except Exception as exc:  # noqa: BLE001 - one bad detector must not stop the rest
                    failed(feed.name, exc)
        return outcome

    def errors(
        self, event_id: str, truth: Any, failed: Callable
    ) -> tuple[Outcome, np.ndarray | None]:
        """Feedback for ``event_id``: its error per row goes to the local 'errors' detectors;
        the values are returned for the remote ones."""
        outcome = Outcome()
        with self.lock:
            predicted = self.recent.get(event_id)
            values = error_values(predicted, truth) if predicted is not None else None
            if values is None:
                return outcome, None
            for feed in self.local:
                try:
                    feed.errors(values, outcome)
                except Exception as exc:  # noqa: BLE001
                    failed(feed.name, exc)
        return outcome, values

    def remember(self, result: dict[str, Any]) -> None:
        with self.lock:
            self.last[result["detector"]] = result
            self.counts[result["detector"]] = self.counts.get(result["detector"], 0) + 1


def error_values(predicted: np.ndarray, truth: Any) -> np.ndarray | None:
    """1/0 per row (classification: integral predictions) or the absolute error."""
    labels = truth if isinstance(truth, list) else [truth]
    if len(labels) != len(predicted):
        return None
    try:
        expected = np.asarray(labels, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if np.all(np.mod(predicted, 1) == 0):
        return (predicted != expected).astype(np.float64)
    return np.abs(predicted - expected)


def _reference_values(reference: Reference, source: str, outputs: Observed | None) -> np.ndarray:
    """What a stream detector is calibrated on: the reference's top scores or errors."""
    if outputs is None:
        return np.zeros(0)
    if source == "errors":
        if reference.targets is None or outputs.prediction is None:
            return np.zeros(0)
        values = error_values(outputs.prediction, list(reference.targets))
        return values if values is not None else np.zeros(0)
    if outputs.probabilities is not None:
        return outputs.probabilities.max(axis=1)
    return outputs.prediction if outputs.prediction is not None else np.zeros(0)


def build_monitor(
    model: str, version: str, config: MonitoringConfig, predict: Predict | None
) -> ModelMonitor:
    """Load the reference, run the model on it once, build and fit every detector.

    Slow (seconds for a large reference): called in a thread when a version becomes ready.
    The detectors' libraries (scipy, scikit-learn, river) are imported here, on first use.
    """
    from servekit.observe.monitoring.detectors import build_detector
    from servekit.observe.monitoring.reference import load_reference

    types = {name: "categorical" for name in config.categorical} or None
    reference = load_reference(
        config.reference, names=config.features, types=types, target=config.target
    )
    outputs = predict(reference.features) if predict is not None else None
    if outputs is not None and reference.predictions is None:
        reference.predictions = (
            outputs.probabilities if outputs.probabilities is not None else outputs.prediction
        )

    def predict_rows(rows: np.ndarray) -> np.ndarray:
        assert predict is not None
        observed = predict(rows)
        chosen = observed.probabilities
        return chosen if chosen is not None else observed.prediction  # type: ignore[return-value]

    feeds: list[Feed] = []
    for detector_config in config.detectors:
        detector: Any = build_detector(  # one of three protocols: the feed knows which
            detector_config.type, detector_config.label, **detector_config.options
        )
        feed = feed_for(detector_config, detector, config.window_of(detector_config))
        if isinstance(feed, StreamFeed):
            detector.fit(_reference_values(reference, feed.source, outputs))
        elif isinstance(feed, InstanceFeed):
            detector.fit(reference, predict_rows if predict is not None else None)
        else:
            detector.fit(reference)
        feeds.append(feed)
    reads_outputs = any(getattr(f, "source", "inputs") not in ("inputs",) for f in feeds)
    extractor = Extractor(config, reference.features.shape[1], outputs=reads_outputs)
    return ModelMonitor(model, version, config, reference, feeds, extractor)


__all__ = ["ModelMonitor", "Predict", "build_monitor", "error_values"]
