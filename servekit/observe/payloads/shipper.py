"""The shipper: a process of its own that delivers the spool to the sinks.

Why a process: delivering is Python work (decoding, JSON, CloudEvents, SQL, HTTP) of the same
order as serving the inference. In sink threads it ran under the serving process's GIL, on its
core, and cost a small model a quarter of its throughput; in a process of its own it runs beside
the server on any other core, and the event loop's share of logging is the journal append
alone. The server owns the journal; the shipper follows it (``SpoolFollower``) and commits its
sinks' cursors to their files, which the server reads to trim the spool. Nothing else crosses:
settings go in on the shipper's stdin, counters come back in a small stats file.

Lifecycle: the server starts it after opening the journal and restarts it (with backoff) if it
dies. To stop, the server writes ``stop <end>``: the shipper delivers up to that offset (within
``shutdown_flush_seconds``) and exits; what is left stays spooled. If the server dies, stdin
closes and the shipper delivers what is on disk, within the same limit, then exits; a shipper
started meanwhile waits for its lock, so one process at a time delivers each sink.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from prometheus_client import CollectorRegistry

from servekit.observe.payloads.config import PayloadLogSettings
from servekit.observe.payloads.delivery import SinkWorker
from servekit.observe.payloads.follower import SpoolFollower
from servekit.observe.payloads.journal import Journal
from servekit.observe.payloads.metrics import PayloadMetrics
from servekit.observe.payloads.sinks import Sink, build_sink, sink_name, unique_names
from servekit.observe.payloads.sinks.store import StoreSink
from servekit.observe.payloads.store import PayloadStore

logger = logging.getLogger("servekit.payloads")

STATS_FILE = "shipper-stats.json"
LOCK_FILE = ".shipper.lock"
STATS_SECONDS = 0.2
"""How often the shipper writes its counters and the server reads them (and trims the spool)."""
FIRST_RESTART_SECONDS = 0.5
MAX_RESTART_SECONDS = 30.0
STOP_GRACE_SECONDS = 5.0
"""Beyond ``shutdown_flush_seconds``: for the shipper to stop its sinks and exit."""
_STATS = {
    "delivered": ("servekit_payload_events_delivered_total", {}),
    "retried": ("servekit_payload_delivery_retries_total", {}),
    "rejected": ("servekit_payload_events_dropped_total", {"reason": "rejected"}),
    "queued": ("servekit_payload_events_queued", {}),
}


def store_path(settings: PayloadLogSettings) -> Path:
    return settings.store.path or settings.directory.expanduser() / "store.sqlite"


def sink_names(settings: PayloadLogSettings) -> list[str]:
    """The names of the sinks ``settings`` configures, the embedded store first."""
    return (["store"] if settings.store.enabled else []) + [sink_name(c) for c in settings.sinks]


def build_sinks(settings: PayloadLogSettings, store: PayloadStore | None) -> list[Sink]:
    """The configured sinks, the embedded store's first (when ``store`` is given)."""
    sinks: list[Sink] = [build_sink(config) for config in settings.sinks]
    if store is not None:
        sinks.insert(0, StoreSink(store, settings.store))
    return sinks


# -- the server's side -------------------------------------------------------------------------


