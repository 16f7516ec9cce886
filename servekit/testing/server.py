"""Run a real servekit server as a separate process, on free ports, for tests and examples.

with ServerProcess("examples/models") as server:
    httpx.get(f"{server.http_url}/v2/health/ready")
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``python -m servekit serve`` in a subprocess; waits until it answers ready."""

    def __init__(
        self,
        repository: str | Path,
        *,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        startup_timeout: float = 60.0,
        wait_ready: bool = True,
        data_dir: str | Path | None = None,
    ) -> None:
        """``data_dir`` holds the payload log (spool and store); by default a fresh temporary
        folder that is removed on stop. Pass the same folder to a second server to restart."""
        self.repository = str(repository)  # a folder or a URI (s3://…)
        self._own_data_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="servekit-data-"))
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.env = env or {}
        self.args = args or []
        self.startup_timeout = startup_timeout
        self.wait_ready = wait_ready
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the server
            prefix="servekit-", suffix=".log", delete=False
        )

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def logs(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def start(self) -> ServerProcess:
        command = [
            sys.executable,
            "-m",
            "servekit",
            "serve",
            self.repository,
            "--http-port",
            str(self.http_port),
            "--grpc-port",
            str(self.grpc_port),
            *self.args,
        ]
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "SERVEKIT_PAYLOAD_LOG__DIRECTORY": str(self.data_dir),
            **self.env,
        }
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        self._wait()
        return self

    def _wait(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        path = "/v2/health/ready" if self.wait_ready else "/v2/health/live"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.logs()}")
            try:
                if httpx.get(self.http_url + path, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"server not {path} after {self.startup_timeout}s:\n{self.logs()}")

    def stop(self, timeout: float = 15.0) -> int | None:
        """Terminate (SIGTERM, then SIGKILL after ``timeout``); returns the exit code."""
        try:
            if self.process is None or self.process.poll() is not None:
                return self.process.returncode if self.process else None
            self.process.terminate()
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                return self.process.wait()
        finally:
            self._log.close()
            if self._own_data_dir:
                shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (crash tests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
