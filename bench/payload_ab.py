"""What the payload log costs, measured side by side: a server with logging off and one with it
on share core 0 at the same time, each loaded by its own wrk on core 1.

    python bench/payload_ab.py [--model tiny|medium] [--configs store,http,batch] [--rounds 5]
                               [--duration 6] [--concurrency 32]

Why: on a shared VM the speed of a core drifts by 10-30 % within minutes, more than the effect
being measured, so servers run one after the other (``payload_log.py``) disagree from run to
run. Two servers on one core at once see the same drift. Each server is started in its own
session, so with the kernel's autogroup scheduling (checked, and reported) both get an equal
share of the core whatever their thread count: the ratio of their throughputs is the ratio of
their costs per inference. The shipper process (the default ``payload_log.delivery``) is moved to
core 1, beside wrk, and its CPU is reported apart. CPU per inference (the process tree's user +
system time less the shipper's, from the start of the load until the sinks caught up, over the
inferences served) is reported too and does not depend on the shares. A fresh pair of servers
per round. Results:
bench/results/<date>-payload-ab[-medium].md (+ .json).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import envs  # noqa: E402
import loadgen  # noqa: E402
import quiet  # noqa: E402
import report  # noqa: E402
import run  # noqa: E402
from payload_log import (  # noqa: E402
    CONFIGS,
    MODELS,
    ServekitPayloadLog,
    backlog,
    drain,
    received,
    scrape,
    server_ticks,
    sink_names,
)
from servers import Running, v2_body  # noqa: E402

from servekit.testing.event_receiver import ReceiverProcess  # noqa: E402


@dataclass
class Started:
    config: str
    running: Running
    url: str
    script: Path
    payloads: Path
    receiver: ReceiverProcess | None = None
    sinks: list[str] = field(default_factory=list)
    shipper: int | None = None
    """The pid of the server's shipper process (``delivery: process``), moved to the load core."""

    def stop(self) -> None:
        self.running.stop()
        if self.receiver is not None:
            self.receiver.stop()
        shutil.rmtree(self.payloads, ignore_errors=True)


def start(config: str, artifacts: dict[str, Path], pythonpath: list[str], args: Any) -> Started:
    payloads = Path(tempfile.mkdtemp(prefix=f"servekit-payloads-{config}-"))
    receiver = None
    if CONFIGS[config][1]:
        receiver = ReceiverProcess(payloads / "received.jsonl").start()
        os.sched_setaffinity(receiver.process.pid, {int(loadgen.LOAD_CORE)})
    workdir = run.WORK / "payload-ab" / config
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    server = ServekitPayloadLog(config, payloads / "log", receiver and receiver.url)
    running = Running(server, workdir, artifacts, pythonpath)
    started = Started(config, running, "", workdir / "unused", payloads, receiver)
    started.sinks = sink_names(config)
    try:
        body = v2_body(run.sample(args.model))
        started.url = running.url("rest", args.model)
        running.wait_ready([(started.url, body)])
        started.script = loadgen.wrk_script(body, workdir)
        started.shipper = find_shipper(running)
        if started.shipper is not None:
            os.sched_setaffinity(started.shipper, {int(loadgen.LOAD_CORE)})
    except BaseException:
        started.stop()
        raise
    return started


def find_shipper(running: Running) -> int | None:
    for pid in running.pids():
        try:
            if b"payloads.shipper" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    return None


def shipper_ticks(server: Started) -> int:
    return quiet._process_ticks(server.shipper) if server.shipper is not None else 0


