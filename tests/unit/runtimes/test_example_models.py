"""The example repository: every model trains, loads through its runtime and serves."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import yaml

from servekit.repository.config import read_model_config
from servekit.repository.local import scan_repository
from servekit.runtimes import ModelSpec, resolve_runtime
from servekit.types.tensors import NUMPY_DTYPES

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _train_models_module():
    spec = importlib.util.spec_from_file_location("train_models", EXAMPLES / "train_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return root, _train_models_module().build_repository(root)


def test_every_model_and_version_is_found_with_its_format(repository):
    root, built = repository

    sources = {source.name: source for source in scan_repository(root)}

    assert sorted(sources) == sorted(built)
    for name, source in sources.items():
        assert source.error is None
        assert [v.error for v in source.versions] == [None] * len(source.versions)
        assert {v.format for v in source.versions} == {built[name]["format"]}
    assert [v.version for v in sources["iris"].versions] == ["1", "2"]


def test_served_predictions_reproduce_the_recorded_metrics(repository):
    root, built = repository
    for source in scan_repository(root):
        X, y = built[source.name]["X"], built[source.name]["y"]
        declared = [t.to_spec() for t in source.config.inputs or []]
        for version in source.versions:
            spec = ModelSpec(
                source.name,
                version.version,
                version.artifact,
                dict(source.config.parameters),
                declared or None,
            )
            runtime = resolve_runtime(version.format)(spec)
            runtime.load()
            (signature_input,) = declared or runtime.signature().inputs
            features = X.astype(NUMPY_DTYPES[signature_input.datatype])

            predicted = runtime.predict({signature_input.name: features})["predict"]

            metrics = source.config.lineage["versions"][version.version]["metrics"]
            if "accuracy" in metrics:
                assert np.mean(predicted == y) == pytest.approx(metrics["accuracy"], abs=1e-4)
            else:  # the ONNX regressor runs in float32
                r2 = 1 - np.sum((y - predicted[:, 0]) ** 2) / np.sum((y - y.mean()) ** 2)
                assert r2 == pytest.approx(metrics["r2"], abs=1e-3)


def test_lineage_is_filled_in_and_the_hand_written_part_kept(repository):
    root, _ = repository
    for committed in sorted((EXAMPLES / "models").glob("*/model.yaml")):
        generated = root / committed.parent.name / "model.yaml"
        head = committed.read_text().split("\nlineage:")[0]
        assert generated.read_text().startswith(head)
        lineage = yaml.safe_load(generated.read_text())["lineage"]
        assert len(lineage["data_sha256"]) == 64
        assert lineage["data"].startswith("sklearn.datasets.load_")
        assert lineage["versions"]


def test_committed_configs_are_valid():
    for model_dir in sorted(p for p in (EXAMPLES / "models").iterdir() if p.is_dir()):
        config = read_model_config(model_dir)
        assert config.lineage["code"] == "examples/train_models.py"
