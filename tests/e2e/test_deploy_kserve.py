"""`servekit serve isvc.yaml`: a KServe InferenceService (sklearn iris with a canary) serves and
routes as declared, warns about what it ignores, and `servekit export kserve` writes one back."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from servekit.testing import ServerProcess

BODY = {
    "inputs": [
        {"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}
    ]
}


def inference_service(iris: Path) -> str:
    """A KServe InferenceService over the trained iris model: version 2 as a 20 % canary of 1."""
    return textwrap.dedent(
        f"""
        apiVersion: serving.kserve.io/v1beta1
        kind: InferenceService
        metadata:
          name: sklearn-iris
          namespace: models
          annotations:
            serving.servekit.io/stable-storage-uri: {iris / "1"}
        spec:
          predictor:
            minReplicas: 0
            canaryTrafficPercent: 20
            batcher: {{maxBatchSize: 8, maxLatency: 5}}
            resources: {{limits: {{cpu: "1"}}}}
            model:
              modelFormat: {{name: sklearn}}
              storageUri: {(iris / "2").as_uri()}
        """
    )


@pytest.fixture(scope="module")
def kserve(
    tmp_path_factory: pytest.TempPathFactory, example_repo: tuple[Path, dict]
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("kserve")
    isvc = root / "isvc.yaml"
    isvc.write_text(inference_service(example_repo[0] / "iris"))
    env = {"SERVEKIT_STORAGE_CACHE_DIR": str(root / "cache"), "SERVEKIT_ADMIN_TOKEN": "s3cret"}
    with ServerProcess(isvc, env=env) as server:
        yield server


def test_inference_service_routes_as_declared(kserve: ServerProcess) -> None:
    n, p = 1000, 0.20
    with httpx.Client(base_url=kserve.http_url, timeout=10) as http:
        versions = Counter()
        for _ in range(n):
            response = http.post("/v2/models/sklearn-iris/infer", json=BODY)
            assert response.status_code == 200, response.text
            versions[response.json()["model_version"]] += 1
        v1 = http.post(
            "/v1/models/sklearn-iris:predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]}
        )
    assert abs(versions["2"] - n * p) <= 4.5 * math.sqrt(n * p * (1 - p)), versions
    assert v1.status_code == 200 and v1.json() == {"predictions": [0]}
    status = httpx.get(f"{kserve.http_url}/v1/models/sklearn-iris")  # KServe's readiness probe
    assert status.status_code == 200 and status.json() == {"name": "sklearn-iris", "ready": True}


def test_deployments_api_needs_the_admin_token(kserve: ServerProcess) -> None:
    url = f"{kserve.http_url}/v2/deployments/sklearn-iris"
    assert httpx.get(url).status_code == 401
    assert httpx.post(f"{url}/rollout", json={"traffic_percent": 50}).status_code == 401
    described = httpx.get(url, headers={"Authorization": "Bearer s3cret"}).json()
    assert [(v["name"], v["version"], v["traffic_percent"]) for v in described["variants"]] == [
        ("predictor", "1", 80.0),
        ("canary", "2", 20.0),
    ]


def test_unsupported_fields_are_warned_by_name(kserve: ServerProcess) -> None:
    logs = kserve.logs()
    assert "spec.predictor.resources.limits.cpu: not supported by servekit, ignored" in logs
    assert "minReplicas" not in logs and "batcher" not in logs


def test_export_kserve_round_trip(tmp_path: Path, example_repo: tuple[Path, dict]) -> None:
    repository = example_repo[0]
    spec = tmp_path / "deployments.yaml"
    spec.write_text(
        "services:\n  - name: iris-svc\n    predictor: {model: iris, version: '1'}\n"
        "    canary: {model: iris, version: '2', traffic_percent: 25}\n"
    )
    command = [sys.executable, "-m", "servekit", "export", "kserve", "iris-svc"]
    options = ["--spec", str(spec), "--model-repository", str(repository)]
    done = subprocess.run([*command, *options], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    isvc = yaml.safe_load(done.stdout)
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    predictor = isvc["spec"]["predictor"]
    assert predictor["model"] == {
        "modelFormat": {"name": "sklearn"},
        "storageUri": (repository / "iris" / "2").as_uri(),
    }
    assert predictor["canaryTrafficPercent"] == 25
    stable = isvc["metadata"]["annotations"]["serving.servekit.io/stable-storage-uri"]
    assert stable == (repository / "iris" / "1").as_uri()
