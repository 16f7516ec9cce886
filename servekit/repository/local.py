"""Read a model repository folder: ``REPO/<model>/[<version>/]<artifact>`` + ``model.yaml``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from servekit.errors import ConfigError, ServekitError
from servekit.repository.config import MODEL_CONFIG_FILE, ModelConfig, read_model_config
from servekit.repository.formats import find_artifact, infer_format

DEFAULT_VERSION = "1"


@dataclass(slots=True)
class VersionSource:
    version: str
    format: str | None
    artifact: Path | None
    error: str | None = None
    directory: Path | None = None
    fingerprint: str = ""
    """Changes whenever a file of the version or the model's model.yaml changes."""


@dataclass(slots=True)
class ModelSource:
    """What the repository says about one model, problems included (they never hide a model)."""

    name: str
    path: Path
    config: ModelConfig
    versions: list[VersionSource] = field(default_factory=list)
    error: str | None = None


def _version_dirs(model_dir: Path) -> dict[str, Path]:
    numbered = {p.name: p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()}
    if numbered:
        return numbered
    return {DEFAULT_VERSION: model_dir}


def _fingerprint(version_dir: Path, config_text: bytes) -> str:
    """Cheap change detection: names, sizes and modification times, plus model.yaml."""
    digest = hashlib.sha256(config_text)
    for path in sorted(version_dir.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            stat = path.stat()
            digest.update(
                f"{path.relative_to(version_dir)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode()
            )
    return digest.hexdigest()


def _read_version(
    version: str, version_dir: Path, config: ModelConfig, config_text: bytes
) -> VersionSource:
    fingerprint = _fingerprint(version_dir, config_text)
    try:
        if config.format:
            artifact = find_artifact(version_dir, config.format)
            return VersionSource(version, config.format, artifact, None, version_dir, fingerprint)
        fmt, artifact = infer_format(version_dir)
        return VersionSource(version, fmt, artifact, None, version_dir, fingerprint)
    except ServekitError as exc:
        return VersionSource(version, config.format, None, str(exc), version_dir, fingerprint)


def read_model(model_dir: Path) -> ModelSource:
    try:
        config = read_model_config(model_dir)
    except ConfigError as exc:
        return ModelSource(model_dir.name, model_dir, ModelConfig(), error=str(exc))
    source = ModelSource(config.name or model_dir.name, model_dir, config)
    found = _version_dirs(model_dir)
    config_file = model_dir / MODEL_CONFIG_FILE
    config_text = config_file.read_bytes() if config_file.is_file() else b""
    for version in config.policy().choose(sorted(found, key=int)):
        if version not in found:
            source.versions.append(
                VersionSource(version, config.format, None, f"{model_dir}/{version}: not found")
            )
            continue
        source.versions.append(_read_version(version, found[version], config, config_text))
    return source


def scan_repository(root: Path) -> list[ModelSource]:
    """Every model folder under ``root``; hidden folders and loose files are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"model repository {str(root)!r} is not a folder")
    models = [
        read_model(p)
        for p in sorted(root.iterdir())
        if p.is_dir() and not p.name.startswith((".", "_"))
    ]
    names = [m.name for m in models]
    duplicates = {n for n in names if names.count(n) > 1}
    for model in models:
        if model.name in duplicates:
            model.error = f"model name {model.name!r} is used by more than one folder"
    return models
