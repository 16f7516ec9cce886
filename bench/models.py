"""Train the two benchmark models and write them as joblib pickles (run in the servekit venv).

    python bench/models.py train OUTPUT_DIR
    python bench/models.py predict OUTPUT_DIR SECONDS     # the in-process ceiling, JSON on stdout

tiny: LogisticRegression on iris (4 features); medium: MLPClassifier (256, 256) on 32-feature,
4-class make_classification data. Fixed seeds, so every run gives the same models. Writes
``OUTPUT_DIR/<name>.joblib`` and ``OUTPUT_DIR/<name>.sample.json`` (one row to send).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

FEATURES = {"tiny": 4, "medium": 32}


def train(output_dir: Path) -> None:
    import joblib
    import sklearn
    from sklearn.datasets import load_iris, make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    output_dir.mkdir(parents=True, exist_ok=True)
    x_tiny, y_tiny = load_iris(return_X_y=True)
    tiny = LogisticRegression(max_iter=1000).fit(x_tiny, y_tiny)
    x_med, y_med = make_classification(
        n_samples=4000, n_features=32, n_informative=16, n_classes=4, random_state=0
    )
    medium = MLPClassifier(hidden_layer_sizes=(256, 256), max_iter=30, random_state=0)
    medium.fit(x_med, y_med)
    for name, model, x in (("tiny", tiny, x_tiny), ("medium", medium, x_med)):
        joblib.dump(model, output_dir / f"{name}.joblib")
        row = [round(float(v), 4) for v in x[0]]
        (output_dir / f"{name}.sample.json").write_text(json.dumps(row))
    (output_dir / "sklearn-version.txt").write_text(sklearn.__version__)


def predict_ceiling(output_dir: Path, seconds: float) -> dict[str, dict[str, float]]:
    """``model.predict`` in process: microseconds per call for a batch of 1 and of 32 rows."""
    import joblib
    import numpy as np

    results = {}
    for name in FEATURES:
        model = joblib.load(output_dir / f"{name}.joblib")
        row = np.asarray([json.loads((output_dir / f"{name}.sample.json").read_text())], "float32")
        timings = {}
        for batch in (1, 32):
            x = np.repeat(row, batch, axis=0)
            for _ in range(200):
                model.predict(x)
            calls, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds / 4:
                for _ in range(100):
                    model.predict(x)
                calls += 100
            timings[f"batch{batch}_us_per_call"] = elapsed / calls * 1e6
            timings[f"batch{batch}_rows_per_s"] = calls * batch / elapsed
        results[name] = timings
    return results


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")  # MLP convergence warning at max_iter=30 is expected
    if sys.argv[1] == "train":
        train(Path(sys.argv[2]))
        print(f"models written to {sys.argv[2]}")
    else:
        print(json.dumps(predict_ceiling(Path(sys.argv[2]), float(sys.argv[3]))))
