"""TorchScript modules saved with ``torch.jit.save`` (.pt / .pth), run on the CPU.

A TorchScript file does not record its tensor types or names, so the signature comes from
model.yaml; undeclared, it is one FP32 matrix in and one out. One input calls ``model(x)``;
several call ``model(*inputs)`` in declared order. A returned tensor is ``output-0``, a tuple
or list ``output-0..n``, a dict is named by its keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from servekit.errors import InvalidInput
from servekit.runtimes.base import Runtime, Signature
from servekit.types.metadata import TensorSpec

DEFAULT_INPUT = TensorSpec("input-0", "FP32", (-1, -1))
DEFAULT_OUTPUT = TensorSpec("output-0", "FP32", (-1, -1))


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch.Tensor, without importing torch here
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _as_outputs(result: Any) -> dict[str, np.ndarray]:
    if isinstance(result, Mapping):
        return {str(k): _to_numpy(v) for k, v in result.items()}
    if isinstance(result, list | tuple):
        return {f"output-{i}": _to_numpy(v) for i, v in enumerate(result)}
    return {DEFAULT_OUTPUT.name: _to_numpy(result)}


class TorchScriptRuntime(Runtime):
    platform = "pytorch_torchscript"

    def load(self) -> None:
        # Imported here: torch is large, and the package must import without it.
        import torch

        # Process-wide in torch. Parallelism comes from concurrent requests instead.
        torch.set_num_threads(int(self.spec.parameters.get("threads", 1)))
        self._torch = torch
        self._model = torch.jit.load(str(self.spec.path), map_location="cpu")
        self._model.eval()

    def predict(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            result = self._model(*(self._tensor(name, a) for name, a in self._ordered(inputs)))
        produced = _as_outputs(result)
        if outputs is None:
            return produced
        return {name: array for name, array in produced.items() if name in outputs}

    def _ordered(self, inputs: Mapping[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
        """Declared order when model.yaml names the inputs, else the request's order."""
        if not self.spec.inputs:
            return list(inputs.items())
        missing = [s.name for s in self.spec.inputs if s.name not in inputs]
        if missing:
            raise InvalidInput(f"input '{missing[0]}' is missing from the request")
        return [(s.name, inputs[s.name]) for s in self.spec.inputs]

    def _tensor(self, name: str, array: np.ndarray) -> Any:
        if array.dtype.kind in "OUS":
            raise InvalidInput(f"input '{name}': TorchScript models take numeric tensors only")
        # torch.from_numpy shares memory but cannot wrap read-only buffers (raw request bytes).
        if not array.flags.writeable:
            array = array.copy()
        return self._torch.from_numpy(array)

    def signature(self) -> Signature:
        return Signature(
            list(self.spec.inputs or [DEFAULT_INPUT]), list(self.spec.outputs or [DEFAULT_OUTPUT])
        )

    def unload(self) -> None:
        self._model = None
