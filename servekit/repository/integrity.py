"""Verified artifacts: a model.yaml may pin the sha256 of its files; a mismatch refuses the load."""

from __future__ import annotations

import hashlib
from pathlib import Path

from servekit.errors import ConfigError

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_artifacts(version_dir: Path, pinned: dict[str, str] | None) -> None:
    """Check every pinned file (paths relative to the version folder) before anything loads it."""
    for relative, expected in (pinned or {}).items():
        path = version_dir / relative
        if not path.is_file():
            raise ConfigError(f"{path}: pinned by sha256 in model.yaml but missing")
        actual = file_sha256(path)
        if actual != expected.lower():
            raise ConfigError(
                f"{path}: sha256 mismatch (model.yaml pins {expected.lower()}, file has {actual}); "
                "refusing to load"
            )
