"""The per-inference metrics collector renders what prometheus_client's own classes would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from servekit.observe.metrics import LATENCY_BUCKETS, Metrics
from servekit.observe.request_metrics import RequestMetrics

# below the first bound, on a bound, between bounds, past the last one
SECONDS = [0.00005, 0.0001, 0.0003, 0.001, 0.02, 0.7, 3.0, 11.0, 0.0002, 0.0001]


def _reference(registry: CollectorRegistry) -> tuple[Counter, Histogram, Gauge]:
    """The three metrics as servekit declared them with prometheus_client before."""
    return (
        Counter(
            "servekit_inference_requests",
            "Inference requests by model, version, protocol and outcome.",
            ["model", "version", "protocol", "status"],
            registry=registry,
        ),
        Histogram(
            "servekit_inference_request_duration_seconds",
            "Time from decoded request to encoded response, by model, version and protocol.",
            ["model", "version", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ),
        Gauge(
            "servekit_inference_requests_in_flight",
            "Inference requests being processed.",
            ["model"],
            registry=registry,
        ),
    )


def _lines(registry: CollectorRegistry) -> list[str]:
    return [
        line for line in generate_latest(registry).decode().splitlines() if "_created" not in line
    ]


def test_exposition_matches_prometheus_client() -> None:
    expected, actual = CollectorRegistry(), CollectorRegistry()
    counter, histogram, gauge = _reference(expected)
    metrics = RequestMetrics(actual, LATENCY_BUCKETS)
    for index, seconds in enumerate(SECONDS):
        status = "ok" if index % 3 else "invalid_argument"
        protocol = "grpc" if index % 4 == 0 else "rest-v2"
        counter.labels("iris", "1", protocol, status).inc()
        histogram.labels("iris", "1", protocol).observe(seconds)
        metrics.observe("iris", "1", protocol, status, seconds)
    for model in ("iris", "wine"):
        gauge.labels(model).inc()
        metrics.started(model)
    gauge.labels("iris").dec()
    metrics.finished("iris")

    assert _lines(actual) == _lines(expected)
    assert metrics.in_flight("wine") == 1
    assert metrics.in_flight("iris") == 0
    assert metrics.in_flight("never-seen") == 0


def test_a_second_collector_of_the_same_names_is_refused() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        RequestMetrics(registry, LATENCY_BUCKETS)
