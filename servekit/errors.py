"""One exception root and one status table.

Every failure a client can see is a :class:`ServekitError`. Each subclass carries an
:class:`ErrorCode` that pairs the HTTP status with the gRPC status name, so the REST and gRPC
transports map errors from the same table and can never disagree.

    ServekitError
    ├── InvalidInput          400 / INVALID_ARGUMENT   malformed body, datatype, shape
    ├── Unauthenticated       401 / UNAUTHENTICATED    control API without the admin token
    ├── NotFound              404 / NOT_FOUND
    │   └── ModelNotFound
    ├── PayloadTooLarge       413 / RESOURCE_EXHAUSTED
    ├── Unavailable           503 / UNAVAILABLE
    │   └── ModelNotReady
    └── InferenceError        500 / INTERNAL           an exception raised inside a model
        └── ModelLoadError                             (never sent to a client as is)
"""

from __future__ import annotations

from enum import Enum


class ErrorCode(Enum):
    """(HTTP status, gRPC status name). The gRPC name is a ``grpc.StatusCode`` member name."""

    INVALID_ARGUMENT = (400, "INVALID_ARGUMENT")
    UNAUTHENTICATED = (401, "UNAUTHENTICATED")
    NOT_FOUND = (404, "NOT_FOUND")
    PAYLOAD_TOO_LARGE = (413, "RESOURCE_EXHAUSTED")
    UNSUPPORTED_MEDIA_TYPE = (415, "INVALID_ARGUMENT")
    UNAVAILABLE = (503, "UNAVAILABLE")
    INTERNAL = (500, "INTERNAL")

    @property
    def http_status(self) -> int:
        return self.value[0]

    @property
    def grpc_status(self) -> str:
        return self.value[1]


class ServekitError(Exception):
    """Root of every error servekit raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(ServekitError):
    """The client sent something we cannot run: bad JSON, datatype, shape or name."""

    code = ErrorCode.INVALID_ARGUMENT


class Unauthenticated(ServekitError):
    """A management call without the admin token."""

    code = ErrorCode.UNAUTHENTICATED


class NotFound(ServekitError):
    code = ErrorCode.NOT_FOUND


class ModelNotFound(NotFound):
    def __init__(self, name: str, version: str | None = None) -> None:
        if version is None:
            super().__init__(f"model '{name}' not found")
        else:
            super().__init__(f"model '{name}' version '{version}' not found")
        self.model = name
        self.version = version


class PayloadTooLarge(ServekitError):
    code = ErrorCode.PAYLOAD_TOO_LARGE


class UnsupportedMediaType(ServekitError):
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE


class Unavailable(ServekitError):
    code = ErrorCode.UNAVAILABLE


class ModelNotReady(Unavailable):
    def __init__(self, name: str, version: str, state: str) -> None:
        super().__init__(f"model '{name}' version '{version}' is not ready (state: {state})")


class InferenceError(ServekitError):
    """A model raised while predicting. The message names the model, never the traceback."""

    code = ErrorCode.INTERNAL


class ModelLoadError(InferenceError):
    """A model could not be loaded; kept on the model's handle and shown in its metadata."""


class ConfigError(ServekitError):
    """A repository or model.yaml is invalid. Raised at load time, not per request."""

    code = ErrorCode.INVALID_ARGUMENT
