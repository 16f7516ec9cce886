"""Train the example models and write them as a servekit model repository.

    python examples/train_models.py [OUTPUT_DIR]      # default: examples/models

Only scikit-learn's bundled datasets are used (nothing is downloaded), every random state is
fixed and every model uses one thread, so a run takes seconds and gives the same models.

Hand-written files live in ``examples/models`` and are committed: each ``model.yaml`` and the
custom model's ``model.py``. This script writes the artifacts (version folders and the custom
model's ``weights.npz``), copies the committed files when OUTPUT_DIR is elsewhere, and rewrites
the ``lineage:`` block that ends each model.yaml (keep it the last key). Lineage holds no
timestamps: ``code_revision`` is the git blob id of this script (``git hash-object
examples/train_models.py``), so a rerun leaves the committed files unchanged unless the script,
the data or a framework version changed.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import lightgbm
import numpy as np
import onnx
import sklearn
import xgboost
import yaml
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

SCRIPT = Path(__file__).resolve()
COMMITTED = SCRIPT.parent / "models"
COMMITTED_FILES = ("model.yaml", "model.py")
RANDOM_STATE = 0
TEST_SIZE = 0.25


class Split:
    """A bundled dataset, its fingerprint and a fixed train/test split."""

    def __init__(self, loader: Callable[..., Any], classification: bool) -> None:
        features, target = loader(return_X_y=True)
        self.source = f"sklearn.datasets.{loader.__name__}"
        digest = hashlib.sha256(np.ascontiguousarray(features, dtype="<f8").tobytes())
        digest.update(np.ascontiguousarray(target, dtype="<f8").tobytes())
        self.sha256 = digest.hexdigest()
        self.X_train, self.X_test, self.y_train, self.y_test = train_test_split(
            features,
            target,
            test_size=TEST_SIZE,
            random_state=RANDOM_STATE,
            stratify=target if classification else None,
        )

    def lineage(self, frameworks: dict[str, str], versions: dict[str, Any]) -> dict[str, Any]:
        return {
            "code": "examples/train_models.py",
            "code_revision": _git_blob_id(SCRIPT),
            "data": self.source,
            "data_sha256": self.sha256,
            "split": {"test_size": TEST_SIZE, "random_state": RANDOM_STATE},
            "frameworks": frameworks,
            "versions": versions,
        }


def _git_blob_id(path: Path) -> str:
    content = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _accuracy(predicted: np.ndarray, expected: np.ndarray) -> float:
    return round(float(np.mean(predicted == expected)), 4)


def _trained(estimator: str, parameters: dict[str, Any], metrics: dict[str, float]) -> dict:
    return {"estimator": estimator, "parameters": parameters, "metrics": metrics}


def _version_dir(model_dir: Path, version: str) -> Path:
    """An empty version folder: stale artifacts would make the format ambiguous."""
    path = model_dir / version
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def train_iris(model_dir: Path) -> Split:
    split = Split(load_iris, classification=True)
    versions = {}
    for version, model, params in (
        ("1", LogisticRegression(max_iter=1000), {"max_iter": 1000}),
        (
            "2",
            RandomForestClassifier(n_estimators=20, random_state=RANDOM_STATE, n_jobs=1),
            {"n_estimators": 20, "random_state": RANDOM_STATE},
        ),
    ):
        model.fit(split.X_train, split.y_train)
        joblib.dump(model, _version_dir(model_dir, version) / "model.joblib")
        accuracy = _accuracy(model.predict(split.X_test), split.y_test)
        name = f"{type(model).__module__.split('._')[0]}.{type(model).__name__}"
        versions[version] = _trained(name, params, {"accuracy": accuracy})
    _write_lineage(model_dir, split.lineage({"scikit-learn": sklearn.__version__}, versions))
    write_reference(model_dir / "reference.csv", split.X_train, split.y_train)
    return split


IRIS_FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def write_reference(path: Path, features: np.ndarray, target: np.ndarray) -> None:
    """The training split as the monitors' reference (model.yaml's monitoring.reference)."""
    table = np.column_stack([features, target])
    header = ",".join([*IRIS_FEATURES, "species"])
    np.savetxt(path, table, delimiter=",", header=header, comments="", fmt="%.17g")


def train_wine_xgboost(model_dir: Path) -> Split:
    split = Split(load_wine, classification=True)
    params = {"n_estimators": 20, "max_depth": 3, "random_state": RANDOM_STATE}
    model = xgboost.XGBClassifier(**params, n_jobs=1).fit(split.X_train, split.y_train)
    model.get_booster().save_model(_version_dir(model_dir, "1") / "model.json")
    accuracy = _accuracy(model.predict(split.X_test), split.y_test)
    trained = _trained("xgboost.XGBClassifier", params, {"accuracy": accuracy})
    _write_lineage(model_dir, split.lineage({"xgboost": xgboost.__version__}, {"1": trained}))
    return split


def train_breast_cancer_lightgbm(model_dir: Path) -> Split:
    split = Split(load_breast_cancer, classification=True)
    params = {"n_estimators": 20, "random_state": RANDOM_STATE}
    model = lightgbm.LGBMClassifier(**params, n_jobs=1, verbose=-1)
    model.fit(split.X_train, split.y_train)
    model.booster_.save_model(_version_dir(model_dir, "1") / "model.txt")
    accuracy = _accuracy(model.predict(split.X_test), split.y_test)
    trained = _trained("lightgbm.LGBMClassifier", params, {"accuracy": accuracy})
    _write_lineage(model_dir, split.lineage({"lightgbm": lightgbm.__version__}, {"1": trained}))
    return split


def _rename(model: onnx.ModelProto, old: str, new: str) -> None:
    """skl2onnx turns '-' into '_' in tensor names; give the graph the protocol's names."""
    graph = model.graph
    for value in (*graph.input, *graph.output):
        if value.name == old:
            value.name = new
    for node in graph.node:
        for names in (node.input, node.output):
            for i, name in enumerate(names):
                if name == old:
                    names[i] = new


