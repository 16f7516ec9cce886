"""LightGBM boosters saved with ``Booster.save_model`` (the text format).

Classifiers output ``predict`` (class index) and ``predict_proba`` like scikit-learn's
LGBMClassifier; regressors and rankers only ``predict``. The objective stored in the model file
tells them apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from servekit.runtimes.base import Runtime, Signature, feature_input, single_input
from servekit.types.metadata import TensorSpec

PREDICT = "predict"
PREDICT_PROBA = "predict_proba"

_BINARY = {"binary"}
# Canonical names and the aliases LightGBM accepts for them.
_MULTICLASS = {"multiclass", "softmax", "multiclassova", "multiclass_ova", "ova", "ovr"}


class LightGBMRuntime(Runtime):
    platform = "lightgbm"

    def load(self) -> None:
        import lightgbm  # the lightgbm extra brings it; imported here, so other runtimes need not

        booster = lightgbm.Booster(model_file=str(self.spec.path))
        objective = booster.params.get("objective") or booster.dump_model()["objective"]
        # The model file writes e.g. "binary sigmoid:1"; the first word is the objective.
        self._objective: str = str(objective).split()[0]
        self._booster = booster
        # Parallelism comes from concurrent requests; one thread per call keeps latency steady.
        self._threads = int(self.spec.parameters.get("threads", 1))
        if self._objective in _BINARY:
            self._n_classes = 2
        elif self._objective in _MULTICLASS:
            self._n_classes = booster.num_model_per_iteration()
        else:
            self._n_classes = 0  # regression, ranking, cross-entropy: a score per row

    def predict(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> dict[str, np.ndarray]:
        features = single_input(inputs)
        wanted = outputs if outputs is not None else self._output_names()
        if PREDICT not in wanted and (PREDICT_PROBA not in wanted or not self._n_classes):
            return {}
        scores = self._booster.predict(features, num_threads=self._threads)
        if not self._n_classes:
            return {PREDICT: scores}
        if self._objective in _BINARY:  # P(class 1) per row; report both classes
            scores = np.column_stack([1.0 - scores, scores])
        scores = scores.reshape(-1, self._n_classes)  # LightGBM flattens an empty batch
        result: dict[str, np.ndarray] = {}
        if PREDICT in wanted:
            result[PREDICT] = scores.argmax(axis=1).astype(np.int64)
        if PREDICT_PROBA in wanted:
            result[PREDICT_PROBA] = scores
        return result

    def _output_names(self) -> list[str]:
        return [PREDICT, PREDICT_PROBA] if self._n_classes else [PREDICT]

    def signature(self) -> Signature:
        if self._n_classes:
            outputs = [
                TensorSpec(PREDICT, "INT64", (-1,)),
                TensorSpec(PREDICT_PROBA, "FP64", (-1, self._n_classes)),
            ]
        else:
            outputs = [TensorSpec(PREDICT, "FP64", (-1,))]
        # LightGBM splits on float64 thresholds, so FP64 input keeps predictions exact.
        n_features = self._booster.num_feature()
        return Signature([feature_input("input-0", n_features, "FP64")], outputs)

    def unload(self) -> None:
        self._booster = None
