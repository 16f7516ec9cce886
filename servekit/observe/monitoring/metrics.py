"""Prometheus series of the monitors (registered on the server's own registry)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge


class MonitoringMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        by_detector = ["model", "detector", "kind"]
        self.alarm = Gauge(
            "servekit_monitoring_alarm",
            "1 while the detector's last result is an alarm (drift, outliers, degradation).",
            by_detector,
            registry=registry,
        )
        self.statistic = Gauge(
            "servekit_monitoring_statistic",
            "The last test statistic or distance of a detector (MMD², KS D, AUC...).",
            by_detector,
            registry=registry,
        )
        self.p_value = Gauge(
            "servekit_monitoring_p_value",
            "The last (corrected) p-value of a detector.",
            by_detector,
            registry=registry,
        )
        by_feature = ["model", "detector", "feature"]
        self.feature_p_value = Gauge(
            "servekit_monitoring_feature_p_value",
            "The last p-value per feature.",
            by_feature,
            registry=registry,
        )
        self.feature_statistic = Gauge(
            "servekit_monitoring_feature_statistic",
            "The last statistic per feature.",
            by_feature,
            registry=registry,
        )
        self.feature_drift = Gauge(
            "servekit_monitoring_feature_drift",
            "1 when the feature drifted in the detector's last window.",
            by_feature,
            registry=registry,
        )
        self.value = Gauge(
            "servekit_monitoring_value",
            "Other figures of the last result (outlier_rate, estimated_accuracy...).",
            ["model", "detector", "name"],
            registry=registry,
        )
        self.outlier_rate = Gauge(
            "servekit_monitoring_outlier_rate",
            "Share of rows flagged by an outlier or adversarial detector in its last window.",
            ["model", "detector"],
            registry=registry,
        )
        self.results = Counter(
            "servekit_monitoring_results",
            "Detector results computed.",
            by_detector,
            registry=registry,
        )
        self.outliers = Counter(
            "servekit_monitoring_outliers",
            "Rows flagged as outliers (mode: inline or async).",
            ["model", "detector", "mode"],
            registry=registry,
        )
        self.failures = Counter(
            "servekit_monitoring_failures",
            "Detector runs that raised (the event is skipped, the server goes on).",
            ["model", "detector"],
            registry=registry,
        )
        self.alerts = Counter(
            "servekit_monitoring_alerts",
            "Alerts queued for the webhooks, by status (firing, resolved).",
            ["model", "detector", "status"],
            registry=registry,
        )

    def publish(self, model: str, result: Any) -> None:
        """Set the gauges from one DetectorResult."""
        labels = (model, result.detector, result.kind)
        self.results.labels(*labels).inc()
        self.alarm.labels(*labels).set(float(result.alarm))
        if result.statistic is not None:
            self.statistic.labels(*labels).set(result.statistic)
        if result.p_value is not None:
            self.p_value.labels(*labels).set(result.p_value)
        for feature in result.features:
            key = (model, result.detector, feature.name)
            self.feature_statistic.labels(*key).set(feature.statistic)
            if feature.p_value is not None:
                self.feature_p_value.labels(*key).set(feature.p_value)
            self.feature_drift.labels(*key).set(float(feature.drifted))
        for name, value in result.values.items():
            self.value.labels(model, result.detector, name).set(value)
        if "outlier_rate" in result.values:
            self.outlier_rate.labels(model, result.detector).set(result.values["outlier_rate"])


__all__ = ["MonitoringMetrics"]
