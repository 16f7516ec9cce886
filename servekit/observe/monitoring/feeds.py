"""How each kind of detector is fed: windows of rows, one value at a time, or row by row.

A detector is wrapped by the feed matching the method it has (``test``, ``update`` or
``score``: the three protocols of ``detectors.base``), so the monitor treats them alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from servekit.observe.monitoring.config import DetectorConfig, WindowConfig
from servekit.observe.monitoring.extract import Observed
from servekit.observe.monitoring.windows import CountWindow, Window, build_window

WINDOW_SOURCES = {
    "data_drift": "inputs",
    "output_drift": "outputs",
    "performance_estimate": "probabilities",
    "concept_drift": "errors",
}


def rows_of(observed: Observed, source: str) -> np.ndarray | None:
    """The rows of ``source`` in one inference (None when it was not logged)."""
    if source == "inputs":
        return observed.inputs
    if source == "probabilities":
        return observed.probabilities
    if source == "outputs":
        if observed.probabilities is not None:
            return observed.probabilities
        return None if observed.prediction is None else observed.prediction.reshape(-1, 1)
    if source == "prediction":  # the top score per row
        if observed.probabilities is not None:
            return observed.probabilities.max(axis=1).reshape(-1, 1)
        return None if observed.prediction is None else observed.prediction.reshape(-1, 1)
    return None  # errors come from feedback, not from inferences


def _result(**fields: Any) -> Any:
    """A DetectorResult (imported here: the detectors load only when a model uses them)."""
    from servekit.observe.monitoring.detectors.base import DetectorResult

    return DetectorResult(**fields)


@dataclass(slots=True)
class Outcome:
    results: list[Any] = field(default_factory=list)
    """DetectorResults, in the order they were computed."""
    flagged: list[tuple[str, int, int, float]] = field(default_factory=list)
    """(detector, inference index, row index, score) of rows flagged by outlier/adversarial
    detectors; the inference index points into the batch given to ``observe``."""


Batch = list[tuple[Observed, float]]
"""Inferences in journal order, each with the time its request arrived."""


class WindowFeed:
    """Data, output and performance-estimate detectors: one test per completed window."""

    def __init__(self, config: DetectorConfig, detector: Any, window: WindowConfig) -> None:
        self.name = config.label
        self.detector = detector
        self.source = config.source or WINDOW_SOURCES.get(detector.kind, "inputs")
        self.window: Window = build_window(window)

    def observe(self, batch: Batch, outcome: Outcome) -> None:
        found = [(rows, t) for o, t in batch if (rows := rows_of(o, self.source)) is not None]
        if isinstance(self.window, CountWindow) and found:  # one block: times do not matter
            found = [(np.concatenate([rows for rows, _ in found]), found[-1][1])]
        for rows, time in found:
            for window in self.window.add(rows, time):
                outcome.results.append(self.detector.test(window))

    def errors(self, values: np.ndarray, outcome: Outcome) -> None:
        if self.source == "errors":
            for window in self.window.add(values.reshape(-1, 1), 0.0):
                outcome.results.append(self.detector.test(window))

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "window": self.window.describe()}


class StreamFeed:
    """ADWIN / Page-Hinkley: one value at a time; a result only when it alarms."""

    def __init__(self, config: DetectorConfig, detector: Any, window: WindowConfig) -> None:
        self.name = config.label
        self.detector = detector
        self.source = config.source or "prediction"
        self.seen = 0
        self.resolve_after = window.size or 100
        """Values without an alarm after which a calm result is reported (resolving alerts)."""
        self._quiet: int | None = None

    def observe(self, batch: Batch, outcome: Outcome) -> None:
        for observed, _ in batch:
            rows = rows_of(observed, self.source)
            if rows is not None:
                self._update(rows[:, 0], outcome)

    def errors(self, values: np.ndarray, outcome: Outcome) -> None:
        if self.source == "errors":
            self._update(values, outcome)

    def _update(self, values: np.ndarray, outcome: Outcome) -> None:
        for value in values:
            self.seen += 1
            result = self.detector.update(float(value))
            if result is not None:
                outcome.results.append(result)
                self._quiet = 0
            elif self._quiet is not None:
                self._quiet += 1
                if self._quiet >= self.resolve_after:
                    outcome.results.append(
                        _result(
                            detector=self.name,
                            kind=self.detector.kind,
                            alarm=False,
                            window_size=self._quiet,
                        )
                    )
                    self._quiet = None

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "values_seen": self.seen}


class InstanceFeed:
    """Outlier and adversarial detectors: every row scored; the flagged share per window."""

    def __init__(self, config: DetectorConfig, detector: Any, window: WindowConfig) -> None:
        self.name = config.label
        self.detector = detector
        self.inline = config.inline
        self.alarm_rate = float(config.alarm_rate)
        self.window = CountWindow(window.size or 100, int(window.step or 0) or None)

    def observe(self, batch: Batch, outcome: Outcome) -> None:
        """Score the rows of the whole batch in one call (a forest costs milliseconds per
        call, microseconds per row)."""
        scored = [(i, o.inputs) for i, (o, _) in enumerate(batch) if o.inputs is not None]
        if not scored:
            return
        scores, flags = self.detector.score(np.concatenate([rows for _, rows in scored]))
        scores = np.asarray(scores, dtype=float)
        flags = np.asarray(flags, dtype=bool)
        ends = np.cumsum([len(rows) for _, rows in scored])
        for position in np.flatnonzero(flags):
            item = int(np.searchsorted(ends, position, side="right"))
            row = int(position - (ends[item - 1] if item else 0))
            outcome.flagged.append((self.name, scored[item][0], row, float(scores[position])))
        for window in self.window.add(np.column_stack([flags.astype(float), scores])):
            outcome.results.append(self._result(window))

    def _result(self, window: np.ndarray) -> Any:
        rate = float(window[:, 0].mean())
        return _result(
            detector=self.name,
            kind=self.detector.kind,
            alarm=rate > self.alarm_rate,
            statistic=rate,
            threshold=self.alarm_rate,
            window_size=len(window),
            values={
                "outlier_rate": rate,
                "outliers": float(window[:, 0].sum()),
                "mean_score": float(window[:, 1].mean()),
            },
        )

    def errors(self, values: np.ndarray, outcome: Outcome) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"source": "inputs", "inline": self.inline, "window": self.window.describe()}


Feed = WindowFeed | StreamFeed | InstanceFeed

FEEDS: dict[str, type[WindowFeed] | type[StreamFeed] | type[InstanceFeed]] = {
    "test": WindowFeed,
    "update": StreamFeed,
    "score": InstanceFeed,
}
"""The feed of a detector, by the protocol method it implements."""


def feed_for(config: DetectorConfig, detector: Any, window: WindowConfig) -> Feed:
    for method, feed in FEEDS.items():
        if callable(getattr(detector, method, None)):
            return feed(config, detector, window)
    raise TypeError(f"detector {config.label!r} has none of test(), update(), score()")


__all__ = ["FEEDS", "Feed", "InstanceFeed", "Outcome", "StreamFeed", "WindowFeed", "feed_for"]
