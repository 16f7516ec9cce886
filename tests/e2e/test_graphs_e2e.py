"""Sequence, ensemble, switch and splitter graphs (tests/e2e/graph_fixtures/graphs.yaml, the
README's example) against one real server, over REST V2, REST V1 and gRPC. Expected answers come
from calling the same models directly on the same server."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import yaml
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from servekit.testing import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "graph_fixtures"
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.0, 2.7, 5.1, 1.6], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
BODY = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [4, 4], "data": ROWS}]}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, example_repo: tuple[Path, dict]
) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("graphs") / "models"
    repo.mkdir()
    for name in ("iris", "iris-custom"):
        (repo / name).symlink_to(example_repo[0] / name, target_is_directory=True)
    for name in ("centimetres", "broken"):
        (repo / name).symlink_to(FIXTURES / "models" / name, target_is_directory=True)
    spec = FIXTURES / "graphs.yaml"
    with ServerProcess(spec, args=["--model-repository", str(repo)]) as running:
        yield running


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.http_url, timeout=10) as client:
        yield client


def infer(http: httpx.Client, name: str, body: dict = BODY, **headers: str) -> dict:
    response = http.post(f"/v2/models/{name}/infer", json=body, headers=headers)
    assert response.status_code == 200, response.text
    document = response.json()
    version = document.get("model_version")
    served = f"{document['model_name']}/{version}" if version else document["model_name"]
    assert response.headers["x-servekit-served-by"] == served
    return document


def output(document: dict, name: str) -> np.ndarray:
    tensor = next(o for o in document["outputs"] if o["name"] == name)
    return np.asarray(tensor["data"]).reshape(tensor["shape"])


def direct(http: httpx.Client, version: str, name: str = "iris", body: dict = BODY) -> dict:
    path = f"/v2/models/{name}/versions/{version}/infer"
    response = http.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_sequence_with_a_transformer_node_and_renamed_tensors(http: httpx.Client) -> None:
    millimetres = np.asarray(ROWS) * 10
    body = {
        "inputs": [
            {"name": f, "datatype": "FP32", "shape": [4], "data": millimetres[:, i].tolist()}
            for i, f in enumerate(FEATURES)
        ]
    }
    document = infer(http, "iris-pipeline", body)
    expected = output(direct(http, "2"), "predict")
    labels = np.array(["setosa", "versicolor", "virginica"])
    assert output(document, "label").tolist() == labels[expected].tolist()
    assert output(document, "predict").tolist() == expected.tolist()
    assert (document["model_name"], document["model_version"]) == ("iris", "2")
    assert document["parameters"]["served_by"] == ["centimetres/1", "iris/2"]


def test_rest_v1_lists_the_graphs_beside_the_models(http: httpx.Client) -> None:
    listed = http.get("/v1/models")
    assert listed.status_code == 200, listed.text
    names = listed.json()["models"]
    assert {"iris", "iris-vote", "iris-pipeline", "iris-split", "iris-switch"} <= set(names)
    assert len(names) == len(set(names))
    assert names.index("iris") < names.index("iris-vote")  # models first


def test_rest_v1_rows_and_records(http: httpx.Client) -> None:
    votes = http.post("/v1/models/iris-vote:predict", json={"instances": ROWS})
    assert votes.status_code == 200, votes.text
    assert votes.json()["predictions"] == output(infer(http, "iris-vote"), "predict").tolist()
    records = [{f: v * 10 for f, v in zip(FEATURES, row, strict=True)} for row in ROWS[:2]]
    labels = http.post("/v1/models/iris-pipeline:predict", json={"instances": records})
    assert labels.status_code == 200, labels.text
    assert labels.json() == {"predictions": ["setosa", "versicolor"]}
    assert labels.headers["x-servekit-served-by"] == "iris/2"
    expected = {v: output(direct(http, v), "predict").tolist() for v in ("1", "2")}
    for name in ("iris-split", "iris-switch"):
        answer = http.post(f"/v1/models/{name}:predict", json={"instances": ROWS})
        assert answer.status_code == 200, answer.text
        version = answer.headers["x-servekit-served-by"].removeprefix("iris/")
        assert answer.json() == {"predictions": expected[version]}


def test_ensembles_combine_what_each_node_answers_directly(http: httpx.Client) -> None:
    answers = [direct(http, "1"), direct(http, "2"), direct(http, "1", name="iris-custom")]
    probabilities = [output(a, "predict_proba") for a in answers[:2]]

    mean = infer(http, "iris-mean")
    assert np.allclose(output(mean, "predict_proba"), np.mean(probabilities, axis=0))
    assert mean["parameters"]["served_by"] == ["iris/1", "iris/2"]
    assert mean["model_name"] == "iris-mean"

    vote = infer(http, "iris-vote")
    predictions = np.stack([output(a, "predict") for a in answers])
    majority = [Counter(column).most_common(1)[0][0] for column in predictions.T.tolist()]
    assert output(vote, "predict").tolist() == majority
    assert vote["parameters"]["served_by"] == ["iris/1", "iris/2", "iris-custom/1"]

    confident = infer(http, "iris-confident")  # the user combiner: graph_code.most_confident
    stacked = np.stack(probabilities)
    best = stacked.max(axis=2).argmax(axis=0)
    assert output(confident, "predict").tolist() == [
        int(stacked[node, row].argmax()) for row, node in enumerate(best)
    ]


def test_switch_by_header_and_by_input_element(http: httpx.Client) -> None:
    setosa = {"inputs": [{**BODY["inputs"][0], "shape": [1, 4], "data": [ROWS[0]]}]}
    virginica = {"inputs": [{**BODY["inputs"][0], "shape": [1, 4], "data": [ROWS[2]]}]}
    assert infer(http, "iris-switch", setosa)["parameters"]["served_by"] == ["iris/1"]
    by_petal = infer(http, "iris-switch", virginica)
    assert by_petal["parameters"]["served_by"] == ["iris/2"]
    assert by_petal["model_version"] == "2"
    gold = infer(http, "iris-switch", setosa, **{"x-tier": "gold"})
    assert gold["parameters"]["served_by"] == ["iris/1", "iris/2", "iris-custom/1"]
    assert output(gold, "predict").tolist() == [0]


def test_splitter_follows_its_weights_and_each_answer_is_its_nodes(http: httpx.Client) -> None:
    expected = {v: output(direct(http, v), "predict_proba") for v in ("1", "2")}
    n, p = 300, 0.75
    counts: Counter[str] = Counter()
    for _ in range(n):
        document = infer(http, "iris-split")
        (served,) = document["parameters"]["served_by"]
        counts[served] += 1
        version = document["model_version"]
        assert served == f"iris/{version}"
        assert np.allclose(output(document, "predict_proba"), expected[version])
    tolerance = 4.5 * math.sqrt(n * p * (1 - p))
    assert abs(counts["iris/2"] - n * p) <= tolerance, counts


def test_grpc_graphs_with_served_by(server: ServerProcess, http: httpx.Client) -> None:
    request = pb.ModelInferRequest(model_name="iris-vote")
    tensor = request.inputs.add(name="input-0", datatype="FP32", shape=[4, 4])
    tensor.contents.fp32_contents.extend(np.asarray(ROWS, dtype=np.float32).reshape(-1).tolist())
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        vote, call = stub.ModelInfer.with_call(request, timeout=10)
        request.model_name = "iris-switch"
        switched, switched_call = stub.ModelInfer.with_call(
            request, metadata=[("x-tier", "platinum")], timeout=10
        )
        pipeline = pb.ModelInferRequest(model_name="iris-pipeline")
        for column, feature in enumerate(FEATURES):
            values = (np.asarray(ROWS, dtype=np.float32)[:, column] * 10).tolist()
            tensor = pipeline.inputs.add(name=feature, datatype="FP32", shape=[4])
            tensor.contents.fp32_contents.extend(values)
        labels, labels_call = stub.ModelInfer.with_call(pipeline, timeout=10)
        request.model_name = "iris-broken"
        with pytest.raises(grpc.RpcError) as failed:
            stub.ModelInfer(request, timeout=10)
        ready = stub.ModelReady(pb.ModelReadyRequest(name="iris-pipeline"), timeout=10)
    assert ready.ready
    assert vote.model_name == "iris-vote"
    assert dict(call.trailing_metadata())["x-servekit-served-by"] == "iris-vote"
    served = json.loads(vote.parameters["served_by"].string_param)
    assert served == ["iris/1", "iris/2", "iris-custom/1"]
    predictions = (
        list(vote.outputs[0].contents.int64_contents)
        or np.frombuffer(vote.raw_output_contents[0], dtype=np.int64).tolist()
    )
    assert predictions[0] == 0 and predictions[2] == 2  # setosa, virginica
    assert json.loads(switched.parameters["served_by"].string_param) == served
    assert dict(switched_call.trailing_metadata())["x-servekit-served-by"] == "iris-vote"
    assert (labels.model_name, labels.model_version) == ("iris", "2")
    assert dict(labels_call.trailing_metadata())["x-servekit-served-by"] == "iris/2"
    assert json.loads(labels.parameters["served_by"].string_param) == ["centimetres/1", "iris/2"]
    assert labels.outputs[0].name == "label"
    species = np.array(["setosa", "versicolor", "virginica"])
    assert _strings(labels, 0) == species[output(direct(http, "2"), "predict")].tolist()
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    assert "graph 'iris-broken' node 'scorer'" in (failed.value.details() or "")


def _strings(response: pb.ModelInferResponse, index: int) -> list[str]:
    """A BYTES output, whether the server sent it as contents or as raw (length-prefixed)."""
    if not response.raw_output_contents:
        return [v.decode() for v in response.outputs[index].contents.bytes_contents]
    raw, values, offset = response.raw_output_contents[index], [], 0
    while offset < len(raw):
        size = int.from_bytes(raw[offset : offset + 4], "little")
        values.append(raw[offset + 4 : offset + 4 + size].decode())
        offset += 4 + size
    return values


def test_a_failing_node_is_named_and_the_server_keeps_serving(http: httpx.Client) -> None:
    broken = http.post("/v2/models/iris-broken/infer", json=BODY)
    assert broken.status_code == 500
    assert broken.json()["error"].startswith("graph 'iris-broken' node 'scorer': model 'broken'")
    wrong = {"inputs": [{**BODY["inputs"][0], "name": "x"}]}
    bad = http.post("/v2/models/iris-broken/infer", json=wrong)
    assert bad.status_code == 400
    assert bad.json()["error"].startswith(
        "graph 'iris-broken' node 'centimetres': no tensor 'input-0' for input 'mm'"
    )
    missing = http.post("/v2/models/iris-pipeline/infer", json=BODY)
    assert missing.status_code == 400
    assert "node 'IrisMillimetres': missing features" in missing.json()["error"]
    unknown_output = {**BODY, "outputs": [{"name": "nope"}]}
    asked = http.post("/v2/models/iris-mean/infer", json=unknown_output)
    assert asked.status_code == 400 and "graph 'iris-mean' has no output 'nope'" in asked.text
    assert infer(http, "iris-mean")["parameters"]["served_by"] == ["iris/1", "iris/2"]


def test_readme_graph_example_is_the_served_file() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Inference graphs") :]
    start = section.index("```yaml\n") + len("```yaml\n")
    block = section[start : section.index("```", start)]
    assert yaml.safe_load(block) == yaml.safe_load((FIXTURES / "graphs.yaml").read_text())
