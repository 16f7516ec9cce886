"""Read a model repository folder: ``REPO/<model>/[<version>/]<artifact>`` + ``model.yaml``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from servekit.errors import ConfigError, ServekitError
from servekit.repository.config import ModelConfig, read_model_config
from servekit.repository.formats import find_artifact, infer_format

DEFAULT_VERSION = "1"


@dataclass(slots=True)
class VersionSource:
    version: str
    format: str | None
    artifact: Path | None
    error: str | None = None


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


def _read_version(version: str, version_dir: Path, config: ModelConfig) -> VersionSource:
    try:
        if config.format:
            return VersionSource(version, config.format, find_artifact(version_dir, config.format))
        fmt, artifact = infer_format(version_dir)
        return VersionSource(version, fmt, artifact)
    except ServekitError as exc:
        return VersionSource(version, config.format, None, error=str(exc))


def read_model(model_dir: Path) -> ModelSource:
    try:
        config = read_model_config(model_dir)
    except ConfigError as exc:
        return ModelSource(model_dir.name, model_dir, ModelConfig(), error=str(exc))
    source = ModelSource(config.name or model_dir.name, model_dir, config)
    found = _version_dirs(model_dir)
    wanted = config.versions if config.versions is not None else sorted(found, key=int)
    for version in wanted:
        if version not in found:
            source.versions.append(
                VersionSource(version, config.format, None, f"{model_dir}/{version}: not found")
            )
            continue
        source.versions.append(_read_version(version, found[version], config))
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
