"""Millimetres in, centimetres out: a sequence step whose tensors need renaming."""

from __future__ import annotations

import numpy as np

import servekit


class Centimetres(servekit.Model):
    inputs = [servekit.TensorSpec("mm", "FP32", (-1, 4))]
    outputs = [servekit.TensorSpec("cm", "FP32", (-1, 4))]

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"cm": (inputs["mm"] / 10).astype(np.float32)}
