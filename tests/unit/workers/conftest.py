"""Fixtures for the worker pool tests (helpers live in pool_support.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pool_support import PROBE, write_model

from servekit.runtimes import ModelSpec
from servekit.workers import WorkerPoolRuntime


@pytest.fixture
def probe_pool(tmp_path: Path) -> Callable[..., WorkerPoolRuntime]:
    """``probe_pool(instances, **parameters)``: an unloaded pool serving the Probe model."""
    path = write_model(tmp_path / "probe", PROBE)

    def make(instances: int = 2, **kwargs: Any) -> WorkerPoolRuntime:
        parameters = kwargs.pop("parameters", {})
        spec = ModelSpec(name="probe", version="1", path=path, parameters=parameters)
        return WorkerPoolRuntime("custom", spec, instances, **kwargs)

    return make
