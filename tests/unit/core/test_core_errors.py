"""One status table: every ServekitError maps to one (HTTP status, gRPC status) pair."""

from __future__ import annotations

import inspect

import grpc
import pytest

from servekit import errors
from servekit.errors import (
    ConfigError,
    ErrorCode,
    InferenceError,
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    NotFound,
    PayloadTooLarge,
    ServekitError,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
)

EXPECTED: dict[type[ServekitError], tuple[int, str]] = {
    ServekitError: (500, "INTERNAL"),
    InvalidInput: (400, "INVALID_ARGUMENT"),
    Unauthenticated: (401, "UNAUTHENTICATED"),
    NotFound: (404, "NOT_FOUND"),
    ModelNotFound: (404, "NOT_FOUND"),
    PayloadTooLarge: (413, "RESOURCE_EXHAUSTED"),
    UnsupportedMediaType: (415, "INVALID_ARGUMENT"),
    Unavailable: (503, "UNAVAILABLE"),
    ModelNotReady: (503, "UNAVAILABLE"),
    InferenceError: (500, "INTERNAL"),
    ModelLoadError: (500, "INTERNAL"),
    ConfigError: (400, "INVALID_ARGUMENT"),
}


def _instance(cls: type[ServekitError]) -> ServekitError:
    if cls is ModelNotFound:
        return ModelNotFound("iris", "2")
    if cls is ModelNotReady:
        return ModelNotReady("iris", "2", "LOADING")
    return cls("something went wrong")


def test_every_error_class_is_in_the_table():
    defined = {
        obj
        for obj in vars(errors).values()
        if inspect.isclass(obj) and issubclass(obj, ServekitError)
    }
    assert defined == set(EXPECTED)


@pytest.mark.parametrize(
    ("cls", "pair"), list(EXPECTED.items()), ids=lambda v: getattr(v, "__name__", "")
)
def test_error_maps_to_http_and_grpc_status(cls, pair):
    error = _instance(cls)
    assert isinstance(error, ServekitError) and isinstance(error, Exception)
    assert (error.code.http_status, error.code.grpc_status) == pair
    assert error.code.value == pair


@pytest.mark.parametrize(
    ("cls", "http", "grpc"),
    [
        (InvalidInput, 400, "INVALID_ARGUMENT"),
        (ModelNotFound, 404, "NOT_FOUND"),
        (PayloadTooLarge, 413, "RESOURCE_EXHAUSTED"),
        (ModelNotReady, 503, "UNAVAILABLE"),
        (InferenceError, 500, "INTERNAL"),
    ],
)
def test_documented_pairs(cls, http, grpc):
    code = _instance(cls).code
    assert code.http_status == http
    assert code.grpc_status == grpc


def test_grpc_names_are_real_grpc_status_codes():
    for code in ErrorCode:
        assert code.grpc_status in grpc.StatusCode.__members__


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        (ModelNotFound, NotFound),
        (ModelNotReady, Unavailable),
        (ModelLoadError, InferenceError),
        (ConfigError, ServekitError),
    ],
)
def test_hierarchy(child, parent):
    assert issubclass(child, parent)


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (ModelNotFound("iris"), "model 'iris' not found"),
        (ModelNotFound("iris", "3"), "model 'iris' version '3' not found"),
        (
            ModelNotReady("iris", "3", "LOADING"),
            "model 'iris' version '3' is not ready (state: LOADING)",
        ),
        (InvalidInput("bad shape"), "bad shape"),
    ],
)
def test_messages(error, message):
    assert str(error) == message
    assert error.message == message
    assert error.args == (message,)
