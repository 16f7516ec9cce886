"""XGBoost boosters saved with ``save_model`` (.json, .ubj or the legacy binary .bst).

Predicts with ``inplace_predict`` straight on the numpy matrix: no DMatrix is built per request.
Classifiers output ``predict`` (class index) and ``predict_proba`` like scikit-learn; regressors
only ``predict``. The objective, read from the booster's saved config, tells them apart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from servekit.runtimes.base import Runtime, Signature, feature_input, single_input
from servekit.types.metadata import TensorSpec

PREDICT = "predict"
PREDICT_PROBA = "predict_proba"

# Objectives that predict a margin or a label; probabilities come from the margin.
_MARGIN_OBJECTIVES = {"binary:logitraw", "multi:softmax"}
# Objectives that predict a label and have no probability at all.
_LABEL_ONLY_OBJECTIVES = {"binary:hinge"}


def _softmax(margin: np.ndarray) -> np.ndarray:
    shifted = np.exp(margin - margin.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _sigmoid(margin: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -margin))  # no overflow for large negative margins


class XGBoostRuntime(Runtime):
    platform = "xgboost"

    def load(self) -> None:
        import xgboost  # the xgboost extra brings it; imported here so other runtimes don't need it

        booster = xgboost.Booster()
        # From bytes, XGBoost tells JSON from UBJSON by content; from a path it goes by the
        # extension and warns on .bst, which XGBoost 3 writes as UBJSON.
        booster.load_model(bytearray(Path(self.spec.path).read_bytes()))
        # Parallelism comes from concurrent requests; one thread per call keeps latency steady.
        booster.set_param({"nthread": int(self.spec.parameters.get("threads", 1))})
        learner = json.loads(booster.save_config())["learner"]
        self._booster = booster
        self._objective: str = learner["objective"]["name"]
        params = learner["learner_model_param"]
        self._num_class = int(params.get("num_class", 0))
        self._num_target = int(params.get("num_target", 1))
        # predict_proba columns: one per class, both classes for binary, one per label for
        # multi-label boosters.
        if self._num_target > 1:
            self._proba_columns = self._num_target
        else:
            self._proba_columns = self._num_class if self._num_class > 1 else 2
        # Early stopping: predict with the best iteration, as XGBClassifier.predict does.
        best = booster.attr("best_iteration")
        self._iterations = (0, int(best) + 1) if best is not None else (0, 0)

    @property
    def _is_classifier(self) -> bool:
        return self._objective.startswith(("binary:", "multi:"))

    @property
    def _has_proba(self) -> bool:
        return self._is_classifier and self._objective not in _LABEL_ONLY_OBJECTIVES

    def predict(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> dict[str, np.ndarray]:
        features = single_input(inputs)
        wanted = outputs if outputs is not None else self._output_names()
        if PREDICT not in wanted and (PREDICT_PROBA not in wanted or not self._has_proba):
            return {}
        if not self._is_classifier:
            return {PREDICT: self._run(features)}
        softmax_label_only = self._objective == "multi:softmax" and PREDICT_PROBA not in wanted
        if not self._has_proba or softmax_label_only:
            return {PREDICT: self._run(features).astype(np.int64)}  # the booster's own label
        proba = self._proba(features)
        result: dict[str, np.ndarray] = {}
        if PREDICT in wanted:
            # Multi-label boosters give one P(label) column per target; the others one per class.
            labels = proba > 0.5 if self._num_target > 1 else proba.argmax(axis=1)
            result[PREDICT] = labels.astype(np.int64)
        if PREDICT_PROBA in wanted:
            result[PREDICT_PROBA] = proba
        return result

    def _run(self, features: np.ndarray, margin: bool = False) -> np.ndarray:
        return self._booster.inplace_predict(
            features,
            iteration_range=self._iterations,
            predict_type="margin" if margin else "value",
        )

    def _proba(self, features: np.ndarray) -> np.ndarray:
        if self._objective in _MARGIN_OBJECTIVES:
            margin = self._run(features, margin=True)
            proba = _sigmoid(margin) if self._objective.startswith("binary:") else _softmax(margin)
        else:
            proba = self._run(features)
        if self._num_class <= 1 and self._num_target == 1:  # binary: P(class 1) per row
            proba = np.column_stack([1.0 - proba, proba])
        return proba.reshape(-1, self._proba_columns)  # XGBoost flattens an empty batch

    def _output_names(self) -> list[str]:
        return [PREDICT, PREDICT_PROBA] if self._has_proba else [PREDICT]

    def signature(self) -> Signature:
        per_row = (-1,) if self._num_target == 1 else (-1, self._num_target)
        if not self._is_classifier:
            outputs = [TensorSpec(PREDICT, "FP32", per_row)]
        else:
            outputs = [TensorSpec(PREDICT, "INT64", per_row)]
            if self._has_proba:
                outputs.append(TensorSpec(PREDICT_PROBA, "FP32", (-1, self._proba_columns)))
        # XGBoost compares features as float32, so FP32 input loses nothing.
        n_features = self._booster.num_features()
        return Signature([feature_input("input-0", n_features, "FP32")], outputs)

    def unload(self) -> None:
        self._booster = None
