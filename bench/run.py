"""Side-by-side benchmark of servekit against MLServer, KServe and Ray Serve, plus ceilings.

    python bench/run.py                      # everything (20-40 min; installs peers on first run)
    python bench/run.py --quick              # smoke run: 1 s points, one run each
    python bench/run.py --only servekit,mlserver-pw0,ceiling --models tiny --protocols grpc

Each server runs alone, pinned to core 0 with one BLAS/OpenMP thread; wrk (REST) and
perf_analyzer (V2 gRPC) run pinned to core 1. Per server: wait until ready, warm up, then every
(model, protocol, concurrency) point is run ``--repeats`` times and the median kept; RSS of the
server's process tree is read after each group.
Results: bench/results/<date>-<HHMM>-<host>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import envs  # noqa: E402
import loadgen  # noqa: E402
import quiet  # noqa: E402
import report  # noqa: E402
from servers import SERVER_CORE, SERVERS, THREAD_VARS, Running, Server  # noqa: E402

WORK = envs.BENCH / ".work"
ARTIFACTS = WORK / "artifacts"
PROTOCOLS = ("rest", "v1", "grpc")
RETRIES = 2  # extra tries for a run that other processes disturbed (quiet.BUSY)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    keys = ", ".join([s.key for s in SERVERS] + ["ceiling-predict"])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 s points, one run each")
    parser.add_argument("--only", default="", help=f"comma-separated key prefixes of: {keys}")
    parser.add_argument("--duration", type=float, help="seconds per point (default 5; quick 1)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per group (default 2)")
    parser.add_argument("--repeats", type=int, help="runs per point, median kept (default 2)")
    parser.add_argument("--models", default="tiny,medium")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help="rest, v1, grpc")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument(
        "--servekit-src",
        choices=("head", "worktree"),
        default="head",
        help="servekit code to measure: the committed HEAD (default; a snapshot under "
        "bench/.work) or the working tree as it is",
    )
    parser.add_argument("--install-only", action="store_true", help="create the venvs and stop")
    args = parser.parse_args(argv)
    args.duration = args.duration or (1.0 if args.quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 2.0)
    args.repeats = args.repeats or (1 if args.quick else 2)
    args.models = _csv(args.models)
    args.protocols = _csv(args.protocols)
    args.concurrency = [int(c) for c in _csv(args.concurrency)]
    args.only = _csv(args.only)
    return args


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def selected(key: str, only: list[str]) -> bool:
    return not only or any(key.startswith(prefix) for prefix in only)


def train_models(models: list[str]) -> dict[str, Path]:
    """Train once (the servekit venv has scikit-learn 1.7.2); reuse the pickles afterwards."""
    if not (ARTIFACTS / "sklearn-version.txt").exists():
        python = str(envs.ENVS["servekit"].python)
        subprocess.run([python, str(envs.BENCH / "models.py"), "train", str(ARTIFACTS)], check=True)
    return {name: ARTIFACTS / f"{name}.joblib" for name in models}


def servekit_source(choice: str) -> tuple[list[str], str]:
    """PYTHONPATH for servekit servers and the revision measured.

    The servekit venv has an editable install of the working tree, which others may be editing;
    by default a snapshot of HEAD (``git archive``) goes first on PYTHONPATH instead. Any other
    ``choice`` is a git revision, snapshotted the same way (to measure an older commit).
    """
    if choice == "worktree":
        return [], report.git_revision(dirty=True)
    commit = "HEAD" if choice == "head" else choice
    revision = subprocess.run(
        ["git", "-C", str(envs.REPO), "rev-parse", "--short=12", commit],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    target = WORK / "servekit-src" / revision
    if not (target / "servekit").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(envs.REPO), "archive", revision, "servekit"],
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return [str(target)], revision


def sample(model: str) -> list[float]:
    return json.loads((ARTIFACTS / f"{model}.sample.json").read_text())


def measure(
    running: Running, protocol: str, model: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Warm up, then each concurrency ``repeats`` times; the per-metric median is kept."""
    row = sample(model)
    if protocol == "grpc":

        def one(concurrency: int, seconds: float) -> loadgen.Point:
            return loadgen.run_perf_analyzer(
                running.grpc_address, model, len(row), concurrency, seconds, running.workdir
            )
    else:
        script = loadgen.wrk_script(running.server.body(protocol, row), running.workdir)
        url = running.url(protocol, model)

        def one(concurrency: int, seconds: float) -> loadgen.Point:
            return loadgen.run_wrk(url, script, concurrency, seconds)

    def guarded(concurrency: int) -> loadgen.Point:
        """One run on a quiet machine: wait for quiet, measure, retry if others got busy."""
        for attempt in range(1, RETRIES + 2):
            quiet.wait_quiet(running.pids(), quiet.BUSY, timeout=30)
            before = quiet.sample(running.pids())
            point = one(concurrency, args.duration)
            point.foreign_cpu = round(quiet.foreign_share(before, quiet.sample(running.pids())), 3)
            point.attempts = attempt
            if point.foreign_cpu <= quiet.BUSY:
                break
        return point

    if args.warmup > 0:
        one(max(args.concurrency), max(args.warmup, 1.0))
    points = {}
    for concurrency in args.concurrency:
        runs = [guarded(concurrency) for _ in range(args.repeats)]
        points[str(concurrency)] = {
            "rps": statistics.median(r.rps for r in runs),
            "p50_ms": statistics.median(r.p50_ms for r in runs),
            "p99_ms": statistics.median(r.p99_ms for r in runs),
            "errors": sum(r.errors for r in runs),
            "foreign_cpu": max(r.foreign_cpu for r in runs),
            "runs": [{k: v for k, v in asdict(r).items() if k != "raw"} for r in runs],
            "raw_last": runs[-1].raw[-1500:],
        }
        print(
            f"    c={concurrency:<3} {points[str(concurrency)]['rps']:>9,.0f}/s  "
            f"p50 {points[str(concurrency)]['p50_ms']:.2f} ms  "
            f"p99 {points[str(concurrency)]['p99_ms']:.2f} ms",
            flush=True,
        )
    return points


