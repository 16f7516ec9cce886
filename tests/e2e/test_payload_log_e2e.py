"""The payload log through the real server: a sink outage and a SIGKILL lose nothing, the
PostgreSQL sink against a real server, the KServe-compatible CloudEvents, and the query API."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import psycopg
import pyarrow.parquet as pq
import pytest
import yaml
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from servekit.testing import ServerProcess
from servekit.testing.event_receiver import ReceiverProcess

ROW = [5.1, 3.5, 1.4, 0.2]
OUTAGE_SECONDS = 30


def request_body(rows: int = 1) -> dict:
    return {
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [rows, 4], "data": ROW * rows}]
    }


@pytest.fixture(scope="module")
def iris_repo(example_repo: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("payload") / "models"
    shutil.copytree(example_repo[0] / "iris", repo / "iris")
    return repo


def write_config(path: Path, payload_log: dict) -> Path:
    path.write_text(yaml.safe_dump({"payload_log": payload_log}))
    return path


class Load:
    """A few threads sending requests until stopped; keeps the ids of the answered ones."""

    def __init__(self, url: str, threads: int = 4, max_requests: int = 200_000) -> None:
        self.url = url
        self.acknowledged: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._budget = max_requests // threads
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            for _ in range(self._budget):
                if self._stop.is_set():
                    return
                try:
                    response = client.post(f"{self.url}/v2/models/iris/infer", json=request_body())
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if response.status_code == 200:
                    self.acknowledged.append(response.headers["x-request-id"])
                else:
                    self.failures.append(f"{response.status_code} {response.text}")

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def shipper_pid(server_pid: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in children(server_pid):
            if b"payloads.shipper" in Path(f"/proc/{child}/cmdline").read_bytes():
                return child
        time.sleep(0.05)
    raise AssertionError("the server has no shipper process")


def rss_bytes(pid: int) -> int:
    """Anonymous resident memory of ``pid`` and its children (the shipper): what queues would
    take. The spool's mapped pages are page cache, counted as file-backed, and reclaimable."""
    total = 0
    for process in [pid, *children(pid)]:
        for line in Path(f"/proc/{process}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                total += int(line.split()[1]) * 1024
    return total


def wait_for_events(receiver: ReceiverProcess, ids: set[str], timeout: float = 90) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        events = receiver.events()
        seen = {(e["id"], e["type"]) for e in events}
        missing = [i for i in ids if (i, REQUEST) not in seen or (i, RESPONSE) not in seen]
        if not missing or time.monotonic() > deadline:
            assert not missing, f"{len(missing)} of {len(ids)} inferences never arrived"
            return events
        time.sleep(0.5)


REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"


def assert_in_order_once(events: list[dict], ids: set[str]) -> None:
    """After dedup by (id, type): each id has its request event before its response event."""
    first_seen: dict[tuple[str, str], int] = {}
    for position, event in enumerate(events):
        first_seen.setdefault((event["id"], event["type"]), position)
    for event_id in ids:
        assert first_seen[(event_id, REQUEST)] < first_seen[(event_id, RESPONSE)], event_id
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for event in events:
        counts[(event["id"], event["type"])] += 1
    assert set(counts) >= {(i, t) for i in ids for t in (REQUEST, RESPONSE)}


def test_a_sink_down_for_30_seconds_loses_no_event(iris_repo: Path, tmp_path: Path) -> None:
    receiver = ReceiverProcess(tmp_path / "events.jsonl").start()
    config = write_config(
        tmp_path / "config.yaml",
        {
            "sinks": [
                {"type": "http", "url": receiver.url, "content_mode": "batch", "name": "audit"}
            ]
        },
    )
    server = ServerProcess(iris_repo, args=["--config", str(config)], data_dir=tmp_path / "data")
    try:
        server.start()
        assert server.process is not None
        with Load(server.http_url) as load:
            time.sleep(3)
            receiver.stop()
            time.sleep(3)
            during = len(load.acknowledged)
            rss_before = rss_bytes(server.process.pid)
            time.sleep(OUTAGE_SECONDS - 3)
            rss_after = rss_bytes(server.process.pid)
            spooled_during_outage = len(load.acknowledged) - during
            metrics = httpx.get(server.http_url + "/metrics").text
            receiver.start()
            time.sleep(3)
        ids = set(load.acknowledged)
        assert not load.failures, load.failures[:5]
        assert spooled_during_outage > 1000, "the load did not run during the outage"
        # Memory stays bounded while the sink is down: the events wait on disk.
        assert rss_after - rss_before < 32 * 1024 * 1024, (rss_before, rss_after)
        assert 'servekit_payload_events_spooled{sink="audit"}' in metrics
        spooled = [
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith('servekit_payload_events_spooled{sink="audit"}')
        ]
        assert spooled and spooled[0] > 100
        events = wait_for_events(receiver, ids)
        assert_in_order_once(events, ids)
    finally:
        server.stop()
        receiver.stop()


def test_sigkill_mid_load_then_restart_delivers_the_spooled_events(
    iris_repo: Path, tmp_path: Path
) -> None:
    receiver = ReceiverProcess(tmp_path / "events.jsonl")  # down while the server runs
    config = write_config(
        tmp_path / "config.yaml",
        {"sinks": [{"type": "http", "url": receiver.url, "content_mode": "binary"}]},
    )
    data = tmp_path / "data"
    first = ServerProcess(iris_repo, args=["--config", str(config)], data_dir=data).start()
    with Load(first.http_url) as load:
        time.sleep(4)
        first.kill()  # mid-load: no shutdown code runs
    first.stop()
    ids = set(load.acknowledged)
    assert len(ids) > 200
    receiver.start()
    second = ServerProcess(iris_repo, args=["--config", str(config)], data_dir=data)
    try:
        second.start()
        events = wait_for_events(receiver, ids)
        assert_in_order_once(events, ids)
        assert "replaying spooled events" in second.logs()
    finally:
        second.stop()
        receiver.stop()


def test_a_killed_shipper_is_restarted_and_loses_nothing(iris_repo: Path, tmp_path: Path) -> None:
    receiver = ReceiverProcess(tmp_path / "events.jsonl").start()
    config = write_config(
        tmp_path / "config.yaml",
        {"sinks": [{"type": "http", "url": receiver.url, "content_mode": "batch"}]},
    )
    server = ServerProcess(iris_repo, args=["--config", str(config)], data_dir=tmp_path / "data")
    try:
        server.start()
        assert server.process is not None
        first = shipper_pid(server.process.pid)
        # Its own session, so its own scheduling group, at the sinks' niceness (default 10):
        # it yields a shared core to the serving process and to its neighbours.
        assert os.getsid(first) != os.getsid(server.process.pid)
        assert Path(f"/proc/{first}/autogroup").read_text().split()[-1] == "10"
        threads = {t.name for t in server_threads(server.process.pid)}
        assert not any(name.startswith("servekit-sink-http") for name in threads), threads
        with Load(server.http_url) as load:
            time.sleep(2)
            os.kill(first, signal.SIGKILL)  # mid-delivery
            time.sleep(3)
        second = shipper_pid(server.process.pid)
        assert second != first
        ids = set(load.acknowledged)
        assert not load.failures, load.failures[:5]
        events = wait_for_events(receiver, ids)
        assert_in_order_once(events, ids)
        assert "the shipper process" in server.logs() and "restarting it" in server.logs()
        # The shipper's counters reach the server's /metrics. What the killed one delivered
        # after its last stats write (every 0.2 s) is not counted: allow that much.
        deadline, delivered = time.monotonic() + 10, 0.0
        while delivered < 0.9 * len(ids) and time.monotonic() < deadline:
            time.sleep(0.2)
            delivered = metric(server, 'servekit_payload_events_delivered_total{sink="http"}')
        assert 0.9 * len(ids) <= delivered
    finally:
        server.stop()
        receiver.stop()


def metric(server: ServerProcess, sample: str) -> float:
    for line in httpx.get(server.http_url + "/metrics").text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@dataclass
class _Thread:
    name: str


def server_threads(pid: int) -> list[_Thread]:
    return [_Thread((t / "comm").read_text().strip()) for t in Path(f"/proc/{pid}/task").iterdir()]


def test_postgres_sink_stores_every_inference(iris_repo: Path, tmp_path: Path, postgres) -> None:
    config = write_config(
        tmp_path / "config.yaml",
        {"sinks": [{"type": "postgres", "dsn": postgres.dsn, "table": "e2e_inferences"}]},
    )
    with ServerProcess(iris_repo, args=["--config", str(config)]) as server:
        ids = []
        for rows in (1, 2, 3):
            response = httpx.post(
                f"{server.http_url}/v2/models/iris/infer", json=request_body(rows)
            )
            ids.append(response.headers["x-request-id"])
        bad = httpx.post(f"{server.http_url}/v2/models/iris/infer", json={"inputs": []})
        assert bad.status_code == 400
        ids.append(bad.headers["x-request-id"])
        deadline = time.monotonic() + 30
        rows = []
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            while True:
                # the shipper creates the table once it has started: it may not have yet
                with contextlib.suppress(psycopg.errors.UndefinedTable):
                    rows = conn.execute(
                        "SELECT id, status, request, response FROM e2e_inferences"
                        " WHERE id = ANY(%s)",
                        (ids,),
                    ).fetchall()
                if len(rows) == len(ids) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
    by_id = {row[0]: row for row in rows}
    assert set(by_id) == set(ids)
    assert by_id[ids[2]][2]["inputs"][0]["shape"] == [3, 4]
    assert by_id[ids[2]][3]["outputs"][0]["name"] == "predict"
    assert by_id[ids[3]][1] == "invalid_argument"


@pytest.fixture(scope="module")
def logged_server(
    iris_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("logged")
    config = write_config(
        base / "config.yaml",
        {"redact": ["secret"], "max_payload_bytes": 4096},
    )
    env = {"SERVEKIT_ADMIN_TOKEN": "s3cret"}
    with ServerProcess(iris_repo, args=["--config", str(config)], env=env) as server:
        yield server


def infer(server: ServerProcess, body: dict, version: str | None = None) -> httpx.Response:
    path = f"/v2/models/iris/versions/{version}/infer" if version else "/v2/models/iris/infer"
    return httpx.post(server.http_url + path, json=body)


def query(server: ServerProcess, token: str | None = "s3cret", **params: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.get(server.http_url + "/v2/logs", params=params, headers=headers)


def wait_logged(server: ServerProcess, event_id: str) -> dict:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        events = query(server, id=event_id).json()["events"]
        if events:
            return events[0]
        time.sleep(0.1)
    raise AssertionError(f"{event_id} never reached the store")


def test_the_id_comes_back_and_keys_the_log(logged_server: ServerProcess) -> None:
    given = infer(logged_server, {"id": "client-id-1", **request_body()})
    assert given.headers["x-request-id"] == "client-id-1"
    assert given.json()["id"] == "client-id-1"
    generated = infer(logged_server, request_body())
    event_id = generated.headers["x-request-id"]
    assert generated.json()["id"] == event_id and len(event_id) == 36
    v1 = httpx.post(logged_server.http_url + "/v1/models/iris:predict", json={"instances": [ROW]})
    event = wait_logged(logged_server, v1.headers["x-request-id"])
    assert event["protocol"] == "rest-v1" and event["status"] == "ok"
    event = wait_logged(logged_server, "client-id-1")
    assert event["request"]["inputs"][0]["data"] == pytest.approx(ROW)
    assert event["response"]["outputs"][0]["data"] == [0]
    assert event["prediction"] == [0]


def test_failed_requests_are_events_too(logged_server: ServerProcess) -> None:
    response = infer(logged_server, {"id": "bad-shape", "inputs": [
        {"name": "input-0", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}
    ]})  # fmt: skip
    assert response.status_code == 400
    event = wait_logged(logged_server, "bad-shape")
    assert event["status"] == "invalid_argument" and event["http_status"] == 400
    assert "expected shape" in event["error"]
    assert event["response"]["error"] == event["error"]


def test_redaction_and_size_limit(logged_server: ServerProcess) -> None:
    body = {"id": "redacted-1", "parameters": {"secret": "hunter2", "keep": 1}, **request_body()}
    infer(logged_server, body)
    event = wait_logged(logged_server, "redacted-1")
    assert event["request"]["parameters"] == {"secret": "[redacted]", "keep": 1}
    big = {"id": "big-1", **request_body(400)}  # 6.4 kB of FP32 > max_payload_bytes 4096
    assert infer(logged_server, big).status_code == 200
    event = wait_logged(logged_server, "big-1")
    tensor = event["request"]["inputs"][0]
    assert tensor["data"] is None and tensor["shape"] == [400, 4]
    assert tensor["parameters"] == {"servekit_payload": "truncated"}


def test_query_filters_admin_token_and_parquet(logged_server: ServerProcess) -> None:
    ids = [infer(logged_server, request_body(), version=v).headers["x-request-id"] for v in "12"]
    for event_id in ids:
        wait_logged(logged_server, event_id)
    assert query(logged_server, token=None).status_code == 401
    assert query(logged_server, token="wrong").status_code == 401
    assert query(logged_server, nonsense="1").status_code == 400
    assert query(logged_server, since="yesterday-ish").status_code == 400
    by_version = query(logged_server, model="iris", version="1", since="5m").json()["events"]
    assert ids[0] in {e["id"] for e in by_version}
    assert all(e["version"] == "1" for e in by_version)
    assert query(logged_server, model="iris", until="1000").json()["events"] == []
    setosa = query(logged_server, prediction="0", limit="1000").json()["events"]
    assert set(ids) <= {e["id"] for e in setosa}
    assert query(logged_server, prediction="2").json()["events"] == []
    exported = query(logged_server, format="parquet", model="iris")
    assert exported.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(exported.content))
    assert set(ids) <= set(table.column("id").to_pylist())
    assert {"request", "response", "prediction", "truth", "time"} <= set(table.column_names)


def test_cli_logs(logged_server: ServerProcess, tmp_path: Path) -> None:
    event_id = infer(logged_server, request_body()).headers["x-request-id"]
    wait_logged(logged_server, event_id)
    command = [sys.executable, "-m", "servekit", "logs", "--url", logged_server.http_url]
    shown = subprocess.run(
        [*command, "--token", "s3cret", "--id", event_id, "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert event_id in shown.stdout and '"predict"' in shown.stdout
    refused = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "401" in refused.stderr
    target = tmp_path / "export.parquet"
    exported = subprocess.run(
        [*command, "--token", "s3cret", "--parquet", str(target), "--model", "iris"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    assert event_id in pq.read_table(target).column("id").to_pylist()


def test_grpc_inferences_are_logged_with_their_id(logged_server: ServerProcess) -> None:
    request = pb.ModelInferRequest(model_name="iris")
    tensor = request.inputs.add(name="input-0", datatype="FP32", shape=[1, 4])
    tensor.contents.fp32_contents.extend(ROW)
    with grpc.insecure_channel(logged_server.grpc_target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        response, call = stub.ModelInfer.with_call(request, timeout=10)
    trailing = dict(call.trailing_metadata())
    assert response.id and trailing["x-request-id"] == response.id
    event = wait_logged(logged_server, response.id)
    assert event["protocol"] == "grpc" and event["status"] == "ok"
    assert np.allclose(event["request"]["inputs"][0]["data"], ROW)


def test_a_body_over_the_limit_is_an_event_too(iris_repo: Path) -> None:
    env = {"SERVEKIT_MAX_REQUEST_BYTES": "2048"}
    with ServerProcess(iris_repo, env=env) as server:
        response = httpx.post(
            server.http_url + "/v2/models/iris/infer",
            json=request_body(200),
            headers={"x-request-id": "too-big-1"},
        )
        assert response.status_code == 413
        assert response.headers["x-request-id"] == "too-big-1"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            events = httpx.get(server.http_url + "/v2/logs", params={"id": "too-big-1"}).json()
            if events["events"]:
                break
            time.sleep(0.1)
        (event,) = events["events"]
        assert event["status"] == "payload_too_large" and event["http_status"] == 413
        assert event["model"] == "iris" and "request" not in event
