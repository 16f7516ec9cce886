"""Per-instance outlier detection: isolation forest and robust (MinCovDet) Mahalanobis distance.

Why a row is flagged at the promised rate: the model is fitted on one part of the reference and
the threshold is the ``percentile`` of the scores of the OTHER, held-out part. Scores of the
rows a model was fitted on are optimistic (too normal), so a threshold taken from them flags
more than ``100 - percentile`` % of new reference-like rows; held-out scores behave like new
data, so about ``100 - percentile`` % of rows from the reference distribution are flagged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.covariance import MinCovDet
from sklearn.ensemble import IsolationForest

from servekit.errors import ConfigError
from servekit.observe.monitoring.detectors.base import as_window, check_int, require_fitted

if TYPE_CHECKING:
    from servekit.observe.monitoring.reference import Reference


def check_percentile(percentile: Any) -> float:
    try:
        value = float(percentile)
    except (TypeError, ValueError):
        raise ConfigError(f"percentile must be a number, got {percentile!r}") from None
    if not 50.0 <= value < 100.0:
        raise ConfigError(f"percentile must be in [50, 100), got {value}")
    return value


def split_rows(rows: np.ndarray, held_out: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, held-out rows) of the reference, shuffled with ``seed``."""
    order = np.random.default_rng(seed).permutation(len(rows))
    cut = max(1, int(round(len(rows) * (1 - held_out))))
    if cut >= len(rows):
        raise ConfigError("the reference needs at least two rows to calibrate a threshold")
    return rows[order[:cut]], rows[order[cut:]]


class _ThresholdedScorer:
    """Fit on part of the reference, threshold at a percentile of the held-out scores."""

    kind = "outlier"

    def __init__(
        self, name: str, *, percentile: float = 99.0, held_out: float = 0.3, seed: int = 0
    ) -> None:
        self.name = name
        self.percentile = check_percentile(percentile)
        if not 0.05 <= float(held_out) <= 0.9:
            raise ConfigError(f"held_out must be in [0.05, 0.9], got {held_out}")
        self.held_out = float(held_out)
        self.seed = check_int("seed", seed, 0)
        self.threshold: float | None = None
        self._width = 0

    def _fit_model(self, rows: np.ndarray) -> None:
        raise NotImplementedError

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fit(
        self, reference: Reference, predict: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> None:
        rows = np.asarray(reference.features, dtype=np.float64)
        self._width = rows.shape[1]
        fit_rows, held_rows = split_rows(rows, self.held_out, self.seed)
        self._fit_model(fit_rows)
        self.threshold = float(np.percentile(self._scores(held_rows), self.percentile))

    def score(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(score per row, higher is stranger; flag per row: score above the threshold)."""
        require_fitted(self.threshold is not None, self.name)
        scores = self._scores(as_window(rows, self._width, self.name))
        return scores, scores > self.threshold


class IsolationForestOutlier(_ThresholdedScorer):
    """Isolation forest; the score is the negated ``score_samples`` (higher: easier to isolate)."""

    def __init__(self, name: str, *, n_estimators: int = 100, **options: Any) -> None:
        super().__init__(name, **options)
        self.n_estimators = check_int("n_estimators", n_estimators, 10)
        self._model: IsolationForest | None = None

    def _fit_model(self, rows: np.ndarray) -> None:
        self._model = IsolationForest(n_estimators=self.n_estimators, random_state=self.seed)
        self._model.fit(rows)

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        assert self._model is not None
        return -self._model.score_samples(rows)


class MahalanobisOutlier(_ThresholdedScorer):
    """Squared Mahalanobis distance under a robust (minimum covariance determinant) fit."""

    def __init__(self, name: str, **options: Any) -> None:
        super().__init__(name, **options)
        self._location: np.ndarray | None = None
        self._precision: np.ndarray | None = None

    def _fit_model(self, rows: np.ndarray) -> None:
        if len(rows) <= rows.shape[1]:
            raise ConfigError(
                f"detector {self.name!r}: a robust covariance needs more reference rows "
                f"({len(rows)} to fit) than features ({rows.shape[1]})"
            )
        fitted = MinCovDet(random_state=self.seed).fit(rows)
        # Kept as plain arrays: scikit-learn's mahalanobis() re-validates its input on every
        # call, which cost about 1 ms per request when scoring inline.
        self._location = fitted.location_
        self._precision = fitted.get_precision()

    def _scores(self, rows: np.ndarray) -> np.ndarray:
        assert self._location is not None and self._precision is not None
        centred = np.asarray(rows, dtype=np.float64) - self._location
        return np.sum((centred @ self._precision) * centred, axis=1)


__all__ = ["IsolationForestOutlier", "MahalanobisOutlier", "check_percentile", "split_rows"]
