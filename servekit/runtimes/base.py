"""The one interface every framework runtime implements.

A runtime is batch-first: ``predict`` receives every input as a numpy array whose first axis
is the batch, and returns arrays whose first axis has the same length. Validation against the
signature, casting and output selection happen in the core, so runtimes stay small.
Batching and worker processes (later) wrap a runtime in an object with this same interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from servekit.types.metadata import TensorSpec


@dataclass(slots=True)
class ModelSpec:
    """What a runtime needs to load one version of one model."""

    name: str
    version: str
    path: Path
    """The artifact (a file) or the version folder when the runtime reads a folder."""
    parameters: dict[str, Any] = field(default_factory=dict)
    inputs: list[TensorSpec] | None = None
    """Declared in model.yaml; overrides what the runtime infers."""
    outputs: list[TensorSpec] | None = None


@dataclass(slots=True)
class Signature:
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class Runtime(ABC):
    """Load a model artifact and predict on numpy arrays.

    ``load``, ``predict`` and ``unload`` may be plain or ``async`` methods; the core checks once,
    at load time, and runs plain ones in a bounded thread pool so they never block the event loop.
    """

    platform: ClassVar[str] = "servekit_custom"

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec

    @abstractmethod
    def load(self) -> Any:
        """Read the artifact. Raise anything: the core records it as the model's load error."""

    @abstractmethod
    def predict(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> Any:
        """Return ``{output name: array}``. ``outputs`` lists the names the client asked for
        (``None``: all), so a runtime may skip computing the others."""

    @abstractmethod
    def signature(self) -> Signature:
        """Inputs and outputs, as inferred from the loaded artifact."""

    def unload(self) -> Any:
        """Release what ``load`` acquired. The default drops nothing but is safe to call."""
        return None


def single_input(inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """The feature matrix for runtimes that take one 2-D array.

    One input is used as is; several are stacked as columns in request order, so a client may
    send one tensor per feature.
    """
    arrays = list(inputs.values())
    if len(arrays) == 1:
        return arrays[0]
    columns = [a.reshape(a.shape[0], -1) for a in arrays]
    return np.concatenate(columns, axis=1)


def feature_input(name: str, n_features: int | None, datatype: str = "FP64") -> TensorSpec:
    return TensorSpec(name, datatype, (-1, n_features if n_features else -1))
