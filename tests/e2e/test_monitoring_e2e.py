"""Model monitoring end to end: a real server with detectors in model.yaml, real traffic, a real
webhook receiver, a real CloudEvents receiver, the REST endpoint, the metrics and the CLI.

Traffic is drawn with fixed seeds from the model's reference (the iris training split), so the
detectors' verdicts are reproducible: reference-like windows raise no alarm, windows where one
feature is shifted do, and only that feature is named.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
import tritonclient.grpc as grpcclient
import yaml

from servekit.testing import ServerProcess
from servekit.testing.event_receiver import ReceiverProcess

WINDOW = 50
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SHIFTED = "petal_length"


class WebhookReceiver:
    """An Alertmanager-style webhook endpoint: keeps every JSON body it is sent."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/alerts"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def wait_until(condition: Callable[[], Any], what: str, server: ServerProcess | None = None) -> Any:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    logs = server.logs()[-3000:] if server is not None else ""
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


@pytest.fixture(scope="module")
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReceiverProcess]:
    with ReceiverProcess(tmp_path_factory.mktemp("events") / "events.jsonl") as receiver:
        yield receiver


@pytest.fixture(scope="module")
def monitored_repo(
    example_repo: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory, webhook: Any
) -> Path:
    """The iris example with a drift detector, an inline outlier detector and a webhook."""
    repo = tmp_path_factory.mktemp("monitoring") / "models"
    shutil.copytree(example_repo[0] / "iris", repo / "iris")
    config_path = repo / "iris" / "model.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["monitoring"] = {
        "reference": "reference.csv",
        "target": "species",
        "window": {"size": WINDOW},
        "detectors": [
            {"type": "tabular", "name": "drift", "p_val": 0.05, "correction": "bonferroni"},
            {"type": "mahalanobis", "name": "outliers", "inline": True, "alarm_rate": 0.5},
            {"type": "cbpe", "name": "accuracy"},
            {"type": "adwin", "name": "errors", "source": "errors", "ert": 1000},
        ],
        "alerts": [{"url": webhook.url, "retries": 3}],
    }
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return repo


