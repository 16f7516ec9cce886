"""Prediction (output) drift: the model's outputs on live traffic against its outputs on the
reference.

The same per-column tests as input drift (see ``tabular``): class labels — integral columns
with few distinct values — get the chi-squared test, scores and probabilities get KS, and the
columns are combined with Bonferroni or FDR, which keeps the false-positive rate at ``p_val``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from servekit.errors import ConfigError
from servekit.observe.monitoring.detectors.base import DetectorResult
from servekit.observe.monitoring.detectors.tabular import TabularDrift

if TYPE_CHECKING:
    from servekit.observe.monitoring.reference import Reference

MAX_LABELS = 20
"""An integral output column with at most this many distinct values is treated as labels."""


def output_types(outputs: np.ndarray) -> list[str]:
    """'categorical' for label-like columns, 'numeric' for scores."""
    types = []
    for column in outputs.T:
        labels = np.all(np.mod(column, 1) == 0) and len(np.unique(column)) <= MAX_LABELS
        types.append("categorical" if labels else "numeric")
    return types


class OutputDrift:
    """Drift of the model's outputs (the reference's ``predictions``)."""

    kind = "output_drift"

    def __init__(self, name: str, *, p_val: float = 0.05, correction: str = "bonferroni") -> None:
        self.name = name
        self._tabular = TabularDrift(name, p_val=p_val, correction=correction)
        self._tabular.kind = self.kind

    def fit(self, reference: Reference) -> None:
        if reference.predictions is None:
            raise ConfigError(
                f"detector {self.name!r} needs the model's outputs on the reference "
                "(a servable model or reference predictions)"
            )
        outputs = np.asarray(reference.predictions, dtype=np.float64)
        outputs = outputs.reshape(len(outputs), -1)
        names = [f"output{i}" for i in range(outputs.shape[1])]
        self._tabular.fit_columns(outputs, names, output_types(outputs))

    def test(self, window: np.ndarray) -> DetectorResult:
        return self._tabular.test(window)


__all__ = ["OutputDrift", "output_types"]
