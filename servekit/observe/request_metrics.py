"""The per-inference metrics, kept as plain numbers and exposed through a collector.

Why not prometheus_client's Counter, Histogram and Gauge here: each update takes a lock and
several Python calls (five updates per inference, a few microseconds in all), paid on every
request. Only the event loop updates these numbers, so they need no lock; a scrape copies them
and renders the same metric families (``servekit_inference_requests_total``, the latency
histogram, the in-flight gauge) that the standard classes would.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

REQUESTS = "servekit_inference_requests"
LATENCY = "servekit_inference_request_duration_seconds"
IN_FLIGHT = "servekit_inference_requests_in_flight"


class _Latency:
    """One label set of the histogram: counts per bucket (not cumulative) and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * (buckets + 1)  # the last one is +Inf
        self.total = 0.0


class RequestMetrics:
    """Requests by (model, version, protocol, status), their latency by (model, version,
    protocol), and requests in flight by model. Update from the event loop thread only."""

    def __init__(self, registry: CollectorRegistry, buckets: Sequence[float]) -> None:
        self._bounds = tuple(float(b) for b in buckets)
        self._requests: dict[tuple[str, str, str, str], int] = {}
        self._latency: dict[tuple[str, str, str], _Latency] = {}
        self._in_flight: dict[str, int] = {}
        registry.register(self)

    def started(self, model: str) -> None:
        self._in_flight[model] = self._in_flight.get(model, 0) + 1

    def finished(self, model: str) -> None:
        self._in_flight[model] -= 1

    def observe(self, model: str, version: str, protocol: str, status: str, seconds: float) -> None:
        key = (model, version, protocol, status)
        self._requests[key] = self._requests.get(key, 0) + 1
        series = self._latency.get(key[:3])
        if series is None:
            series = self._latency[key[:3]] = _Latency(len(self._bounds))
        series.counts[bisect_left(self._bounds, seconds)] += 1
        series.total += seconds

    def in_flight(self, model: str) -> int:
        return self._in_flight.get(model, 0)

    def describe(self) -> Iterator[Metric]:
        """The families without samples, so the registry refuses a second collector of them."""
        yield CounterMetricFamily(REQUESTS, "", labels=[])
        yield HistogramMetricFamily(LATENCY, "", labels=[])
        yield GaugeMetricFamily(IN_FLIGHT, "", labels=[])

    def collect(self) -> Iterator[Metric]:
        # list() copies each dict in one step, so a scrape from another thread never sees one
        # change size under it
        requests = CounterMetricFamily(
            REQUESTS,
            "Inference requests by model, version, protocol and outcome.",
            labels=["model", "version", "protocol", "status"],
        )
        for labels, count in list(self._requests.items()):
            requests.add_metric(labels, count)
        yield requests
        latency = HistogramMetricFamily(
            LATENCY,
            "Time from decoded request to encoded response, by model, version and protocol.",
            labels=["model", "version", "protocol"],
        )
        edges = [floatToGoString(b) for b in self._bounds] + ["+Inf"]
        for labels, series in list(self._latency.items()):
            cumulative, running = [], 0
            for edge, count in zip(edges, list(series.counts), strict=True):
                running += count
                cumulative.append((edge, running))
            latency.add_metric(labels, cumulative, series.total)
        yield latency
        in_flight = GaugeMetricFamily(
            IN_FLIGHT, "Inference requests being processed.", labels=["model"]
        )
        for model, count in list(self._in_flight.items()):
            in_flight.add_metric([model], count)
        yield in_flight
