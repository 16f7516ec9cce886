"""Warm-up inputs synthesised from a signature: one row of zeros per declared input."""

from __future__ import annotations

import numpy as np

from servekit.types.metadata import TensorSpec
from servekit.types.tensors import NUMPY_DTYPES

MAX_SAMPLE_ELEMENTS = 1_000_000


def sample_inputs(specs: list[TensorSpec]) -> dict[str, np.ndarray] | None:
    """A batch of one row, or None when the signature leaves a non-batch dimension open."""
    if not specs:
        return None
    sample = {}
    for spec in specs:
        if spec.datatype == "BYTES" or not spec.shape:
            return None
        rest = spec.shape[1:]
        if any(d < 0 for d in rest) or int(np.prod(rest, dtype=np.int64)) > MAX_SAMPLE_ELEMENTS:
            return None
        sample[spec.name] = np.zeros((1, *rest), dtype=NUMPY_DTYPES[spec.datatype])
    return sample