class ShipperProcess:
    """Starts, watches and stops the shipper; publishes its counters on the server's metrics."""

    def __init__(
        self,
        settings: PayloadLogSettings,
        journal: Journal,
        metrics: PayloadMetrics,
    ) -> None:
        self.settings = settings
        self.names = sink_names(settings)
        self._journal = journal
        self._metrics = metrics
        self._stats_path = settings.directory.expanduser() / STATS_FILE
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="servekit-shipper", daemon=True)
        self._seen: dict[str, dict[str, float]] = _read_stats(self._stats_path)
        self._queued: dict[str, int] = {}
        for name in self.names:
            journal.add_external(name)
            metrics.queued.labels(name).set_function(lambda n=name: self._queued.get(n, 0))
            metrics.spooled.labels(name).set_function(
                lambda n=name: max(self.pending(n) - self._queued.get(n, 0), 0)
            )

    def start(self) -> None:
        self._spawn()
        self._watcher.start()

    def pending(self, name: str) -> int:
        """Records journaled that ``name`` has not delivered yet."""
        return self._journal.end - self._journal.committed(name)

    def stop(self, deadline: float) -> None:
        """Ask the shipper to deliver what is journaled by ``deadline``, then to exit."""
        self._stopping.set()
        process = self._process
        if process is not None and process.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert process.stdin is not None
                process.stdin.write(b"stop %d\n" % self._journal.end)
                process.stdin.close()
            try:
                process.wait(max(deadline - time.monotonic(), 0) + STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                logger.warning("payload log: the shipper did not exit in time; killing it")
                process.kill()
                process.wait()
        self._watcher.join(timeout=5)
        self._sync()

    # -- internals ----------------------------------------------------------------------------

    def _spawn(self) -> None:
        root = logging.getLogger()
        formatter = root.handlers[0].formatter if root.handlers else None
        hello = {
            "settings": self.settings.model_dump(mode="json"),
            "log_level": logging.getLevelName(root.getEffectiveLevel()),
            "log_format": "json" if type(formatter).__name__ == "JsonFormatter" else "text",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "servekit.observe.payloads.shipper"],
            stdin=subprocess.PIPE,
            close_fds=True,
            start_new_session=True,  # a scheduling group of its own: see lower_group_priority
        )
        assert process.stdin is not None
        process.stdin.write(json.dumps(hello).encode() + b"\n")
        process.stdin.flush()
        self._process = process
        logger.info("payload log: shipper process %d delivers to %s", process.pid, self.names)

    def _watch(self) -> None:
        delay = FIRST_RESTART_SECONDS
        while not self._stopping.wait(STATS_SECONDS):
            self._sync()
            process = self._process
            if process is None or process.poll() is None:
                continue
            logger.error(
                "payload log: the shipper process %d exited with %s; restarting it in %.1fs "
                "(events wait in the spool meanwhile)",
                process.pid, process.returncode, delay,
            )  # fmt: skip
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, MAX_RESTART_SECONDS)
            self._spawn()

    def _sync(self) -> None:
        """Trim the spool up to the shipper's cursors and publish its counters."""
        journal, metrics = self._journal, self._metrics
        try:
            journal.maintain()
        except OSError as exc:  # a cursor file being replaced: next time
            logger.debug("payload log: could not read the shipper's cursors: %s", exc)
        metrics.spool_bytes.set(journal.size)
        for name in self.names:
            lost = journal.take_dropped(name)
            if lost:
                metrics.dropped.labels(name, "spool_full").inc(lost)
        stats = _read_stats(self._stats_path)
        for name, values in stats.items():
            seen = self._seen.get(name, {})
            for key, counter in (
                ("delivered", metrics.delivered.labels(name)),
                ("retried", metrics.retried.labels(name)),
                ("rejected", metrics.dropped.labels(name, "rejected")),
            ):
                now, before = values.get(key, 0.0), seen.get(key, 0.0)
                if now > before:
                    counter.inc(now - before)
            self._queued[name] = int(values.get("queued", 0))
        self._seen.update(stats)


def _read_stats(path: Path) -> dict[str, dict[str, float]]:
    try:
        return json.loads(path.read_bytes())["sinks"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}


# -- the shipper's side ------------------------------------------------------------------------


