"""ServekitError -> HTTP status + ``{"error": "..."}``, from the one ErrorCode table."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from servekit.errors import ServekitError
from servekit.transports.http.codecs import JSON_CONTENT_TYPE, dumps

logger = logging.getLogger("servekit.http")


def error_response(status: int, message: str) -> Response:
    return Response(dumps({"error": message}), status_code=status, media_type=JSON_CONTENT_TYPE)


async def servekit_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServekitError)
    return error_response(exc.code.http_status, exc.message)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail or "error")


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    """Anything we did not raise on purpose: log it, tell the client nothing internal."""
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal server error")
