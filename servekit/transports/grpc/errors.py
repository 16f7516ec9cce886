"""Errors -> gRPC status, from the one ``ErrorCode`` table the REST transport uses too.

A ``ServekitError`` aborts with its code's gRPC status and its message (written for clients).
Anything else is a bug: it is logged with its traceback and the client gets INTERNAL with a
generic message, never the exception text.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from servekit.errors import ServekitError

logger = logging.getLogger("servekit.grpc")

INTERNAL_MESSAGE = "internal server error (details in the server log)"

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def status_of(error: ServekitError) -> grpc.StatusCode:
    return grpc.StatusCode[error.code.grpc_status]


async def abort(context: grpc.aio.ServicerContext, error: Exception, rpc: str) -> NoReturn:
    """End the call with the status ``error`` maps to."""
    if isinstance(error, ServekitError):
        await context.abort(status_of(error), error.message)
    logger.error("unexpected error in gRPC %s", rpc, exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


def map_errors(handler: Handler) -> Handler:
    """Wrap an async servicer method so every exception becomes a proper gRPC status."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await handler(self, request, context)
        except grpc.aio.AbortError:  # the handler already chose a status
            raise
        except Exception as exc:  # noqa: BLE001 - the boundary: translate, never leak
            await abort(context, exc, handler.__name__)

    return wrapper  # type: ignore[return-value]
