from __future__ import annotations

import lightgbm
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

from servekit.types import TensorSpec


def _fit_and_save(estimator, loader, path) -> tuple[lightgbm.LGBMModel, np.ndarray]:
    X, y = loader(return_X_y=True)
    estimator.fit(X, y)
    estimator.booster_.save_model(path)
    return estimator, X


def _classifier() -> lightgbm.LGBMClassifier:
    return lightgbm.LGBMClassifier(n_estimators=10, n_jobs=1, random_state=0, verbose=-1)


@pytest.mark.parametrize(
    ("loader", "n_features", "n_classes"),
    [(load_breast_cancer, 30, 2), (load_wine, 13, 3)],
    ids=["binary", "multiclass"],
)
def test_classifier_matches_lightgbm(tmp_path, load_runtime, loader, n_features, n_classes):
    model, X = _fit_and_save(_classifier(), loader, tmp_path / "model.txt")
    runtime = load_runtime("lightgbm", tmp_path / "model.txt")

    result = runtime.predict({"input-0": X})

    np.testing.assert_array_equal(result["predict"], model.predict(X))
    assert result["predict"].dtype == np.int64
    np.testing.assert_allclose(result["predict_proba"], model.predict_proba(X))
    signature = runtime.signature()
    assert signature.inputs == [TensorSpec("input-0", "FP64", (-1, n_features))]
    assert signature.outputs == [
        TensorSpec("predict", "INT64", (-1,)),
        TensorSpec("predict_proba", "FP64", (-1, n_classes)),
    ]


@pytest.mark.parametrize("rows", [1, 0])
@pytest.mark.parametrize(("loader", "n_classes"), [(load_breast_cancer, 2), (load_wine, 3)])
def test_small_batches_keep_one_column_per_class(tmp_path, load_runtime, loader, n_classes, rows):
    _, X = _fit_and_save(_classifier(), loader, tmp_path / "model.txt")
    runtime = load_runtime("lightgbm", tmp_path / "model.txt")

    result = runtime.predict({"input-0": X[:rows]})

    assert result["predict"].shape == (rows,)
    assert result["predict_proba"].shape == (rows, n_classes)


def test_two_class_multiclass_objective_is_not_stacked(tmp_path, load_runtime):
    X, y = load_breast_cancer(return_X_y=True)
    booster = lightgbm.train(
        {"objective": "multiclass", "num_class": 2, "verbose": -1, "num_threads": 1},
        lightgbm.Dataset(X, y),
        num_boost_round=3,
    )
    booster.save_model(tmp_path / "model.txt")
    runtime = load_runtime("lightgbm", tmp_path / "model.txt")

    result = runtime.predict({"input-0": X})

    np.testing.assert_allclose(result["predict_proba"], booster.predict(X))
    np.testing.assert_array_equal(result["predict"], booster.predict(X).argmax(axis=1))


def test_predict_only_skips_probabilities(tmp_path, load_runtime):
    model, X = _fit_and_save(_classifier(), load_wine, tmp_path / "model.txt")
    runtime = load_runtime("lightgbm", tmp_path / "model.txt")

    result = runtime.predict({"input-0": X[:5]}, outputs=["predict"])

    assert set(result) == {"predict"}
    np.testing.assert_array_equal(result["predict"], model.predict(X[:5]))


def test_regressor_has_predict_only(tmp_path, load_runtime):
    regressor = lightgbm.LGBMRegressor(n_estimators=10, n_jobs=1, random_state=0, verbose=-1)
    model, X = _fit_and_save(regressor, load_diabetes, tmp_path / "model.txt")
    runtime = load_runtime("lightgbm", tmp_path / "model.txt", parameters={"threads": 2})

    result = runtime.predict({"input-0": X})

    assert set(result) == {"predict"}
    np.testing.assert_allclose(result["predict"], model.predict(X))
    assert runtime.signature().outputs == [TensorSpec("predict", "FP64", (-1,))]
    assert runtime.predict({"input-0": X}, outputs=["predict_proba"]) == {}
