"""KServe InferenceService import: what maps to what, and a warning for everything else."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from servekit.cli_deploy import apply_kserve, resolve_serve_target
from servekit.deploy.kserve import (
    STABLE_ANNOTATION,
    export_inference_service,
    export_warnings,
    import_inference_service,
)
from servekit.errors import ConfigError
from servekit.settings import Settings


@pytest.fixture
def iris(example_repo: tuple[Path, dict]) -> Path:
    """The trained iris model (versions 1 and 2) from the session's example repository."""
    return example_repo[0] / "iris"


def isvc(tmp_path: Path, predictor: dict, annotations: dict | None = None) -> Path:
    document = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "iris", "annotations": annotations or {}},
        "spec": {"predictor": predictor},
    }
    path = tmp_path / "isvc.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def model(uri: Path | str, fmt: str = "sklearn") -> dict:
    return {"modelFormat": {"name": fmt}, "storageUri": str(uri)}


def test_canary_scale_to_zero_batcher_and_logger_map(tmp_path: Path, iris: Path) -> None:
    path = isvc(
        tmp_path,
        {
            "model": model(iris / "2"),
            "canaryTrafficPercent": 10,
            "minReplicas": 0,
            "batcher": {"maxBatchSize": 16, "maxLatency": 20, "timeout": 2},
            "logger": {"mode": "all", "url": "http://collector:8080/"},
        },
        {STABLE_ANNOTATION: str(iris / "1")},
    )
    imported = import_inference_service(path, tmp_path / "work", Path)
    assert imported.warnings == []
    services = yaml.safe_load(imported.deployments.read_text())["services"]
    assert services == [
        {
            "name": "iris",
            "predictor": {"model": "iris-predictor", "version": "1"},
            "canary": {"model": "iris-predictor", "version": "2", "traffic_percent": 10},
        }
    ]
    folder = imported.repository / "iris-predictor"
    assert (folder / "1").resolve() == iris / "1" and (folder / "2").resolve() == iris / "2"
    config = yaml.safe_load((folder / "model.yaml").read_text())
    assert config["format"] == "sklearn" and config["idle_unload_after"] > 0
    assert config["batching"] == {
        "max_batch_size": 16,
        "max_batch_delay_ms": 20.0,
        "timeout_ms": 2000.0,
    }
    settings = apply_kserve(Settings(storage_cache_dir=tmp_path / "cache"), path)
    assert settings.deployments.endswith("deployments.yaml")
    sink = settings.payload_log.sinks[-1]
    assert (sink.type, str(sink.url), sink.mode) == ("http", "http://collector:8080/", "all")


def test_every_unsupported_field_is_named(tmp_path: Path, iris: Path) -> None:
    path = isvc(
        tmp_path,
        {
            "model": {**model(iris / "2"), "runtime": "kserve-sklearnserver"},
            "maxReplicas": 3,
            "canaryTrafficPercent": 10,  # no stable revision given: a warning too
        },
    )
    imported = import_inference_service(path, tmp_path / "work", Path)
    text = "\n".join(imported.warnings)
    assert "spec.predictor.model.runtime: not supported by servekit, ignored" in text
    assert "spec.predictor.maxReplicas: not supported by servekit, ignored" in text
    assert (
        "canaryTrafficPercent: needs the stable revision's storage in the annotation "
        f"{STABLE_ANNOTATION}" in text
    )
    assert "canary" not in yaml.safe_load(imported.deployments.read_text())["services"][0]


@pytest.mark.parametrize(
    ("predictor", "expected"),
    [
        ({"model": model("/models/iris", "triton")}, "modelFormat.name: 'triton' is not supported"),
        ({"model": {"modelFormat": {"name": "sklearn"}}}, "storageUri: required"),
        ({"model": model("pvc://claim/iris")}, "pvc:// is not readable"),
    ],
)
def test_errors_name_the_field(tmp_path: Path, predictor: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match="isvc.yaml: .*") as caught:
        import_inference_service(isvc(tmp_path, predictor), tmp_path / "work", Path)
    assert expected in str(caught.value)


def test_serve_reads_its_argument(tmp_path: Path, iris: Path) -> None:
    path = isvc(tmp_path, {"model": model(iris / "2")})
    assert resolve_serve_target(str(path), None) == (None, None, path)
    spec = tmp_path / "deployments.yaml"
    spec.write_text("services: []\n")
    assert resolve_serve_target(str(spec), "repo") == ("repo", str(spec), None)
    assert resolve_serve_target("models", None) == ("models", None, None)


def test_a_bad_logger_names_the_field(tmp_path: Path, iris: Path) -> None:
    path = isvc(tmp_path, {"model": model(iris / "2"), "logger": {"mode": "loud", "url": "x"}})
    with pytest.raises(ConfigError, match=r"isvc.yaml: spec.predictor.logger: mode: .*; url: "):
        apply_kserve(Settings(storage_cache_dir=tmp_path / "cache"), path)


def test_export_names_what_it_leaves_out() -> None:
    service = {
        "name": "s",
        "predictor": {"model": "iris", "version": "2"},
        "transformer": {"class": "t.py:T"},
        "shadow": {"model": "iris"},
    }
    isvc = export_inference_service(service, lambda model, version: ("sklearn", f"/m/{version}"))
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "/m/2"
    assert export_warnings(service) == [
        "service 's': transformer: has no InferenceService equivalent, left out",
        "service 's': shadow: has no InferenceService equivalent, left out",
    ]
