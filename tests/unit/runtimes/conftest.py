"""Shared helpers for the runtime tests: load an artifact the way the core does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from servekit.runtimes import ModelSpec, Runtime, resolve_runtime


def _load(fmt: str, path: Path, **spec: Any) -> Runtime:
    runtime = resolve_runtime(fmt)(ModelSpec(name="m", version="1", path=path, **spec))
    runtime.load()
    return runtime


@pytest.fixture
def load_runtime() -> Callable[..., Runtime]:
    """``load_runtime(format, artifact, parameters=..., inputs=...)``: a loaded runtime."""
    return _load