def bench_server(
    server: Server, artifacts: dict[str, Path], args: argparse.Namespace, pythonpath: list[str]
) -> list[dict[str, Any]]:
    """Start one server, measure every selected (model, protocol), stop it."""
    protocols = [p for p in server.protocols if p in args.protocols]
    base = {
        "key": server.key,
        "label": server.describe(),
        "kind": server.kind,
        "loadavg_before": report.loadavg(),
    }
    rows = [{**base, "model": m, "protocol": p} for m in artifacts for p in protocols]
    if not rows:
        return []
    workdir = WORK / server.key
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    print(f"== {base['label']}", flush=True)
    started = time.monotonic()
    running = Running(server, workdir, artifacts, pythonpath)
    try:
        http = {"rest", *protocols} - {"grpc"} if "rest" in server.protocols else set(protocols)
        probes = [
            (running.url(p, m), server.body(p, sample(m)))
            for m in artifacts
            for p in sorted(http - {"grpc"})
        ]
        if "grpc" in protocols:
            probes.append((running.grpc_address, None))
        running.wait_ready(probes)
        startup_s = round(time.monotonic() - started, 1)
        print(f"  ready after {startup_s} s", flush=True)
        for row in rows:
            row["startup_s"] = startup_s
            print(f"  {row['model']} / {row['protocol']}", flush=True)
            try:
                row["points"] = measure(running, row["protocol"], row["model"], args)
            except Exception as exc:  # one failing group must not end the run
                row["error"] = f"{exc}"[:800]
                print(f"    failed: {row['error']}", flush=True)
            row["rss_mb"] = round(running.rss_mb(), 1)
    except Exception as exc:
        for row in rows:
            row.setdefault("error", f"{exc}"[:800])
        print(f"  failed: {exc}", flush=True)
    finally:
        running.stop()
    return rows


def predict_ceiling(args: argparse.Namespace) -> dict[str, Any]:
    """``model.predict`` in process on the server core."""
    python = str(envs.ENVS["servekit"].python)
    command = [
        "taskset",
        "-c",
        SERVER_CORE,
        python,
        str(envs.BENCH / "models.py"),
        "predict",
        str(ARTIFACTS),
        str(max(2.0, args.duration)),
    ]
    environment = {**os.environ, **dict.fromkeys(THREAD_VARS, "1")}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=True)
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    servers = [s for s in SERVERS if selected(s.key, args.only)]
    needed = {"servekit"} | {s.env for s in servers}
    if "grpc" in args.protocols:
        needed.add("perf_analyzer")
    install_errors = envs.ensure(sorted(needed))
    if args.install_only:
        return 1 if any(install_errors.values()) else 0
    if install_errors.get("servekit"):
        raise SystemExit(f"servekit environment: {install_errors['servekit']}")
    artifacts = train_models(args.models)
    servekit_path, revision = servekit_source(args.servekit_src)
    started = time.time()
    machine = {**report.machine_description(), "servekit_commit": revision}
    rows: list[dict[str, Any]] = []
    for server in servers:
        if error := install_errors.get(server.env):
            rows.append(
                {
                    "key": server.key,
                    "label": server.label.format(version="?"),
                    "kind": server.kind,
                    "model": "*",
                    "protocol": "*",
                    "error": error,
                }
            )
            continue
        pythonpath = servekit_path if server.kind == "servekit" else []
        rows.extend(bench_server(server, artifacts, args, pythonpath))
    ceiling = predict_ceiling(args) if selected("ceiling-predict", args.only) else {}
    results = {
        "command": shlex.join(["python", "bench/run.py", *(argv or sys.argv[1:])]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "elapsed_s": round(time.time() - started),
        "settings": {
            k: getattr(args, k)
            for k in (
                "duration",
                "warmup",
                "repeats",
                "models",
                "protocols",
                "concurrency",
                "only",
                "servekit_src",
            )
        },
        "machine": {**machine, "loadavg_end": report.loadavg()},
        "rows": rows,
        "predict_ceiling": ceiling,
    }
    markdown, path = report.write(results)
    print()
    print(markdown)
    print(f"results: {path} (+ .json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
