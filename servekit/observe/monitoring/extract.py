"""What the monitors read from a logged inference: feature rows, predictions, probabilities."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from servekit.observe.monitoring.config import MonitoringConfig
from servekit.observe.payloads.record import TensorRecord
from servekit.types.tensors import NUMPY_DTYPES


@dataclass(slots=True)
class Observed:
    """One inference as arrays with one row per instance (None when not logged)."""

    inputs: np.ndarray | None
    prediction: np.ndarray | None
    probabilities: np.ndarray | None


def as_rows(data: np.ndarray, n_features: int | None) -> np.ndarray:
    """A tensor as (rows, features): 2-D as is, 1-D as one row (or one column of scalars)."""
    if data.ndim == 1:
        one_row = n_features is None or data.shape[0] == n_features
        return data.reshape(1, -1) if one_row and n_features != 1 else data.reshape(-1, 1)
    return data.reshape(data.shape[0], -1)


def _array(tensor: TensorRecord) -> np.ndarray | None:
    if tensor.state or tensor.datatype == "BYTES":
        return None
    flat = np.frombuffer(tensor.data, NUMPY_DTYPES[tensor.datatype])
    return flat.reshape(tensor.shape).astype(np.float64)


def _pick(arrays: dict[str, np.ndarray], name: str | None) -> np.ndarray | None:
    if name is not None:
        return arrays.get(name)
    return next(iter(arrays.values()), None)


def _probabilities(arrays: dict[str, np.ndarray], name: str | None) -> np.ndarray | None:
    if name is not None:
        return arrays.get(name)
    return next((a for n, a in arrays.items() if "proba" in n and a.ndim == 2), None)


def _arrays(tensors: list[TensorRecord] | None) -> dict[str, np.ndarray]:
    found = {}
    for tensor in tensors or ():
        array = _array(tensor)
        if array is not None:
            found[tensor.name] = array
    return found


class Extractor:
    """Reads the configured input and outputs of one model's inferences."""

    def __init__(
        self, config: MonitoringConfig, n_features: int | None, outputs: bool = True
    ) -> None:
        """``outputs``: whether any detector reads the model's outputs (else they are skipped)."""
        self._input = config.input
        self._prediction = config.prediction_output
        self._probabilities = config.probability_output
        self._n_features = n_features
        self._outputs = outputs

    def observe(
        self, inputs: list[TensorRecord] | None, outputs: list[TensorRecord] | None
    ) -> Observed:
        """From a logged record (tensors as raw bytes)."""
        wanted = [t for t in inputs or () if self._input in (None, t.name)][:1]
        return self.observe_arrays(_arrays(wanted), _arrays(outputs) if self._outputs else {})

    def observe_arrays(
        self, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]
    ) -> Observed:
        features = _pick(inputs, self._input)
        rows = as_rows(features, self._n_features) if features is not None else None
        prediction = _pick(outputs, self._prediction)
        if prediction is not None:
            prediction = np.asarray(prediction, dtype=np.float64)
            prediction = prediction.reshape(max(prediction.shape[:1] or (1,)), -1)[:, 0]
        probabilities = _probabilities(outputs, self._probabilities)
        if probabilities is not None:
            probabilities = np.asarray(probabilities, dtype=np.float64)
        return Observed(rows, prediction, probabilities)


__all__ = ["Extractor", "Observed", "as_rows"]
