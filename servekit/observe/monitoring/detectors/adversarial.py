"""Model-agnostic adversarial detection by feature squeezing.

Adversarial inputs sit where the model is brittle: a small change moves the prediction a lot.
Squeezing each feature to ``bits`` of depth (within the reference's range) is such a small
change; the score of a row is the L1 distance between the model's outputs on the row and on its
squeezed copy. The threshold is the ``percentile`` of the scores of reference rows — the model
is not fitted here, so no rows are spent on fitting and every reference row is "new" to the
detector — which flags about ``100 - percentile`` % of ordinary inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from servekit.errors import ConfigError
from servekit.observe.monitoring.detectors.base import as_window, check_int, require_fitted
from servekit.observe.monitoring.detectors.outlier import check_percentile

if TYPE_CHECKING:
    from servekit.observe.monitoring.reference import Reference

Predict = Callable[[np.ndarray], np.ndarray]


class FeatureSqueezing:
    """Divergence between predict(x) and predict(squeeze(x)), thresholded on the reference."""

    kind = "adversarial"

    def __init__(
        self, name: str, *, bits: int = 4, percentile: float = 99.0, max_reference: int = 2000
    ) -> None:
        self.name = name
        self.bits = check_int("bits", bits, 1)
        if self.bits > 16:
            raise ConfigError(f"bits must be at most 16, got {self.bits}")
        self.percentile = check_percentile(percentile)
        self.max_reference = check_int("max_reference", max_reference, 10)
        self.threshold: float | None = None
        self._predict: Predict | None = None
        self._low = self._span = np.zeros(0)
        self._numeric = np.zeros(0, dtype=bool)

    def fit(self, reference: Reference, predict: Predict | None = None) -> None:
        if predict is None:
            raise ConfigError(f"detector {self.name!r} needs the model: it compares predictions")
        rows = np.asarray(reference.features, dtype=np.float64)[: self.max_reference]
        self._predict = predict
        self._low = rows.min(axis=0)
        span = rows.max(axis=0) - self._low
        self._span = np.where(span > 0, span, 1.0)
        self._numeric = np.array([t == "numeric" for t in reference.types])
        self.threshold = float(np.percentile(self._divergence(rows), self.percentile))

    def squeeze(self, rows: np.ndarray) -> np.ndarray:
        """Each numeric feature rounded to ``2**bits`` levels of the reference range."""
        levels = 2**self.bits - 1
        unit = (rows - self._low) / self._span
        squeezed = self._low + np.round(unit * levels) / levels * self._span
        return np.where(self._numeric, squeezed, rows)

    def _divergence(self, rows: np.ndarray) -> np.ndarray:
        assert self._predict is not None
        plain = np.asarray(self._predict(rows), dtype=np.float64).reshape(len(rows), -1)
        squeezed = np.asarray(self._predict(self.squeeze(rows)), dtype=np.float64)
        return np.abs(plain - squeezed.reshape(len(rows), -1)).sum(axis=1)

    def score(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        require_fitted(self.threshold is not None, self.name)
        scores = self._divergence(as_window(rows, len(self._numeric), self.name))
        return scores, scores > self.threshold


__all__ = ["FeatureSqueezing"]
