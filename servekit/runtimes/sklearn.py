"""scikit-learn estimators and pipelines saved with joblib or pickle.

Outputs ``predict`` and, where the estimator has it, ``predict_proba`` as separate tensors.

When scikit-learn refuses a request that holds NaN or infinity, that is the client's mistake
and is raised as invalid input (a 400 that says so) rather than read as a model failure. Only
then is the input looked at: estimator tags cannot tell in advance (a Pipeline that starts with
an imputer reports that it does not take NaN), and the hot path stays as it was.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from servekit.errors import InvalidInput
from servekit.runtimes.base import Runtime, Signature, feature_input, single_input
from servekit.runtimes.sklearn_linear import linear_predict
from servekit.types.metadata import TensorSpec
from servekit.types.tensors import datatype_of

PREDICT = "predict"
PREDICT_PROBA = "predict_proba"

# Classifiers whose predict() is, by construction, the class of the largest predict_proba()
# (ties broken towards the first class in both). For them one call answers both outputs.
# Not listed on purpose: SVC (Platt scaling can disagree with its decision function).
ARGMAX_CLASSIFIERS = frozenset({
    "DecisionTreeClassifier", "ExtraTreeClassifier", "ExtraTreesClassifier",
    "RandomForestClassifier", "GradientBoostingClassifier", "HistGradientBoostingClassifier",
    "LogisticRegression", "MLPClassifier", "GaussianNB", "MultinomialNB", "BernoulliNB",
})  # fmt: skip


def _final_estimator(model: Any) -> Any:
    steps = getattr(model, "steps", None)  # a Pipeline: its last step decides
    return steps[-1][1] if steps else model


class SKLearnRuntime(Runtime):
    platform = "sklearn"

    def load(self) -> None:
        import joblib  # the sklearn extra brings it; imported here so other runtimes don't need it

        self._model = joblib.load(self.spec.path)
        self._has_proba = hasattr(self._model, "predict_proba")
        final = _final_estimator(self._model)
        self._classes = getattr(final, "classes_", None)
        self._argmax = self._has_proba and type(final).__name__ in ARGMAX_CLASSIFIERS
        self._fast_predict = linear_predict(self._model)

    def predict(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> dict[str, np.ndarray]:
        features = single_input(inputs)
        wanted = outputs if outputs is not None else self._output_names()
        result: dict[str, np.ndarray] = {}
        try:
            if PREDICT_PROBA in wanted and self._has_proba:
                result[PREDICT_PROBA] = np.asarray(self._model.predict_proba(features))
                if PREDICT in wanted and self._argmax:  # half the work: one call, both outputs
                    result[PREDICT] = self._classes[result[PREDICT_PROBA].argmax(axis=1)]
            if PREDICT in wanted and PREDICT not in result:
                fast = self._fast_predict(features) if self._fast_predict is not None else None
                result[PREDICT] = (
                    fast if fast is not None else np.asarray(self._model.predict(features))
                )
        except ValueError as exc:
            if features.dtype.kind == "f" and not np.isfinite(features).all():
                reason = (str(exc).strip().splitlines() or [""])[0]
                raise InvalidInput(
                    f"the input holds NaN or infinity, which this model does not take ({reason})"
                ) from exc
            raise
        return {name: result[name] for name in (PREDICT, PREDICT_PROBA) if name in result}

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
