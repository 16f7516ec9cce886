"""A node with a bug: it always raises (the graph's error must name it)."""

from __future__ import annotations

import numpy as np

import servekit


class Broken(servekit.Model):
    inputs = [servekit.TensorSpec("input-0", "FP32", (-1, 4))]
    outputs = [servekit.TensorSpec("predict", "INT64", (-1,))]

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise RuntimeError("this node is broken")
