"""Check a request against a model's signature and shape the runtime's answer into tensors."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np

from servekit.errors import InferenceError, InvalidInput
from servekit.types.inference import RequestedOutput
from servekit.types.metadata import TensorSpec
from servekit.types.tensors import (
    NUMPY_DTYPES,
    Tensor,
    cast_to,
    datatype_kind,
    datatype_of,
)


def _shape_fits(declared: tuple[int, ...], actual: tuple[int, ...]) -> bool:
    if len(declared) != len(actual):
        return False
    for want, got in zip(declared, actual, strict=True):  # noqa: SIM110 - no generator per request
        if want != got and want != -1:
            return False
    return True


def _check_one(model: str, spec: TensorSpec, tensor: Tensor) -> np.ndarray:
    same_type = spec.datatype == tensor.datatype
    if not same_type and datatype_kind(spec.datatype) != datatype_kind(tensor.datatype):
        raise InvalidInput(
            f"model '{model}' input '{spec.name}': expected datatype {spec.datatype}, "
            f"got {tensor.datatype}"
        )
    data = tensor.data
    if not _shape_fits(spec.shape, data.shape):
        raise InvalidInput(
            f"model '{model}' input '{spec.name}': expected shape {list(spec.shape)}, "
            f"got {list(tensor.shape)}"
        )
    if not same_type:  # numeric to numeric: cast to what the model declares
        data = _cast_input(model, spec, tensor)
    return data


@functools.cache
def _widens(source: np.dtype, target: np.dtype) -> bool:
    """Whether every ``source`` value fits ``target`` (asked once per pair of dtypes)."""
    return bool(np.can_cast(source, target, "safe"))


def _cast_input(model: str, spec: TensorSpec, tensor: Tensor) -> np.ndarray:
    """Cast to the declared type, refusing values it cannot hold (300 -> UINT8, 1.5 -> INT32)."""
    target = NUMPY_DTYPES[spec.datatype]
    if _widens(tensor.data.dtype, target):  # widening (FP32 -> FP64): always fits
        return tensor.data.astype(target)
    try:
        with np.errstate(over="raise", invalid="raise"):
            cast = tensor.data.astype(target)
    except FloatingPointError:
        cast = None
    if cast is None or (target.kind in "iu" and not np.array_equal(cast, tensor.data)):
        raise InvalidInput(
            f"model '{model}' input '{spec.name}': {tensor.datatype} values do not fit the "
            f"declared datatype {spec.datatype}"
        )
    return cast


def validate_inputs(
    model: str, declared: Sequence[TensorSpec], tensors: Sequence[Tensor]
) -> dict[str, np.ndarray]:
    """``{name: array}`` in declared order, or an InvalidInput that says what was expected."""
    if len(tensors) == 1 and len(declared) == 1 and tensors[0].name == declared[0].name:
        return {declared[0].name: _check_one(model, declared[0], tensors[0])}  # most requests
    by_name: dict[str, Tensor] = {}
    for tensor in tensors:
        if tensor.name in by_name:
            raise InvalidInput(f"input '{tensor.name}' is given more than once")
        by_name[tensor.name] = tensor
    if not declared:
        return {name: t.data for name, t in by_name.items()}
    expected = {spec.name for spec in declared}
    unknown = [name for name in by_name if name not in expected]
    if unknown:
        raise InvalidInput(
            f"model '{model}' has no input '{unknown[0]}'; its inputs are: "
            + ", ".join(sorted(expected))
        )
    missing = [spec.name for spec in declared if spec.name not in by_name]
    if missing:
        raise InvalidInput(f"model '{model}' input '{missing[0]}' is missing from the request")
    return {spec.name: _check_one(model, spec, by_name[spec.name]) for spec in declared}


def check_requested_outputs(
    model: str, declared: Sequence[TensorSpec], requested: Sequence[RequestedOutput]
) -> list[str] | None:
    """Names the client asked for (None: all); unknown names are the client's mistake."""
    if not requested:
        return None
    names = [r.name for r in requested]
    if declared:
        known = {spec.name for spec in declared}
        for name in names:
            if name not in known:
                raise InvalidInput(
                    f"model '{model}' has no output '{name}'; its outputs are: "
                    + ", ".join(sorted(known))
                )
    return names


def build_outputs(
    model: str,
    declared: Sequence[TensorSpec],
    produced: Mapping[str, np.ndarray],
    requested: Sequence[RequestedOutput],
) -> list[Tensor]:
    """Tensors in declared order (then any extra the model produced), cast to declared types."""
    if not isinstance(produced, Mapping):
        raise InferenceError(f"model '{model}' returned {type(produced).__name__}, not a mapping")
    if not requested:  # the common case, without the bookkeeping of requested outputs
        outputs = [
            _output(model, spec.name, produced[spec.name], spec.datatype, {})
            for spec in declared
            if spec.name in produced
        ]
        if len(outputs) < len(produced):  # more than declared: the extra ones follow
            names = {spec.name for spec in declared}
            outputs += [
                _output(model, name, array, None, {})
                for name, array in produced.items()
                if name not in names
            ]
        return outputs
    types = {spec.name: spec.datatype for spec in declared}
    parameters = {r.name: r.parameters for r in requested}
    missing = [name for name in parameters if name not in produced]
    if missing:
        message = f"model '{model}' did not produce the requested output '{missing[0]}'"
        # A declared output that is missing is the model's fault; otherwise the client's.
        raise InferenceError(message) if missing[0] in types else InvalidInput(message)
    order = [spec.name for spec in declared if spec.name in parameters]
    order += [name for name in produced if name not in types and name in parameters]
    return [
        _output(model, name, produced[name], types.get(name), dict(parameters[name]))
        for name in order
    ]


def _output(model: str, name: str, value: object, declared: str | None, parameters: dict) -> Tensor:
    """One output as a tensor, cast to its declared datatype (else typed from its dtype)."""
    array = np.asarray(value)
    try:
        if declared is None:
            return Tensor(name, datatype_of(array), array, parameters)
        return Tensor(name, declared, cast_to(name, array, declared), parameters)
    except (TypeError, InvalidInput) as exc:
        raise InferenceError(f"model '{model}' output '{name}': {exc}") from None
