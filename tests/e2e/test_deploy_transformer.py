"""The example service (examples/deployments, read automatically next to examples/models): a
transformer turns named features or JSON records into the iris tensor and class indices into
species names, over REST V2, V1 and gRPC; every answer says which model version served it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from servekit.testing import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
SETOSA = dict(zip(FEATURES, (5.1, 3.5, 1.4, 0.2), strict=True))
VIRGINICA = dict(zip(FEATURES, (6.7, 3.0, 5.2, 2.3), strict=True))


@pytest.fixture(scope="module")
def server(
    example_repo: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """`servekit serve examples/models` as laid out in the checkout: deployments/ beside models/."""
    root = tmp_path_factory.mktemp("checkout")
    shutil.copytree(example_repo[0], root / "models")
    shutil.copytree(ROOT / "examples" / "deployments", root / "deployments")
    with ServerProcess(root / "models") as running:
        yield running


def test_rest_v2_named_feature_tensors(server: ServerProcess) -> None:
    inputs = [
        {"name": f, "datatype": "FP32", "shape": [2], "data": [SETOSA[f], VIRGINICA[f]]}
        for f in FEATURES
    ]
    response = httpx.post(f"{server.http_url}/v2/models/iris-labels/infer", json={"inputs": inputs})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_name"], body["model_version"]) == ("iris", "2")
    assert response.headers["x-servekit-served-by"] == "iris/2"
    label = next(o for o in body["outputs"] if o["name"] == "label")
    assert label == {
        "name": "label",
        "datatype": "BYTES",
        "shape": [2],
        "data": ["setosa", "virginica"],
    }


def test_rest_v2_json_records_as_bytes(server: ServerProcess) -> None:
    records = [json.dumps(SETOSA), json.dumps(VIRGINICA)]
    request = {"inputs": [{"name": "records", "datatype": "BYTES", "shape": [2], "data": records}]}
    response = httpx.post(f"{server.http_url}/v2/models/iris-labels/infer", json=request)
    assert response.status_code == 200, response.text
    label = next(o for o in response.json()["outputs"] if o["name"] == "label")
    assert label["data"] == ["setosa", "virginica"]


def test_rest_v1_records_and_the_pinned_canary_by_header(server: ServerProcess) -> None:
    url = f"{server.http_url}/v1/models/iris-labels:predict"
    response = httpx.post(url, json={"instances": [SETOSA, VIRGINICA]})
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": ["setosa", "virginica"]}
    assert response.headers["x-servekit-served-by"] == "iris/2"
    canary = httpx.post(url, json={"instances": [SETOSA]}, headers={"x-servekit-variant": "canary"})
    assert canary.json() == {"predictions": ["setosa"]}
    assert canary.headers["x-servekit-served-by"] == "iris/1"


def test_bad_records_are_a_clear_400(server: ServerProcess) -> None:
    url = f"{server.http_url}/v1/models/iris-labels:predict"
    response = httpx.post(url, json={"instances": [{"sepal_length": 1.0}]})
    assert response.status_code == 400
    assert "sepal_width" in response.json()["error"]


def test_grpc_with_served_by_trailing_metadata(server: ServerProcess) -> None:
    request = pb.ModelInferRequest(model_name="iris-labels")
    for feature in FEATURES:
        tensor = request.inputs.add(name=feature, datatype="FP32", shape=[2])
        tensor.contents.fp32_contents.extend([SETOSA[feature], VIRGINICA[feature]])
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        response, call = stub.ModelInfer.with_call(request, timeout=10)
        metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name="iris-labels"), timeout=10)
        ready = stub.ModelReady(pb.ModelReadyRequest(name="iris-labels"), timeout=10)
    assert (response.model_name, response.model_version) == ("iris", "2")
    assert dict(call.trailing_metadata())["x-servekit-served-by"] == "iris/2"
    label = next(o for o in response.outputs if o.name == "label")
    index = [o.name for o in response.outputs].index("label")
    if response.raw_output_contents:
        raw = response.raw_output_contents[index]
        values, offset = [], 0
        while offset < len(raw):
            size = int.from_bytes(raw[offset : offset + 4], "little")
            values.append(raw[offset + 4 : offset + 4 + size].decode())
            offset += 4 + size
    else:
        values = [v.decode() for v in label.contents.bytes_contents]
    assert values == ["setosa", "virginica"]
    assert metadata.name == "iris-labels" and ready.ready


def test_readme_deployments_example_is_the_example_file() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Deployments and rollouts") :]
    block = section[
        section.index("```yaml\n") + 8 : section.index("```", section.index("```yaml\n") + 8)
    ]
    example = ROOT / "examples" / "deployments" / "iris.yaml"
    assert yaml.safe_load(block) == yaml.safe_load(example.read_text())


def test_readme_example_services_serve(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.http_url, timeout=10) as http:
        listed = http.get("/v2/deployments").json()
        assert [d["name"] for d in listed["deployments"]] == [
            "iris-bandit",
            "iris-canary",
            "iris-labels",
        ]
        body = {
            "inputs": [
                {
                    "name": "input-0",
                    "datatype": "FP32",
                    "shape": [1, 4],
                    "data": [5.1, 3.5, 1.4, 0.2],
                }
            ]
        }
        for name in ("iris-canary", "iris-bandit"):
            response = http.post(
                f"/v2/models/{name}/infer", json=body, headers={"x-user-id": "ada"}
            )
            assert response.status_code == 200, response.text
            assert response.headers["x-servekit-served-by"] in {"iris/1", "iris/2"}
