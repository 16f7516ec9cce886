"""/metrics parses as Prometheus text and moves; the OpenAPI document and docs page are served."""

from __future__ import annotations

import httpx
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

IRIS_REQUEST = {
    "inputs": [
        {"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}
    ]
}


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{url}/metrics").text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_by_model_version_protocol_status(server) -> None:
    before = scrape(server.http_url)
    with httpx.Client(base_url=server.http_url) as client:
        for _ in range(3):
            assert client.post("/v2/models/iris/versions/1/infer", json=IRIS_REQUEST).is_success
        assert (
            client.post("/v2/models/iris/versions/1/infer", json={"inputs": []}).status_code == 400
        )
        assert client.post(
            "/v1/models/iris:predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]}
        ).is_success
    after = scrape(server.http_url)
    ok = {"model": "iris", "version": "1", "protocol": "rest-v2", "status": "ok"}
    assert (
        value(after, "servekit_inference_requests_total", **ok)
        - value(before, "servekit_inference_requests_total", **ok)
        == 3
    )
    bad = {**ok, "status": "invalid_argument"}
    assert (
        value(after, "servekit_inference_requests_total", **bad)
        - value(before, "servekit_inference_requests_total", **bad)
        == 1
    )
    v1 = {"model": "iris", "version": "2", "protocol": "rest-v1", "status": "ok"}
    assert (
        value(after, "servekit_inference_requests_total", **v1)
        - value(before, "servekit_inference_requests_total", **v1)
        == 1
    )
    latency = {"model": "iris", "version": "1", "protocol": "rest-v2"}
    assert (
        value(after, "servekit_inference_request_duration_seconds_count", **latency)
        - value(before, "servekit_inference_request_duration_seconds_count", **latency)
        == 4
    )
    assert value(after, "servekit_inference_requests_in_flight", model="iris") == 0


def test_metrics_show_model_state_and_load_time(server) -> None:
    samples = scrape(server.http_url)
    assert value(samples, "servekit_model_state", model="iris", version="1", state="READY") == 1
    assert value(samples, "servekit_model_state", model="corrupt", version="1", state="FAILED") == 1
    assert value(samples, "servekit_model_state", model="corrupt", version="1", state="READY") == 0
    assert value(samples, "servekit_model_load_duration_seconds", model="iris", version="1") > 0


def test_unknown_models_share_one_label(server) -> None:
    for name in ("ghost-a", "ghost-b"):
        httpx.post(f"{server.http_url}/v2/models/{name}/infer", json=IRIS_REQUEST)
    samples = scrape(server.http_url)
    labels = {labels for (name, labels) in samples if name == "servekit_inference_requests_total"}
    assert not any(("model", "ghost-a") in lbl for lbl in labels)
    assert (
        value(
            samples,
            "servekit_inference_requests_total",
            model="_unknown",
            version="",
            protocol="rest-v2",
            status="not_found",
        )
        >= 2
    )


def test_openapi_document_is_valid_and_covers_every_route(server) -> None:
    from servekit.transports.http import deploy, monitoring, observe, repository, v1, v2
    from servekit.transports.http.asgi import INFER_ROUTES

    document = httpx.get(f"{server.http_url}/openapi.json").json()
    validate(document)
    documented = set(document["paths"])
    routes = {r.path for r in [*v1.routes, *v2.routes]} | {"/metrics", "/openapi.json", "/docs"}
    routes |= set(INFER_ROUTES) | {r.path for r in [*repository.routes, *observe.routes]}
    routes |= {r.path for r in monitoring.routes}
    routes |= {r.path for r in deploy.routes}
    assert routes == documented


def test_docs_page(server) -> None:
    response = httpx.get(f"{server.http_url}/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text


def test_unknown_route_and_method_answer_json_errors(server) -> None:
    missing = httpx.get(f"{server.http_url}/v3/nothing")
    assert missing.status_code == 404 and "error" in missing.json()
    wrong_method = httpx.delete(f"{server.http_url}/v2/models/iris/infer")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()
