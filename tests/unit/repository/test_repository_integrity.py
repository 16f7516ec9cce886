"""Pinned sha256 digests: a match loads, a mismatch or a missing file is refused by name."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from servekit.errors import ConfigError
from servekit.repository.integrity import verify_artifacts


def test_matching_digest_passes(tmp_path: Path) -> None:
    (tmp_path / "model.joblib").write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    verify_artifacts(tmp_path, {"model.joblib": digest.upper()})  # case does not matter


def test_mismatch_names_the_file_and_both_digests(tmp_path: Path) -> None:
    (tmp_path / "model.joblib").write_bytes(b"tampered")
    with pytest.raises(ConfigError) as info:
        verify_artifacts(tmp_path, {"model.joblib": "ab" * 32})
    message = str(info.value)
    assert "model.joblib: sha256 mismatch" in message
    assert "ab" * 32 in message and hashlib.sha256(b"tampered").hexdigest() in message


def test_missing_pinned_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pinned by sha256 in model.yaml but missing"):
        verify_artifacts(tmp_path, {"model.onnx": "00" * 32})


def test_nothing_pinned_checks_nothing(tmp_path: Path) -> None:
    verify_artifacts(tmp_path, {})
    verify_artifacts(tmp_path, None)
