"""Model lifecycle through the real server: hot reload under load with zero failed requests, a
broken new version that never takes traffic, model.yaml changes without a restart, the control
API over REST and gRPC, explicit mode, the admin token, scale to zero and pinned digests."""

from __future__ import annotations

import os
import shutil
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import tritonclient.grpc as triton_grpc
from prometheus_client.parser import text_string_to_metric_families

from servekit.testing import ServerProcess

MODEL = textwrap.dedent(
    """
    import time
    from pathlib import Path

    import numpy as np
    import servekit


    class Versioned(servekit.Model):
        '''Answers its own version number; records load and unload in files next to it.'''

        inputs = [servekit.TensorSpec("x", "FP64", (-1,))]
        outputs = [servekit.TensorSpec("version", "INT64", (-1,))]

        def load(self):
            time.sleep(float(self.parameters.get("load_seconds", 0)))
            if self.parameters.get("broken"):
                raise RuntimeError("this version is broken")
            self.number = int(self.path.name) if self.path.name.isdigit() else 1
            (self.path / "loaded").touch()

        def predict(self, inputs):
            return {"version": np.full(len(inputs["x"]), self.number)}

        def unload(self):
            (self.path / "unloaded").touch()
    """
)
REQUEST = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [1.0]}]}


def add_version(repo: Path, model: str, version: int, yaml: str | None = None) -> Path:
    """Write the version next to the repository, then move it in: it appears all at once."""
    staging = repo.parent / f".staging-{model}-{version}"
    staging.mkdir(parents=True)
    (staging / "model.py").write_text(MODEL)
    target = repo / model / str(version)
    target.parent.mkdir(parents=True, exist_ok=True)
    if yaml is not None:
        (repo / model / "model.yaml").write_text(yaml)
    os.rename(staging, target)
    return target


def infer(url: str, model: str) -> httpx.Response:
    return httpx.post(f"{url}/v2/models/{model}/infer", json=REQUEST, timeout=30)


def served_version(url: str, model: str) -> int:
    response = infer(url, model)
    assert response.status_code == 200, response.text
    return response.json()["outputs"][0]["data"][0]


class LoadLoop:
    """Requests in a loop from a few threads, counting every answer that is not a 200."""

    def __init__(self, url: str, model: str, threads: int = 4) -> None:
        self.url, self.model = url, model
        self.failures: list[str] = []
        self.versions: list[int] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(threads)
        self._futures = [self._pool.submit(self._run) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            for _ in range(20_000):  # bounded
                if self._stop.is_set():
                    return
                response = client.post(f"{self.url}/v2/models/{self.model}/infer", json=REQUEST)
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code} {response.text}")
                else:
                    self.versions.append(response.json()["outputs"][0]["data"][0])

    def stop(self) -> None:
        self._stop.set()
        for future in self._futures:
            future.result(timeout=60)
        self._pool.shutdown()


def wait_for(condition, timeout: float = 20.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError("condition not met in time")


@pytest.fixture
def polled(tmp_path: Path):
    repo = tmp_path / "repo"
    add_version(repo, "m", 1, yaml="parameters: {load_seconds: 0.3}\n")
    server = ServerProcess(
        repo, env={"SERVEKIT_REPOSITORY_POLL_SECONDS": "0.2", "SERVEKIT_STRICT_READINESS": "false"}
    )
    with server:
        yield repo, server


def test_new_version_takes_over_with_zero_failed_requests(polled) -> None:
    repo, server = polled
    assert served_version(server.http_url, "m") == 1
    loop = LoadLoop(server.http_url, "m")
    try:
        time.sleep(0.3)
        v2 = add_version(repo, "m", 2)
        wait_for(lambda: served_version(server.http_url, "m") == 2)
        wait_for(lambda: (repo / "m" / "1" / "unloaded").exists())  # old version released
        time.sleep(0.3)
    finally:
        loop.stop()
    assert loop.failures == []
    assert 1 in loop.versions and 2 in loop.versions
    assert (v2 / "loaded").exists()
    gone = httpx.get(f"{server.http_url}/v2/models/m/versions/1")
    assert gone.status_code == 404
    assert httpx.get(f"{server.http_url}/v2/models/m").json()["versions"] == ["2"]


def test_broken_new_version_never_takes_traffic(polled) -> None:
    repo, server = polled
    loop = LoadLoop(server.http_url, "m")
    try:
        add_version(repo, "m", 3, yaml="parameters: {broken: true}\n")
        wait_for(
            lambda: (
                httpx.get(f"{server.http_url}/v2/models/m/versions/3").status_code == 200
                and httpx.get(f"{server.http_url}/v2/models/m/versions/3").json()["state"]
                == "FAILED"
            )
        )
        time.sleep(0.5)
    finally:
        loop.stop()
    assert loop.failures == []
    assert set(loop.versions) == {1}  # the old version kept serving
    metadata = httpx.get(f"{server.http_url}/v2/models/m/versions/3").json()
    assert "this version is broken" in metadata["error"]
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(httpx.get(f"{server.http_url}/metrics").text)
        for s in f.samples
    }
    assert (
        samples[("servekit_model_state", (("model", "m"), ("state", "FAILED"), ("version", "3")))]
        == 1
    )


def test_changed_model_yaml_applies_without_restart(polled) -> None:
    repo, server = polled
    (repo / "m" / "model.yaml").write_text(
        "parameters: {load_seconds: 0}\nbatching: {max_batch_size: 4, max_batch_delay_ms: 1}\n"
    )
    wait_for(lambda: "servekit_batch_size_count" in _batches(server))
    assert served_version(server.http_url, "m") == 1


