from __future__ import annotations

import warnings

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LogisticRegression, Ridge

from servekit.types import TensorSpec


def test_classifier_predict_and_proba_match_sklearn(tmp_path, load_runtime):
    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(X, y)
    joblib.dump(model, tmp_path / "model.joblib")
    runtime = load_runtime("sklearn", tmp_path / "model.joblib")

    result = runtime.predict({"input-0": X})

    np.testing.assert_array_equal(result["predict"], model.predict(X))
    np.testing.assert_allclose(result["predict_proba"], model.predict_proba(X))
    signature = runtime.signature()
    assert signature.inputs == [TensorSpec("input-0", "FP64", (-1, 4))]
    assert signature.outputs == [
        TensorSpec("predict", "INT64", (-1,)),
        TensorSpec("predict_proba", "FP64", (-1, 3)),
    ]


def test_only_requested_outputs_are_computed(tmp_path, load_runtime):
    X, y = load_iris(return_X_y=True)
    joblib.dump(LogisticRegression(max_iter=1000).fit(X, y), tmp_path / "model.joblib")
    runtime = load_runtime("sklearn", tmp_path / "model.joblib")

    assert set(runtime.predict({"input-0": X[:3]}, outputs=["predict"])) == {"predict"}
    assert set(runtime.predict({"input-0": X[:3]}, outputs=["predict_proba"])) == {"predict_proba"}


def test_regressor_has_predict_only(tmp_path, load_runtime):
    X, y = load_diabetes(return_X_y=True)
    model = Ridge().fit(X, y)
    joblib.dump(model, tmp_path / "model.pkl")
    runtime = load_runtime("sklearn", tmp_path / "model.pkl")

    result = runtime.predict({"input-0": X[:5]})

    assert set(result) == {"predict"}
    np.testing.assert_allclose(result["predict"], model.predict(X[:5]))
    assert runtime.signature().outputs == [TensorSpec("predict", "FP64", (-1,))]
    assert runtime.signature().inputs == [TensorSpec("input-0", "FP64", (-1, 10))]


def test_one_tensor_per_feature_is_stacked_as_columns(tmp_path, load_runtime):
    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(X, y)
    joblib.dump(model, tmp_path / "model.joblib")
    runtime = load_runtime("sklearn", tmp_path / "model.joblib")

    columns = {f"f{i}": X[:, i] for i in range(4)}

    np.testing.assert_array_equal(runtime.predict(columns)["predict"], model.predict(X))


@pytest.mark.parametrize(
    "estimator",
    [
        "LogisticRegression",
        "RandomForestClassifier",
        "MLPClassifier",
        "GaussianNB",
        "PipelineLogisticRegression",
        "BinaryLogisticRegression",
    ],
)
def test_one_proba_call_gives_exactly_sklearns_predict(estimator, tmp_path, load_runtime):
    """predict is derived from predict_proba only where sklearn defines it that way: the
    answers must equal the estimator's own predict, row for row."""
    import joblib
    from sklearn.datasets import load_iris, make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_iris(return_X_y=True)
    models = {
        "LogisticRegression": lambda: LogisticRegression(max_iter=500),
        "RandomForestClassifier": lambda: RandomForestClassifier(n_estimators=10, random_state=0),
        "MLPClassifier": lambda: MLPClassifier((16,), max_iter=300, random_state=0),
        "GaussianNB": GaussianNB,
        "PipelineLogisticRegression": lambda: make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=500)
        ),
        "BinaryLogisticRegression": lambda: LogisticRegression(max_iter=500),
    }
    if estimator == "BinaryLogisticRegression":
        X, y = make_classification(n_samples=300, n_features=6, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter from tiny training budgets
        model = models[estimator]().fit(X, y)
    path = tmp_path / "model.joblib"
    joblib.dump(model, path)
    runtime = load_runtime("sklearn", path)
    result = runtime.predict({"input-0": X})
    np.testing.assert_array_equal(result["predict"], model.predict(X))
    np.testing.assert_allclose(result["predict_proba"], model.predict_proba(X))


def test_non_finite_input_is_the_clients_mistake(tmp_path, load_runtime):
    """What scikit-learn refuses with a ValueError because of NaN or infinity is invalid input
    (400), not a model failure (500)."""
    from servekit.errors import InvalidInput

    X, y = load_iris(return_X_y=True)
    joblib.dump(LogisticRegression(max_iter=1000).fit(X, y), tmp_path / "model.joblib")
    runtime = load_runtime("sklearn", tmp_path / "model.joblib")
    for bad in (np.nan, np.inf, -np.inf):
        rows = X[:3].astype(np.float32)
        rows[1, 2] = bad
        with pytest.raises(InvalidInput, match="NaN or infinity.*Input X contains"):
            runtime.predict({"input-0": rows})
    assert runtime.predict({"input-0": X[:3].astype(np.int64)})["predict"].shape == (3,)


def test_models_that_take_nan_get_it(tmp_path, load_runtime):
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = load_iris(return_X_y=True)
    X = X.copy()
    X[::7, 1] = np.nan  # missing values, learnt as such
    model = HistGradientBoostingClassifier(max_iter=20).fit(X, y)
    joblib.dump(model, tmp_path / "model.joblib")
    runtime = load_runtime("sklearn", tmp_path / "model.joblib")

    result = runtime.predict({"input-0": X})
    np.testing.assert_array_equal(result["predict"], model.predict(X))
    np.testing.assert_array_equal(result["predict_proba"], model.predict_proba(X))


def test_a_pipeline_that_imputes_takes_nan(tmp_path, load_runtime):
    """Its tags say it takes no NaN; only what the estimator does decides."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline

    X, y = load_iris(return_X_y=True)
    model = make_pipeline(SimpleImputer(), LogisticRegression(max_iter=1000)).fit(X, y)
    joblib.dump(model, tmp_path / "model.joblib")
    runtime = load_runtime("sklearn", tmp_path / "model.joblib")
    rows = X[:3].copy()
    rows[0, 1] = np.nan
    np.testing.assert_array_equal(
        runtime.predict({"input-0": rows})["predict"], model.predict(rows)
    )


def test_nan_made_inside_a_pipeline_is_a_model_failure(tmp_path, load_runtime):
    """NaN sent to a Pipeline is the client's mistake; NaN that an inner step makes (a log of
    a negative value) is the model's failure, as scikit-learn reports it."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from servekit.errors import InvalidInput

    X, y = load_iris(return_X_y=True)
    model = make_pipeline(FunctionTransformer(np.log), LogisticRegression(max_iter=1000))
    model.fit(X + 1, y)
    joblib.dump(model, tmp_path / "model.joblib")
    runtime = load_runtime("sklearn", tmp_path / "model.joblib")

    np.testing.assert_array_equal(
        runtime.predict({"input-0": X + 1})["predict"], model.predict(X + 1)
    )
    rows = X[:2] + 1
    rows[0, 0] = np.nan
    with pytest.raises(InvalidInput):
        runtime.predict({"input-0": rows})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # log of a negative number
        with pytest.raises(ValueError, match="NaN"):
            runtime.predict({"input-0": X[:2] - 10})