def train_diabetes_onnx(model_dir: Path) -> Split:
    split = Split(load_diabetes, classification=False)
    pipeline = make_pipeline(StandardScaler(), Ridge()).fit(split.X_train, split.y_train)
    converted = convert_sklearn(pipeline, initial_types=[("input-0", FloatTensorType([None, 10]))])
    _rename(converted, converted.graph.input[0].name, "input-0")
    _rename(converted, converted.graph.output[0].name, "predict")
    onnx.checker.check_model(converted)
    onnx.save(converted, _version_dir(model_dir, "1") / "model.onnx")
    r2 = round(float(pipeline.score(split.X_test, split.y_test)), 4)
    trained = _trained("sklearn.pipeline.Pipeline(StandardScaler, Ridge)", {}, {"r2": r2})
    frameworks = {"scikit-learn": sklearn.__version__, "onnx": onnx.__version__}
    _write_lineage(model_dir, split.lineage(frameworks, {"1": trained}))
    return split


def train_iris_custom(model_dir: Path) -> Split:
    """Nearest centroid: the weights the hand-written model.py loads."""
    split = Split(load_iris, classification=True)
    classes = np.unique(split.y_train)
    centroids = np.stack([split.X_train[split.y_train == c].mean(axis=0) for c in classes])
    model_dir.mkdir(parents=True, exist_ok=True)
    np.savez(model_dir / "weights.npz", centroids=centroids, classes=classes.astype(np.int64))
    distance = np.linalg.norm(split.X_test[:, None, :] - centroids[None, :, :], axis=2)
    accuracy = _accuracy(classes[distance.argmin(axis=1)], split.y_test)
    trained = _trained(
        "nearest centroid (examples/models/iris-custom/model.py)", {}, {"accuracy": accuracy}
    )
    _write_lineage(model_dir, split.lineage({"numpy": np.__version__}, {"1": trained}))
    return split


MODELS: dict[str, tuple[str, Callable[[Path], Split]]] = {
    "iris": ("sklearn", train_iris),
    "wine-xgboost": ("xgboost", train_wine_xgboost),
    "breast-cancer-lightgbm": ("lightgbm", train_breast_cancer_lightgbm),
    "diabetes-onnx": ("onnx", train_diabetes_onnx),
    "iris-custom": ("custom", train_iris_custom),
}


def _copy_committed(output_dir: Path, name: str) -> None:
    source = COMMITTED / name
    target = output_dir / name
    target.mkdir(parents=True, exist_ok=True)
    if source.resolve() == target.resolve():
        return
    for filename in COMMITTED_FILES:
        if (source / filename).exists():
            shutil.copyfile(source / filename, target / filename)


def _write_lineage(model_dir: Path, lineage: dict[str, Any]) -> None:
    """Replace the trailing ``lineage:`` block of model.yaml, keeping the hand-written rest."""
    path = model_dir / "model.yaml"
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    kept = []
    for line in lines:
        if line.startswith("lineage:"):
            break
        kept.append(line)
    block = yaml.safe_dump({"lineage": lineage}, sort_keys=False, default_flow_style=False)
    path.write_text("".join(kept) + block)


def build_repository(output_dir: Path) -> dict[str, dict[str, Any]]:
    """Write every example model under ``output_dir``.

    Returns ``{model name: {"X": held-out features, "y": their targets, "format": runtime}}``
    so tests can send rows the models were not trained on and check the recorded metrics.
    """
    output_dir = Path(output_dir)
    built = {}
    for name, (fmt, train) in MODELS.items():
        _copy_committed(output_dir, name)
        split = train(output_dir / name)
        built[name] = {"X": split.X_test, "y": split.y_test, "format": fmt}
    return built


def main(argv: list[str]) -> None:
    output_dir = Path(argv[0]) if argv else COMMITTED
    built = build_repository(output_dir)
    for name, info in built.items():
        model_dir = output_dir / name
        files = sorted(
            str(p.relative_to(output_dir))
            for p in model_dir.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        )
        print(f"{name:<24} {info['format']:<9} {', '.join(files)}")
    print(f"model repository: {output_dir}")


if __name__ == "__main__":
    main(sys.argv[1:])
