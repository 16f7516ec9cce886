"""uvicorn's httptools protocol with a short lane for inference POSTs.

Why: at thousands of inferences a second, the ASGI round trip per request (a scope dict, a
request/response cycle, two ``send`` messages whose headers are checked one by one) costs as
much CPU as decoding and batching the request. Inference POSTs are answered here straight from
the parser's callbacks: the body is collected as it arrives, ``InferenceASGI.answer`` (the same
code the ASGI path runs) produces the reply, and the reply is written in one call. Every other
request, and every case the lane does not handle (websocket upgrades, ``limit_concurrency``),
goes through uvicorn unchanged, as do keep-alive, pipelining, flow control and graceful
shutdown, which the lane's cycle takes part in like uvicorn's own.

One thing uvicorn's protocol gets wrong is mended here for every route: a request that offers an
upgrade the server does not take (``Upgrade: h2c``, sent by ``curl --http2`` and by Java's
``RestClient`` on ordinary POSTs) lost its body, because the parser treats the bytes after the
headers as the new protocol's (uvicorn issue #2722). RFC 9110 lets a server ignore the offer; such
a request is parsed again without it, body included.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from servekit.transports.http.asgi import InferenceASGI, InferenceTarget, match_inference_path
from servekit.transports.http.body import body_too_large, check_declared_length, client_gone


class InferenceProtocol(HttpToolsProtocol):
    """Serves ``InferenceASGI`` apps; inference POSTs skip the ASGI machinery."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        app = self.app
        self._inference = app if isinstance(app, InferenceASGI) else None
        self._declined_upgrade: bytes | None = None
        """The head of a request whose upgrade offer is declined, rebuilt without it."""

    def data_received(self, data: bytes) -> None:
        """uvicorn's, except that a declined upgrade is parsed again rather than dropped."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self._declined_upgrade is not None:
                head, self._declined_upgrade = self._declined_upgrade, None
                self.parser = _parser(self)  # the old one took the rest for the new protocol
                self.data_received(head + data[upgrade.args[0] :])
            elif self._should_upgrade():  # a websocket: uvicorn's
                self.handle_websocket_upgrade()
            else:  # CONNECT: as uvicorn does
                self.logger.warning("Unsupported upgrade request.")
        except httptools.HttpParserError:
            message = "Invalid HTTP request received."
            self.logger.warning(message)
            self.send_400_response(message)

    def on_headers_complete(self) -> None:
        parser = self.parser
        offered = parser.should_upgrade() and self._get_upgrade() is not None
        if offered and not self._should_upgrade():
            self._declined_upgrade = self._head_without_upgrade()
            return  # no cycle: the request is parsed again, without the offer
        target = None
        if (
            self._inference is not None
            and parser.get_method() == b"POST"
            and self.limit_concurrency is None
            and not parser.should_upgrade()
        ):
            path = httptools.parse_url(self.url).path.decode("ascii")
            if "%" in path:
                path = urllib.parse.unquote(path)
            target = match_inference_path(path)
        if target is None:
            super().on_headers_complete()
            return
        keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
        previous = self.cycle
        self.cycle = _LaneCycle(self, target, path, keep_alive)  # type: ignore[assignment]
        if previous is None or previous.response_complete:
            task = self.loop.create_task(self.cycle.run_asgi(self.app))
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)  # uvicorn waits for these on shutdown
        else:  # pipelined behind an unfinished response: uvicorn starts it in turn
            self.flow.pause_reading()
            self.pipeline.appendleft((self.cycle, self.app))

    def on_body(self, body: bytes) -> None:
        if self._declined_upgrade is None:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._declined_upgrade is None:
            super().on_message_complete()

    def _head_without_upgrade(self) -> bytes:
        parser = self.parser
        version = parser.get_http_version().encode()
        lines = [parser.get_method(), b" ", self.url, b" HTTP/", version, b"\r\n"]
        for name, value in self.headers:
            if name in _UPGRADE_HEADERS:
                continue
            if name == b"connection":
                tokens = [t.strip() for t in value.split(b",")]
                value = b", ".join(t for t in tokens if t and t.lower() not in _UPGRADE_HEADERS)
                if not value:
                    continue
            lines += (name, b": ", value, b"\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)


_UPGRADE_HEADERS = frozenset({b"upgrade", b"http2-settings"})


def _parser(protocol: InferenceProtocol) -> httptools.HttpRequestParser:
    parser = httptools.HttpRequestParser(protocol)
    with contextlib.suppress(AttributeError):  # httptools < 0.6.3 has no leniencies to set
        parser.set_dangerous_leniencies(lenient_data_after_close=True)  # as uvicorn does
    return parser


class _LaneCycle:
    """One inference POST. Has the attributes and ``run_asgi`` that uvicorn's protocol uses
    on its own cycles, so the protocol's body, pipelining, disconnect and shutdown handling
    apply unchanged. Like uvicorn's, it holds the protocol only through ``on_response``, which
    it drops when done: no reference cycle for the garbage collector per connection."""

    def __init__(
        self, protocol: InferenceProtocol, target: InferenceTarget, path: str, keep_alive: bool
    ) -> None:
        assert protocol._inference is not None
        self.answer = protocol._inference.answer
        self.server_state = protocol.server_state
        self.logger = protocol.logger
        self.transport = protocol.transport
        self.flow = protocol.flow
        self.target = target
        self.path = path
        self.headers = protocol.headers
        self.keep_alive = keep_alive
        self.waiting_for_100_continue = protocol.expect_100_continue
        self.message_event = asyncio.Event()
        self.on_response = protocol.on_response_complete
        self.body = bytearray()
        self.more_body = True
        self.disconnected = False
        self.response_complete = False
        _LaneCycle.in_flight += 1  # undone when run_asgi ends

    in_flight = 0
    """Inference POSTs of this process's lanes (one event loop) received and not answered
    yet: counted from the cycle's creation, since a small model's request is answered within
    one step of its task, while the requests read in the same loop turn wait for theirs."""

    async def run_asgi(self, app: object) -> None:
        try:
            # Under concurrent load, yield once between answering and writing: the replies
            # of one loop turn then leave together, after the payload log appended their
            # records in one go (group commit), and the client wakes once for several
            # replies. Alone, a request is written at once (a turn of the loop costs more than
            # it saves there).
            corked = _LaneCycle.in_flight > 1
            status, content, headers = await self.answer(
                self.target, self.path, self.headers, self.read, corked
            )
            if corked:
                await asyncio.sleep(0)
            await self._write(status, content, headers)
        except asyncio.CancelledError:  # shutdown's grace period is over
            self.transport.close()
            raise
        except Exception:  # writing failed: the connection is unusable, the server is fine
            self.logger.exception("could not answer POST %s", self.path)
            self.transport.close()
        finally:
            _LaneCycle.in_flight -= 1
            self.on_response = _nothing

    async def read(self, content_length: bytes | None, limit: int) -> bytes:
        check_declared_length(content_length, limit)
        while True:
            if len(self.body) > limit:
                raise body_too_large(limit)
            if self.disconnected:
                raise client_gone()
            if not self.more_body:
                return bytes(self.body)
            if self.waiting_for_100_continue and not self.transport.is_closing():
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.waiting_for_100_continue = False
            self.flow.resume_reading()  # the protocol pauses it when the body piles up
            await self.message_event.wait()
            self.message_event.clear()

    async def _write(self, status: int, content: bytes, headers: dict[str, str]) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        self.waiting_for_100_continue = False
        lines = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            lines += (name, b": ", value, b"\r\n")
        lines.append(b"content-length: %d\r\n" % len(content))
        for name, value in headers.items():
            lines += (name.encode(), b": ", value.encode(), b"\r\n")
        if not self.keep_alive:
            lines.append(b"connection: close\r\n")
        lines += (b"\r\n", content)
        self.transport.write(b"".join(lines))
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()


def _nothing() -> None:
    pass


__all__ = ["InferenceProtocol"]
