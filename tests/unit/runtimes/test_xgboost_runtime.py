from __future__ import annotations

import shutil

import numpy as np
import pytest
import xgboost
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

from servekit.types import TensorSpec


def _save(model: xgboost.XGBModel, path) -> None:
    model.get_booster().save_model(path)


@pytest.fixture(scope="module")
def wine_classifier() -> tuple[xgboost.XGBClassifier, np.ndarray]:
    X, y = load_wine(return_X_y=True)
    model = xgboost.XGBClassifier(n_estimators=10, max_depth=3, n_jobs=1, random_state=0)
    return model.fit(X, y), X


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
def test_multiclass_matches_xgboost(tmp_path, load_runtime, wine_classifier, suffix):
    model, X = wine_classifier
    _save(model, tmp_path / f"model{suffix}")
    runtime = load_runtime("xgboost", tmp_path / f"model{suffix}")

    result = runtime.predict({"input-0": X.astype(np.float32)})

    np.testing.assert_array_equal(result["predict"], model.predict(X))
    assert result["predict"].dtype == np.int64
    np.testing.assert_allclose(result["predict_proba"], model.predict_proba(X), rtol=1e-6)
    signature = runtime.signature()
    assert signature.inputs == [TensorSpec("input-0", "FP32", (-1, 13))]
    assert signature.outputs == [
        TensorSpec("predict", "INT64", (-1,)),
        TensorSpec("predict_proba", "FP32", (-1, 3)),
    ]


@pytest.mark.parametrize("rows", [1, 0])
def test_small_batches_keep_one_column_per_class(tmp_path, load_runtime, wine_classifier, rows):
    model, X = wine_classifier
    _save(model, tmp_path / "model.json")
    runtime = load_runtime("xgboost", tmp_path / "model.json")

    result = runtime.predict({"input-0": X[:rows]})

    assert result["predict"].shape == (rows,)
    assert result["predict_proba"].shape == (rows, 3)


def test_legacy_bst_name_loads_by_content(tmp_path, load_runtime, wine_classifier):
    model, X = wine_classifier
    _save(model, tmp_path / "saved.ubj")
    shutil.copyfile(tmp_path / "saved.ubj", tmp_path / "model.bst")

    runtime = load_runtime("xgboost", tmp_path / "model.bst")

    np.testing.assert_array_equal(runtime.predict({"input-0": X})["predict"], model.predict(X))


def test_predict_only_skips_probabilities(tmp_path, load_runtime, wine_classifier):
    model, X = wine_classifier
    _save(model, tmp_path / "model.json")
    runtime = load_runtime("xgboost", tmp_path / "model.json")

    result = runtime.predict({"input-0": X[:4]}, outputs=["predict"])

    assert set(result) == {"predict"}
    np.testing.assert_array_equal(result["predict"], model.predict(X[:4]))
    assert set(runtime.predict({"input-0": X[:4]}, outputs=["predict_proba"])) == {"predict_proba"}


def test_binary_probabilities_have_two_columns(tmp_path, load_runtime):
    X, y = load_breast_cancer(return_X_y=True)
    model = xgboost.XGBClassifier(n_estimators=10, n_jobs=1, random_state=0).fit(X, y)
    _save(model, tmp_path / "model.json")
    runtime = load_runtime("xgboost", tmp_path / "model.json")

    result = runtime.predict({"input-0": X})

    np.testing.assert_array_equal(result["predict"], model.predict(X))
    np.testing.assert_allclose(result["predict_proba"], model.predict_proba(X), rtol=1e-6)
    assert runtime.signature().outputs[1] == TensorSpec("predict_proba", "FP32", (-1, 2))


def test_early_stopping_predicts_with_the_best_iteration(tmp_path, load_runtime):
    X, y = load_breast_cancer(return_X_y=True)
    model = xgboost.XGBClassifier(
        n_estimators=200, early_stopping_rounds=2, eval_metric="logloss", n_jobs=1
    ).fit(X[:400], y[:400], eval_set=[(X[400:], y[400:])], verbose=False)
    assert model.best_iteration + 1 < model.get_booster().num_boosted_rounds()
    _save(model, tmp_path / "model.json")
    runtime = load_runtime("xgboost", tmp_path / "model.json")

    result = runtime.predict({"input-0": X})

    np.testing.assert_allclose(result["predict_proba"], model.predict_proba(X), rtol=1e-6)


def test_regressor_has_predict_only(tmp_path, load_runtime):
    X, y = load_diabetes(return_X_y=True)
    model = xgboost.XGBRegressor(n_estimators=10, n_jobs=1, random_state=0).fit(X, y)
    _save(model, tmp_path / "model.json")
    runtime = load_runtime("xgboost", tmp_path / "model.json")

    result = runtime.predict({"input-0": X})

    assert set(result) == {"predict"}
    np.testing.assert_allclose(result["predict"], model.predict(X), rtol=1e-6)
    assert runtime.signature().outputs == [TensorSpec("predict", "FP32", (-1,))]


def _train_native(objective: str, X: np.ndarray, y: np.ndarray, **params) -> xgboost.Booster:
    data = xgboost.DMatrix(X, label=y)
    params = {"objective": objective, "nthread": 1, "max_depth": 3, **params}
    return xgboost.train(params, data, num_boost_round=5)


def test_softmax_objective_gets_probabilities_from_the_margin(tmp_path, load_runtime):
    X, y = load_wine(return_X_y=True)
    booster = _train_native("multi:softmax", X, y, num_class=3)
    booster.save_model(tmp_path / "model.json")
    runtime = load_runtime("xgboost", tmp_path / "model.json")

    result = runtime.predict({"input-0": X})

    labels = booster.predict(xgboost.DMatrix(X))
    np.testing.assert_array_equal(result["predict"], labels)
    margin = booster.predict(xgboost.DMatrix(X), output_margin=True)
    expected = np.exp(margin) / np.exp(margin).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(result["predict_proba"], expected, rtol=1e-5)
    only_labels = runtime.predict({"input-0": X}, outputs=["predict"])
    np.testing.assert_array_equal(only_labels["predict"], labels)


def test_logitraw_objective_gets_probabilities_from_the_margin(tmp_path, load_runtime):
    X, y = load_breast_cancer(return_X_y=True)
    booster = _train_native("binary:logitraw", X, y)
    booster.save_model(tmp_path / "model.json")
    runtime = load_runtime("xgboost", tmp_path / "model.json")

    result = runtime.predict({"input-0": X})

    margin = booster.predict(xgboost.DMatrix(X))
    np.testing.assert_allclose(result["predict_proba"][:, 1], 1 / (1 + np.exp(-margin)), rtol=1e-5)
    np.testing.assert_array_equal(result["predict"], (margin > 0).astype(np.int64))


def test_hinge_objective_has_labels_only(tmp_path, load_runtime):
    X, y = load_breast_cancer(return_X_y=True)
    booster = _train_native("binary:hinge", X, y)
    booster.save_model(tmp_path / "model.json")
    runtime = load_runtime("xgboost", tmp_path / "model.json")

    result = runtime.predict({"input-0": X})

    assert set(result) == {"predict"}
    np.testing.assert_array_equal(result["predict"], booster.predict(xgboost.DMatrix(X)))
    assert [t.name for t in runtime.signature().outputs] == ["predict"]
