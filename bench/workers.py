"""Worker pool benchmarks: per-call overhead (1x4), throughput of a GIL-bound model (in-process
threads vs 1 and 2 worker processes), a 12.8 MB round trip, and memory. Prints tables."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import sys
import textwrap
import time
from pathlib import Path

import joblib
import numpy as np

from servekit.core.executor import Executor
from servekit.runtimes import ModelSpec, resolve_runtime
from servekit.workers import WorkerPoolRuntime

WORK = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/servekit-bench-workers")

IDENTITY = """
import servekit

class Identity(servekit.Model):
    def predict(self, inputs):
        return {"y": inputs["x"]}
"""

# Holds the GIL the whole time, as Python-heavy preprocessing or tree traversal does.
CPU_BOUND = """
import servekit

class Busy(servekit.Model):
    def predict(self, inputs):
        total = 0.0
        for i in range(40_000):
            total += i * 0.5
        return {"y": inputs["x"] * 0 + total}
"""

BIG = """
import os
import numpy as np
import servekit

class Big(servekit.Model):
    def load(self):
        self.table = np.ones(200 * 1024 * 1024 // 8)

    def predict(self, inputs):
        return {"sum": np.array([self.table.sum()]), "pid": np.array([os.getpid()])}
"""


def setup() -> dict[str, tuple[str, Path, str]]:
    from sklearn.linear_model import LogisticRegression

    WORK.mkdir(parents=True, exist_ok=True)
    models = {}
    for name, source in (("identity", IDENTITY), ("cpu_bound", CPU_BOUND), ("big", BIG)):
        (WORK / name).mkdir(exist_ok=True)
        (WORK / name / "model.py").write_text(textwrap.dedent(source))
        models[name] = ("custom", WORK / name / "model.py", "x")
    X = np.random.default_rng(0).random((200, 4))
    joblib.dump(LogisticRegression().fit(X, X[:, 0] > 0.5), WORK / "lr.joblib")
    models["sklearn_logreg"] = ("sklearn", WORK / "lr.joblib", "input-0")
    return models


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory(pid: int) -> dict[str, int]:
    found = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        found[key] = int(value.split()[0]) * 1024
    return found


async def per_call(fn, inputs, n=2000, rounds=7) -> float:
    for _ in range(300):
        await fn(inputs)
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(n):
            await fn(inputs)
        samples.append((time.perf_counter() - started) / n * 1e6)
    return min(samples)  # the least disturbed round: this machine may be shared


async def cpu_per_call(fn, inputs, worker: int | None, n=10000) -> float:
    """CPU time per call (us): this process plus the worker's, whatever else runs."""
    for _ in range(300):
        await fn(inputs)
    mine, theirs = time.process_time(), cpu_seconds(worker) if worker else 0.0
    for _ in range(n):
        await fn(inputs)
    used = time.process_time() - mine + (cpu_seconds(worker) - theirs if worker else 0.0)
    return used / n * 1e6


async def throughput(fn, inputs, concurrency=8, seconds=3.0) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def client():
        nonlocal done
        while time.perf_counter() < stop:
            await fn(inputs)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


def _echo(conn) -> None:
    while (item := conn.recv()) is not None:
        conn.send(item)


async def latency_table(models, executor) -> None:
    print("## Per-call latency, one 1x4 FP64 request at a time (us, best of 7 rounds)\n")
    print(
        "| model | direct call | in-process thread pool | worker pool (1) | pool - direct "
        "| CPU/call direct | CPU/call pool (server + worker) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in ("identity", "sklearn_logreg"):
        fmt, path, input_name = models[name]
        inputs = {input_name: np.random.rand(1, 4)}
        runtime = resolve_runtime(fmt)(ModelSpec(name, "1", path))
        runtime.load()
        inline = Executor.inline(runtime.predict)
        direct = await per_call(inline, inputs)
        threaded = await per_call(executor.bind(runtime.predict), inputs)
        cpu_direct = await cpu_per_call(inline, inputs, None)
        pool = WorkerPoolRuntime(fmt, ModelSpec(name, "1", path), 1)
        await pool.load()
        pooled = await per_call(pool.predict, inputs)
        cpu_pool = await cpu_per_call(pool.predict, inputs, pool.pids[0])
        await pool.unload()
        print(
            f"| {name} | {direct:.0f} | {threaded:.0f} | {pooled:.0f} | {pooled - direct:.0f} "
            f"| {cpu_direct:.0f} | {cpu_pool:.0f} |"
        )


async def throughput_table(models, executor) -> None:
    print("\n## Throughput, 8 concurrent callers, GIL-bound model (requests/s)\n")
    fmt, path, input_name = models["cpu_bound"]
    inputs = {input_name: np.random.rand(1, 4)}
    runtime = resolve_runtime(fmt)(ModelSpec("cpu", "1", path))
    runtime.load()
    print("| how | requests/s |")
    print("|---|---|")
    rows = [("in-process, 4 threads", executor.bind(runtime.predict), None)]
    for n in (1, 2):
        pool = WorkerPoolRuntime(fmt, ModelSpec("cpu", "1", path), n)
        await pool.load()
        rows.append((f"worker pool, {n} instance(s)", pool.predict, pool))
    for label, fn, pool in rows:
        await throughput(fn, inputs, seconds=0.5)
        rate = statistics.median([await throughput(fn, inputs) for _ in range(3)])
        print(f"| {label} | {rate:.0f} |")
        if pool is not None:
            await pool.unload()


async def transfer_table(models) -> None:
    print("\n## 200000x8 FP64 (12.8 MB) in and out, identity model (ms, best of 5)\n")
    fmt, path, input_name = models["identity"]
    big = {input_name: np.random.rand(200_000, 8)}
    pool = WorkerPoolRuntime(fmt, ModelSpec("identity", "1", path), 1)
    await pool.load()
    pooled = await per_call(pool.predict, big, n=20, rounds=5) / 1000
    await pool.unload()
    parent_end, child_end = multiprocessing.Pipe()
    echo = multiprocessing.get_context("fork").Process(target=_echo, args=(child_end,))
    echo.start()
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(10):
            parent_end.send(big)
            parent_end.recv()
        samples.append((time.perf_counter() - started) / 10 * 1000)
    parent_end.send(None)
    echo.join()
    print("| path | ms |")
    print("|---|---|")
    print(f"| worker pool (shared memory) | {pooled:.1f} |")
    print(f"| multiprocessing.Pipe to an echo process (pickled) | {min(samples):.1f} |")


async def memory_table(models) -> None:
    print("\n## Memory: a model holding a 200 MB array, N workers (MB)\n")
    print("| N | per worker RSS | per worker USS | zygote USS | total PSS | N separate loads |")
    print("|---|---|---|---|---|---|")
    fmt, path, input_name = models["big"]
    mb = 1024 * 1024
    for n in (1, 2, 4):
        pool = WorkerPoolRuntime(fmt, ModelSpec("big", "1", path), n)
        await pool.load()
        for _ in range(2 * n):
            await pool.predict({input_name: np.ones(1)})
        workers = [memory(pid) for pid in pool.pids]
        zygote = memory(pool.zygote_pid)
        await pool.unload()
        uss = max(w["Private_Clean"] + w["Private_Dirty"] for w in workers) / mb
        total = (sum(w["Pss"] for w in workers) + zygote["Pss"]) / mb
        rss = max(w["Rss"] for w in workers) / mb
        z_uss = (zygote["Private_Clean"] + zygote["Private_Dirty"]) / mb
        print(f"| {n} | {rss:.0f} | {uss:.1f} | {z_uss:.1f} | {total:.0f} | ~{n * rss:.0f} |")


async def main() -> None:
    models = setup()
    executor = Executor(4)
    await latency_table(models, executor)
    await throughput_table(models, executor)
    await transfer_table(models)
    await memory_table(models)
    executor.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
