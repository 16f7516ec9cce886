"""Alerts to webhooks in Alertmanager's webhook format: 'firing' when a detector starts to
alarm, 'resolved' when its next result is calm again. Receivers built for Alertmanager
(PagerDuty and Slack bridges, Alertmanager's own /api/v2/alerts relays) read them as is."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson

from servekit.observe.monitoring.config import AlertConfig
from servekit.observe.monitoring.outbox import Delivery, Outbox

ALERT_NAME = "ServekitMonitoringAlarm"
NEVER = "0001-01-01T00:00:00Z"
"""Alertmanager's 'no end time' for a firing alert."""


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat().replace("+00:00", "Z")


def alert_payload(
    model: str, result: dict[str, Any], started: float, *, severity: str, external_url: str = ""
) -> dict[str, Any]:
    """One webhook message (version 4) holding the alert of one detector of one model."""
    firing = bool(result["alarm"])
    status = "firing" if firing else "resolved"
    labels = {
        "alertname": ALERT_NAME,
        "model": model,
        "detector": result["detector"],
        "kind": result["kind"],
        "severity": severity,
    }
    drifted = [f["name"] for f in result.get("features") or () if f.get("drifted")]
    summary = f"{result['kind'].replace('_', ' ')} on model {model} ({result['detector']})"
    description = f"window of {result['window_size']} rows"
    if result.get("p_value") is not None:
        description += f", p-value {result['p_value']:.3g}"
    if result.get("statistic") is not None:
        description += f", statistic {result['statistic']:.4g}"
    if drifted:
        description += f"; drifted features: {', '.join(drifted)}"
    annotations = {name: f"{value:.6g}" for name, value in (result.get("values") or {}).items()}
    annotations.update(summary=summary, description=description)
    if drifted:
        annotations["drifted_features"] = ",".join(drifted)
    fingerprint = hashlib.sha256(orjson.dumps(labels, option=orjson.OPT_SORT_KEYS)).hexdigest()
    alert = {
        "status": status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": _iso(started),
        "endsAt": NEVER if firing else _iso(result["time"]),
        "generatorURL": external_url,
        "fingerprint": fingerprint[:16],
    }
    group = {"alertname": ALERT_NAME, "model": model}
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{ALERT_NAME}", model="{model}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "servekit",
        "groupLabels": group,
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [alert],
    }


class AlertNotifier:
    """Tracks each detector's alarm state and queues a message when it changes."""

    def __init__(
        self,
        model: str,
        webhooks: list[AlertConfig],
        outbox: Outbox,
        firing: dict[str, float] | None = None,
    ) -> None:
        """``firing``: alerts still firing from before (a new version's monitor keeps them)."""
        self.model = model
        self._webhooks = webhooks
        self._outbox = outbox
        self.since: dict[str, float] = dict(firing or {})
        """When each detector that is alarming now started to."""

    def update(self, result: dict[str, Any]) -> str | None:
        """'firing' or 'resolved' when ``result`` changes its detector's state (and queued)."""
        detector = result["detector"]
        alarming = detector in self.since
        if bool(result["alarm"]) == alarming:
            return None
        if result["alarm"]:
            self.since[detector] = result["time"]
            started = result["time"]
        else:
            started = self.since.pop(detector)
        for webhook in self._webhooks:
            payload = alert_payload(self.model, result, started, severity=webhook.severity)
            self._outbox.put(
                Delivery(
                    str(webhook.url),
                    orjson.dumps(payload),
                    {"content-type": "application/json", **webhook.headers},
                    retries=webhook.retries,
                    timeout=webhook.timeout_seconds,
                    kind="alert",
                )
            )
        return "firing" if result["alarm"] else "resolved"

    @property
    def firing(self) -> list[str]:
        return sorted(self.since)


__all__ = ["ALERT_NAME", "AlertNotifier", "alert_payload"]
