"""The servers under test: one small class per kind (environment, model layout, command, URLs).

Every server serves both models (``tiny`` and ``medium``) under the same names, is started pinned
to the server core with one BLAS/OpenMP thread, and is stopped with its whole process tree.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from envs import BENCH, ENVS, REPO

SERVER_CORE = "0"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
PEERS = BENCH / "peers"


@dataclass(frozen=True)
class Ports:
    http: int
    grpc: int
    extra: int


def free_ports(count: int = 3) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def v2_body(row: list[float]) -> bytes:
    tensor = {"name": "input-0", "shape": [1, len(row)], "datatype": "FP32", "data": row}
    return json.dumps({"inputs": [tensor], "outputs": [{"name": "predict"}]}).encode()


def v1_body(row: list[float]) -> bytes:
    return json.dumps({"instances": [row]}).encode()


class Server:
    """Base class: subclasses set the class attributes and override ``layout``/``command``."""

    key: str = ""  # what --only matches
    label: str = ""  # the row label in the table
    env: str = "servekit"
    kind: str = "peer"  # servekit | peer | ceiling
    protocols: tuple[str, ...] = ("rest",)  # subset of rest (V2 JSON), v1, grpc
    startup_timeout: float = 90.0
    distribution: str | None = None  # whose version the label shows
    environment: dict[str, str] = {}  # added to the server's environment

    def layout(self, models: dict[str, Path], workdir: Path) -> None:
        """Write the model folder this server reads (artifacts are ``{name: joblib path}``)."""

    def command(self, workdir: Path, ports: Ports) -> list[str]:
        raise NotImplementedError

    def path(self, protocol: str, model: str) -> str:
        return f"/v1/models/{model}:predict" if protocol == "v1" else f"/v2/models/{model}/infer"

    def body(self, protocol: str, row: list[float]) -> bytes:
        return v1_body(row) if protocol == "v1" else v2_body(row)

    def describe(self) -> str:
        version = ENVS[self.env].version(self.distribution) if self.distribution else None
        return self.label.format(version=version or "?")


def _model_dir(workdir: Path) -> Path:
    path = workdir / "models"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


class Servekit(Server):
    """servekit doing the peers' work: payload logging off, since none of the peers captures
    payloads (``ServekitDefaults`` shows what servekit's default payload log costs)."""

    key = "servekit"
    label = "servekit {version}, payload log off"
    kind = "servekit"
    protocols = ("rest", "v1", "grpc")
    distribution = "servekit"
    # the one output every server here declares, so that perf_analyzer (which asks for every
    # output in the metadata) gets the same work done everywhere
    model_yaml = "outputs:\n  - {name: predict, datatype: INT64, shape: [-1]}\n"
    payload_log = False

    def layout(self, models: dict[str, Path], workdir: Path) -> None:
        root = _model_dir(workdir)
        for name, artifact in models.items():
            (root / name / "1").mkdir(parents=True)
            shutil.copy(artifact, root / name / "1" / "model.joblib")
            (root / name / "model.yaml").write_text(self.model_yaml)

    def command(self, workdir: Path, ports: Ports) -> list[str]:
        command = [
            str(ENVS[self.env].bin("servekit")), "serve", str(workdir / "models"),
            "--http-port", str(ports.http), "--grpc-port", str(ports.grpc),
        ]  # fmt: skip
        if not self.payload_log:
            (workdir / "bench-settings.yaml").write_text("payload_log:\n  enabled: false\n")
            command += ["--config", str(workdir / "bench-settings.yaml")]
        return command


class ServekitBatching(Servekit):
    key = "servekit-batching"
    label = "servekit {version} + batching 32 / 1 ms, payload log off"
    protocols = ("rest", "grpc")
    model_yaml = Servekit.model_yaml + "batching:\n  max_batch_size: 32\n  max_batch_delay_ms: 1\n"


class ServekitDefaults(Servekit):
    key = "servekit-defaults"
    label = "servekit {version} defaults (payload log on: every inference to the embedded store)"
    protocols = ("rest", "grpc")
    payload_log = True


class MLServer(Server):
    key = "mlserver"
    label = "MLServer {version} default"
    env = "mlserver"
    distribution = "mlserver"
    protocols: tuple[str, ...] = ("rest",)
    parallel_workers: int | None = None
    batching: dict[str, tuple[int, float]] = {}  # model -> (max_batch_size, max_batch_time s)

    def layout(self, models: dict[str, Path], workdir: Path) -> None:
        root = _model_dir(workdir)
        for name, artifact in models.items():
            (root / name).mkdir()
            shutil.copy(artifact, root / name / "model.joblib")
            features = len(json.loads(artifact.with_suffix(".sample.json").read_text()))
            settings: dict[str, object] = {
                "name": name,
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib"},
                # declared so that model metadata lists them (perf_analyzer builds requests from it)
                "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, features]}],
                "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1]}],
            }
            if name in self.batching:
                size, seconds = self.batching[name]
                settings.update(max_batch_size=size, max_batch_time=seconds)
            (root / name / "model-settings.json").write_text(json.dumps(settings, indent=2))

    def command(self, workdir: Path, ports: Ports) -> list[str]:
        settings: dict[str, object] = {
            "host": "127.0.0.1",
            "http_port": ports.http,
            "grpc_port": ports.grpc,
            "metrics_port": ports.extra,
        }
        if self.parallel_workers is not None:
            settings["parallel_workers"] = self.parallel_workers
        (workdir / "models" / "settings.json").write_text(json.dumps(settings, indent=2))
        return [str(ENVS[self.env].bin("mlserver")), "start", str(workdir / "models")]


class MLServerInline(MLServer):
    key = "mlserver-pw0"
    label = "MLServer {version} parallel_workers=0"
    protocols = ("rest", "grpc")
    parallel_workers = 0


class MLServerInlineBatching(MLServer):
    key = "mlserver-pw0-batching"
    label = "MLServer {version} parallel_workers=0 + batching (tiny 32/1 ms, medium 16/0.5 ms)"
    parallel_workers = 0
    batching = {"tiny": (32, 0.001), "medium": (16, 0.0005)}


class _FlatLayout(Server):
    """Servers whose script serves every ``models/<name>.joblib`` as model ``<name>``."""

    def layout(self, models: dict[str, Path], workdir: Path) -> None:
        root = _model_dir(workdir)
        for name, artifact in models.items():
            shutil.copy(artifact, root / f"{name}.joblib")


class KServe(_FlatLayout):
    key = "kserve"
    label = "KServe {version} custom Model"
    env = "kserve"
    distribution = "kserve"
    protocols = ("rest", "v1", "grpc")

    def command(self, workdir: Path, ports: Ports) -> list[str]:
        return [
            str(ENVS[self.env].python), str(PEERS / "kserve_model.py"), str(workdir / "models"),
            "--http_port", str(ports.http), "--grpc_port", str(ports.grpc),
        ]  # fmt: skip


class RayServe(_FlatLayout):
    key = "ray"
    label = "Ray Serve {version} (all Ray processes on the server core)"
    env = "ray"
    distribution = "ray"
    protocols = ("rest",)
    startup_timeout = 180.0

    def command(self, workdir: Path, ports: Ports) -> list[str]:
        return [
            str(ENVS[self.env].python), str(PEERS / "ray_app.py"), str(workdir / "models"),
            str(ports.http),
        ]  # fmt: skip


class BareHTTP(Server):
    key = "ceiling-http"
    label = "ceiling: bare Starlette {version} + uvicorn, parses the body, fixed reply"
    kind = "ceiling"
    distribution = "starlette"

    def command(self, workdir: Path, ports: Ports) -> list[str]:
        return [str(ENVS[self.env].python), str(PEERS / "bare_http.py"), str(ports.http)]


class ThinHTTP(Server):
    key = "ceiling-thin"
    label = "ceiling: thin uvloop + httptools {version} server, predict per request"
    kind = "ceiling"
    distribution = "httptools"
    artifacts: dict[str, Path] = {}

    def layout(self, models: dict[str, Path], workdir: Path) -> None:
        self.artifacts = dict(models)

    def command(self, workdir: Path, ports: Ports) -> list[str]:
        models = [f"{name}={path}" for name, path in self.artifacts.items()]
        return [str(ENVS[self.env].python), str(PEERS / "thin_http.py"), str(ports.http), *models]


class BareGRPC(Server):
    key = "ceiling-grpc"
    label = "ceiling: bare grpc.aio {version}, fixed reply"
    kind = "ceiling"
    distribution = "grpcio"
    protocols = ("grpc",)
    features: dict[str, int] = {}

    def layout(self, models: dict[str, Path], workdir: Path) -> None:
        self.features = {
            name: len(json.loads(p.with_suffix(".sample.json").read_text()))
            for name, p in models.items()
        }

    def command(self, workdir: Path, ports: Ports) -> list[str]:
        proto = REPO / "servekit" / "transports" / "grpc" / "inference.proto"
        specs = [f"{name}:{n}" for name, n in self.features.items()]
        return [
            str(ENVS[self.env].python),
            str(PEERS / "bare_grpc.py"),
            str(ports.grpc),
            str(proto),
            *specs,
        ]


class BareGRPCLegacyListener(BareGRPC):
    """The same bare server on gRPC core's long-standing listener, which servekit uses by
    default (``grpc_legacy_listener``), so that the ratio can be read both ways."""

    key = "ceiling-grpc-legacy"
    label = "ceiling: bare grpc.aio {version}, fixed reply, GRPC_EXPERIMENTS=-event_engine_listener"
    environment = {"GRPC_EXPERIMENTS": "-event_engine_listener"}


SERVERS: list[Server] = [
    Servekit(),
    ServekitBatching(),
    ServekitDefaults(),
    MLServer(),
    MLServerInline(),
    MLServerInlineBatching(),
    KServe(),
    RayServe(),
    BareHTTP(),
    ThinHTTP(),
    BareGRPC(),
    BareGRPCLegacyListener(),
]


class Running:
    """A started server: its process group, ports and log; ``stop()`` ends the whole tree."""

    def __init__(
        self, server: Server, workdir: Path, models: dict[str, Path], pythonpath: list[str]
    ) -> None:
        self.server = server
        self.workdir = workdir
        self.ports = Ports(*free_ports())
        server.layout(models, workdir)
        environment = {**os.environ, **dict.fromkeys(THREAD_VARS, "1"), **server.environment}
        environment.pop("VIRTUAL_ENV", None)
        if "grpc" in server.protocols:  # perf_analyzer needs ModelConfig: see grpc_shim/
            pythonpath = [*pythonpath, str(PEERS / "grpc_shim")]
        if pythonpath:
            environment["PYTHONPATH"] = os.pathsep.join(pythonpath)
        self.log = workdir / "server.log"
        command = ["taskset", "-c", SERVER_CORE, *server.command(workdir, self.ports)]
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                command, cwd=workdir, env=environment, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    def url(self, protocol: str, model: str) -> str:
        return f"http://127.0.0.1:{self.ports.http}{self.server.path(protocol, model)}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    def wait_ready(self, probes: list[tuple[str, bytes | None]]) -> None:
        """Until every probe (URL, POST body or None for a TCP check) succeeds."""
        deadline = time.monotonic() + self.server.startup_timeout
        pending = list(probes)
        while pending:
            if self.process.poll() is not None:
                raise RuntimeError(f"exited with {self.process.returncode}; {self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"not ready after {self.server.startup_timeout:.0f}s "
                    f"({pending[0][0]}); {self.tail()}"
                )
            if _probe(*pending[0]):
                pending.pop(0)
            else:
                time.sleep(0.5)

    def tail(self, lines: int = 8) -> str:
        text = self.log.read_text(errors="replace").strip().splitlines()
        return "log: " + " | ".join(text[-lines:])

    def pids(self) -> list[int]:
        return _tree(self.process.pid)

    def rss_mb(self) -> float:
        """Resident memory of the whole process tree, in MB."""
        return sum(_rss_kb(pid) for pid in _tree(self.process.pid)) / 1024

    def stop(self) -> None:
        pids = _tree(self.process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=15)
        for pid in pids:  # anything that left the group or ignored SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=5)


def _probe(url: str, body: bytes | None) -> bool:
    if body is None:
        host, port = url.rsplit(":", 1)
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return True
        except OSError:
            return False
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _tree(root: int) -> list[int]:
    """``root`` and every descendant (from /proc/<pid>/task/*/children)."""
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                stack.extend(int(child) for child in task.read_text().split())
    return found


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
