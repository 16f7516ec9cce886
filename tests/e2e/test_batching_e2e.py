"""Adaptive batching through the real server: REST V2, V1 and gRPC share one batcher, and every
client gets exactly its own rows back."""

from __future__ import annotations

import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc

from servekit.testing import ServerProcess

MODEL = textwrap.dedent(
    """
    import numpy as np
    import servekit


    class BatchEcho(servekit.Model):
        '''Doubles x; tells each row how big its batch was and how many sources it mixed.'''

        inputs = [servekit.TensorSpec("x", "FP64", (-1, 3))]
        outputs = [
            servekit.TensorSpec("y", "FP64", (-1, 3)),
            servekit.TensorSpec("batch", "INT64", (-1,)),
            servekit.TensorSpec("sources", "INT64", (-1,)),
        ]

        def predict(self, inputs):
            x = inputs["x"]
            n = len(x)
            return {"y": x * 2, "batch": np.full(n, n), "sources": np.full(n, len(set(x[:, 0])))}
    """
)


def write_model(repo: Path, name: str, batching: str) -> None:
    (repo / name).mkdir(parents=True)
    (repo / name / "model.py").write_text(MODEL)
    (repo / name / "model.yaml").write_text(f"batching: {batching}\n")


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory: pytest.TempPathFactory):
    repo = tmp_path_factory.mktemp("batching")
    write_model(repo, "echo", "{max_batch_size: 8, max_batch_delay_ms: 20}")
    write_model(repo, "trio", "{max_batch_size: 3, max_batch_delay_ms: 5000}")
    with ServerProcess(repo) as server:
        yield server


def rest_v2(server, model: str, x: np.ndarray) -> dict[str, np.ndarray]:
    body = {
        "inputs": [
            {"name": "x", "datatype": "FP64", "shape": list(x.shape), "data": x.ravel().tolist()}
        ]
    }
    response = httpx.post(f"{server.http_url}/v2/models/{model}/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return {
        o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in response.json()["outputs"]
    }


def rest_v1(server, model: str, x: np.ndarray) -> dict[str, np.ndarray]:
    response = httpx.post(
        f"{server.http_url}/v1/models/{model}:predict",
        json={"inputs": {"x": x.tolist()}},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return {k: np.asarray(v) for k, v in response.json()["outputs"].items()}


def grpc(server, model: str, x: np.ndarray) -> dict[str, np.ndarray]:
    client = triton_grpc.InferenceServerClient(server.grpc_target)
    try:
        tensor = triton_grpc.InferInput("x", list(x.shape), "FP64")
        tensor.set_data_from_numpy(x)
        result = client.infer(model, [tensor])
        return {n: result.as_numpy(n) for n in ("y", "batch", "sources")}
    finally:
        client.close()


CLIENTS = {"rest-v2": rest_v2, "rest-v1": rest_v1, "grpc": grpc}


def test_concurrent_clients_on_every_protocol_get_exact_results(batching_server) -> None:
    rng = np.random.default_rng(0)
    jobs = []
    for i in range(90):
        protocol = list(CLIENTS)[i % 3]
        x = rng.normal(size=(1 + i % 4, 3))
        jobs.append((protocol, x))
    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(lambda job: CLIENTS[job[0]](batching_server, "echo", job[1]), jobs))
    batch_sizes = []
    for (_, x), result in zip(jobs, results, strict=True):
        np.testing.assert_allclose(result["y"], x * 2)
        batch_sizes.extend(result["batch"].tolist())
    assert max(batch_sizes) <= 8
    assert max(batch_sizes) > 1  # concurrent requests really shared batches


def test_one_request_from_each_protocol_fills_one_batch(batching_server) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [
            pool.submit(client, batching_server, "trio", np.array([[float(i), 0, 0]]))
            for i, client in enumerate(CLIENTS.values())
        ]
        results = [f.result(timeout=30) for f in futures]
    for i, result in enumerate(results):
        assert result["batch"].tolist() == [3]  # full at 3 rows: sent without the 5 s delay
        assert result["sources"].tolist() == [3]  # REST V2, V1 and gRPC rows in one batch
        np.testing.assert_allclose(result["y"], [[2.0 * i, 0, 0]])


def test_oversized_request_is_refused_over_rest_and_grpc(batching_server) -> None:
    x = np.zeros((9, 3))
    body = {
        "inputs": [{"name": "x", "datatype": "FP64", "shape": [9, 3], "data": x.ravel().tolist()}]
    }
    response = httpx.post(f"{batching_server.http_url}/v2/models/echo/infer", json=body)
    assert response.status_code == 400
    assert "max_batch_size 8" in response.json()["error"]
    with pytest.raises(triton_grpc.InferenceServerException) as info:
        grpc(batching_server, "echo", x)
    assert "INVALID_ARGUMENT" in str(info.value.status()) and "max_batch_size 8" in str(info.value)


def test_batch_sizes_are_in_the_metrics(batching_server) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{batching_server.http_url}/metrics").text
    counts = {
        s.labels["model"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "servekit_batch_size_count"
    }
    assert counts["echo"] > 0 and counts["trio"] > 0
