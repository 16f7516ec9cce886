from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from servekit.errors import ConfigError, InvalidInput
from servekit.types import TensorSpec

# onnxruntime reads IR versions up to 13; onnx.helper would stamp its newest by default.
IR_VERSION = 9


def _save_graph(path, nodes, inputs, outputs) -> None:
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION
    )
    onnx.save(model, path)


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=1000).fit(X, y), X.astype(np.float32)


def _convert_iris(model, path, zipmap: bool) -> None:
    options = {id(model): {"zipmap": zipmap}}
    onx = convert_sklearn(model, initial_types=[("x", FloatTensorType([None, 4]))], options=options)
    onnx.save(onx, path)


def test_regressor_pipeline_matches_sklearn(tmp_path, load_runtime):
    X, y = load_diabetes(return_X_y=True)
    pipeline = make_pipeline(StandardScaler(), Ridge()).fit(X, y)
    onx = convert_sklearn(pipeline, initial_types=[("x", FloatTensorType([None, 10]))])
    onnx.save(onx, tmp_path / "model.onnx")
    runtime = load_runtime("onnx", tmp_path / "model.onnx")

    result = runtime.predict({"x": X.astype(np.float32)})

    np.testing.assert_allclose(result["variable"][:, 0], pipeline.predict(X), rtol=1e-4)
    signature = runtime.signature()
    assert signature.inputs == [TensorSpec("x", "FP32", (-1, 10))]
    assert signature.outputs == [TensorSpec("variable", "FP32", (-1, 1))]


def test_classifier_outputs_and_requested_subset(tmp_path, load_runtime, iris):
    model, X = iris
    _convert_iris(model, tmp_path / "model.onnx", zipmap=False)
    runtime = load_runtime("onnx", tmp_path / "model.onnx")

    result = runtime.predict({"x": X})

    np.testing.assert_array_equal(result["label"], model.predict(X))
    np.testing.assert_allclose(result["probabilities"], model.predict_proba(X), atol=1e-5)
    assert runtime.signature().outputs == [
        TensorSpec("label", "INT64", (-1,)),
        TensorSpec("probabilities", "FP32", (-1, 3)),
    ]
    assert set(runtime.predict({"x": X}, outputs=["label"])) == {"label"}


def test_zipmap_output_is_left_out_not_crashed_on(tmp_path, load_runtime, iris):
    model, X = iris
    _convert_iris(model, tmp_path / "model.onnx", zipmap=True)
    runtime = load_runtime("onnx", tmp_path / "model.onnx")

    assert [t.name for t in runtime.signature().outputs] == ["output_label"]
    result = runtime.predict({"x": X})
    assert set(result) == {"output_label"}
    np.testing.assert_array_equal(result["output_label"], model.predict(X))
    with pytest.raises(InvalidInput, match="zipmap=False"):
        runtime.predict({"x": X}, outputs=["output_probability"])


def test_graph_without_tensor_outputs_fails_to_load_clearly(tmp_path, load_runtime):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch"])
    seq = helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, ["batch"])
    _save_graph(
        tmp_path / "model.onnx", [helper.make_node("SequenceConstruct", ["x"], ["seq"])], [x], [seq]
    )

    with pytest.raises(ConfigError, match=r"no tensor outputs \(seq: seq\(tensor\(float\)\)\)"):
        load_runtime("onnx", tmp_path / "model.onnx")


def test_string_tensors_take_v2_bytes(tmp_path, load_runtime):
    text_in = helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"])
    text_out = helper.make_tensor_value_info("echo", TensorProto.STRING, ["batch"])
    _save_graph(
        tmp_path / "model.onnx",
        [helper.make_node("Identity", ["text"], ["echo"])],
        [text_in],
        [text_out],
    )
    runtime = load_runtime("onnx", tmp_path / "model.onnx")

    result = runtime.predict({"text": np.array([b"caf\xc3\xa9", b"tea"], dtype=object)})

    assert result["echo"].tolist() == ["café", "tea"]
    assert runtime.signature().inputs == [TensorSpec("text", "BYTES", (-1,))]


def test_declared_name_and_datatype_reach_a_single_input_graph(tmp_path, load_runtime):
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 2])
    doubled = helper.make_tensor_value_info("doubled", TensorProto.FLOAT, [None, 2])
    _save_graph(
        tmp_path / "model.onnx", [helper.make_node("Add", ["a", "a"], ["doubled"])], [a], [doubled]
    )
    declared = [TensorSpec("input-0", "FP64", (-1, 2))]
    runtime = load_runtime(
        "onnx", tmp_path / "model.onnx", inputs=declared, parameters={"threads": 2}
    )

    result = runtime.predict({"input-0": np.array([[1.5, 2.0]])})

    np.testing.assert_array_equal(result["doubled"], np.array([[3.0, 4.0]], dtype=np.float32))
    assert runtime.signature().inputs == [TensorSpec("a", "FP32", (-1, 2))]


def test_several_inputs_are_fed_by_name(tmp_path, load_runtime):
    a = helper.make_tensor_value_info("a", TensorProto.INT64, ["n"])
    b = helper.make_tensor_value_info("b", TensorProto.INT64, ["n"])
    out = helper.make_tensor_value_info("diff", TensorProto.INT64, ["n"])
    _save_graph(
        tmp_path / "model.onnx", [helper.make_node("Sub", ["a", "b"], ["diff"])], [a, b], [out]
    )
    runtime = load_runtime("onnx", tmp_path / "model.onnx")

    result = runtime.predict({"b": np.array([1, 2]), "a": np.array([10, 20])})

    np.testing.assert_array_equal(result["diff"], [9, 18])
    with pytest.raises(InvalidInput, match="input 'b' is missing"):
        runtime.predict({"a": np.array([10, 20])})
