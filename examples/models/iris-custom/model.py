"""Iris by nearest centroid: a custom servekit model in a few lines of numpy.

``examples/train_models.py`` writes ``weights.npz`` (one centroid per class) next to this file.
"""

from __future__ import annotations

import numpy as np

import servekit


class IrisNearestCentroid(servekit.Model):
    inputs = [servekit.TensorSpec("input-0", "FP64", (-1, 4))]
    outputs = [
        servekit.TensorSpec("predict", "INT64", (-1,)),
        servekit.TensorSpec("distance", "FP64", (-1, 3)),
    ]

    def load(self) -> None:
        with np.load(self.path / "weights.npz") as weights:
            self.centroids = weights["centroids"]
            self.classes = weights["classes"]

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        features = inputs["input-0"]
        # Euclidean distance from every row to every centroid: shape (rows, classes).
        distance = np.linalg.norm(features[:, None, :] - self.centroids[None, :, :], axis=2)
        return {"predict": self.classes[distance.argmin(axis=1)], "distance": distance}
