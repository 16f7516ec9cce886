"""ONNX models run with onnxruntime on the CPU.

The graph declares its own inputs and outputs, so the signature is read from the session.
Only tensor outputs are served: sequence and map outputs (scikit-learn classifiers converted
with skl2onnx's ZipMap) have no V2 tensor form; convert with ``options={id(model):
{"zipmap": False}}`` to get the probabilities as a tensor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from servekit.errors import ConfigError, InvalidInput
from servekit.runtimes.base import Runtime, Signature
from servekit.types.metadata import TensorSpec
from servekit.types.tensors import NUMPY_DTYPES

# onnxruntime's type strings for the element types that have a V2 datatype.
ONNX_DATATYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def _tensor_spec(node: Any) -> TensorSpec | None:
    """The V2 spec of a graph input or output; None when it is not a supported tensor."""
    datatype = ONNX_DATATYPES.get(node.type)
    if datatype is None:
        return None
    # Symbolic ("batch") and unknown (None) dimensions are variable.
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in node.shape or ())
    return TensorSpec(node.name, datatype, shape)


def _split(nodes: Sequence[Any]) -> tuple[list[TensorSpec], list[Any]]:
    """Graph nodes as (tensor specs, the nodes that are not supported tensors)."""
    specs: list[TensorSpec] = []
    others: list[Any] = []
    for node in nodes:
        spec = _tensor_spec(node)
        if spec is None:
            others.append(node)
        else:
            specs.append(spec)
    return specs, others


def _describe(nodes: Sequence[Any]) -> str:
    return ", ".join(f"{node.name}: {node.type}" for node in nodes)


def _as_strings(array: np.ndarray) -> np.ndarray:
    """onnxruntime wants str elements; V2 BYTES tensors hold bytes."""
    flat = [x.decode() if isinstance(x, bytes) else str(x) for x in array.reshape(-1)]
    return np.array(flat, dtype=object).reshape(array.shape)


class ONNXRuntime(Runtime):
    platform = "onnx_onnxv1"

    def load(self) -> None:
        import onnxruntime  # the onnx extra brings it; imported here, so other runtimes need not

        options = onnxruntime.SessionOptions()
        # Parallelism comes from concurrent requests; one thread per call keeps latency steady.
        options.intra_op_num_threads = int(self.spec.parameters.get("threads", 1))
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            str(self.spec.path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._inputs, unsupported = _split(session.get_inputs())
        if unsupported:
            raise ConfigError(
                f"{self.spec.path}: only tensor inputs can be fed ({_describe(unsupported)})"
            )
        self._outputs, skipped = _split(session.get_outputs())
        self._not_tensors = {node.name: node.type for node in skipped}
        if not self._outputs:
            raise ConfigError(
                f"{self.spec.path}: the graph has no tensor outputs ({_describe(skipped)}); "
                "for skl2onnx classifiers convert with options={id(model): {'zipmap': False}}"
            )
        self._session = session

    def predict(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> dict[str, np.ndarray]:
        names = [s.name for s in self._outputs] if outputs is None else list(outputs)
        for name in names:
            if name in self._not_tensors:
                raise InvalidInput(
                    f"output '{name}' is a {self._not_tensors[name]}, not a tensor, and cannot "
                    "be served; re-export the model with tensor outputs (skl2onnx: zipmap=False)"
                )
        results = self._session.run(names, self._feeds(inputs))
        return dict(zip(names, results, strict=True))

    def _feeds(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # A single-input graph takes the one array whatever model.yaml named it.
        if len(self._inputs) == 1 and len(inputs) == 1 and self._inputs[0].name not in inputs:
            inputs = {self._inputs[0].name: next(iter(inputs.values()))}
        feeds = {}
        for spec in self._inputs:
            array = inputs.get(spec.name)
            if array is None:
                raise InvalidInput(f"input '{spec.name}' is missing; the graph needs it")
            if spec.datatype == "BYTES":
                feeds[spec.name] = _as_strings(array)
            else:  # a no-op unless model.yaml declared another datatype than the graph's
                feeds[spec.name] = np.asarray(array, dtype=NUMPY_DTYPES[spec.datatype])
        return feeds

    def signature(self) -> Signature:
        return Signature(list(self._inputs), list(self._outputs))

    def unload(self) -> None:
        self._session = None