@pytest.fixture(scope="module")
def server(
    monitored_repo: Path, events: ReceiverProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    settings = tmp_path_factory.mktemp("settings") / "servekit.yaml"
    sink = {"type": "http", "url": events.url, "content_mode": "structured"}
    settings.write_text(yaml.safe_dump({"payload_log": {"sinks": [sink]}}))
    with ServerProcess(monitored_repo, args=["--config", str(settings)]) as process:
        yield process


@pytest.fixture(scope="module")
def reference(monitored_repo: Path) -> np.ndarray:
    table = np.loadtxt(monitored_repo / "iris" / "reference.csv", delimiter=",", skiprows=1)
    return table[:, :4]


def send(server: ServerProcess, rows: np.ndarray, batch: int = 5) -> list[httpx.Response]:
    responses = []
    with httpx.Client(timeout=30) as client:
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            body = {
                "inputs": [
                    {"name": "input-0", "datatype": "FP32", "shape": list(chunk.shape),
                     "data": chunk.ravel().tolist()}
                ]
            }  # fmt: skip
            response = client.post(f"{server.http_url}/v2/models/iris/infer", json=body)
            assert response.status_code == 200, response.text
            responses.append(response)
    return responses


def state(server: ServerProcess) -> dict[str, Any]:
    response = httpx.get(f"{server.http_url}/v2/models/iris/monitoring", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def logs(server: ServerProcess) -> list[dict[str, Any]]:
    params = {"model": "iris", "limit": "1000"}
    return httpx.get(f"{server.http_url}/v2/logs", params=params, timeout=30).json()["events"]


def detector(server: ServerProcess, name: str) -> dict[str, Any]:
    return next(d for d in state(server)["detectors"] if d["name"] == name)


def drift(server: ServerProcess) -> dict[str, Any]:
    return detector(server, "drift")


def test_reference_like_traffic_raises_no_alarm(server: ServerProcess, reference: np.ndarray):
    wait_until(lambda: state(server)["status"] == "ready", "the monitor to be fitted")
    rows = reference[np.random.default_rng(0).integers(0, len(reference), 2 * WINDOW)]
    send(server, rows)
    found = wait_until(
        lambda: (d := drift(server))["results"] >= 2 and d, "two drift results", server
    )
    assert found["alarm"] is False
    assert found["last_result"]["window_size"] == WINDOW
    assert state(server)["drifted_features"] == []


def test_shifted_traffic_flips_the_metric_alerts_and_names_the_feature(
    server: ServerProcess, reference: np.ndarray, webhook: WebhookReceiver
) -> None:
    rows = reference[np.random.default_rng(1).integers(0, len(reference), 2 * WINDOW)].copy()
    rows[:, FEATURES.index(SHIFTED)] += 2.0
    send(server, rows)
    found = wait_until(lambda: (d := drift(server))["alarm"] and d, "a drift alarm", server)
    drifted = [f["name"] for f in found["last_result"]["features"] if f["drifted"]]
    assert drifted == [SHIFTED]
    current = state(server)
    assert current["drifted_features"] == [SHIFTED]
    assert "drift" in current["firing"]
    assert [f["name"] for f in current["reference"]["features"]] == FEATURES

    metrics = httpx.get(f"{server.http_url}/metrics").text
    assert 'servekit_monitoring_alarm{detector="drift",kind="data_drift",model="iris"} 1.0' in (
        metrics
    )
    flipped = f'feature_drift{{detector="drift",feature="{SHIFTED}",model="iris"}} 1.0'
    assert f"servekit_monitoring_{flipped}" in metrics
    assert 'servekit_monitoring_feature_drift{detector="drift",feature="sepal_width",' in metrics

    alerts = wait_until(
        lambda: [m for m in webhook.received if m["commonLabels"]["detector"] == "drift"],
        "the alert at the webhook",
    )
    assert alerts[0]["status"] == "firing"
    assert alerts[0]["version"] == "4"
    (alert,) = alerts[0]["alerts"]
    assert alert["labels"]["model"] == "iris"
    assert alert["annotations"]["drifted_features"] == SHIFTED


def test_the_cli_shows_which_features_drifted(server: ServerProcess) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "servekit", "monitor", "iris", "--url", server.http_url],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"drifted features: {SHIFTED}" in result.stdout
    assert "ALARM" in result.stdout


def test_outliers_are_flagged_inline_and_asynchronously(
    server: ServerProcess, reference: np.ndarray
) -> None:
    normal, outlier = send(server, np.vstack([reference[:1], [[30.0, 0.1, 30.0, 9.0]]]), batch=1)
    assert normal.json()["parameters"]["servekit_outlier"] is False
    assert normal.headers["x-servekit-outlier"] == "false"
    parameters = outlier.json()["parameters"]
    assert parameters["servekit_outlier"] is True
    assert parameters["outliers_outliers"] == 1
    assert parameters["outliers_score"] > normal.json()["parameters"]["outliers_score"]
    assert outlier.headers["x-servekit-outlier"] == "true"

    with grpcclient.InferenceServerClient(server.grpc_target) as client:  # one core path
        tensor = grpcclient.InferInput("input-0", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.array([[30.0, 0.1, 30.0, 9.0]], dtype=np.float32))
        answer = client.infer("iris", [tensor]).get_response()
    assert answer.parameters["servekit_outlier"].bool_param is True
    assert answer.parameters["outliers_outliers"].int64_param == 1

    flagged_id = outlier.headers["x-request-id"]
    found = wait_until(
        lambda: [o for o in state(server)["outliers"] if o["id"] == flagged_id],
        "the outlier in the monitoring state",
    )
    assert found[0]["detector"] == "outliers"
    assert normal.headers["x-request-id"] not in {o["id"] for o in state(server)["outliers"]}
    metrics = httpx.get(f"{server.http_url}/metrics").text
    assert 'servekit_monitoring_outliers_total{detector="outliers",mode="inline",model="iris"}' in (
        metrics
    )


def test_cbpe_estimates_sit_next_to_realised_performance(server: ServerProcess) -> None:
    wait_until(lambda: detector(server, "accuracy")["results"], "a CBPE estimate", server)
    report = httpx.get(f"{server.http_url}/v2/models/iris/performance").json()
    estimate = report["estimated"]["accuracy"]
    assert 0.0 <= estimate["estimated_accuracy"] <= 1.0
    assert estimate["window_size"] == WINDOW


def test_concept_drift_from_feedback_reaches_the_webhook(
    server: ServerProcess, reference: np.ndarray, webhook: WebhookReceiver
) -> None:
    """Labels that agree with the model, then labels that contradict it: the error stream
    changes and ADWIN alarms."""
    rows = reference[np.random.default_rng(2).integers(0, len(reference), 4 * WINDOW)]
    before = detector(server, "drift")["results"]
    responses = send(server, rows)
    wait_until(lambda: detector(server, "drift")["results"] >= before + 4, "the rows", server)
    with httpx.Client(timeout=30) as client:
        for i, response in enumerate(responses):
            predicted = response.json()["outputs"][0]["data"]
            truth = predicted if i < len(responses) // 2 else [(p + 1) % 3 for p in predicted]
            answer = client.post(
                f"{server.http_url}/v2/models/iris/feedback",
                json={"id": response.headers["x-request-id"], "truth": truth},
            )
            assert answer.status_code == 200, answer.text
    alerts = wait_until(
        lambda: [m for m in webhook.received if m["commonLabels"]["detector"] == "errors"],
        "the concept drift alert",
        server,
    )
    assert alerts[0]["status"] == "firing"
    assert alerts[0]["commonLabels"]["kind"] == "concept_drift"
    history = state(server)["history"]
    assert any(r["detector"] == "errors" and r["alarm"] for r in history)


def test_results_are_emitted_as_cloudevents(server: ServerProcess, events: ReceiverProcess):
    results = wait_until(
        lambda: [e for e in events.events() if e["type"] == "org.servekit.monitoring.result"],
        "monitoring results at the event receiver",
    )
    assert {e["subject"] for e in results} == {"iris"}


def test_a_reference_snapshot_from_logged_traffic(server: ServerProcess, tmp_path: Path) -> None:
    sent = 8 * WINDOW // 5 + 3  # the requests of the tests above
    wait_until(lambda: len(logs(server)) >= sent, "every request in the payload store")
    out = tmp_path / "snapshot.parquet"
    result = subprocess.run(
        [sys.executable, "-m", "servekit", "reference", "snapshot", "iris", "--since", "1h",
         "--out", str(out), "--features", ",".join(FEATURES), "--url", server.http_url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = pq.read_table(out)
    assert table.column_names == FEATURES
    assert table.num_rows == 8 * WINDOW + 3  # every row of every request


def test_bad_monitoring_requests_get_clear_errors(server: ServerProcess) -> None:
    missing = httpx.get(f"{server.http_url}/v2/models/nope/monitoring")
    assert missing.status_code == 404
    bad = httpx.get(f"{server.http_url}/v2/models/iris/monitoring", params={"history": "x"})
    assert bad.status_code == 400
    assert "history" in bad.json()["error"]


def test_monitoring_survives_a_crash(
    monitored_repo: Path, reference: np.ndarray, tmp_path: Path
) -> None:
    """A window's events answered before a kill -9 are tested: before the kill (the result is
    in the monitoring store) or after the restart (replayed from the journal)."""
    data = tmp_path / "data"
    first = ServerProcess(monitored_repo, data_dir=data).start()
    try:
        wait_until(lambda: state(first)["status"] == "ready", "the monitor", first)
        send(first, reference[np.random.default_rng(3).integers(0, len(reference), WINDOW)])
    finally:
        first.kill()
    with ServerProcess(monitored_repo, data_dir=data) as second:
        results = wait_until(
            lambda: [r for r in state(second).get("history", []) if r["detector"] == "drift"],
            "the drift result of the window sent before the crash",
            second,
        )
        assert results[0]["window_size"] == WINDOW
