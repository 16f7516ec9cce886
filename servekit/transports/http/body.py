"""Read a request body without ever holding more than the limit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from servekit.errors import InvalidInput, PayloadTooLarge, Unavailable

Receive = Callable[[], Awaitable[dict[str, Any]]]


def check_declared_length(content_length: bytes | None, limit: int) -> None:
    """Refuse a body whose declared length is malformed or over the limit before reading it."""
    if content_length is None:
        return
    try:
        declared = int(content_length)
    except ValueError:
        shown = content_length.decode(errors="replace")
        raise InvalidInput(f"Content-Length must be an integer, got {shown!r}") from None
    if declared > limit:
        raise PayloadTooLarge(
            f"request body of {declared} bytes exceeds the limit of {limit} bytes"
        )


def body_too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")


def client_gone() -> Unavailable:
    return Unavailable("client disconnected before sending the whole body")


async def read_body(receive: Receive, content_length: bytes | None, limit: int) -> bytes:
    """The body from ASGI ``receive`` messages."""
    check_declared_length(content_length, limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise client_gone()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise body_too_large(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
