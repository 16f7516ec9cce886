"""The `servekit` command as a user runs it: models, predict against a live server, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

IRIS_V2 = {
    "inputs": [
        {"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}
    ]
}


def servekit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "servekit", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )


def test_models_lists_formats_versions_and_signatures(serving_repo: Path) -> None:
    result = servekit("models", str(serving_repo), "--json")
    assert result.returncode == 0, result.stderr
    rows = {(r["name"], r["version"]): r for r in json.loads(result.stdout)}
    assert rows[("iris", "1")]["platform"] == "sklearn"
    assert rows[("iris", "2")]["state"] == "READY"
    assert rows[("wine-xgboost", "1")]["platform"] == "xgboost"
    assert rows[("breast-cancer-lightgbm", "1")]["platform"] == "lightgbm"
    assert rows[("diabetes-onnx", "1")]["platform"] == "onnx_onnxv1"
    assert rows[("iris-custom", "1")]["platform"] == "servekit_custom"
    assert rows[("iris", "1")]["inputs"] == [
        {"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}
    ]
    assert rows[("corrupt", "1")]["state"] == "FAILED" and rows[("corrupt", "1")]["error"]


def test_models_table(serving_repo: Path) -> None:
    result = servekit("models", str(serving_repo))
    assert result.returncode == 0, result.stderr
    assert "wine-xgboost" in result.stdout and "FAILED" in result.stdout


def test_predict_v2_json_string_and_file(server, tmp_path: Path) -> None:
    result = servekit(
        "predict", "iris", "--url", server.http_url, "--version", "1", "--data", json.dumps(IRIS_V2)
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["model_name"] == "iris" and body["outputs"][0]["data"] == [0]
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}))
    result = servekit(
        "predict", "iris", "--url", server.http_url, "--version", "1", "--data", str(request_file)
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"predictions": [0, 2]}


def test_predict_reports_server_errors(server) -> None:
    result = servekit("predict", "nope", "--url", server.http_url, "--data", json.dumps(IRIS_V2))
    assert result.returncode == 1
    assert "404" in result.stderr and "model 'nope' not found" in result.stderr


def test_predict_rejects_bad_data(server) -> None:
    result = servekit("predict", "iris", "--url", server.http_url, "--data", "{oops")
    assert result.returncode == 2
    assert "neither a file nor valid JSON" in result.stderr


def test_serve_refuses_a_missing_repository(tmp_path: Path) -> None:
    result = servekit("serve", str(tmp_path / "missing"), "--http-port", "0", "--grpc-port", "0")
    assert result.returncode == 2
    assert "no such file or folder" in result.stderr


def test_serve_refuses_a_grpc_port_another_server_holds(
    server, serving_repo: Path, tmp_path: Path
) -> None:
    """gRPC would otherwise bind the port too (SO_REUSEPORT) and silently take half the calls."""
    config = tmp_path / "settings.yaml"
    config.write_text("payload_log:\n  enabled: false\n")
    port = str(server.grpc_port)
    result = servekit(
        "serve", str(serving_repo), "--http-port", "0", "--grpc-port", port, "--config", str(config)
    )
    assert result.returncode == 2, result.stderr
    assert f"cannot listen for gRPC on 127.0.0.1:{port}" in result.stderr
    assert "in use" in result.stderr