class _Stats:
    """The shipper's counters in a file the server reads; they continue across restarts."""

    def __init__(self, path: Path, metrics: PayloadMetrics, registry: CollectorRegistry) -> None:
        self._path = path
        self._registry = registry
        self._names: list[str] = []
        self._previous = _read_stats(path)
        self._metrics = metrics

    def track(self, name: str) -> None:
        self._names.append(name)
        before = self._previous.get(name, {})
        self._metrics.delivered.labels(name).inc(before.get("delivered", 0.0))
        self._metrics.retried.labels(name).inc(before.get("retried", 0.0))
        self._metrics.dropped.labels(name, "rejected").inc(before.get("rejected", 0.0))

    def write(self) -> None:
        sinks: dict[str, dict[str, float]] = {}
        for name in self._names:
            sinks[name] = {
                key: self._registry.get_sample_value(metric, {"sink": name, **labels}) or 0.0
                for key, (metric, labels) in _STATS.items()
            }
        temporary = self._path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"pid": os.getpid(), "sinks": sinks}))
        os.replace(temporary, self._path)


def _lock(path: Path) -> int:
    """Wait for a shipper that is still finishing (its server was killed) to exit."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        logger.info("payload log: waiting for the previous shipper to finish")
        fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _listen(stdin: IO[bytes], stop: threading.Event, target: list[int | None]) -> None:
    """Wait for ``stop <end>`` from the server, or for its end of the pipe to close."""
    for line in stdin:
        words = line.split()
        if words[:1] == [b"stop"] and len(words) == 2 and words[1].isdigit():
            target[0] = int(words[1])
            break
    stop.set()


def lower_group_priority(nice: int) -> None:
    """Give the shipper's scheduling group the sinks' niceness (Linux, best effort).

    With autogroup scheduling (the kernel's default where it is built in) the CPU is shared
    between sessions first: a thread's own niceness only ranks it within its session. Started
    in the server's session, the shipper took an equal share of a core from a busy neighbour
    (a load balancer, another server) however nice its threads were. In a session of its own
    at the sinks' niceness, a request's work gets the core first, as ``sink_nice`` says."""
    if nice <= 0:
        return
    try:
        with open("/proc/self/autogroup", "w") as autogroup:
            autogroup.write(str(nice))
    except OSError:  # no autogroup (not Linux, or a kernel without it): the threads' nice only
        pass


def run(hello: dict[str, Any], stdin: IO[bytes]) -> None:
    settings = PayloadLogSettings.model_validate(hello["settings"])
    directory = settings.directory.expanduser()
    lock = _lock(directory / LOCK_FILE)
    stop, target = threading.Event(), [None]
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    lower_group_priority(settings.sink_nice)
    registry = CollectorRegistry()
    metrics = PayloadMetrics(registry)
    stats = _Stats(directory / STATS_FILE, metrics, registry)
    follower = SpoolFollower(directory / "spool")
    unique_names(settings.sinks, {"store"})
    store = PayloadStore(store_path(settings)) if settings.store.enabled else None
    sinks = build_sinks(settings, store)
    workers = [SinkWorker(sink, follower, metrics, settings.sink_nice) for sink in sinks]
    for worker in workers:
        stats.track(worker.sink.name)
        worker.start()
    threading.Thread(target=_listen, args=(stdin, stop, target), daemon=True).start()
    while not stop.wait(STATS_SECONDS):
        stats.write()
    end = target[0] if target[0] is not None else follower.visible_end()
    deadline = time.monotonic() + settings.shutdown_flush_seconds
    while time.monotonic() < deadline and any(
        follower.cursor(w.sink.name) < end for w in workers if w.is_alive()
    ):
        time.sleep(0.01)
    for worker in workers:
        left = end - follower.cursor(worker.sink.name)
        if left > 0:
            logger.warning(
                "payload log: sink %r still has %d events; they stay spooled for the next start",
                worker.sink.name, left,
            )  # fmt: skip
        worker.stop()
    for worker in workers:
        worker.join(timeout=10)
    stats.write()
    follower.close()
    os.close(lock)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C: the server says when to stop
    stdin = sys.stdin.buffer
    hello = json.loads(stdin.readline())
    from servekit.observe.logs import configure_logging

    configure_logging(hello["log_level"], hello["log_format"])
    run(hello, stdin)


if __name__ == "__main__":
    main()
