"""A CloudEvents HTTP receiver in its own process, for tests and benchmarks of payload sinks.

``python -m servekit.testing.event_receiver --port 9000 --out events.jsonl`` accepts binary,
structured and batch mode and appends one JSON line per event (its attributes, and its data
with ``--keep-data``). Stopping and restarting it simulates a sink outage.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from cloudevents.core.bindings.http import HTTPMessage, from_http

from servekit.observe.payloads.cloudevents import BATCH_CONTENT_TYPE, FORMAT, event_dict
from servekit.testing.server import free_port


def _handler(out: Any, keep_data: bool, lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                if headers.get("content-type", "").startswith(BATCH_CONTENT_TYPE):
                    events = json.loads(body)
                else:
                    events = [event_dict(from_http(HTTPMessage(headers, body), FORMAT))]
            except Exception as exc:  # noqa: BLE001 - a bad event is the sender's fault
                self._answer(400, str(exc).encode())
                return
            lines = []
            for event in events:
                if not keep_data:
                    event.pop("data", None)
                lines.append(json.dumps(event, default=str))
            with lock:
                out.write("\n".join(lines) + "\n")
                out.flush()
            self._answer(204, b"")

        def do_GET(self) -> None:  # noqa: N802
            self._answer(200, b"ok")

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--keep-data", action="store_true")
    args = parser.parse_args()
    with open(args.out, "a") as out:
        server = ThreadingHTTPServer(
            ("127.0.0.1", args.port), _handler(out, args.keep_data, threading.Lock())
        )
        server.daemon_threads = True
        server.serve_forever()


class ReceiverProcess:
    """The receiver as a subprocess on a fixed port, so it can be stopped and started again."""

    def __init__(self, out: Path, *, port: int | None = None, keep_data: bool = False) -> None:
        self.out = out
        self.port = port or free_port()
        self.keep_data = keep_data
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self, timeout: float = 20.0) -> ReceiverProcess:
        command = [sys.executable, "-m", "servekit.testing.event_receiver"]
        command += ["--port", str(self.port), "--out", str(self.out)]
        if self.keep_data:
            command.append("--keep-data")
        self.process = subprocess.Popen(command)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise TimeoutError(f"event receiver did not start on {self.url}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def events(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        lines = self.out.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def __enter__(self) -> ReceiverProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


if __name__ == "__main__":
    main()
