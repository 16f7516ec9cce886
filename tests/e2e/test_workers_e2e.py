"""``instances: N`` in model.yaml, end to end: a real server answers from worker processes, and
a worker killed in the middle of a request costs only that request (a 503 naming the model)
while the server keeps serving and replaces the worker."""

from __future__ import annotations

import os
import signal
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from servekit.testing import ServerProcess

MODEL = """
import os
import time

import numpy as np

import servekit


class Pids(servekit.Model):
    '''Answers with its process id; an input of 7 is a slow request (it marks itself busy).'''

    inputs = [servekit.TensorSpec("x", "FP64", (-1,))]
    outputs = [servekit.TensorSpec("pid", "INT64", (-1,))]

    def predict(self, inputs):
        x = inputs["x"]
        if (x == 7).any():
            (self.path / f"busy-{os.getpid()}").write_text("")
            time.sleep(30)
        return {"pid": np.full(x.shape, os.getpid())}
"""


def body(value: float) -> dict:
    return {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [value]}]}


@pytest.fixture(scope="module")
def pooled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    repo = tmp_path_factory.mktemp("workers") / "models"
    folder = repo / "pids" / "1"
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(textwrap.dedent(MODEL))
    (repo / "pids" / "model.yaml").write_text("instances: 2\n")
    with ServerProcess(repo, env={"OMP_NUM_THREADS": "1"}) as server:
        yield server, folder


def infer(server: ServerProcess, value: float, timeout: float = 10.0) -> httpx.Response:
    return httpx.post(f"{server.http_url}/v2/models/pids/infer", json=body(value), timeout=timeout)


def answering_pids(server: ServerProcess, count: int) -> set[int]:
    pids = set()
    for _ in range(count):
        response = infer(server, 1.0)
        assert response.status_code == 200, response.text
        pids.add(response.json()["outputs"][0]["data"][0])
    return pids


def test_requests_are_answered_by_worker_processes(pooled) -> None:
    server, _ = pooled
    pids = answering_pids(server, 10)
    assert len(pids) == 2
    assert server.process is not None and server.process.pid not in pids


def test_a_killed_worker_costs_one_request_and_is_replaced(pooled) -> None:
    server, folder = pooled
    before = answering_pids(server, 10)
    outcome: dict[str, httpx.Response] = {}
    slow = threading.Thread(target=lambda: outcome.update(r=infer(server, 7.0, timeout=30)))
    slow.start()
    deadline = time.monotonic() + 10
    while not list(folder.glob("busy-*")):
        assert time.monotonic() < deadline, "the slow request never started"
        time.sleep(0.01)
    victim = int(next(folder.glob("busy-*")).name.split("-")[1])
    assert victim in before
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    slow.join(10)
    assert not slow.is_alive()
    assert time.monotonic() - killed_at < 5
    failed = outcome["r"]
    assert failed.status_code == 503, failed.text
    assert "pids" in failed.text and "signal 9" in failed.text
    deadline = time.monotonic() + 10
    while True:  # the server serves throughout; the replacement joins within moments
        after = answering_pids(server, 6)
        if len(after) == 2 or time.monotonic() > deadline:
            break
    assert victim not in after and len(after) == 2
