"""The linear-model fast path answers bit for bit what scikit-learn answers, and hands back
everything it cannot vouch for."""

from __future__ import annotations

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.linear_model import (
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Perceptron,
    Ridge,
    RidgeClassifier,
    SGDClassifier,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from servekit.errors import InvalidInput
from servekit.runtimes.sklearn_linear import linear_predict

IRIS_X, IRIS_Y = load_iris(return_X_y=True)
WINE_X, WINE_Y = load_wine(return_X_y=True)
CANCER_X, CANCER_Y = load_breast_cancer(return_X_y=True)
DIABETES_X, DIABETES_Y = load_diabetes(return_X_y=True)

CLASSIFIERS = [
    pytest.param(LogisticRegression(max_iter=5000), IRIS_X, IRIS_Y, id="logistic-multiclass"),
    pytest.param(LogisticRegression(max_iter=5000), CANCER_X, CANCER_Y, id="logistic-binary"),
    pytest.param(
        LogisticRegression(max_iter=5000), IRIS_X, np.array(["a", "b", "c"])[IRIS_Y], id="strings"
    ),
    pytest.param(SGDClassifier(random_state=0), WINE_X, WINE_Y, id="sgd"),
    pytest.param(Perceptron(random_state=0), CANCER_X, CANCER_Y, id="perceptron-binary"),
    pytest.param(LinearSVC(), IRIS_X, IRIS_Y, id="linear-svc"),
    pytest.param(
        LogisticRegression(fit_intercept=False, max_iter=5000), IRIS_X, IRIS_Y, id="no-intercept"
    ),
]
REGRESSORS = [
    pytest.param(LinearRegression(), DIABETES_X, DIABETES_Y, id="linear"),
    pytest.param(Ridge(), DIABETES_X, np.c_[DIABETES_Y, -DIABETES_Y], id="ridge-two-targets"),
    pytest.param(ElasticNet(alpha=0.01), DIABETES_X, DIABETES_Y, id="elastic-net"),
    pytest.param(Lasso(alpha=0.01), DIABETES_X, DIABETES_Y, id="lasso"),
    pytest.param(LinearRegression(fit_intercept=False), DIABETES_X, DIABETES_Y, id="no-intercept"),
]


def _inputs(X: np.ndarray) -> list[np.ndarray]:
    """The same rows in every form a tensor can arrive in: float64, float32, integers,
    Fortran order, one row and many."""
    return [
        X,
        X[:1],
        X.astype(np.float32),
        np.asfortranarray(X[:7]),
        np.rint(X[:9]).astype(np.int64),
        X[::3],
    ]


@pytest.mark.parametrize(("estimator", "X", "y"), CLASSIFIERS + REGRESSORS)
def test_identical_to_scikit_learn(estimator, X, y) -> None:
    model = estimator.fit(X, y)
    fast = linear_predict(model)
    assert fast is not None
    for features in _inputs(X):
        expected = model.predict(features)
        got = fast(features)
        assert got is not None
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)  # exact, not approximately


def test_inputs_it_cannot_vouch_for_go_back_to_scikit_learn() -> None:
    model = LogisticRegression(max_iter=5000).fit(IRIS_X, IRIS_Y)
    fast = linear_predict(model)
    assert fast is not None
    with_nan = IRIS_X[:2].copy()
    with_nan[0, 1] = np.nan
    with_inf = IRIS_X[:2].copy()
    with_inf[1, 0] = np.inf
    for features in (
        with_nan,
        with_inf,
        IRIS_X[:2, :3],  # too few features
        IRIS_X[0],  # 1-D
        IRIS_X[:0],  # no rows
        IRIS_X[:2].astype(object),
        IRIS_X[:2] > 3,  # booleans
    ):
        assert fast(features) is None


def test_only_plain_linear_models_qualify() -> None:
    scaled = make_pipeline(StandardScaler(), LogisticRegression()).fit(IRIS_X, IRIS_Y)
    assert linear_predict(scaled) is None  # a pipeline transforms first
    assert linear_predict(LogisticRegression()) is None  # not fitted
    sparse = LogisticRegression(max_iter=5000).fit(IRIS_X, IRIS_Y).sparsify()
    assert linear_predict(sparse) is None  # scipy coefficients

    class Shifted(LinearRegression):
        def predict(self, X):
            return super().predict(X) + 1

    assert linear_predict(Shifted().fit(DIABETES_X, DIABETES_Y)) is None
    # scikit-learn's own override (multilabel targets) keeps its own predict too
    assert linear_predict(RidgeClassifier().fit(WINE_X, WINE_Y)) is None


def test_the_runtime_still_refuses_nan_as_the_clients_mistake(tmp_path, load_runtime) -> None:
    model = LogisticRegression(max_iter=5000).fit(IRIS_X, IRIS_Y)
    joblib.dump(model, tmp_path / "m.joblib")
    runtime = load_runtime("sklearn", tmp_path / "m.joblib")
    features = IRIS_X[:2].copy()
    features[1, 2] = np.nan
    with pytest.raises(InvalidInput, match="NaN or infinity"):
        runtime.predict({"input-0": features}, outputs=["predict"])
    result = runtime.predict({"input-0": IRIS_X[:5]}, outputs=["predict"])
    np.testing.assert_array_equal(result["predict"], model.predict(IRIS_X[:5]))
