"""The shipped Prometheus alerting rules: valid for promtool, and about metrics that exist."""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry
from services import _apt_install

from servekit.observe.monitoring.metrics import MonitoringMetrics
from servekit.observe.payloads.metrics import PayloadMetrics

RULES = Path(str(resources.files("servekit.observe.monitoring") / "prometheus-rules.yaml"))


def promtool() -> str:
    """Debian's promtool, installed (package 'prometheus') when missing."""
    found = shutil.which("promtool")
    if found is None:
        _apt_install("prometheus")
        found = shutil.which("promtool")
    assert found is not None, "the prometheus package installed no promtool"
    return found


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_metric_in_the_rules_is_exported() -> None:
    registry = CollectorRegistry()
    MonitoringMetrics(registry)
    PayloadMetrics(registry)
    exported = set()
    for family in registry.collect():
        exported.add(family.name)
        if family.type == "counter":
            exported.add(family.name + "_total")
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    used = {m for rule in rules for m in re.findall(r"servekit_[a-z_]+", rule["expr"])}
    assert used, "the rules use no servekit metric"
    assert used <= exported, f"not exported: {sorted(used - exported)}"
