"""Prometheus metrics, on a registry owned by one server (never the global default)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from servekit.core.lifecycle import ModelState
from servekit.observe.request_metrics import RequestMetrics

LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
UNKNOWN_MODEL = "_unknown"
"""Label for requests naming a model that does not exist (keeps cardinality bounded)."""


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = RequestMetrics(r, LATENCY_BUCKETS)
        """Requests, their latency and those in flight: updated on every inference."""
        self.load_seconds = Gauge(
            "servekit_model_load_duration_seconds",
            "How long the last load of a model version took.",
            ["model", "version"],
            registry=r,
        )
        self.state = Gauge(
            "servekit_model_state",
            "1 for the state a model version is in, 0 for the others.",
            ["model", "version", "state"],
            registry=r,
        )

        self.reload_failures = Counter(
            "servekit_model_reload_failures",
            "New artifacts of a serving version that failed to load (the old one kept serving).",
            ["model", "version"],
            registry=r,
        )
        self.cold_starts = Histogram(
            "servekit_model_cold_start_duration_seconds",
            "Loads triggered by a request for a scaled-to-zero model, and how long they took.",
            ["model"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.deployment_requests = Counter(
            "servekit_deployment_requests",
            "Requests to a deployment (service or graph) by the variant that answered (empty "
            "for graphs and for requests refused before a variant was chosen) and outcome.",
            ["deployment", "variant", "status"],
            registry=r,
        )
        self.deployment_latency = Histogram(
            "servekit_deployment_request_duration_seconds",
            "Time a deployment took to answer, by deployment and variant.",
            ["deployment", "variant"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._deployment_children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
        self.batch_size = Histogram(
            "servekit_batch_size",
            "Rows per batch sent to a model by the adaptive batcher.",
            ["model", "version"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )

    def observe_request(
        self, model: str, version: str, protocol: str, status: str, seconds: float
    ) -> None:
        self.requests.observe(model, version, protocol, status, seconds)

    def observe_deployment(
        self, deployment: str, variant: str, status: str, seconds: float
    ) -> None:
        """Count and time one deployment request; label lookups cost microseconds each, so the
        children are cached per label set."""
        key = (deployment, variant, status)
        children = self._deployment_children.get(key)
        if children is None:
            children = (
                self.deployment_requests.labels(deployment, variant, status),
                self.deployment_latency.labels(deployment, variant),
            )
            self._deployment_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def set_state(self, model: str, version: str, state: ModelState) -> None:
        for candidate in ModelState:
            self.state.labels(model, version, candidate.value).set(1 if candidate is state else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
