"""The detectors' computations in a child process, so they never hold the server's GIL.

Decoding the journal and reading tensors stays in the server (microseconds per event); the
fitted feeds (windows, detectors) are pickled into one child process, which tests the windows
and scores the rows. Requests go one at a time over a pipe, from the monitoring thread (and the
feedback thread), so the child needs no locks. A feed that cannot be pickled (one that calls the
model, such as feature squeezing) stays in the server's monitoring thread.

If the child dies, the next call starts a new one and installs the fitted feeds again (their
windows start empty); the events of the batch it died on are skipped (counted in
``servekit_monitoring_failures_total``).
"""

from __future__ import annotations

import logging
import pickle
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from servekit.observe.monitoring.feeds import Batch, Feed, Outcome

logger = logging.getLogger("servekit.monitoring")

Reply = tuple[Outcome, list[tuple[str, str]], dict[str, dict[str, Any]]]
"""(outcome, failures as (detector, error), each remote feed's describe())."""


def _serve(connection: Connection) -> None:
    """The child's loop: one request, one reply, until the pipe closes."""
    feeds: dict[str, list[Feed]] = {}
    while True:
        try:
            request = connection.recv()
        except EOFError:
            return
        action, model, argument = request
        if action == "install":
            feeds[model] = pickle.loads(argument)
            connection.send(None)
            continue
        if action == "remove":
            feeds.pop(model, None)
            connection.send(None)
            continue
        outcome, failures = Outcome(), []
        for feed in feeds.get(model, ()):
            try:
                if action == "observe":
                    feed.observe(argument, outcome)
                else:
                    feed.errors(argument, outcome)
            except Exception as exc:  # noqa: BLE001 - reported, the other feeds go on
                failures.append((feed.name, repr(exc)))
        described = {feed.name: feed.describe() for feed in feeds.get(model, ())}
        connection.send((outcome, failures, described))


class DetectorProcess:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._installed: dict[str, bytes] = {}

    def install(self, model: str, feeds: list[Feed]) -> set[str]:
        """Move the picklable ``feeds`` of ``model`` to the child; their names."""
        movable = []
        for feed in feeds:
            try:
                pickle.dumps(feed)
            except Exception:  # noqa: BLE001 - e.g. a detector holding the model's predict
                continue
            movable.append(feed)
        blob = pickle.dumps(movable)
        with self._lock:
            self._installed[model] = blob
            self._call("install", model, blob)
        return {feed.name for feed in movable}

    def remove(self, model: str) -> None:
        with self._lock:
            if self._installed.pop(model, None) is not None and self._alive():
                self._call("remove", model, None)

    def observe(self, model: str, batch: Batch) -> Reply:
        with self._lock:
            return self._call("observe", model, batch)

    def errors(self, model: str, values: np.ndarray) -> Reply:
        with self._lock:
            return self._call("errors", model, values)

    def stop(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()  # the child sees EOF and exits
                self._connection = None
            if self._process is not None:
                try:
                    self._process.wait(5)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
                self._process = None

    def _alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _call(self, action: str, model: str, argument: Any) -> Any:
        if not self._alive():
            self._start()
        assert self._connection is not None
        try:
            self._connection.send((action, model, argument))
            return self._connection.recv()
        except (EOFError, OSError) as exc:
            logger.error("monitoring: the detector process died (%s); restarting it", exc)
            self._process = None
            raise

    def _start(self) -> None:
        if self._connection is not None:
            self._connection.close()
        ours, theirs = socket.socketpair()
        with theirs:
            # A fresh interpreter (as servekit's worker zygote is started): forking a threaded
            # server is unsafe, and multiprocessing's spawn would re-run ``python -m servekit``.
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
        self._connection = Connection(ours.detach())
        for model, blob in self._installed.items():  # a restart: the fitted feeds again
            self._connection.send(("install", model, blob))
            self._connection.recv()


__all__ = ["DetectorProcess", "Reply"]

if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
