"""Warm-up inputs synthesised from a signature: one row of zeros per declared input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from servekit.errors import ConfigError
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


def warmup_inputs(
    sample: str | None, version_dir: Path, specs: list[TensorSpec]
) -> dict[str, np.ndarray]:
    """Inputs for warm-up requests: a JSON file ``{input name: nested list}`` in the version
    folder, or one row of zeros built from the signature."""
    if sample is None:
        inputs = sample_inputs(specs)
        if inputs is None:
            raise ConfigError("the signature leaves dimensions open: give warmup.sample")
        return inputs
    path = version_dir / sample
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the warm-up sample: {exc}") from None
    types = {spec.name: NUMPY_DTYPES[spec.datatype] for spec in specs}
    return {name: np.asarray(values, dtype=types.get(name)) for name, values in document.items()}
