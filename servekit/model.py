"""``servekit.Model``: write a few lines of Python, get every protocol.

Subclass it in a ``model.py`` inside the model's version folder::

    import numpy as np
    import servekit

    class Doubler(servekit.Model):
        def load(self):
            self.factor = 2.0

        def predict(self, inputs):
            return {"output-0": inputs["input-0"] * self.factor}

Each hook may be ``async``. ``preprocess`` receives ``{input name: array}``; whatever it returns
goes to ``predict``; whatever ``predict`` returns goes to ``postprocess``, which must end with
``{output name: array}`` (a bare array becomes ``output-0``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from servekit.types.metadata import TensorSpec


class Model:
    """Base class for custom Python models (the KServe / MLServer custom model pattern)."""

    inputs: ClassVar[list[TensorSpec] | None] = None
    """Declare the signature here or in model.yaml; if left out, inputs pass unchecked."""
    outputs: ClassVar[list[TensorSpec] | None] = None

    def __init__(self, name: str, path: Path, parameters: dict[str, Any]) -> None:
        self.name = name
        self.path = path
        """The version folder: read your artifacts relative to it."""
        self.parameters = parameters

    def load(self) -> Any:
        """Load weights or open resources. Runs once before the model takes traffic."""
        return None

    def preprocess(self, inputs: dict[str, Any]) -> Any:
        return inputs

    def predict(self, data: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement predict()")

    def postprocess(self, result: Any) -> Any:
        return result

    def unload(self) -> Any:
        return None
