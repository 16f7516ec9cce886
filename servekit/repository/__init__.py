"""Model repositories: folder layout, model.yaml, format inference."""

from servekit.repository.config import ModelConfig, TensorConfig
from servekit.repository.local import ModelSource, VersionSource, scan_repository

__all__ = ["ModelConfig", "ModelSource", "TensorConfig", "VersionSource", "scan_repository"]
