"""Ground-truth feedback through the real server: the live metrics equal scikit-learn's on the
same data, late and early feedback both join, Seldon's shape works, bad feedback is refused."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    precision_score,
    r2_score,
    recall_score,
    root_mean_squared_error,
)

from servekit.testing import ServerProcess


@pytest.fixture(scope="module")
def server(
    example_repo: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("feedback") / "models"
    for name in ("iris", "diabetes-onnx"):
        shutil.copytree(example_repo[0] / name, repo / name)
    with ServerProcess(repo) as process:
        yield process


def infer(
    server: ServerProcess, model: str, rows: np.ndarray, version: str | None = None
) -> httpx.Response:
    path = (
        f"/v2/models/{model}/versions/{version}/infer" if version else f"/v2/models/{model}/infer"
    )
    body = {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": list(rows.shape),
                        "data": rows.astype(np.float32).ravel().tolist()}]}  # fmt: skip
    response = httpx.post(server.http_url + path, json=body)
    assert response.status_code == 200, response.text
    return response


def feedback(server: ServerProcess, model: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.http_url}/v2/models/{model}/feedback", json=body)


def performance(server: ServerProcess, model: str, expected_labelled: int, **params: str) -> dict:
    """Poll until every sent label has joined (predictions reach the store asynchronously)."""
    deadline = time.monotonic() + 30
    while True:
        report = httpx.get(f"{server.http_url}/v2/models/{model}/performance", params=params).json()
        labelled = sum(
            f.get("metrics", {}).get("count", 0) for f in report["windows"]["all"].values()
        )
        if labelled >= expected_labelled or time.monotonic() > deadline:
            assert labelled == expected_labelled, report
            return report


def test_classifier_metrics_match_scikit_learn_per_version(server: ServerProcess) -> None:
    features, labels = load_iris(return_X_y=True)
    rng = np.random.default_rng(7)
    noisy = features + rng.normal(0, 0.6, features.shape)  # so the versions make mistakes
    answers: dict[str, tuple[list, list, list]] = {"1": ([], [], []), "2": ([], [], [])}
    for version in ("1", "2"):
        for start in range(0, 150, 15):
            rows, truth = noisy[start : start + 15], labels[start : start + 15]
            response = infer(server, "iris", rows, version)
            outputs = {o["name"]: o for o in response.json()["outputs"]}
            sent = feedback(server, "iris", {"id": response.headers["x-request-id"],
                                             "truth": truth.tolist()})  # fmt: skip
            assert sent.status_code == 200, sent.text
            assert sent.json()["model_version"] == version
            answers[version][0].extend(truth.tolist())
            answers[version][1].extend(outputs["predict"]["data"])
            answers[version][2].extend(np.reshape(outputs["predict_proba"]["data"], (-1, 3)))
    report = performance(server, "iris", 300)
    for version, (truth, predicted, proba) in answers.items():
        metrics = report["windows"]["all"][version]["metrics"]
        assert metrics["count"] == 150
        assert metrics["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
        assert metrics["precision_macro"] == pytest.approx(
            precision_score(truth, predicted, average="macro", zero_division=0)
        )
        assert metrics["recall_macro"] == pytest.approx(
            recall_score(truth, predicted, average="macro", zero_division=0)
        )
        assert metrics["f1_macro"] == pytest.approx(f1_score(truth, predicted, average="macro"))
        per_class = f1_score(truth, predicted, average=None)
        for label in range(3):
            assert metrics["per_class"][str(label)]["f1"] == pytest.approx(per_class[label])
        assert metrics["log_loss"] == pytest.approx(log_loss(truth, np.array(proba)), rel=1e-5)
        assert report["windows"]["5m"][version]["metrics"]["count"] == 150
    comparison = report["comparison"]
    assert (comparison["baseline_version"], comparison["candidate_version"]) == ("1", "2")
    expected = accuracy_score(*answers["2"][:2]) - accuracy_score(*answers["1"][:2])
    assert comparison["difference"] == pytest.approx(expected)
    assert comparison["ci_low"] <= comparison["difference"] <= comparison["ci_high"]
    scraped = httpx.get(server.http_url + "/metrics").text
    assert (
        'servekit_model_performance{metric="accuracy",model="iris",version="1",window="all"}'
        in scraped
    )


def test_regressor_metrics_match_scikit_learn(server: ServerProcess) -> None:
    features, target = load_diabetes(return_X_y=True)
    truth, predicted = [], []
    for start in range(0, 200, 20):
        response = infer(server, "diabetes-onnx", features[start : start + 20])
        values = response.json()["outputs"][0]["data"]
        chunk = target[start : start + 20].tolist()
        assert feedback(server, "diabetes-onnx", {"id": response.headers["x-request-id"],
                                                  "truth": chunk}).status_code == 200  # fmt: skip
        truth.extend(chunk)
        predicted.extend(values)
    metrics = performance(server, "diabetes-onnx", 200)["windows"]["all"]["1"]["metrics"]
    assert metrics["rmse"] == pytest.approx(root_mean_squared_error(truth, predicted), rel=1e-6)
    assert metrics["mae"] == pytest.approx(mean_absolute_error(truth, predicted), rel=1e-6)
    assert metrics["r2"] == pytest.approx(r2_score(truth, predicted), rel=1e-6)


def test_early_and_late_feedback_both_join(server: ServerProcess) -> None:
    features, labels = load_iris(return_X_y=True)
    before = performance_count(server)
    early = infer(server, "iris", features[:1], "1").headers["x-request-id"]
    # Early: sent right after the answer, typically before the event reached the store.
    assert feedback(server, "iris", {"id": early, "truth": int(labels[0])}).status_code == 200
    late = infer(server, "iris", features[50:51], "1").headers["x-request-id"]
    wait_stored(server, late)
    assert feedback(server, "iris", {"id": late, "truth": int(labels[50])}).status_code == 200
    assert performance_count(server, at_least=before + 2) == before + 2


def performance_count(server: ServerProcess, at_least: int = 0) -> int:
    deadline = time.monotonic() + 20
    while True:
        report = httpx.get(f"{server.http_url}/v2/models/iris/performance").json()
        count = sum(f.get("metrics", {}).get("count", 0) for f in report["windows"]["all"].values())
        if count >= at_least or time.monotonic() > deadline:
            return count
        time.sleep(0.1)


def wait_stored(server: ServerProcess, event_id: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if httpx.get(server.http_url + "/v2/logs", params={"id": event_id}).json()["events"]:
            return
        time.sleep(0.05)
    raise AssertionError(f"{event_id} never stored")


def test_seldon_feedback_shape_and_rewards(server: ServerProcess) -> None:
    features, _ = load_iris(return_X_y=True)
    response = infer(server, "iris", features[:2], "2")
    event_id = response.headers["x-request-id"]
    seldon = {
        "request": {"data": {"ndarray": features[:2].tolist()}},
        "response": {"meta": {"puid": event_id}, "data": {"ndarray": [0, 0]}},
        "truth": {"data": {"ndarray": [[0], [0]]}},
        "reward": 1.0,
    }
    answer = feedback(server, "iris", seldon)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"id": event_id, "model_name": "iris", "model_version": "2"}
    stored = httpx.get(server.http_url + "/v2/logs", params={"id": event_id}).json()["events"]
    deadline = time.monotonic() + 20
    while (not stored or stored[0].get("truth") is None) and time.monotonic() < deadline:
        time.sleep(0.1)
        stored = httpx.get(server.http_url + "/v2/logs", params={"id": event_id}).json()["events"]
    assert stored[0]["truth"] == [0, 0] and stored[0]["reward"] == 1.0
    reward_only = infer(server, "iris", features[:1], "2").headers["x-request-id"]
    assert feedback(server, "iris", {"id": reward_only, "reward": 0.0}).status_code == 200
    # figures join feedback to stored predictions: the second one is there within the store's
    # linger (0.5 s by default)
    deadline = time.monotonic() + 20
    while True:
        rewards = httpx.get(f"{server.http_url}/v2/models/iris/performance").json()
        count = rewards["windows"]["all"]["2"]["reward"]["count"]
        if count >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert count == 2


@pytest.mark.parametrize(
    ("model", "body", "status", "message"),
    [
        ("iris", {"id": "no-such-request", "truth": 1}, 404, "no logged prediction"),
        ("no-such-model", {"id": "x", "truth": 1}, 404, "not found"),
        ("iris", {"truth": 1}, 400, "request id"),
        ("iris", {"id": "x"}, 400, "'truth', 'reward'"),
        ("iris", {"id": "x", "truth": {"nested": 1}}, 400, "SeldonMessage"),
        ("iris", {"id": "x", "reward": "high"}, 400, "finite number"),
        ("iris", [1, 2], 400, "JSON object"),
    ],
)
def test_bad_feedback_is_refused_clearly(
    server: ServerProcess, model: str, body: object, status: int, message: str
) -> None:
    response = httpx.post(f"{server.http_url}/v2/models/{model}/feedback", json=body)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_feedback_that_is_not_json(server: ServerProcess) -> None:
    response = httpx.post(f"{server.http_url}/v2/models/iris/feedback", content=b"{nope")
    assert response.status_code == 400
