"""Virtual environments for servekit, each peer and the load generator, under bench/.venvs/.

Each environment is created only when missing and installed only when its requirement list
changed (a marker file holds the list that was installed), so reruns cost nothing.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENVS = BENCH / ".venvs"
MARKER = ".bench-installed.json"
SKLEARN = "scikit-learn==1.7.2"


@dataclass(frozen=True)
class Env:
    """One virtual environment: its name and the pip requirements installed into it."""

    name: str
    requirements: tuple[str, ...]
    watch: tuple[Path, ...] = ()  # files whose change means reinstall (e.g. pyproject.toml)

    @property
    def path(self) -> Path:
        return VENVS / self.name

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def bin(self, program: str) -> Path:
        return self.path / "bin" / program

    @property
    def log(self) -> Path:
        return VENVS / f"{self.name}.install.log"

    def _wanted(self) -> dict[str, object]:
        digests = {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in self.watch}
        return {"requirements": list(self.requirements), "watch": digests}

    def ready(self) -> bool:
        marker = self.path / MARKER
        if not marker.exists() or not self.python.exists():
            return False
        return json.loads(marker.read_text()) == self._wanted()

    def ensure(self) -> None:
        """Create the venv if missing and install the requirements if they changed."""
        if self.ready():
            return
        VENVS.mkdir(parents=True, exist_ok=True)
        with self.log.open("w") as log:
            if not self.python.exists():
                _run([sys.executable, "-m", "venv", str(self.path)], log)
            pip = [str(self.python), "-m", "pip", "--disable-pip-version-check"]
            _run([*pip, "install", "-q", "--upgrade", "pip"], log)
            _run([*pip, "install", *self.requirements], log)
        (self.path / MARKER).write_text(json.dumps(self._wanted()))

    def version(self, distribution: str) -> str | None:
        """The installed version of ``distribution`` in this environment, if any."""
        if not self.python.exists():
            return None
        code = f"import importlib.metadata as m; print(m.version({distribution!r}))"
        done = subprocess.run(
            [str(self.python), "-c", code], capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else None


def _run(command: list[str], log: IO[str]) -> None:
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)


ENVS: dict[str, Env] = {
    env.name: env
    for env in (
        Env("servekit", ("-e", str(REPO), SKLEARN, "joblib"), (REPO / "pyproject.toml",)),
        # uvloop 0.21: MLServer 1.7.1's workers break with newer ones. httptools: uvicorn's fast
        # HTTP parser, which KServe and Ray bring along and MLServer does not (else it gets h11)
        Env(
            "mlserver",
            ("mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0", "httptools", SKLEARN),
        ),
        Env("kserve", ("kserve", SKLEARN, "joblib")),
        Env("ray", ("ray[serve]>=2,<3", SKLEARN, "joblib")),
        Env(
            "perf_analyzer",
            ("tritonclient[all]==2.51.0", "numpy<2", "nvidia-cuda-runtime-cu12"),
        ),
    )
}


def ensure(names: list[str], parallel: bool = True) -> dict[str, str | None]:
    """Install the named environments (concurrently); returns {name: error or None}."""

    def one(name: str) -> str | None:
        env = ENVS[name]
        try:
            env.ensure()
        except subprocess.CalledProcessError as exc:
            return f"install failed ({exc.cmd[-1]}...): see {env.log}"
        return None

    pending = [n for n in names if not ENVS[n].ready()]
    for name in pending:
        print(f"[envs] installing {name} into {ENVS[name].path} (log: {ENVS[name].log})")
    with ThreadPoolExecutor(max_workers=len(pending) if parallel and pending else 1) as pool:
        results = dict(zip(pending, pool.map(one, pending), strict=True))
    for name, error in results.items():
        print(f"[envs] {name}: {error or 'ready'}")
    return {name: results.get(name) for name in names}


if __name__ == "__main__":
    ensure(sys.argv[1:] or list(ENVS))
