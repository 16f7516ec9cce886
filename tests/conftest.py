"""Shared fixtures: the example repository built from scikit-learn's bundled data, and one real
server process serving it (plus two deliberately broken models) for the whole session."""

from __future__ import annotations

import importlib.util
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from services import PostgresServer, postgres_server

from servekit.testing import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
MAX_REQUEST_BYTES = 1_000_000

BROKEN_MODEL = textwrap.dedent(
    """
    import numpy as np
    import servekit
    from servekit.types import TensorSpec


    class Broken(servekit.Model):
        '''Doubles its input, and raises for negative values: a model with a bug.'''

        inputs = [TensorSpec("x", "FP64", (-1,))]
        outputs = [TensorSpec("y", "FP64", (-1,))]

        def predict(self, inputs):
            x = inputs["x"]
            if (x < 0).any():
                raise ValueError("negative input")
            return {"y": x * 2}
    """
)


def load_training_script() -> Any:
    spec = importlib.util.spec_from_file_location("train_models", EXAMPLES / "train_models.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def example_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A copy of examples/models with freshly trained artifacts."""
    repo = tmp_path_factory.mktemp("examples") / "models"
    shutil.copytree(EXAMPLES / "models", repo, ignore=shutil.ignore_patterns("[0-9]*", "*.npz"))
    info = load_training_script().build_repository(repo)
    return repo, info


@pytest.fixture(scope="session")
def serving_repo(example_repo: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The examples plus a model whose predict raises and one that cannot load."""
    repo = tmp_path_factory.mktemp("serving") / "models"
    shutil.copytree(example_repo[0], repo)
    (repo / "broken").mkdir()
    (repo / "broken" / "model.py").write_text(BROKEN_MODEL)
    (repo / "corrupt" / "1").mkdir(parents=True)
    (repo / "corrupt" / "1" / "model.joblib").write_bytes(b"this is not a pickle")
    # The example deployments, read next to the repository as `servekit serve` does.
    shutil.copytree(EXAMPLES / "deployments", repo.parent / "deployments")
    return repo


@pytest.fixture(scope="session")
def server(serving_repo: Path) -> Iterator[ServerProcess]:
    env = {
        "SERVEKIT_STRICT_READINESS": "false",
        "SERVEKIT_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
        "OMP_NUM_THREADS": "1",
    }
    with ServerProcess(serving_repo, env=env) as process:
        yield process


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server (Debian's packages, installed if missing) for the session.

    Tests that ``stop()`` it must ``start()`` it again before they end.
    """
    with postgres_server() as cluster:
        yield cluster
