"""Every endpoint and every error case, one table, run against REST and gRPC.

Written from the Open Inference Protocol text: each case names the call, the status it must get
(as a gRPC code name; REST statuses map 1:1) and what the body must say. Both transports run the
same rows, so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from contract_clients import GrpcApi, InferInput, Outcome, RestApi

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]


def iris(
    data: list | None = None,
    *,
    name: str = "input-0",
    datatype: str = "FP32",
    shape: list[int] | None = None,
) -> list[InferInput]:
    data = IRIS_ROW if data is None else data
    return [InferInput(name, datatype, shape if shape is not None else [1, 4], data)]


@dataclass
class Case:
    id: str
    call: Callable[[Any], Outcome]
    status: str
    body: dict[str, Any] = field(default_factory=dict)
    """Keys that must be present with these values."""
    error_contains: tuple[str, ...] = ()
    check: Callable[[Outcome], None] | None = None


def _outputs(outcome: Outcome) -> dict[str, Any]:
    return outcome.body["outputs"]


def _check_iris_outputs(outcome: Outcome) -> None:
    outputs = _outputs(outcome)
    assert outputs["predict"]["datatype"] == "INT64"
    assert outputs["predict"]["shape"] == [1]
    assert outputs["predict"]["data"].tolist() == [0]
    proba = outputs["predict_proba"]
    assert proba["datatype"] == "FP64" and proba["shape"] == [1, 3]
    assert np.isclose(proba["data"].sum(), 1.0)


def _check_only_proba(outcome: Outcome) -> None:
    assert list(_outputs(outcome)) == ["predict_proba"]


def _check_two_rows(outcome: Outcome) -> None:
    assert _outputs(outcome)["predict"]["shape"] == [2]


def _check_metadata(outcome: Outcome) -> None:
    body = outcome.body
    assert body["versions"] == ["1", "2"]
    assert body["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["name"] for o in body["outputs"]] == ["predict", "predict_proba"]
    assert body["lineage"]["data"]


CASES = [
    # health and server metadata
    Case("server-live", lambda api: api.server_live(), "OK", {"live": True}),
    Case("server-ready", lambda api: api.server_ready(), "OK", {"ready": True}),
    Case(
        "server-metadata",
        lambda api: api.server_metadata(),
        "OK",
        {"name": "servekit"},
        check=lambda o: "binary_tensor_data" in o.body["extensions"],
    ),
    # model readiness
    Case("model-ready", lambda api: api.model_ready("iris"), "OK", {"ready": True}),
    Case("model-version-ready", lambda api: api.model_ready("iris", "1"), "OK", {"ready": True}),
    Case("model-ready-failed-load", lambda api: api.model_ready("corrupt"), "OK", {"ready": False}),
    Case(
        "model-ready-unknown",
        lambda api: api.model_ready("nope"),
        "NOT_FOUND",
        error_contains=("nope",),
    ),
    Case(
        "model-ready-unknown-version",
        lambda api: api.model_ready("iris", "99"),
        "NOT_FOUND",
        error_contains=("iris", "99"),
    ),
    # model metadata
    Case(
        "model-metadata",
        lambda api: api.model_metadata("iris"),
        "OK",
        {"name": "iris", "platform": "sklearn", "version": "2", "state": "READY"},
        check=_check_metadata,
    ),
    Case(
        "model-version-metadata",
        lambda api: api.model_metadata("iris", "1"),
        "OK",
        {"name": "iris", "version": "1"},
    ),
    Case(
        "model-metadata-failed-load",
        lambda api: api.model_metadata("corrupt"),
        "OK",
        {"name": "corrupt", "state": "FAILED"},
        check=lambda o: "UnpicklingError" in o.body["error"] or "pickle" in o.body["error"],
    ),
    Case(
        "model-metadata-unknown",
        lambda api: api.model_metadata("nope"),
        "NOT_FOUND",
        error_contains=("model 'nope' not found",),
    ),
    Case(
        "model-metadata-unknown-version",
        lambda api: api.model_metadata("iris", "7"),
        "NOT_FOUND",
        error_contains=("'iris'", "'7'"),
    ),
    # inference
    Case(
        "infer",
        lambda api: api.infer("iris", "1", iris()),
        "OK",
        {"model_name": "iris", "model_version": "1"},
        check=_check_iris_outputs,
    ),
    Case(
        "infer-default-version",
        lambda api: api.infer("iris", None, iris()),
        "OK",
        {"model_name": "iris", "model_version": "2"},
    ),
    Case(
        "infer-id-echoed",
        lambda api: api.infer("iris", "1", iris(), request_id="req-42"),
        "OK",
        {"id": "req-42"},
    ),
    Case(
        "infer-requested-output",
        lambda api: api.infer("iris", "1", iris(), outputs=["predict_proba"]),
        "OK",
        check=_check_only_proba,
    ),
    Case(
        "infer-batch",
        lambda api: api.infer("iris", "1", iris(IRIS_ROW * 2, shape=[2, 4])),
        "OK",
        check=_check_two_rows,
    ),
    Case(
        "infer-fp64-cast",
        lambda api: api.infer("iris", "1", iris(datatype="FP64")),
        "OK",
        check=_check_iris_outputs,
    ),
    # errors: 404
    Case(
        "infer-unknown-model",
        lambda api: api.infer("nope", None, iris()),
        "NOT_FOUND",
        error_contains=("model 'nope' not found",),
    ),
    Case(
        "infer-unknown-version",
        lambda api: api.infer("iris", "99", iris()),
        "NOT_FOUND",
        error_contains=("'iris'", "'99'"),
    ),
    # errors: 400
    Case(
        "infer-wrong-datatype",
        lambda api: api.infer("iris", "1", iris(["a", "b", "c", "d"], datatype="BYTES")),
        "INVALID_ARGUMENT",
        error_contains=("input-0", "FP32", "BYTES"),
    ),
    Case(
        "infer-shape-data-mismatch",
        lambda api: api.infer("iris", "1", iris(IRIS_ROW[:3])),
        "INVALID_ARGUMENT",
        error_contains=("input-0", "[1, 4]"),
    ),
    Case(
        "infer-shape-signature-mismatch",
        lambda api: api.infer("iris", "1", iris(IRIS_ROW[:3], shape=[1, 3])),
        "INVALID_ARGUMENT",
        error_contains=("input-0", "expected shape [-1, 4]", "[1, 3]"),
    ),
    Case(
        "infer-unknown-input",
        lambda api: api.infer("iris", "1", iris(name="features")),
        "INVALID_ARGUMENT",
        error_contains=("features", "input-0"),
    ),
    Case(
        "infer-unknown-output",
        lambda api: api.infer("iris", "1", iris(), outputs=["embedding"]),
        "INVALID_ARGUMENT",
        error_contains=("embedding",),
    ),
    Case(
        "infer-unknown-datatype",
        lambda api: api.infer("iris", "1", iris(datatype="FLOAT")),
        "INVALID_ARGUMENT",
        error_contains=("FLOAT",),
    ),
    # errors: 500 — the model raises; the model is named, the traceback is not sent
    Case(
        "infer-model-raises",
        lambda api: api.infer("broken", None, [InferInput("x", "FP64", [2], [1.0, -1.0])]),
        "INTERNAL",
        error_contains=("broken", "ValueError"),
        check=lambda o: "Traceback" not in o.error,
    ),
    # errors: 503 — model known but not loaded
    Case(
        "infer-model-not-ready",
        lambda api: api.infer("corrupt", None, iris()),
        "UNAVAILABLE",
        error_contains=("corrupt", "not ready"),
    ),
    # errors: 413 — body over the server's limit (1 MB in the test server)
    Case(
        "infer-too-large",
        lambda api: api.infer(
            "iris", "1", iris([0.5] * 4 * 80_000, datatype="FP64", shape=[80_000, 4])
        ),
        "RESOURCE_EXHAUSTED",
    ),
]


@pytest.fixture(scope="module", params=["rest", "grpc-raw", "grpc-contents"])
def api(request: pytest.FixtureRequest, server) -> Iterator[RestApi | GrpcApi]:
    client: RestApi | GrpcApi
    if request.param == "rest":
        client = RestApi(server.http_url)
    else:
        client = GrpcApi(server.grpc_target, raw=request.param == "grpc-raw")
    yield client
    client.close()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_contract(api: RestApi | GrpcApi, case: Case) -> None:
    outcome = case.call(api)
    assert outcome.status == case.status, outcome.body
    for key, value in case.body.items():
        assert outcome.body.get(key) == value, (key, outcome.body)
    for text in case.error_contains:
        assert text in outcome.error, outcome.error
    if case.status != "OK":
        assert outcome.error, "errors carry a message"
    if case.check:
        case.check(outcome)


def test_rest_malformed_json(server) -> None:
    with RestApi(server.http_url) as api:
        outcome = api.infer("iris", "1", [], raw_body=b"{not json")
    assert outcome.status == "INVALID_ARGUMENT"
    assert "not valid JSON" in outcome.error


@pytest.mark.parametrize(
    "body, message",
    [
        (b"[]", "JSON object"),
        (b"{}", "'inputs'"),
        (b'{"inputs": [{"name": "input-0", "datatype": "FP32", "data": [1]}]}', "shape"),
        (b'{"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 4]}]}', "data"),
        (
            b'{"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4], "data": [1]}]}',
            "non-negative",
        ),
        (
            b'{"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [1, 4], '
            b'"data": ["a", "b", "c", "d"]}]}',
            "FP32",
        ),
    ],
)
def test_rest_malformed_requests(server, body: bytes, message: str) -> None:
    with RestApi(server.http_url) as api:
        outcome = api.infer("iris", "1", [], raw_body=body)
    assert outcome.status == "INVALID_ARGUMENT", outcome.body
    assert message in outcome.error


def test_grpc_raw_and_contents_together_is_invalid(server) -> None:
    from tritonclient.grpc import service_pb2 as pb

    request = pb.ModelInferRequest(model_name="iris", model_version="1")
    tensor = request.inputs.add(name="input-0", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend(IRIS_ROW)
    request.raw_input_contents.append(np.asarray(IRIS_ROW, dtype=np.float32).tobytes())
    with GrpcApi(server.grpc_target) as api:
        outcome = api._call("ModelInfer", request, lambda r: {})
    assert outcome.status == "INVALID_ARGUMENT"
    assert "raw" in outcome.error


def test_failing_model_leaves_server_serving(api: RestApi | GrpcApi) -> None:
    for _ in range(3):
        failed = api.infer("broken", None, [InferInput("x", "FP64", [1], [-1.0])])
        assert failed.status == "INTERNAL"
        ok = api.infer("broken", None, [InferInput("x", "FP64", [2], [1.0, 2.5])])
        assert ok.status == "OK"
        assert ok.body["outputs"]["y"]["data"].tolist() == [2.0, 5.0]
        assert api.infer("iris", "1", iris()).status == "OK"


@pytest.mark.parametrize("raw", [True, False], ids=["grpc-raw", "grpc-contents"])
def test_nan_input_is_the_clients_mistake(server, raw: bool) -> None:
    """scikit-learn refuses NaN with a ValueError; that is INVALID_ARGUMENT, not INTERNAL."""
    with GrpcApi(server.grpc_target, raw=raw) as api:
        outcome = api.infer("iris", "1", iris([float("nan"), 3.5, 1.4, 0.2]))
        assert outcome.status == "INVALID_ARGUMENT", outcome.body
        assert "NaN or infinity" in outcome.error
        assert api.infer("iris", "1", iris()).status == "OK"


def test_rest_nan_in_binary_data_is_the_clients_mistake(server) -> None:
    """JSON has no NaN (the token is refused before any model sees it); the binary extension
    carries one, and it is a 400 for the same reason as over gRPC."""
    import json

    with RestApi(server.http_url) as api:
        outcome = api.infer("iris", "1", iris([float("nan"), 3.5, 1.4, 0.2]))
        assert outcome.status == "INVALID_ARGUMENT", outcome.body
        assert "not valid JSON" in outcome.error

        tensor = {"name": "input-0", "datatype": "FP32", "shape": [1, 4]}
        tensor["parameters"] = {"binary_data_size": 16}
        header = json.dumps({"inputs": [tensor]}).encode()
        data = np.array([np.nan, 3.5, 1.4, 0.2], dtype=np.float32).tobytes()
        response = api.client.post(
            "/v2/models/iris/versions/1/infer",
            content=header + data,
            headers={
                "content-type": "application/octet-stream",
                "inference-header-content-length": str(len(header)),
            },
        )
    assert response.status_code == 400, response.text
    assert "NaN or infinity" in response.json()["error"]
