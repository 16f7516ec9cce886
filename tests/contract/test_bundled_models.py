"""Every bundled model, through every client, gives the numbers the framework gives in Python.

Clients: httpx (V2 JSON and V1), tritonclient.http (JSON and the binary extension),
tritonclient.grpc (raw contents) and grpcio with typed contents.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from contract_clients import GrpcApi, InferInput

ROWS = 5
NUMPY = {"FP32": np.float32, "FP64": np.float64}


def _sklearn(path: Path) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    import joblib

    model = joblib.load(path / "model.joblib")
    return lambda x: {"predict": model.predict(x), "predict_proba": model.predict_proba(x)}


def _xgboost(path: Path) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    import xgboost

    booster = xgboost.Booster(model_file=str(path / "model.json"))

    def predict(x: np.ndarray) -> dict[str, np.ndarray]:
        proba = booster.inplace_predict(x)
        return {"predict": proba.argmax(axis=1), "predict_proba": proba}

    return predict


def _lightgbm(path: Path) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    import lightgbm

    booster = lightgbm.Booster(model_file=str(path / "model.txt"))

    def predict(x: np.ndarray) -> dict[str, np.ndarray]:
        positive = booster.predict(x)
        return {
            "predict": (positive > 0.5).astype(np.int64),
            "predict_proba": np.column_stack([1 - positive, positive]),
        }

    return predict


def _onnx(path: Path) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    import onnxruntime

    session = onnxruntime.InferenceSession(
        str(path / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    return lambda x: dict(zip(names, session.run(None, {"input-0": x}), strict=True))


def _custom(path: Path) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    spec = importlib.util.spec_from_file_location("bundled_custom_model", path / "model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.IrisNearestCentroid("iris-custom", path, {})
    model.load()
    return lambda x: model.predict({"input-0": x})


BUNDLED = [
    ("iris", "1", "iris/1", _sklearn),
    ("iris", "2", "iris/2", _sklearn),
    ("wine-xgboost", "1", "wine-xgboost/1", _xgboost),
    ("breast-cancer-lightgbm", "1", "breast-cancer-lightgbm/1", _lightgbm),
    ("diabetes-onnx", "1", "diabetes-onnx/1", _onnx),
    ("iris-custom", "1", "iris-custom", _custom),
]


@pytest.fixture(scope="module", params=BUNDLED, ids=[f"{b[0]}-v{b[1]}" for b in BUNDLED])
def bundled(request: pytest.FixtureRequest, example_repo, server) -> dict:
    name, version, folder, direct = request.param
    repo, info = example_repo
    metadata = httpx.get(f"{server.http_url}/v2/models/{name}/versions/{version}").json()
    assert metadata["state"] == "READY", metadata
    (declared,) = metadata["inputs"]
    features = np.asarray(info[name]["X"][:ROWS], dtype=NUMPY[declared["datatype"]])
    expected = direct(repo / folder)(features)
    return {
        "name": name,
        "version": version,
        "datatype": declared["datatype"],
        "input": declared["name"],
        "x": features,
        "expected": expected,
        "outputs": [o["name"] for o in metadata["outputs"]],
    }


def _assert_same(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert set(got) == set(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(
            np.asarray(got[key]).reshape(np.shape(value)), value, rtol=1e-6, atol=1e-7, err_msg=key
        )


def test_metadata_and_readiness(bundled: dict, server) -> None:
    url = f"{server.http_url}/v2/models/{bundled['name']}/versions/{bundled['version']}"
    assert httpx.get(f"{url}/ready").json() == {"name": bundled["name"], "ready": True}
    client = triton_grpc.InferenceServerClient(server.grpc_target)
    try:
        assert client.is_model_ready(bundled["name"], bundled["version"])
        metadata = client.get_model_metadata(bundled["name"], bundled["version"], as_json=True)
        assert metadata["name"] == bundled["name"]
        assert [o["name"] for o in metadata["outputs"]] == bundled["outputs"]
    finally:
        client.close()


def test_httpx_v2_json(bundled: dict, server) -> None:
    x = bundled["x"]
    body = {
        "inputs": [
            {
                "name": bundled["input"],
                "datatype": bundled["datatype"],
                "shape": list(x.shape),
                "data": x.tolist(),
            }
        ]
    }
    response = httpx.post(
        f"{server.http_url}/v2/models/{bundled['name']}/versions/{bundled['version']}/infer",
        json=body,
    )
    assert response.status_code == 200, response.text
    got = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in response.json()["outputs"]}
    _assert_same(got, bundled["expected"])


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary-extension"])
def test_tritonclient_http(bundled: dict, server, binary: bool) -> None:
    client = triton_http.InferenceServerClient(server.http_url.removeprefix("http://"))
    try:
        tensor = triton_http.InferInput(
            bundled["input"], list(bundled["x"].shape), bundled["datatype"]
        )
        tensor.set_data_from_numpy(bundled["x"], binary_data=binary)
        outputs = [
            triton_http.InferRequestedOutput(n, binary_data=binary) for n in bundled["outputs"]
        ]
        result = client.infer(
            bundled["name"], [tensor], model_version=bundled["version"], outputs=outputs
        )
        _assert_same({n: result.as_numpy(n) for n in bundled["outputs"]}, bundled["expected"])
    finally:
        client.close()


def test_tritonclient_grpc_raw_contents(bundled: dict, server) -> None:
    client = triton_grpc.InferenceServerClient(server.grpc_target)
    try:
        tensor = triton_grpc.InferInput(
            bundled["input"], list(bundled["x"].shape), bundled["datatype"]
        )
        tensor.set_data_from_numpy(bundled["x"])
        result = client.infer(bundled["name"], [tensor], model_version=bundled["version"])
        _assert_same({n: result.as_numpy(n) for n in bundled["outputs"]}, bundled["expected"])
        assert result.get_response().model_version == bundled["version"]
    finally:
        client.close()


def test_grpcio_typed_contents(bundled: dict, server) -> None:
    x = bundled["x"]
    with GrpcApi(server.grpc_target, raw=False) as api:
        outcome = api.infer(
            bundled["name"],
            bundled["version"],
            [InferInput(bundled["input"], bundled["datatype"], list(x.shape), x.tolist())],
        )
    assert outcome.status == "OK", outcome.body
    _assert_same({k: v["data"] for k, v in outcome.body["outputs"].items()}, bundled["expected"])


def test_v1_predict_rows_and_columns(bundled: dict, server) -> None:
    x = bundled["x"]
    url = f"{server.http_url}/v1/models/{bundled['name']}/versions/{bundled['version']}:predict"
    first = bundled["outputs"][0]
    rows = httpx.post(url, json={"instances": x.tolist()})
    assert rows.status_code == 200, rows.text
    predictions = np.asarray(rows.json()["predictions"])
    assert len(predictions) == len(x)  # one prediction per instance, in order
    _assert_same({first: predictions}, {first: bundled["expected"][first]})
    columns = httpx.post(url, json={"inputs": {bundled["input"]: x.tolist()}})
    assert columns.status_code == 200, columns.text
    outputs = columns.json()["outputs"]
    got = outputs if isinstance(outputs, dict) else {first: outputs}
    _assert_same({k: np.asarray(v) for k, v in got.items()}, bundled["expected"])
