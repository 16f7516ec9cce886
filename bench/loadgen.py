"""Load generators, pinned to the load core: ``wrk`` for REST, Triton's ``perf_analyzer`` for gRPC.

Each runner returns a :class:`Point` (inferences/s, p50 and p99 in ms, errors) parsed from the
tool's own output; the raw output is kept for the JSON results.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from envs import ENVS

LOAD_CORE = "1"
_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclass
class Point:
    """One measurement at one concurrency."""

    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int = 0
    raw: str = field(default="", repr=False)
    foreign_cpu: float = 0.0  # share of the machine other processes used meanwhile (quiet.py)
    attempts: int = 1


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"unparsable wrk duration {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def _find(pattern: str, text: str) -> str:
    match = re.search(pattern, text, re.M)
    if not match:
        raise ValueError(f"no {pattern!r} in wrk output: {text[-300:]!r}")
    return match.group(1)


def parse_wrk(output: str, concurrency: int) -> Point:
    """Requests/sec, the 50% and 99% latency lines, and non-2xx / socket errors."""
    rps = float(_find(r"Requests/sec:\s+([\d.]+)", output))
    p50 = _duration_ms(_find(r"^\s+50%\s+(\S+)", output))
    p99 = _duration_ms(_find(r"^\s+99%\s+(\S+)", output))
    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output):
        errors += int(match.group(1))
    if match := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    ):
        errors += sum(int(g) for g in match.groups())
    return Point(concurrency, rps, p50, p99, errors, output)


def wrk_script(body: bytes, directory: Path) -> Path:
    """A Lua script that POSTs ``body`` as JSON."""
    lua = (
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body.decode())}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    fd, name = tempfile.mkstemp(suffix=".lua", dir=directory)
    with os.fdopen(fd, "w") as handle:
        handle.write(lua)
    return Path(name)


def run_wrk(url: str, script: Path, concurrency: int, seconds: float) -> Point:
    """``wrk -t1 -cC -dS --latency`` on the load core."""
    command = [
        "taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{concurrency}",
        f"-d{max(1, round(seconds))}s", "--timeout", "10s", "--latency", "-s", str(script), url,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr.strip() or done.stdout.strip()}")
    return parse_wrk(done.stdout, concurrency)


def perf_analyzer_env() -> dict[str, str]:
    """LD_LIBRARY_PATH with pip's libcudart.so.12 (perf_analyzer links it even without a GPU)."""
    env = ENVS["perf_analyzer"]
    libs = sorted(env.path.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib"))
    paths = [str(p) for p in libs] + [os.environ.get("LD_LIBRARY_PATH", "")]
    return {**os.environ, "LD_LIBRARY_PATH": ":".join(p for p in paths if p)}


def parse_perf_analyzer_csv(path: Path, concurrency: int, output: str) -> Point:
    """The ``-f`` CSV: Inferences/Second and p50/p99 latency in microseconds."""
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    row = next(r for r in rows if int(r["Concurrency"]) == concurrency)
    errors = 0 if "error" not in output.lower() else 1
    return Point(
        concurrency,
        float(row["Inferences/Second"]),
        float(row["p50 latency"]) / 1e3,
        float(row["p99 latency"]) / 1e3,
        errors,
        output,
    )


def run_perf_analyzer(
    address: str, model: str, features: int, concurrency: int, seconds: float, workdir: Path
) -> Point:
    """perf_analyzer over V2 gRPC, one row ([1, features] FP32) per request.

    Measures three windows of a third of ``seconds`` each and reports them merged: the
    stability gate is opened wide (``-s 1000``) because the caller repeats points and keeps the
    median, and an unstable-measurement abort would lose the point.
    """
    binary = ENVS["perf_analyzer"].bin("perf_analyzer")
    fd, name = tempfile.mkstemp(suffix=".csv", dir=workdir)
    os.close(fd)
    window_ms = max(300, int(seconds * 1000 / 3))
    command = [
        "taskset", "-c", LOAD_CORE, str(binary), "-m", model, "-i", "grpc", "-u", address,
        "--concurrency-range", str(concurrency), "--shape", f"input-0:1,{features}",
        "--measurement-interval", str(window_ms), "--max-trials", "3", "--stability-percentage",
        "1000", "-f", name,
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, env=perf_analyzer_env(), timeout=seconds * 2 + 60
    )
    output = done.stdout + done.stderr
    if done.returncode != 0 or not Path(name).stat().st_size:
        raise RuntimeError(f"perf_analyzer failed (rc {done.returncode}): {output.strip()[-600:]}")
    return parse_perf_analyzer_csv(Path(name), concurrency, output)
