"""infer_format recognises every artifact the runtimes load, by suffix or by content."""

from __future__ import annotations

import json

import joblib
import lightgbm
import onnx
import pytest
import torch
import xgboost
from onnx import TensorProto, helper
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from servekit.errors import ConfigError
from servekit.repository.formats import infer_format

pytestmark = pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.script` is deprecated:DeprecationWarning"  # TorchScript in torch 2.13
)

X, Y = load_iris(return_X_y=True)


def _sklearn(path):
    joblib.dump(LogisticRegression(max_iter=1000).fit(X, Y), path)


def _xgboost(path):
    xgboost.XGBClassifier(n_estimators=2, n_jobs=1).fit(X, Y).get_booster().save_model(path)


def _lightgbm(path):
    model = lightgbm.LGBMClassifier(n_estimators=2, n_jobs=1, verbose=-1).fit(X, Y)
    model.booster_.save_model(path)


def _onnx(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [x],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
    )
    onnx.save(helper.make_model(graph, ir_version=9), path)


def _torch(path):
    torch.jit.script(torch.nn.Linear(4, 2)).save(str(path))


def _custom(path):
    path.write_text("import servekit\n\nclass M(servekit.Model):\n    pass\n")


@pytest.mark.parametrize(
    ("filename", "write", "expected"),
    [
        ("model.joblib", _sklearn, "sklearn"),
        ("model.pkl", _sklearn, "sklearn"),
        ("model.json", _xgboost, "xgboost"),
        ("model.ubj", _xgboost, "xgboost"),
        ("model.txt", _lightgbm, "lightgbm"),
        ("model.onnx", _onnx, "onnx"),
        ("model.pt", _torch, "torch"),
        ("model.py", _custom, "custom"),
    ],
)
def test_each_artifact_kind_is_recognised(tmp_path, filename, write, expected):
    write(tmp_path / filename)
    (tmp_path / "README.md").write_text("ignored")

    assert infer_format(tmp_path) == (expected, tmp_path / filename)


def test_json_that_is_not_a_booster_is_no_artifact(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"labels": ["a", "b"]}))

    with pytest.raises(ConfigError, match="no model artifact"):
        infer_format(tmp_path)


def test_two_kinds_of_artifact_are_ambiguous(tmp_path):
    _sklearn(tmp_path / "model.joblib")
    _onnx(tmp_path / "model.onnx")

    with pytest.raises(ConfigError, match="several artifacts"):
        infer_format(tmp_path)
