"""KServe ``serving.kserve.io/v1beta1`` InferenceService <-> servekit deployment.

Import writes a one-model repository (version 1: the stable revision, version 2: the canary) and
a deployments file with one service named like the InferenceService, so clients keep calling
``/v2/models/<name>/infer``. KServe keeps the previous revision as the stable one; a YAML file has
only the new one, so the stable revision's storage is read from the annotation
``serving.servekit.io/stable-storage-uri``. Every field servekit does not use is reported as a
warning naming it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from servekit.errors import ConfigError

API_VERSION = "serving.kserve.io/v1beta1"
KIND = "InferenceService"
STABLE_ANNOTATION = "serving.servekit.io/stable-storage-uri"
FORMATS = {
    "sklearn": "sklearn",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "onnx": "onnx",
    "pytorch": "torch",
}
"""KServe modelFormat.name -> servekit format."""
_REVERSE = {v: k for k, v in FORMATS.items()}
_USED = {
    "apiVersion",
    "kind",
    "metadata.name",
    f"metadata.annotations.{STABLE_ANNOTATION}",
    "spec.predictor.model.modelFormat.name",
    "spec.predictor.model.storageUri",
    "spec.predictor.model.protocolVersion",
    "spec.predictor.canaryTrafficPercent",
    "spec.predictor.minReplicas",
    "spec.predictor.logger.mode",
    "spec.predictor.logger.url",
    "spec.predictor.batcher.maxBatchSize",
    "spec.predictor.batcher.maxLatency",
    "spec.predictor.batcher.timeout",
}
_PREFIXES_NOT_WARNED = ("metadata.namespace", "metadata.labels", "metadata.annotations.kubectl.")
SCALE_TO_ZERO_IDLE_SECONDS = 60.0
"""minReplicas: 0 -> unload after this long without requests (Knative's default window)."""


@dataclass
class ImportedService:
    name: str
    model: str
    repository: Path
    deployments: Path
    logger_url: str | None = None
    logger_mode: str = "all"
    warnings: list[str] = field(default_factory=list)


def is_inference_service(path: Path) -> bool:
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(document, dict) and document.get("kind") == KIND


def import_inference_service(
    path: Path, workdir: Path, materialize: Callable[[str], Path]
) -> ImportedService:
    """Write the repository and deployments file for ``path`` under ``workdir``."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected an InferenceService mapping")
    if document.get("apiVersion") != API_VERSION or document.get("kind") != KIND:
        raise ConfigError(
            f"{path}: apiVersion/kind: expected {API_VERSION} {KIND}, got "
            f"{document.get('apiVersion')} {document.get('kind')}"
        )
    name = _get(document, "metadata.name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path}: metadata.name: required")
    predictor = _get(document, "spec.predictor")
    if not isinstance(predictor, dict):
        raise ConfigError(f"{path}: spec.predictor: required")
    fmt_name = _get(predictor, "model.modelFormat.name")
    if fmt_name not in FORMATS:
        raise ConfigError(
            f"{path}: spec.predictor.model.modelFormat.name: {fmt_name!r} is not supported "
            f"(supported: {sorted(FORMATS)})"
        )
    uri = _get(predictor, "model.storageUri")
    if not isinstance(uri, str) or not uri:
        raise ConfigError(f"{path}: spec.predictor.model.storageUri: required")
    warnings = [
        f"{path}: {key}: not supported by servekit, ignored"
        for key in _leaves(document)
        if key not in _USED and not key.startswith(_PREFIXES_NOT_WARNED)
    ]
    canary_percent = predictor.get("canaryTrafficPercent")
    stable_uri = _get(document, f"metadata.annotations.{STABLE_ANNOTATION}", split=False)
    if canary_percent is not None and not stable_uri:
        warnings.append(
            f"{path}: spec.predictor.canaryTrafficPercent: needs the stable revision's storage "
            f"in the annotation {STABLE_ANNOTATION}; serving {uri} to all traffic"
        )
        canary_percent = None
    if canary_percent is not None and not (
        isinstance(canary_percent, int | float) and 0 <= canary_percent <= 100
    ):
        raise ConfigError(f"{path}: spec.predictor.canaryTrafficPercent: must be 0 to 100")

    model = f"{name}-predictor"
    repository = workdir / "repository"
    shutil.rmtree(workdir, ignore_errors=True)
    model_dir = repository / model
    model_dir.mkdir(parents=True)
    uris = [stable_uri, uri] if canary_percent is not None else [uri]
    for version, source in enumerate(uris, start=1):
        if str(source).startswith("pvc://"):
            raise ConfigError(f"{path}: storageUri {source!r}: pvc:// is not readable by servekit")
        _link_version(model_dir / str(version), materialize(str(source)))
    model_dir.joinpath("model.yaml").write_text(
        yaml.safe_dump(_model_yaml(predictor, FORMATS[fmt_name], path), sort_keys=False)
    )
    service: dict[str, Any] = {"name": name, "predictor": {"model": model, "version": "1"}}
    if canary_percent is not None:
        service["canary"] = {"model": model, "version": "2", "traffic_percent": canary_percent}
    deployments = workdir / "deployments.yaml"
    deployments.write_text(yaml.safe_dump({"services": [service]}, sort_keys=False))
    logger_cfg = predictor.get("logger") or {}
    return ImportedService(
        name=name,
        model=model,
        repository=repository,
        deployments=deployments,
        logger_url=logger_cfg.get("url"),
        logger_mode=logger_cfg.get("mode", "all"),
        warnings=warnings,
    )


def _model_yaml(predictor: dict, fmt: str, path: Path) -> dict[str, Any]:
    config: dict[str, Any] = {"format": fmt, "version_policy": {"all": True}}
    if predictor.get("minReplicas") == 0:
        config["idle_unload_after"] = SCALE_TO_ZERO_IDLE_SECONDS
    batcher = predictor.get("batcher")
    if isinstance(batcher, dict):
        batching: dict[str, Any] = {"max_batch_size": int(batcher.get("maxBatchSize", 32))}
        if "maxLatency" in batcher:  # KServe: milliseconds
            batching["max_batch_delay_ms"] = float(batcher["maxLatency"])
        if "timeout" in batcher:  # KServe: seconds
            batching["timeout_ms"] = float(batcher["timeout"]) * 1000.0
        config["batching"] = batching
    return config


def _link_version(target: Path, source: Path) -> None:
    """A version folder holding the artifact(s) at ``source`` (a folder or a single file)."""
    if source.is_dir():
        target.symlink_to(source.resolve(), target_is_directory=True)
    else:
        target.mkdir()
        (target / source.name).symlink_to(source.resolve())


def _get(document: Any, dotted: str, split: bool = True) -> Any:
    node = document
    parts = dotted.split(".") if split else _split_annotation(dotted)
    for part in parts:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _split_annotation(dotted: str) -> list[str]:
    head, _, key = dotted.partition(".annotations.")
    return [*head.split("."), "annotations", key]


def _leaves(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, dict) or not node:
        return [prefix] if prefix else []
    keys = []
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if prefix.endswith("annotations"):
            keys.append(path)
        else:
            keys.extend(_leaves(value, path))
    return keys


# -- export ------------------------------------------------------------------------------------


NOT_EXPORTED = ("transformer", "shadow", "sticky", "experiment")
"""Service fields an InferenceService cannot express (KServe transformers are containers)."""


def export_warnings(service: dict[str, Any]) -> list[str]:
    return [
        f"service {service.get('name')!r}: {key}: has no InferenceService equivalent, left out"
        for key in NOT_EXPORTED
        if service.get(key)
    ]


def export_inference_service(
    service: dict[str, Any], storage: Callable[[str, str | None], tuple[str, str]]
) -> dict[str, Any]:
    """An InferenceService for a service spec; ``storage(model, version)`` -> (format, uri).

    The canary becomes the predictor's storageUri with ``canaryTrafficPercent``; the stable
    predictor goes to the annotation (KServe would keep it as the previous revision)."""
    predictor = service.get("predictor")
    canary = service.get("canary")
    if predictor is None:
        raise ConfigError(f"service {service.get('name')!r}: only services with a predictor export")
    current = canary or predictor
    fmt, uri = storage(current["model"], current.get("version"))
    if fmt not in _REVERSE:
        raise ConfigError(f"model {current['model']!r}: format {fmt!r} has no KServe modelFormat")
    spec: dict[str, Any] = {"model": {"modelFormat": {"name": _REVERSE[fmt]}, "storageUri": uri}}
    metadata: dict[str, Any] = {"name": service["name"]}
    if canary is not None:
        _, stable_uri = storage(predictor["model"], predictor.get("version"))
        metadata["annotations"] = {STABLE_ANNOTATION: stable_uri}
        spec["canaryTrafficPercent"] = canary.get("traffic_percent", 0)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": metadata,
        "spec": {"predictor": spec},
    }
