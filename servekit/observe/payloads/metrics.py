"""Prometheus metrics of the payload log, per sink, on the server's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class PayloadMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.queued = Gauge(
            "servekit_payload_events_queued",
            "Events read from the spool and waiting in memory for delivery, by sink.",
            ["sink"],
            registry=registry,
        )
        self.spooled = Gauge(
            "servekit_payload_events_spooled",
            "Events on disk that a sink has not read yet (grows while a sink is down).",
            ["sink"],
            registry=registry,
        )
        self.delivered = Counter(
            "servekit_payload_events_delivered",
            "Inference records a sink has stored (each holds a request and a response event).",
            ["sink"],
            registry=registry,
        )
        self.retried = Counter(
            "servekit_payload_delivery_retries",
            "Failed deliveries that will be retried (the sink was down or slow).",
            ["sink"],
            registry=registry,
        )
        self.dropped = Counter(
            "servekit_payload_events_dropped",
            "Inference records a sink lost: 'spool_full' (policy drop) or 'rejected' (the "
            "destination refused them for good). Never silent: each drop is also logged.",
            ["sink", "reason"],
            registry=registry,
        )
        self.spool_bytes = Gauge(
            "servekit_payload_spool_bytes", "Disk used by the payload spool.", registry=registry
        )
        self.blocked = Counter(
            "servekit_payload_blocked_requests",
            "Inference requests refused with 503 because the spool was full (policy block).",
            registry=registry,
        )
