"""The ASGI entry point. Inference POSTs take a short path straight to their handler; every
other route goes through the Starlette application.

Why: inference is the one call whose overhead users pay thousands of times a second, and a
general router, request/response objects and middleware layers cost more per request than
decoding the body. Everything else (metadata, health, metrics, docs) is rare and keeps the
convenience of Starlette.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial

from servekit.core.dataplane import DataPlane
from servekit.errors import ServekitError
from servekit.transports.http import v1, v2
from servekit.transports.http.body import read_body
from servekit.transports.http.codecs import JSON_CONTENT_TYPE, dumps
from servekit.types.inference import InferenceRequest, RequestContext

logger = logging.getLogger("servekit.http")

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]
Handler = Callable[..., Awaitable[tuple[bytes, dict[str, str]]]]
InferenceTarget = tuple[Handler, str, str, str | None]
"""(handler, protocol, model name, version) of an inference path."""
BodyReader = Callable[[bytes | None, int], Awaitable[bytes]]
"""Reads the whole body given the declared Content-Length and the size limit."""
Reply = tuple[int, bytes, dict[str, str]]

SERVED_BY_HEADER = "x-servekit-served-by"
"""'model/version' that answered (a deployment may route to one of several)."""
REQUEST_ID_HEADER = "x-request-id"
"""Carries the inference's event id back: the key for feedback and for the payload log."""
_WANTED_HEADERS = frozenset(
    {b"content-length", b"inference-header-content-length", b"x-request-id"}
)
INFER_ROUTES = (
    "/v2/models/{name}/infer",
    "/v2/models/{name}/versions/{version}/infer",
    "/v1/models/{name}:predict",
    "/v1/models/{name}/versions/{version}:predict",
)


def match_inference_path(path: str) -> InferenceTarget | None:
    """(handler, protocol, model name, version) for an inference path, else None."""
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        parts = path[len("/v2/models/") : -len("/infer")].split("/")
        handler: Handler = v2.infer
        protocol = v2.PROTOCOL
    elif path.startswith("/v1/models/") and path.endswith(":predict"):
        parts = path[len("/v1/models/") : -len(":predict")].split("/")
        handler, protocol = v1.predict, v1.PROTOCOL
    else:
        return None
    if len(parts) == 1 and parts[0]:
        return handler, protocol, parts[0], None
    if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
        return handler, protocol, parts[0], parts[2]
    return None


class InferenceASGI:
    def __init__(self, fallback: ASGIApp, dataplane: DataPlane, max_request_bytes: int) -> None:
        self._fallback = fallback
        self._dataplane = dataplane
        self._limit = max_request_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        target = match_inference_path(scope["path"]) if scope["type"] == "http" else None
        if target is None:
            await self._fallback(scope, receive, send)
        elif scope["method"] == "POST":
            reply = await self.answer(
                target, scope["path"], scope["headers"], partial(read_body, receive)
            )
            await _respond(send, *reply)
        else:
            await _respond(
                send, 405, _error("method not allowed; use POST"), {**_JSON, "allow": "POST"}
            )

    async def answer(
        self,
        target: InferenceTarget,
        path: str,
        raw_headers: list[tuple[bytes, bytes]],
        read: BodyReader,
        group_commit: bool = False,
    ) -> Reply:
        """Status, body and headers for one inference POST; never raises.

        Shared by the ASGI entry point and the lean HTTP protocol (``lane.py``), which hands
        over the body its own way (``read``) and, with ``group_commit``, promises to yield to
        the event loop before writing the reply (``RequestContext.group_commit``)."""
        handler, protocol, name, version = target
        headers = {k: v for k, v in raw_headers if k in _WANTED_HEADERS}
        context = RequestContext(protocol, v2.request_id(headers))
        context.group_commit = group_commit
        routing = self._dataplane.deployments.routing_headers if self._dataplane.deployments else ()
        if routing:  # variant and sticky headers, only when deployments are served
            context.headers = {
                k.decode("latin-1"): v.decode("latin-1") for k, v in raw_headers if k in routing
            }
        status = 200
        try:
            try:
                body = await read(headers.get(b"content-length"), self._limit)
            except ServekitError as exc:
                # Through the DataPlane (which raises it), so it is counted and logged.
                await self._dataplane.infer(name, version, _raising(exc), context)
                raise
            content, extra = await handler(self._dataplane, name, version, body, headers, context)
        except ServekitError as exc:
            status, content, extra = exc.code.http_status, _error(exc.message), _JSON
        except Exception:  # noqa: BLE001 - never a traceback to the client
            logger.exception("unhandled error on POST %s", path)
            status, content, extra = 500, _error("internal server error"), _JSON
        if _header_safe(context.request_id):
            extra = {**extra, REQUEST_ID_HEADER: context.request_id}
        if status == 200 and _header_safe(context.served_by):
            extra = {**extra, SERVED_BY_HEADER: context.served_by}
        return status, content, extra


async def _respond(send: Callable, status: int, content: bytes, headers: dict[str, str]) -> None:
    raw = [(b"content-length", str(len(content)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": content})


_JSON = {"content-type": JSON_CONTENT_TYPE}


def _raising(error: ServekitError) -> Callable[[], InferenceRequest]:
    """A request source that fails as reading the body did (e.g. 413)."""

    def source() -> InferenceRequest:
        raise error

    return source


def _header_safe(value: str | None) -> bool:
    """Client-chosen ids go into a header only when they cannot break it."""
    return value is not None and value.isascii() and value.isprintable()


def _error(message: str) -> bytes:
    return dumps({"error": message})


__all__ = ["INFER_ROUTES", "InferenceASGI", "InferenceTarget", "Reply", "match_inference_path"]
