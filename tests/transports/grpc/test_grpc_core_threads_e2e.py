"""gRPC core in the server process: the listener it picks before grpc loads (it serves on
either one), and the poller thread's priority."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from servekit.testing import ServerProcess
from servekit.transports.grpc.stubs import pb2, pb2_grpc


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("listener-models")
    (root / "iris" / "1").mkdir(parents=True)
    x, y = load_iris(return_X_y=True)
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), root / "iris" / "1" / "model.joblib")
    return root


def _predict(target: str) -> list[int]:
    request = pb2.ModelInferRequest(model_name="iris")
    request.inputs.add(name="input-0", datatype="FP64", shape=[2, 4])
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    request.raw_input_contents.append(rows.tobytes())
    with grpc.insecure_channel(target) as channel:
        reply = pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    return np.frombuffer(reply.raw_output_contents[0], dtype=np.int64).tolist()


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({}, "gRPC listener: gRPC core's long-standing one"),
        ({"SERVEKIT_GRPC_LEGACY_LISTENER": "false"}, "gRPC listener: grpcio's default"),
        ({"GRPC_EXPERIMENTS": "event_engine_listener"}, "GRPC_EXPERIMENTS='event_engine_listener'"),
    ],
)
def test_each_listener_serves_and_grpc_knows_the_experiment(
    repository: Path, env: dict[str, str], said: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GRPC_EXPERIMENTS", raising=False)  # the server inherits this process's
    with ServerProcess(repository, env=env) as server:
        assert _predict(server.grpc_target) == [0, 2]
        logs = server.logs()
    assert said in logs
    assert "Unknown experiment" not in logs  # a grpcio that dropped it would say so here


def _nice(pid: int, tid: int) -> int:
    stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])  # field 19, counted after pid and comm


def test_the_poller_thread_runs_at_the_niceness_asked_for(repository: Path) -> None:
    with ServerProcess(repository, env={"SERVEKIT_GRPC_POLLER_NICE": "19"}) as server:
        assert _predict(server.grpc_target) == [0, 2]
        found = re.search(r"gRPC poller thread ([\d, ]+) at nice 19", server.logs())
        assert found, server.logs()
        pid = server.process.pid
        tids = [int(t) for t in found.group(1).split(", ")]
        assert tids and all(_nice(pid, tid) == 19 for tid in tids)
        assert _nice(pid, pid) == 0  # the event loop keeps its priority
        assert _predict(server.grpc_target) == [0, 2]
