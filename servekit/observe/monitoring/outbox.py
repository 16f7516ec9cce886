"""POSTs that must not wait on the caller: alerts and result events, retried with backoff.

One thread drains a bounded queue in order; a destination that is down delays what follows
for at most its retries, and a full queue drops (counted) rather than grow without bound.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from dataclasses import dataclass, field

import httpx

logger = logging.getLogger("servekit.monitoring")

FIRST_BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 10.0


@dataclass(slots=True)
class Delivery:
    url: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    retries: int = 5
    timeout: float = 5.0
    kind: str = "event"
    """What it is, for metrics and logs: 'alert' or 'event'."""


class Outbox(threading.Thread):
    def __init__(self, capacity: int = 10_000) -> None:
        super().__init__(name="servekit-monitoring-outbox", daemon=True)
        self._queue: queue.Queue[Delivery | None] = queue.Queue(capacity)
        self._stop_requested = threading.Event()
        self.sent: dict[str, int] = {}
        self.failed: dict[str, int] = {}

    def put(self, delivery: Delivery) -> bool:
        """Queue ``delivery``; False (and logged) when the queue is full."""
        try:
            self._queue.put_nowait(delivery)
            return True
        except queue.Full:
            logger.error("monitoring: outbox full, dropped a %s to %s", delivery.kind, delivery.url)
            self.failed[delivery.kind] = self.failed.get(delivery.kind, 0) + 1
            return False

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is queued for up to ``timeout`` seconds, then stop."""
        if not self.is_alive():
            return
        with contextlib.suppress(queue.Full):  # full: stop after the current delivery
            self._queue.put(None, timeout=timeout)
        self.join(timeout)
        self._stop_requested.set()
        self.join(1.0)

    def run(self) -> None:
        with httpx.Client() as client:
            while True:
                delivery = self._queue.get()
                if delivery is None:
                    return
                self._deliver(client, delivery)

    def _deliver(self, client: httpx.Client, delivery: Delivery) -> None:
        delay = FIRST_BACKOFF_SECONDS
        for attempt in range(delivery.retries + 1):
            try:
                response = client.post(
                    delivery.url,
                    content=delivery.body,
                    headers=delivery.headers,
                    timeout=delivery.timeout,
                )
                if response.status_code < 500 and response.status_code != 429:
                    if response.is_error:
                        logger.error(
                            "monitoring: %s refused by %s: HTTP %d",
                            delivery.kind, delivery.url, response.status_code,
                        )  # fmt: skip
                        break
                    self.sent[delivery.kind] = self.sent.get(delivery.kind, 0) + 1
                    return
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if attempt == delivery.retries:
                break
            logger.warning(
                "monitoring: %s to %s failed (%s); retrying in %.1fs",
                delivery.kind, delivery.url, problem, delay,
            )  # fmt: skip
            if self._stop_requested.wait(delay):
                break
            delay = min(delay * 2, MAX_BACKOFF_SECONDS)
        logger.error("monitoring: gave up delivering a %s to %s", delivery.kind, delivery.url)
        self.failed[delivery.kind] = self.failed.get(delivery.kind, 0) + 1


__all__ = ["Delivery", "Outbox"]
