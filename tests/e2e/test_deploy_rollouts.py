"""Canary, pinned canary, shadow, sticky routing, live rollouts and live spec edits, against one
real server serving a deployments file."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from servekit.testing import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
ROW = {"name": "input-0", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}
BODY = {"inputs": [ROW]}

FAILING_MODEL = textwrap.dedent(
    """
    import servekit


    class Failing(servekit.Model):
        '''A shadow candidate with a bug: it always raises.'''

        inputs = [servekit.TensorSpec("input-0", "FP32", (-1, 4))]
        outputs = [servekit.TensorSpec("predict", "INT64", (-1,))]

        def predict(self, inputs):
            raise RuntimeError("candidate is broken")
    """
)

SPEC = textwrap.dedent(
    """
    services:
      - name: split
        predictor: {model: iris, version: "2"}
        canary: {model: iris, version: "1", traffic_percent: 10}
      - name: pinned
        predictor: {model: iris, version: "2"}
        canary: {model: iris, version: "1", pinned: true}
      - name: shadowed
        predictor: {model: iris, version: "2"}
        shadow: {model: failing}
      - name: sticky
        predictor: {model: iris, version: "2"}
        canary: {model: iris, version: "1", traffic_percent: 50}
        sticky: {header: x-user-id}
      - name: live-promote
        predictor: {model: iris, version: "1"}
        canary: {model: iris, version: "2", traffic_percent: 10}
      - name: live-rollback
        predictor: {model: iris, version: "1"}
        canary: {model: iris, version: "2", traffic_percent: 10}
      - name: by-cli
        predictor: {model: iris, version: "1"}
        canary: {model: iris, version: "2", traffic_percent: 0}
    """
)


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, example_repo: tuple[Path, dict]
) -> Iterator[tuple[ServerProcess, Path]]:
    root = tmp_path_factory.mktemp("deploy")
    repo = root / "models"
    repo.mkdir()
    (repo / "iris").symlink_to(example_repo[0] / "iris", target_is_directory=True)
    (repo / "failing").mkdir()
    (repo / "failing" / "model.py").write_text(FAILING_MODEL)
    spec = root / "deployments.yaml"
    spec.write_text(SPEC)
    server = ServerProcess(
        spec,
        args=["--model-repository", str(repo)],
        env={"SERVEKIT_DEPLOYMENTS_POLL_SECONDS": "0.2", "SERVEKIT_STRICT_READINESS": "false"},
    )
    with server:
        yield server, spec


@pytest.fixture(scope="module")
def client(deployment: tuple[ServerProcess, Path]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=deployment[0].http_url, timeout=10) as http:
        yield http


def served_by(client: httpx.Client, service: str, **headers: str) -> str:
    response = client.post(f"/v2/models/{service}/infer", json=BODY, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["x-servekit-served-by"] == f"iris/{body['model_version']}"
    return body["model_version"]


def test_canary_gets_its_share_within_binomial_tolerance(client: httpx.Client) -> None:
    n, p = 2000, 0.10
    counts = Counter(served_by(client, "split") for _ in range(n))
    assert set(counts) <= {"1", "2"}
    tolerance = 4.5 * math.sqrt(n * p * (1 - p))  # 4.5 sigma: a false alarm about 1 in 150,000
    assert abs(counts["1"] - n * p) <= tolerance, counts


def test_pinned_canary_only_by_header_or_version(client: httpx.Client) -> None:
    assert {served_by(client, "pinned") for _ in range(200)} == {"2"}
    assert served_by(client, "pinned", **{"x-servekit-variant": "canary"}) == "1"
    assert served_by(client, "pinned", **{"x-servekit-variant": "predictor"}) == "2"
    pinned = client.post("/v2/models/pinned/versions/1/infer", json=BODY)
    assert pinned.status_code == 200 and pinned.json()["model_version"] == "1"
    unknown = client.post("/v2/models/pinned/infer", json=BODY, headers={"x-servekit-variant": "x"})
    assert unknown.status_code == 400 and "variant" in unknown.json()["error"]
    missing = client.post("/v2/models/pinned/versions/9/infer", json=BODY)
    assert missing.status_code == 404


def _metric(client: httpx.Client, line_start: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_deployment_metrics_count_each_variant_and_outcome(
    deployment: tuple[ServerProcess, Path], client: httpx.Client
) -> None:
    server = deployment[0]

    def count(variant: str, status: str) -> float:
        labels = f'deployment="pinned",status="{status}",variant="{variant}"'
        return _metric(client, f"servekit_deployment_requests_total{{{labels}}}")

    before = {
        "predictor": count("predictor", "ok"),
        "canary": count("canary", "ok"),
        "refused": count("", "invalid_argument"),
    }
    for _ in range(5):
        served_by(client, "pinned")
    for _ in range(3):
        served_by(client, "pinned", **{"x-servekit-variant": "canary"})
    bad = client.post("/v2/models/pinned/infer", json=BODY, headers={"x-servekit-variant": "x"})
    assert bad.status_code == 400
    assert count("predictor", "ok") - before["predictor"] == 5
    assert count("canary", "ok") - before["canary"] == 3
    assert count("", "invalid_argument") - before["refused"] == 1
    timed = "servekit_deployment_request_duration_seconds_count"
    assert _metric(client, timed + '{deployment="pinned",variant="canary"}') >= 3

    request = pb.ModelInferRequest(model_name="pinned")  # gRPC counts through the same core
    tensor = request.inputs.add(name="input-0", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend(ROW["data"])
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ModelInfer(request, timeout=10).model_version == "2"
    assert count("predictor", "ok") - before["predictor"] == 6


def test_shadow_gets_copies_and_its_failures_never_reach_the_client(client: httpx.Client) -> None:
    errors = 'servekit_shadow_requests_total{outcome="error",service="shadowed"}'
    before = _metric(client, errors)
    ids = []
    for _ in range(20):
        response = client.post("/v2/models/shadowed/infer", json=BODY)
        assert response.status_code == 200, response.text
        assert response.json()["model_name"] == "iris"
        ids.append(response.headers["x-request-id"])
    deadline = time.monotonic() + 10
    while _metric(client, errors) < before + 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _metric(client, errors) == before + 20
    # Each copy is in the payload log under the candidate, as the shadow variant of the service.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        logged = client.get("/v2/logs", params={"model": "failing", "id": f"{ids[0]}-shadow"})
        if logged.status_code == 200 and logged.json()["events"]:
            break
        time.sleep(0.1)
    events = logged.json()["events"]
    assert len(events) == 1, logged.text
    assert events[0]["status"] == "internal"
    assert events[0]["variant"] == "shadow" and events[0]["service"] == "shadowed"


def test_sticky_routing_keeps_each_user_on_one_variant(client: httpx.Client) -> None:
    seen: dict[str, set[str]] = {}
    for user in range(40):
        for _ in range(5):
            version = served_by(client, "sticky", **{"x-user-id": f"user-{user}"})
            seen.setdefault(f"user-{user}", set()).add(version)
    assert all(len(versions) == 1 for versions in seen.values()), seen
    assert {next(iter(v)) for v in seen.values()} == {"1", "2"}  # 50/50: both variants in use


def test_grpc_metadata_routes_like_rest_headers(deployment: tuple[ServerProcess, Path]) -> None:
    request = pb.ModelInferRequest(model_name="pinned")
    tensor = request.inputs.add(name="input-0", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend(ROW["data"])
    sticky = pb.ModelInferRequest()
    sticky.CopyFrom(request)
    sticky.model_name = "sticky"
    with grpc.insecure_channel(deployment[0].grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        def version(message: pb.ModelInferRequest, **metadata: str) -> str:
            reply, call = stub.ModelInfer.with_call(
                message, metadata=tuple(metadata.items()), timeout=10
            )
            trailing = dict(call.trailing_metadata())
            assert trailing["x-servekit-served-by"] == f"iris/{reply.model_version}"
            return reply.model_version

        assert version(request) == "2"
        assert version(request, **{"x-servekit-variant": "canary"}) == "1"
        assert version(request, **{"x-servekit-variant": "predictor"}) == "2"
        with pytest.raises(grpc.RpcError) as refused:
            version(request, **{"x-servekit-variant": "x"})
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # the sticky header keeps a user on one variant over gRPC as over REST
        per_user = {
            user: {version(sticky, **{"x-user-id": f"grpc-user-{user}"}) for _ in range(4)}
            for user in range(30)
        }
        assert all(len(versions) == 1 for versions in per_user.values()), per_user
        assert set().union(*per_user.values()) == {"1", "2"}


class LoadLoop:
    """A bounded request loop in a thread, recording every answer."""

    def __init__(self, url: str, service: str) -> None:
        self.url, self.service = url, service
        self.answers: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            for _ in range(20_000):  # bounded
                if self._stop.is_set():
                    return
                response = http.post(f"/v2/models/{self.service}/infer", json=BODY)
                self.answers.append((response.status_code, response.json().get("model_version")))

    def __enter__(self) -> LoadLoop:
        self._thread.start()
        return self

    def wait_for(self, count: int) -> None:
        target = len(self.answers) + count
        deadline = time.monotonic() + 30
        while len(self.answers) < target and time.monotonic() < deadline:
            time.sleep(0.01)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def test_promote_live_under_load(deployment: tuple[ServerProcess, Path], client: httpx.Client):
    with LoadLoop(deployment[0].http_url, "live-promote") as load:
        load.wait_for(50)
        set_50 = client.post("/v2/deployments/live-promote/rollout", json={"traffic_percent": 50})
        assert set_50.status_code == 200, set_50.text
        load.wait_for(50)
        promoted = client.post("/v2/deployments/live-promote/promote")
        assert promoted.status_code == 200, promoted.text
        mark = len(load.answers)
        load.wait_for(50)
    assert [status for status, _ in load.answers] == [200] * len(load.answers)
    assert {version for _, version in load.answers[mark + 5 :]} == {"2"}
    variants = client.get("/v2/deployments/live-promote").json()["variants"]
    assert variants == [
        {"name": "predictor", "model": "iris", "version": "2", "traffic_percent": 100.0}
    ]


def test_rollback_live_under_load(deployment: tuple[ServerProcess, Path], client: httpx.Client):
    with LoadLoop(deployment[0].http_url, "live-rollback") as load:
        load.wait_for(50)
        assert client.post("/v2/deployments/live-rollback/rollback").status_code == 200
        mark = len(load.answers)
        load.wait_for(100)
    assert [status for status, _ in load.answers] == [200] * len(load.answers)
    assert {version for _, version in load.answers[mark + 5 :]} == {"1"}
    no_canary = client.post("/v2/deployments/live-rollback/promote")
    assert no_canary.status_code == 400 and "no canary" in no_canary.json()["error"]


def test_rollout_cli(deployment: tuple[ServerProcess, Path], client: httpx.Client) -> None:
    def rollout(*args: str) -> str:
        command = [sys.executable, "-m", "servekit", "rollout", *args, "by-cli"]
        done = subprocess.run(
            [*command, "--url", deployment[0].http_url], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "canary: iris/2 100 %" in rollout("set", "--percent", "100")
    assert {served_by(client, "by-cli") for _ in range(20)} == {"2"}
    assert "predictor: iris/1 100 %" in rollout("rollback")
    assert {served_by(client, "by-cli") for _ in range(20)} == {"1"}


def test_rollout_bad_requests(client: httpx.Client) -> None:
    bad = client.post("/v2/deployments/split/rollout", json={"traffic_percent": 150})
    assert bad.status_code == 400
    assert client.post("/v2/deployments/split/rollout", json={}).status_code == 400
    assert client.post("/v2/deployments/nope/promote").status_code == 404


def test_invalid_live_edit_is_rejected_and_the_running_spec_stays(
    deployment: tuple[ServerProcess, Path], client: httpx.Client
) -> None:
    _, spec = deployment
    original = spec.read_text()
    try:
        spec.write_text(original.replace("traffic_percent: 10", "traffic_percent: 250", 1))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            error = client.get("/v2/deployments").json()["last_error"]
            if error:
                break
            time.sleep(0.05)
        assert error is not None
        assert str(spec) in error and "services[0] (split).canary.traffic_percent" in error
        assert "less than or equal to 100" in error
        assert served_by(client, "split") in {"1", "2"}  # still serving the previous spec
        split = client.get("/v2/deployments/split").json()
        assert split["variants"][1]["traffic_percent"] == 10.0
    finally:
        spec.write_text(original.replace("pinned: true", "pinned: false, traffic_percent: 100"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and served_by(client, "pinned") != "1":
        time.sleep(0.05)
    assert client.get("/v2/deployments").json()["last_error"] is None
    assert served_by(client, "pinned") == "1"  # a valid edit applies live


def test_an_invalid_spec_stops_the_start_naming_file_and_field(
    tmp_path: Path, example_repo: tuple[Path, dict]
) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("services:\n  - name: s\n    predictor: {model: no-such-model}\n")
    repository = str(example_repo[0])
    command = [
        sys.executable,
        "-m",
        "servekit",
        "serve",
        str(spec),
        "--model-repository",
        repository,
    ]
    env_ports = ["--http-port", "0", "--grpc-port", "0"]
    done = subprocess.run([*command, *env_ports], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert f"{spec}: services[0] (s).predictor.model: no model, service or graph named" in message
