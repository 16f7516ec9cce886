"""The REST app as a plain ASGI application, in process.

``servekit serve`` answers inference POSTs on its HTTP protocol's short lane, but the app made by
``create_app`` is a complete ASGI application on its own (uvicorn uses its ASGI path for anything
the lane leaves to it, and the app can be mounted under another ASGI server). Both paths share
``InferenceASGI.answer``; these tests cover the ASGI entry point and its body reader.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from servekit.core.dataplane import DataPlane
from servekit.core.executor import Executor
from servekit.core.loader import ModelLoader
from servekit.core.registry import ModelRegistry
from servekit.errors import PayloadTooLarge, Unavailable
from servekit.observe.feedback import FeedbackService
from servekit.observe.metrics import Metrics
from servekit.repository import scan_repository
from servekit.settings import Settings
from servekit.transports.http import create_app
from servekit.transports.http.body import read_body

LIMIT = 10_000
X = load_iris(return_X_y=True)[0][:3]


Scenario = Callable[[httpx.AsyncClient, LogisticRegression], Awaitable[None]]


@pytest.fixture
def with_app(tmp_path: Path) -> Callable[[Scenario], None]:
    """Runs a scenario against the app, on a fresh event loop, with one iris model loaded."""
    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(x, y)
    (tmp_path / "iris" / "1").mkdir(parents=True)
    joblib.dump(model, tmp_path / "iris" / "1" / "model.joblib")

    async def run(scenario: Scenario) -> None:
        metrics, registry, executor = Metrics(), ModelRegistry(), Executor(1)
        loader = ModelLoader(registry, executor, metrics)
        await loader.load_all(scan_repository(tmp_path))
        dataplane = DataPlane(registry, metrics)
        dataplane.loading_complete = True
        feedback = FeedbackService(None, registry, metrics.registry, [60.0])
        app = create_app(dataplane, metrics, Settings(max_request_bytes=LIMIT), feedback)
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                await scenario(http, model)
        finally:
            await loader.unload_all()
            executor.shutdown()

    return lambda scenario: asyncio.run(run(scenario))


def iris_body(rows: np.ndarray) -> dict:
    return {
        "inputs": [
            {
                "name": "input-0",
                "shape": list(rows.shape),
                "datatype": "FP64",
                "data": rows.ravel().tolist(),
            }
        ],
        "outputs": [{"name": "predict"}],
    }


def test_v2_infer_through_the_asgi_app(with_app) -> None:
    async def scenario(http: httpx.AsyncClient, model: LogisticRegression) -> None:
        reply = await http.post(
            "/v2/models/iris/infer", json=iris_body(X), headers={"x-request-id": "asgi-1"}
        )
        assert reply.status_code == 200
        assert reply.headers["x-request-id"] == "asgi-1"
        assert reply.headers["x-servekit-served-by"] == "iris/1"
        assert reply.json()["outputs"][0]["data"] == model.predict(X).tolist()

    with_app(scenario)


def test_v1_predict_through_the_asgi_app(with_app) -> None:
    async def scenario(http: httpx.AsyncClient, model: LogisticRegression) -> None:
        reply = await http.post("/v1/models/iris:predict", json={"instances": X.tolist()})
        assert reply.status_code == 200
        assert reply.json()["predictions"] == model.predict(X).tolist()

    with_app(scenario)


def test_errors_through_the_asgi_app(with_app) -> None:
    async def scenario(http: httpx.AsyncClient, model: LogisticRegression) -> None:
        too_big = await http.post("/v2/models/iris/infer", content=b" " * (LIMIT + 1))
        assert too_big.status_code == 413
        assert str(LIMIT) in too_big.json()["error"]
        unknown = await http.post("/v2/models/nope/infer", json=iris_body(X))
        assert unknown.status_code == 404
        wrong_method = await http.get("/v2/models/iris/infer")
        assert (wrong_method.status_code, wrong_method.headers["allow"]) == (405, "POST")
        other_route = await http.get("/v2/models/iris")  # not inference: Starlette's routes
        assert (other_route.status_code, other_route.json()["name"]) == (200, "iris")

    with_app(scenario)


def receiver(*messages: dict):
    queue = list(messages)

    async def receive() -> dict:
        return queue.pop(0)

    return receive


def test_read_body_joins_chunks() -> None:
    receive = receiver(
        {"type": "http.request", "body": b'{"a"', "more_body": True},
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": b": 1}", "more_body": False},
    )
    assert asyncio.run(read_body(receive, None, 100)) == b'{"a": 1}'


def test_read_body_stops_at_the_limit_without_a_declared_length() -> None:
    receive = receiver(
        {"type": "http.request", "body": b"x" * 60, "more_body": True},
        {"type": "http.request", "body": b"x" * 60, "more_body": True},
    )
    with pytest.raises(PayloadTooLarge, match="exceeds the limit of 100 bytes"):
        asyncio.run(read_body(receive, None, 100))


def test_read_body_reports_a_client_that_left() -> None:
    receive = receiver(
        {"type": "http.request", "body": b"x", "more_body": True}, {"type": "http.disconnect"}
    )
    with pytest.raises(Unavailable, match="disconnected"):
        asyncio.run(read_body(receive, b"10", 100))