def _batches(server) -> str:
    infer(server.http_url, "m")
    return httpx.get(f"{server.http_url}/metrics").text


@pytest.fixture
def explicit(tmp_path: Path):
    repo = tmp_path / "repo"
    add_version(repo, "a", 1)
    add_version(repo, "b", 1)
    env = {"SERVEKIT_MODEL_CONTROL": "explicit", "SERVEKIT_ADMIN_TOKEN": "s3cret"}
    with ServerProcess(repo, env=env) as server:
        yield repo, server


ADMIN = {"Authorization": "Bearer s3cret"}


def test_explicit_mode_and_control_api_over_rest(explicit) -> None:
    _, server = explicit
    url = server.http_url
    assert infer(url, "a").status_code == 404  # nothing is served until it is loaded
    index = httpx.post(f"{url}/v2/repository/index", headers=ADMIN).json()
    assert {(r["name"], r["state"]) for r in index} == {("a", "UNAVAILABLE"), ("b", "UNAVAILABLE")}
    assert httpx.post(f"{url}/v2/repository/models/a/load", headers=ADMIN).status_code == 200
    assert served_version(url, "a") == 1
    ready = httpx.post(f"{url}/v2/repository/index", headers=ADMIN, json={"ready": True}).json()
    assert [(r["name"], r["version"], r["state"]) for r in ready] == [("a", "1", "READY")]
    assert httpx.post(f"{url}/v2/repository/models/a/unload", headers=ADMIN).status_code == 200
    assert infer(url, "a").status_code == 404
    missing = httpx.post(f"{url}/v2/repository/models/zzz/load", headers=ADMIN)
    assert missing.status_code == 404 and "zzz" in missing.json()["error"]


def test_control_api_requires_the_admin_token(explicit) -> None:
    _, server = explicit
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = httpx.post(f"{server.http_url}/v2/repository/models/a/load", headers=headers)
        assert response.status_code == 401
        assert "admin token" in response.json()["error"]
    client = triton_grpc.InferenceServerClient(server.grpc_target)
    try:
        with pytest.raises(triton_grpc.InferenceServerException) as info:
            client.load_model("a")
        assert "UNAUTHENTICATED" in str(info.value.status())
    finally:
        client.close()


def test_control_api_over_grpc(explicit) -> None:
    _, server = explicit
    client = triton_grpc.InferenceServerClient(server.grpc_target)
    token = {"authorization": "Bearer s3cret"}
    try:
        client.load_model("b", headers=token)
        assert client.is_model_ready("b")
        index = client.get_model_repository_index(headers=token, as_json=True)
        states = {m["name"]: m.get("state") for m in index["models"]}
        assert states["b"] == "READY" and states["a"] == "UNAVAILABLE"
        client.unload_model("b", headers=token)
        with pytest.raises(triton_grpc.InferenceServerException) as info:
            client.is_model_ready("b")
        assert "NOT_FOUND" in str(info.value.status())
    finally:
        client.close()


def test_scale_to_zero_and_back(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    add_version(repo, "sleepy", 1, yaml="idle_unload_after: 0.5\nparameters: {load_seconds: 0.5}\n")
    with ServerProcess(repo) as server:
        url = server.http_url
        assert served_version(url, "sleepy") == 1
        wait_for(lambda: httpx.get(f"{url}/v2/models/sleepy").json()["state"] == "UNLOADED")
        assert (repo / "sleepy" / "1" / "unloaded").exists()
        (repo / "sleepy" / "1" / "loaded").unlink()
        with ThreadPoolExecutor(6) as pool:  # several requests arrive while it is cold
            answers = list(pool.map(lambda _: infer(url, "sleepy"), range(6)))
        assert [a.status_code for a in answers] == [200] * 6
        assert all(a.json()["outputs"][0]["data"] == [1] for a in answers)
        text = httpx.get(f"{url}/metrics").text
        cold = [
            s
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "servekit_model_cold_start_duration_seconds_count"
        ]
        assert [s.value for s in cold] == [1.0]  # one load served all six requests


def test_pinned_sha256_mismatch_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    version = add_version(repo, "pinned", 1, yaml="sha256: {model.py: '" + "0" * 64 + "'}\n")
    shutil.copy(version / "model.py", version / "copy.py")
    with ServerProcess(repo, env={"SERVEKIT_STRICT_READINESS": "false"}) as server:
        metadata = httpx.get(f"{server.http_url}/v2/models/pinned").json()
        assert metadata["state"] == "FAILED"
        assert "sha256 mismatch" in metadata["error"] and "refusing to load" in metadata["error"]
        assert infer(server.http_url, "pinned").status_code == 503


def test_models_cli_manages_a_live_server(explicit) -> None:
    import json
    import subprocess
    import sys

    _, server = explicit

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "servekit", "models", *args, "--url", server.http_url],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "COLUMNS": "200"},
        )

    refused = cli("load", "a")
    assert refused.returncode == 1 and "401" in refused.stderr
    loaded = cli("load", "a", "--token", "s3cret")
    assert loaded.returncode == 0, loaded.stderr
    listing = cli("list", "--token", "s3cret", "--json")
    rows = {r["name"]: r["state"] for r in json.loads(listing.stdout)}
    assert rows == {"a": "READY", "b": "UNAVAILABLE"}
    assert served_version(server.http_url, "a") == 1
    assert cli("unload", "a", "--token", "s3cret").returncode == 0
    assert infer(server.http_url, "a").status_code == 404
