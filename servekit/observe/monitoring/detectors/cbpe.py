"""Label-free performance estimation for classifiers (confidence-based, as NannyML's CBPE).

A window's accuracy is estimated as the mean probability that each prediction is right, and
its (macro) F1 from the expected confusion counts. The probabilities are first calibrated on
the reference when it has labels (isotonic regression, one class against the rest): the
estimate is only as good as the calibration.

Why the false-positive rate stays at ``p_val``: the labelled reference is split in two; the
calibrators are fitted on one half and the alarm threshold is set on the other. The threshold
is the ``p_val`` quantile of the estimated accuracy of bootstrap windows of the same size drawn
from that held-out half, so a window of any size alarms at rate ``p_val`` when nothing changed
(fitting and thresholding on the same rows would make the reference look better than new
data and alarm too often).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from sklearn.isotonic import IsotonicRegression

from servekit.errors import ConfigError
from servekit.observe.monitoring.detectors.base import (
    DetectorResult,
    as_window,
    check_int,
    check_p_val,
    require_fitted,
)

if TYPE_CHECKING:
    from servekit.observe.monitoring.reference import Reference


def as_probabilities(outputs: np.ndarray) -> np.ndarray:
    """(n, k) class probabilities; a single column is P(class 1) of a binary classifier."""
    probabilities = np.asarray(outputs, dtype=np.float64)
    probabilities = probabilities.reshape(len(probabilities), -1)
    if probabilities.shape[1] == 1:
        probabilities = np.column_stack([1 - probabilities[:, 0], probabilities[:, 0]])
    return probabilities


def expected_scores(calibrated: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """(expected accuracy, expected macro F1) of ``predicted`` labels given P(class)."""
    rows = np.arange(len(predicted))
    accuracy = float(calibrated[rows, predicted].mean())
    f1 = []
    for label in range(calibrated.shape[1]):
        chosen = predicted == label
        true_positive = calibrated[chosen, label].sum()
        false_positive = (1 - calibrated[chosen, label]).sum()
        false_negative = calibrated[~chosen, label].sum()
        denominator = 2 * true_positive + false_positive + false_negative
        if denominator > 0:
            f1.append(2 * true_positive / denominator)
    return accuracy, float(np.mean(f1)) if f1 else 0.0


class CBPE:
    """Estimated accuracy and F1 per window of predicted probabilities."""

    kind = "performance_estimate"

    def __init__(
        self, name: str, *, p_val: float = 0.05, n_bootstrap: int = 1000, seed: int = 0
    ) -> None:
        self.name = name
        self.p_val = check_p_val(p_val)
        self.n_bootstrap = check_int("n_bootstrap", n_bootstrap, 100)
        self.seed = check_int("seed", seed, 0)
        self._calibrators: list[IsotonicRegression] | None = None
        self._confidence: np.ndarray | None = None
        self._reference_accuracy: float | None = None
        self._thresholds: dict[int, float] = {}
        self._classes = 0

    def fit(self, reference: Reference) -> None:
        if reference.predictions is None:
            raise ConfigError(
                f"detector {self.name!r} needs predicted probabilities on the reference"
            )
        probabilities = as_probabilities(reference.predictions)
        self._classes = probabilities.shape[1]
        self._thresholds = {}
        if reference.targets is None:
            self._calibrators = []
            self._confidence = probabilities.max(axis=1)
            return
        targets = np.asarray(reference.targets).astype(int)
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(targets))
        fit_rows, hold_rows = order[: len(order) // 2], order[len(order) // 2 :]
        self._calibrators = [
            IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(
                probabilities[fit_rows, label], targets[fit_rows] == label
            )
            for label in range(self._classes)
        ]
        held = self._calibrate(probabilities[hold_rows])
        predicted = probabilities[hold_rows].argmax(axis=1)
        self._confidence = held[np.arange(len(hold_rows)), predicted]
        self._reference_accuracy = float(np.mean(predicted == targets[hold_rows]))

    def _calibrate(self, probabilities: np.ndarray) -> np.ndarray:
        if not self._calibrators:
            return probabilities
        calibrated = np.column_stack(
            [c.predict(probabilities[:, i]) for i, c in enumerate(self._calibrators)]
        )
        totals = calibrated.sum(axis=1, keepdims=True)
        return np.where(totals > 0, calibrated / np.where(totals > 0, totals, 1), probabilities)

    def _threshold(self, size: int) -> float:
        """The lowest estimated accuracy of a window of ``size`` that is not an alarm.

        The null is the difference between a bootstrap window's mean confidence and a bootstrap
        copy of the held-out reference's mean: the reference figure is itself an estimate, and
        ignoring its error makes large windows over-alarm.
        """
        if size not in self._thresholds:
            assert self._confidence is not None
            rng = np.random.default_rng(self.seed + size)
            confidence = self._confidence
            window = rng.choice(confidence, size=(self.n_bootstrap, size)).mean(axis=1)
            reference = rng.choice(confidence, size=(self.n_bootstrap, len(confidence)))
            difference = window - reference.mean(axis=1)
            self._thresholds[size] = float(confidence.mean() + np.quantile(difference, self.p_val))
        return self._thresholds[size]

    def test(self, window: np.ndarray) -> DetectorResult:
        require_fitted(self._confidence is not None, self.name)
        probabilities = as_window(as_probabilities(window), self._classes, self.name)
        calibrated = self._calibrate(probabilities)
        accuracy, f1 = expected_scores(calibrated, probabilities.argmax(axis=1))
        threshold = self._threshold(len(probabilities))
        values = {"estimated_accuracy": accuracy, "estimated_f1": f1}
        if self._reference_accuracy is not None:
            values["reference_accuracy"] = self._reference_accuracy
        return DetectorResult(
            detector=self.name,
            kind=self.kind,
            alarm=accuracy < threshold,
            statistic=accuracy,
            threshold=threshold,
            window_size=len(probabilities),
            values=values,
        )


__all__ = ["CBPE", "as_probabilities", "expected_scores"]