def one_round(config: str, artifacts: dict[str, Path], pythonpath: list[str], args: Any) -> dict:
    """Start "off" and ``config``, warm both, load both at once, count what each served."""
    pair = [start("off", artifacts, pythonpath, args)]
    try:
        pair.append(start(config, artifacts, pythonpath, args))
        for server in pair:
            loadgen.run_wrk(server.url, server.script, args.concurrency, args.warmup)
        before = [drain(s.running, s.sinks, args.drain) for s in pair]
        ticks = [server_ticks(s.running) for s in pair]
        shipped = [shipper_ticks(s) for s in pair]
        events = [received(s.receiver) if s.receiver else 0 for s in pair]
        points: list[Any] = [None, None]

        def load(index: int) -> None:
            server = pair[index]
            points[index] = loadgen.run_wrk(
                server.url, server.script, args.concurrency, args.duration
            )

        threads = [threading.Thread(target=load, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        at_end = scrape(pair[1].running)
        after = [drain(s.running, s.sinks, args.drain) for s in pair]
        result: dict[str, Any] = {"backlog_end": backlog(at_end, pair[1].sinks)}
        for index, server in enumerate(pair):
            served = int(after[index]["inferences"] - before[index]["inferences"])
            shipper = (shipper_ticks(server) - shipped[index]) / quiet.TICKS
            cpu = (server_ticks(server.running) - ticks[index]) / quiet.TICKS - shipper
            stored = after[index].get("delivered:store", 0) - before[index].get(
                "delivered:store", 0
            )
            delivered = received(server.receiver) - events[index] if server.receiver else 2 * stored
            result[server.config] = {
                "rps": points[index].rps, "p50": points[index].p50_ms,
                "p99": points[index].p99_ms, "errors": points[index].errors,
                "cpu_us": cpu * 1e6 / max(served, 1), "expected": 2 * served,
                "shipper_us": shipper * 1e6 / max(served, 1),
                "delivered": int(delivered),
            }  # fmt: skip
        on, off = result[config], result["off"]
        print(f"    off {off['rps']:>7,.0f}/s  {config} {on['rps']:>7,.0f}/s  loss "
              f"{(1 - on['rps'] / off['rps']) * 100:5.1f} %  CPU/inf {off['cpu_us']:.0f} vs "
              f"{on['cpu_us']:.0f} µs (shipper {on['shipper_us']:.0f})", flush=True)  # fmt: skip
        return result
    finally:
        for server in pair:
            server.stop()


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} % ({min(values):.0f} to {max(values):.0f})"


def summarize(runs: dict[str, list[dict]]) -> list[list[str]]:
    rows = []
    for config, rounds in runs.items():
        on = [r[config] for r in rounds]
        off = [r["off"] for r in rounds]
        losses = [(1 - a["rps"] / b["rps"]) * 100 for a, b in zip(on, off, strict=True)]
        extra = [(a["cpu_us"] / b["cpu_us"] - 1) * 100 for a, b in zip(on, off, strict=True)]
        errors = sum(p["errors"] for p in on + off)
        rows.append([
            CONFIGS[config][0],
            f"{statistics.median(p['rps'] for p in off):,.0f}",
            f"{statistics.median(p['rps'] for p in on):,.0f}",
            spread(losses),
            f"{statistics.median(p['p99'] for p in off):.2f} / "
            f"{statistics.median(p['p99'] for p in on):.2f}",
            f"{statistics.median(p['cpu_us'] for p in off):.0f} / "
            f"{statistics.median(p['cpu_us'] for p in on):.0f}",
            spread(extra),
            f"{statistics.median(p.get('shipper_us', 0.0) for p in on):.0f}",
            f"{sum(p['delivered'] for p in on):,} / {sum(p['expected'] for p in on):,}",
            f"{errors:,}",
        ])  # fmt: skip
    return rows


def autogroup() -> bool:
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per round")
    parser.add_argument("--concurrency", type=int, default=32, help="per server")
    parser.add_argument("--rounds", type=int, default=5, help="a fresh pair per round")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds per server")
    parser.add_argument("--drain", type=float, default=60.0, help="max wait for sinks, s")
    parser.add_argument(
        "--servekit-src", default="head", help="head, worktree or a git revision to measure"
    )
    parser.add_argument("--configs", default="store,http,batch", help="each against 'off'")
    parser.add_argument("--model", choices=tuple(MODELS), default="tiny")
    args = parser.parse_args(argv)
    configs = [c for c in run._csv(args.configs) if c != "off"]
    if unknown := set(configs) - set(CONFIGS):
        raise SystemExit(f"unknown configs {sorted(unknown)}; known: {', '.join(CONFIGS)}")
    if error := envs.ensure(["servekit"])["servekit"]:
        raise SystemExit(f"servekit environment: {error}")
    artifacts = run.train_models([args.model])
    pythonpath, revision = run.servekit_source(args.servekit_src)
    started, m = time.time(), report.machine_description()
    runs: dict[str, list[dict]] = {config: [] for config in configs}
    for round_ in range(1, args.rounds + 1):
        print(f"== round {round_} of {args.rounds}", flush=True)
        for config in configs:
            runs[config].append(one_round(config, artifacts, pythonpath, args))
    heads = ["config", "off inferences/s", "on inferences/s", "throughput loss",
             "p99 ms off / on", "serving CPU µs/inf off / on", "CPU/inf vs off",
             "shipper CPU µs/inf (core 1)", "events delivered / expected", "errors"]  # fmt: skip
    table = [f"| {' | '.join(heads)} |", "|" + "---|" * len(heads)]
    table += [f"| {' | '.join(row)} |" for row in summarize(runs)]
    shares = (
        "autogroup scheduling is on: each server (its own session) gets an equal share of "
        "core 0, so the throughput ratio is the cost ratio"
        if autogroup()
        else "⚠ autogroup scheduling is OFF: core 0 is shared per thread, which favours the "
        "server with more busy threads; read the CPU/inf column"
    )
    command = shlex.join(["python", "bench/payload_ab.py", *(argv or sys.argv[1:])])
    text = "\n".join([
        f"## Payload log overhead side by side, "
        f"{time.strftime('%Y-%m-%d %H:%M %Z', time.localtime(started))} on {m['host']}", "",
        f"`{command}` — servekit {args.servekit_src} {revision}, {MODELS[args.model]} model, "
        f"V2 REST JSON via wrk at concurrency {args.concurrency} per server; {args.rounds} "
        f"round(s) of {args.duration:g} s, a fresh pair of servers each (medians; losses per "
        f"round, median and range); took {time.time() - started:.0f} s.", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, Linux {m['kernel']}, "
        f"{m['python']}. Both servers pinned to core 0 (OMP/OPENBLAS/MKL threads = 1); both "
        f"wrk and the CloudEvents receiver on core 1; so is the shipper process that delivers "
        f"the spool to the sinks (`payload_log.delivery: process`, the default): its CPU is "
        f"the shipper column, not in the serving process's; {shares}.", "",
        *table, "",
    ])  # fmt: skip
    print("\n" + text)
    raw = {"command": command, "machine": m, "revision": revision, "runs": runs}
    report.write_named("payload-ab", args.model, started, text, raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
