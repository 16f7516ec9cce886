"""Switch conditions: declarative tests on a request, evaluated without ``eval``.

A condition reads one value from the request (a request parameter, a header, or one element of an
input tensor), applies an operator from ``OPERATORS`` and compares with the spec's value; ``all``,
``any`` and ``not`` combine them. A value that is absent (or of a type the operator cannot compare)
makes the test false rather than failing the request.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from servekit.types.inference import InferenceRequest, RequestContext

if TYPE_CHECKING:
    from servekit.deploy.graph.spec import ConditionSpec

MISSING = object()
"""What a source yields when the request does not carry the value."""


def _in(actual: Any, expected: Any) -> bool:
    return actual in expected


def _not_in(actual: Any, expected: Any) -> bool:
    return actual not in expected


def _exists(actual: Any, expected: Any) -> bool:
    return (actual is not MISSING) == (expected is None or bool(expected))


OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
    "in": _in,
    "not_in": _not_in,
    "exists": _exists,
}
"""Operator name -> test(actual, expected). ``exists`` also runs on absent values."""

Predicate = Callable[[InferenceRequest, RequestContext], bool]


def compile_condition(spec: ConditionSpec) -> Predicate:
    """Turn a parsed condition into a predicate over (request, context)."""
    if spec.all is not None:
        parts = [compile_condition(c) for c in spec.all]
        return lambda request, context: all(p(request, context) for p in parts)
    if spec.any is not None:
        parts = [compile_condition(c) for c in spec.any]
        return lambda request, context: any(p(request, context) for p in parts)
    if spec.not_ is not None:
        inner = compile_condition(spec.not_)
        return lambda request, context: not inner(request, context)
    read = _reader(spec)
    test = OPERATORS[spec.op]
    expected = spec.value

    def predicate(request: InferenceRequest, context: RequestContext) -> bool:
        actual = read(request, context)
        if actual is MISSING and spec.op != "exists":
            return False
        try:
            return bool(test(_coerce(actual, expected), expected))
        except TypeError:
            return False

    return predicate


def _reader(spec: ConditionSpec) -> Callable[[InferenceRequest, RequestContext], Any]:
    if spec.parameter is not None:
        name = spec.parameter
        return lambda request, context: request.parameters.get(name, MISSING)
    if spec.header is not None:
        header = spec.header
        return lambda request, context: context.headers.get(header, MISSING)
    assert spec.input is not None
    tensor_name, index = spec.input, tuple(spec.index) if spec.index is not None else None

    def element(request: InferenceRequest, context: RequestContext) -> Any:
        tensor = next((t for t in request.inputs if t.name == tensor_name), None)
        if tensor is None or tensor.data.size == 0:
            return MISSING
        try:
            value = tensor.data[index] if index is not None else tensor.data.reshape(-1)[0]
        except (IndexError, TypeError):
            return MISSING
        if isinstance(value, np.ndarray):  # a partial index: not one element
            return MISSING
        value = value.item() if isinstance(value, np.generic) else value
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else value

    return element


def _coerce(actual: Any, expected: Any) -> Any:
    """Headers are strings: compare them as numbers when the spec's value is a number."""
    numeric = isinstance(expected, int | float) and not isinstance(expected, bool)
    if numeric and isinstance(actual, str):
        try:
            return float(actual)
        except ValueError:
            return actual
    return actual
