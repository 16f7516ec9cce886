"""MonitorService: model.yaml's monitoring section, journal records in, results out.

The service is driven as the payload journal drives it (``deliver_encoded`` with msgpack
records), with real detectors and a real reference file; the end-to-end test covers the
server around it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from servekit.core.lifecycle import ModelState
from servekit.core.registry import ModelHandle, ModelRegistry
from servekit.errors import ConfigError, NotFound
from servekit.observe.monitoring.service import MonitorNotReady, MonitorService
from servekit.observe.payloads.config import PayloadLogSettings
from servekit.observe.payloads.record import InferenceRecord, capture, encode
from servekit.repository.config import read_model_config
from servekit.types.tensors import Tensor

NAMES = ["a", "b", "c"]
WINDOW = 40


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models" / "m"
    folder.mkdir(parents=True)
    rows = np.random.default_rng(0).normal(size=(300, 3))
    np.savetxt(folder / "reference.csv", rows, delimiter=",", header=",".join(NAMES), comments="")
    config = {
        "monitoring": {
            "reference": "reference.csv",
            "window": {"size": WINDOW},
            "detectors": [
                {"type": "tabular", "name": "drift", "p_val": 0.01},
                {"type": "mahalanobis", "name": "outliers", "alarm_rate": 0.5},
            ],
        }
    }
    (folder / "model.yaml").write_text(yaml.safe_dump(config))
    return folder


def make_service(model_dir: Path, tmp_path: Path) -> tuple[MonitorService, CollectorRegistry]:
    registry = ModelRegistry()
    config = read_model_config(model_dir)
    handle = ModelHandle("m", "1", "test", state=ModelState.READY, monitoring=config.monitoring)
    registry.add(handle)
    metrics = CollectorRegistry()
    settings = PayloadLogSettings(directory=tmp_path / "payloads")
    service = MonitorService(registry, settings, metrics, pace_seconds=0)
    service.start()
    return service, metrics


def prepare(service: MonitorService) -> None:
    asyncio.run(service.refresh())


def payload(event: str, rows: np.ndarray, when: float = 1000.0) -> bytes:
    tensor = Tensor("x", "FP64", rows)
    record = InferenceRecord(
        id=event, model="m", version="1", service="m", protocol="rest-v2", time=when,
        latency_ms=1.0, inputs=capture([tensor], frozenset(), 1 << 20), outputs=[],
    )  # fmt: skip
    return encode(record)


def test_a_relative_reference_is_read_from_the_model_folder(model_dir: Path) -> None:
    config = read_model_config(model_dir).monitoring
    assert config is not None
    assert Path(config.reference) == (model_dir / "reference.csv").absolute()
    assert config.detectors[0].options == {"p_val": 0.01}


def test_two_detectors_with_one_name_are_refused(model_dir: Path) -> None:
    (model_dir / "model.yaml").write_text(
        yaml.safe_dump(
            {"monitoring": {"reference": "r.csv", "detectors": [{"type": "ks"}, {"type": "ks"}]}}
        )  # fmt: skip
    )
    with pytest.raises(ConfigError, match="detectors named ks twice"):
        read_model_config(model_dir)


def test_events_wait_in_the_journal_until_the_monitor_is_fitted(
    model_dir: Path, tmp_path: Path
) -> None:
    service, _ = make_service(model_dir, tmp_path)

    async def scenario() -> None:
        fitting = asyncio.create_task(service.refresh())
        await asyncio.sleep(0)  # the fit has started, in a thread
        with pytest.raises(MonitorNotReady):  # the journal keeps the batch and retries
            service.deliver_encoded([payload("e0", np.zeros((1, 3)))])
        await fitting
        service.deliver_encoded([payload("e0", np.zeros((1, 3)))])

    try:
        asyncio.run(scenario())
    finally:
        service.stop()


def test_drift_and_outliers_from_journal_records(model_dir: Path, tmp_path: Path) -> None:
    service, metrics = make_service(model_dir, tmp_path)
    try:
        prepare(service)
        assert service.state("m")["status"] == "ready"
        rng = np.random.default_rng(1)
        calm = [payload(f"c{i}", rng.normal(size=(4, 3))) for i in range(WINDOW // 4)]
        service.deliver_encoded(calm)
        drift = next(d for d in service.state("m")["detectors"] if d["name"] == "drift")
        assert drift["isolated"] is True  # computed in the detector process
        assert drift["window"]["filled"] == WINDOW
        assert drift["results"] == 1
        assert drift["alarm"] is False

        shifted = rng.normal(size=(WINDOW, 3))
        shifted[:, 1] += 5.0
        service.deliver_encoded([payload(f"s{i}", shifted[i : i + 4]) for i in range(0, WINDOW, 4)])
        state = service.state("m")
        assert state["drifted_features"] == ["b"]
        assert state["alarm"] is True
        outliers = next(d for d in state["detectors"] if d["name"] == "outliers")
        assert outliers["last_result"]["values"]["outlier_rate"] > 0.5
        assert {o["id"].split("#")[0] for o in state["outliers"]} <= {
            f"s{i}" for i in range(0, WINDOW, 4)
        }
        assert [r["alarm"] for r in state["history"] if r["detector"] == "drift"] == [True, False]

        exported = generate_latest(metrics).decode()
        assert (
            'servekit_monitoring_feature_drift{detector="drift",feature="b",model="m"} 1.0'
            in exported
        )
        assert (
            'servekit_monitoring_feature_drift{detector="drift",feature="a",model="m"} 0.0'
            in exported
        )
    finally:
        service.stop()


def test_unmonitored_models_and_failed_requests_are_skipped(model_dir: Path, tmp_path: Path):
    service, _ = make_service(model_dir, tmp_path)
    try:
        prepare(service)
        other = InferenceRecord(id="o", model="other", version="1", service="other",
                                protocol="rest-v2", time=1.0, latency_ms=1.0)  # fmt: skip
        failed = InferenceRecord(id="f", model="m", version="1", service="m", protocol="rest-v2",
                                 time=1.0, latency_ms=1.0, status="internal")  # fmt: skip
        service.deliver_encoded([encode(other), encode(failed)])
        assert all(d["results"] == 0 for d in service.state("m")["detectors"])
        with pytest.raises(NotFound):
            service.state("other")
    finally:
        service.stop()


def test_a_bad_reference_fails_its_monitor_with_the_reason(model_dir: Path, tmp_path: Path):
    (model_dir / "reference.csv").write_text("a,b,c\n")
    service, _ = make_service(model_dir, tmp_path)
    try:
        prepare(service)
        state = service.state("m")
        assert state["status"] == "failed"
        assert "reference" in state["error"]
        service.deliver_encoded([payload("e", np.zeros((1, 3)))])  # skipped, not retried
    finally:
        service.stop()
