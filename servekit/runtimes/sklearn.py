"""scikit-learn estimators and pipelines saved with joblib or pickle.

Outputs ``predict`` and, where the estimator has it, ``predict_proba`` as separate tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from servekit.runtimes.base import Runtime, Signature, feature_input, single_input
from servekit.types.metadata import TensorSpec
from servekit.types.tensors import datatype_of

PREDICT = "predict"
PREDICT_PROBA = "predict_proba"


class SKLearnRuntime(Runtime):
    platform = "sklearn"

    def load(self) -> None:
        import joblib  # the sklearn extra brings it; imported here so other runtimes don't need it

        self._model = joblib.load(self.spec.path)
        self._has_proba = hasattr(self._model, "predict_proba")

    def predict(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> dict[str, np.ndarray]:
        features = single_input(inputs)
        wanted = outputs if outputs is not None else self._output_names()
        result: dict[str, np.ndarray] = {}
        if PREDICT in wanted:
            result[PREDICT] = np.asarray(self._model.predict(features))
        if PREDICT_PROBA in wanted and self._has_proba:
            result[PREDICT_PROBA] = np.asarray(self._model.predict_proba(features))
        return result

    def _output_names(self) -> list[str]:
        return [PREDICT, PREDICT_PROBA] if self._has_proba else [PREDICT]

    def signature(self) -> Signature:
        model = self._model
        n_features = getattr(model, "n_features_in_", None)
        classes = getattr(model, "classes_", None)
        label_type = datatype_of(np.asarray(classes)) if classes is not None else "FP64"
        outputs = [TensorSpec(PREDICT, label_type, (-1,))]
        if self._has_proba:
            n_classes = len(classes) if classes is not None else -1
            outputs.append(TensorSpec(PREDICT_PROBA, "FP64", (-1, n_classes)))
        return Signature([feature_input("input-0", n_features)], outputs)
