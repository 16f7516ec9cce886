"""Alerts: Alertmanager's webhook format, firing then resolved, retried until delivered."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from servekit.observe.monitoring.alerts import ALERT_NAME, AlertNotifier, alert_payload
from servekit.observe.monitoring.config import AlertConfig
from servekit.observe.monitoring.outbox import Outbox


class Receiver:
    """A webhook receiver on a free port that fails the first ``failures`` POSTs with 503."""

    def __init__(self, failures: int = 0) -> None:
        self.received: list[dict] = []
        self.attempts = 0
        self.failures = failures
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.attempts += 1
                status = 503 if receiver.attempts <= receiver.failures else 200
                if status == 200:
                    receiver.received.append(json.loads(body))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.received


@pytest.fixture
def receiver_factory() -> Iterator[Callable[[int], Receiver]]:
    made: list[Receiver] = []

    def make(failures: int = 0) -> Receiver:
        made.append(Receiver(failures))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture
def outbox() -> Iterator[Outbox]:
    box = Outbox()
    box.start()
    yield box
    box.stop()


def drift_result(alarm: bool, when: float) -> dict:
    return {
        "detector": "drift",
        "kind": "data_drift",
        "alarm": alarm,
        "statistic": 0.4,
        "p_value": 0.001 if alarm else 0.6,
        "threshold": 0.05,
        "window_size": 200,
        "features": [
            {"name": "petal_length", "statistic": 0.4, "p_value": 0.001, "drifted": alarm},
            {"name": "sepal_width", "statistic": 0.1, "p_value": 0.5, "drifted": False},
        ],
        "values": {},
        "time": when,
    }


def test_the_payload_is_alertmanagers_webhook_format() -> None:
    payload = alert_payload("iris", drift_result(True, 1_700_000_000.0), 1_700_000_000.0,
                            severity="critical")  # fmt: skip
    assert payload["version"] == "4"
    assert payload["status"] == "firing"
    (alert,) = payload["alerts"]
    assert alert["labels"] == {
        "alertname": ALERT_NAME, "model": "iris", "detector": "drift", "kind": "data_drift",
        "severity": "critical",
    }  # fmt: skip
    assert alert["annotations"]["drifted_features"] == "petal_length"
    assert alert["startsAt"] == "2023-11-14T22:13:20Z"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert set(payload) >= {"receiver", "groupLabels", "commonLabels", "externalURL", "groupKey"}


def test_an_alarm_fires_once_and_resolves_when_calm(outbox: Outbox, receiver_factory) -> None:
    receiver = receiver_factory()
    notifier = AlertNotifier("iris", [AlertConfig(url=receiver.url)], outbox)
    assert notifier.update(drift_result(False, 1.0)) is None  # calm from the start: nothing
    assert notifier.update(drift_result(True, 2.0)) == "firing"
    assert notifier.update(drift_result(True, 3.0)) is None  # still firing: not repeated
    assert notifier.firing == ["drift"]
    assert notifier.update(drift_result(False, 4.0)) == "resolved"
    firing, resolved = receiver.wait_for(2)
    assert firing["status"] == "firing"
    assert resolved["status"] == "resolved"
    assert resolved["alerts"][0]["startsAt"] == firing["alerts"][0]["startsAt"]
    assert resolved["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
    assert firing["alerts"][0]["fingerprint"] == resolved["alerts"][0]["fingerprint"]


def test_a_failing_webhook_is_retried_until_it_accepts(outbox: Outbox, receiver_factory) -> None:
    receiver = receiver_factory(2)
    notifier = AlertNotifier("iris", [AlertConfig(url=receiver.url, retries=3)], outbox)
    notifier.update(drift_result(True, 1.0))
    (delivered,) = receiver.wait_for(1)
    assert delivered["status"] == "firing"
    assert receiver.attempts == 3
    deadline = time.monotonic() + 10  # the outbox counts once the receiver's answer is read
    while not outbox.sent and time.monotonic() < deadline:
        time.sleep(0.02)
    assert outbox.sent == {"alert": 1}


def test_a_webhook_that_stays_down_is_given_up_after_its_retries(
    outbox: Outbox, receiver_factory: Callable[[int], Receiver]
) -> None:
    receiver = receiver_factory(100)
    notifier = AlertNotifier("iris", [AlertConfig(url=receiver.url, retries=1)], outbox)
    notifier.update(drift_result(True, 1.0))
    deadline = time.monotonic() + 10
    while not outbox.failed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert outbox.failed == {"alert": 1}
    assert receiver.attempts == 2
