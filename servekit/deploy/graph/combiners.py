"""Ensemble combiners: merge the outputs of several nodes into one set of outputs, by name.

Every combiner has one signature, ``combine({node: {output: array}}, names) -> {output: array}``,
so the built-ins and a user's ``"module:function"`` are interchangeable. ``names`` are the outputs
to combine (the spec's ``outputs``, or those every node returned).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from scipy import stats

from servekit.deploy import usercode
from servekit.errors import ConfigError, InvalidInput

NodeOutputs = Mapping[str, Mapping[str, np.ndarray]]
Combiner = Callable[[NodeOutputs, list[str]], dict[str, np.ndarray]]


def _stacked(outputs: NodeOutputs, name: str) -> np.ndarray:
    arrays = [np.asarray(node[name]) for node in outputs.values()]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise InvalidInput(f"output '{name}' has different shapes across nodes: {sorted(shapes)}")
    return np.stack(arrays)


def mean(outputs: NodeOutputs, names: list[str]) -> dict[str, np.ndarray]:
    """Element-wise average (probabilities, regression values)."""
    combined = {}
    for name in names:
        stacked = _stacked(outputs, name)
        if stacked.dtype.kind not in "biuf":
            raise InvalidInput(f"combiner 'mean': output '{name}' is not numeric")
        combined[name] = stacked.mean(axis=0)
    return combined


def vote(outputs: NodeOutputs, names: list[str]) -> dict[str, np.ndarray]:
    """Element-wise majority (class labels, numbers or strings); a tie goes to the smallest."""
    combined = {}
    for name in names:
        stacked = _stacked(outputs, name)
        values, codes = np.unique(stacked, return_inverse=True)
        winners = stats.mode(codes.reshape(stacked.shape), axis=0, keepdims=False).mode
        combined[name] = values[winners]
    return combined


COMBINERS: dict[str, Combiner] = {"mean": mean, "vote": vote}
"""Built-in combiners by name; anything else in the spec is a ``"module:function"``."""


def resolve_combiner(reference: str, folder: Path, where: str) -> Combiner:
    """A built-in by name, or a user function ``"module:function"`` / ``"file.py:function"``."""
    if reference in COMBINERS:
        return COMBINERS[reference]
    module_name, _, function_name = reference.rpartition(":")
    if not module_name or not function_name:
        raise ConfigError(
            f"{where}: unknown combiner {reference!r}; use one of {sorted(COMBINERS)} "
            "or 'module:function'"
        )
    try:
        module = usercode.import_module(module_name, folder)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - user code: any import failure is a spec error
        raise ConfigError(f"{where}: cannot import {module_name!r}: {exc}") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(f"{where}: {module_name!r} has no function {function_name!r}")
    return function
