"""``predict`` of scikit-learn's linear models as the arithmetic it is, without the checks.

Why: for one row, ``LogisticRegression.predict`` spends about 80 µs (scikit-learn 1.9; about
20 in 1.7) in input validation, array-API dispatch and dataframe detection around a 4x3 matrix
product that takes 2 µs: up to a third of what a small inference costs the server. servekit
has already validated the tensor (shape, datatype, feature count) against the model's
signature, so this module computes exactly what scikit-learn computes (the same numpy
operations in the same order, hence the same bits) for the inputs it can vouch for, and hands
anything else back to scikit-learn, which then raises or warns as it always does (NaN and
infinity, sparse or object input, other shapes).

Only the listed scikit-learn classes qualify, by exact type: a subclass (or another linear
model with its own ``predict``, such as ``RidgeClassifier``) keeps calling scikit-learn.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

FastPredict = Callable[[np.ndarray], np.ndarray | None]
"""Returns the predictions, or None when scikit-learn must answer this input itself."""

_NUMERIC_KINDS = frozenset("fiu")


def linear_predict(model: Any) -> FastPredict | None:
    """The fast ``predict`` of ``model``, or None when it is not a plain linear model."""
    kind = _PLAIN_LINEAR.get(f"{type(model).__module__}.{type(model).__qualname__}")
    coef = getattr(model, "coef_", None)
    intercept = getattr(model, "intercept_", None)
    n_features = getattr(model, "n_features_in_", None)
    if kind is None or n_features is None:
        return None  # another estimator (a subclass too), or not fitted
    if not isinstance(coef, np.ndarray) or coef.ndim not in (1, 2):
        return None  # sparsified (scipy matrix) coefficients
    if not isinstance(intercept, np.ndarray | float | int):
        return None
    if kind == "classifier":
        classes = getattr(model, "classes_", None)
        if not isinstance(classes, np.ndarray):
            return None
        return _classifier(coef, intercept, classes, n_features)
    return _regressor(coef, intercept, n_features)


_PLAIN_LINEAR = {
    **dict.fromkeys(
        (
            "sklearn.linear_model._logistic.LogisticRegression",
            "sklearn.linear_model._stochastic_gradient.SGDClassifier",
            "sklearn.linear_model._perceptron.Perceptron",
            "sklearn.svm._classes.LinearSVC",
        ),
        "classifier",
    ),
    **dict.fromkeys(
        (
            "sklearn.linear_model._base.LinearRegression",
            "sklearn.linear_model._ridge.Ridge",
            "sklearn.linear_model._coordinate_descent.Lasso",
            "sklearn.linear_model._coordinate_descent.ElasticNet",
        ),
        "regressor",
    ),
}
"""Exact classes (not subclasses) whose ``predict`` is ``LinearClassifierMixin.predict`` (the
class of the largest decision value; for one column, whether it is positive) or
``LinearModel.predict`` (``X @ coef_.T + intercept_``) for dense input, in scikit-learn 1.x.
The tests check every one of them bit for bit against the installed scikit-learn."""


def _eligible(features: np.ndarray, n_features: int) -> bool:
    """A dense 2-D numeric array of the fitted width without NaN or infinity: what
    scikit-learn's validation would pass through unchanged."""
    if type(features) is not np.ndarray or features.ndim != 2:
        return False
    if features.shape[1] != n_features or features.shape[0] == 0:
        return False
    kind = features.dtype.kind
    if kind not in _NUMERIC_KINDS:
        return False
    return kind != "f" or bool(np.isfinite(features).all())


def _classifier(
    coef: np.ndarray, intercept: Any, classes: np.ndarray, n_features: int
) -> FastPredict:
    coef_t = coef.T if coef.ndim == 2 else coef  # as LinearClassifierMixin.decision_function

    def predict(features: np.ndarray) -> np.ndarray | None:
        if not _eligible(features, n_features):
            return None
        scores = features @ coef_t + intercept
        if scores.ndim > 1 and scores.shape[1] == 1:
            scores = scores.reshape(-1)
        indices = (scores > 0).astype(np.intp) if scores.ndim == 1 else scores.argmax(axis=1)
        return classes.take(indices, axis=0)

    return predict


def _regressor(coef: np.ndarray, intercept: Any, n_features: int) -> FastPredict:
    coef_t = coef if coef.ndim == 1 else coef.T  # as LinearModel._decision_function

    def predict(features: np.ndarray) -> np.ndarray | None:
        if not _eligible(features, n_features):
            return None
        return features @ coef_t + intercept

    return predict


__all__ = ["FastPredict", "linear_predict"]
