"""What the payload log costs: servekit on the tiny (or medium) model, V2 REST JSON, off vs on.

    python bench/payload_log.py [--duration S] [--concurrency 1,32] [--rounds 2] [--configs C]
                                [--model tiny|medium]

Run it with a Python that has servekit installed (the CloudEvents receiver runs under it). Four
configurations, each a fresh server with a fresh payload directory: off, the embedded store only
(default), store + HTTP sink in batch mode, store + HTTP sink in binary mode (one POST per event,
like KServe's logger) to a CloudEvents receiver process. Rounds are interleaved (ABCD ABCD), the
median of each point kept; losses are paired with the same round's "off" run (median and
range). Server on core 0; wrk and the receiver share core 1. After each point /metrics is read
at once (backlog at end of load) and after --settle s, then the sinks get up to --drain s to
catch up before the events are counted. A point during which other processes took
> 15 % of the machine is run again (--retries), the least disturbed run kept. About 4 min with the
defaults. Results: bench/results/<date>-payload-log.md (+ .json).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import envs  # noqa: E402
import loadgen  # noqa: E402
import quiet  # noqa: E402
import report  # noqa: E402
import run  # noqa: E402
from servers import Running, Servekit, v2_body  # noqa: E402

from servekit.testing.event_receiver import ReceiverProcess  # noqa: E402

CONFIGS = {  # key: (label, HTTP sink content mode or None, payload log enabled, store on)
    "off": ("off (`payload_log.enabled: false`)", None, False, False),
    "journal": ("spool only (store off, no sink: the hot path's share)", None, True, False),
    "store": ("store only (default)", None, True, True),
    "http": ("HTTP sink only, batch mode (store off)", "batch", True, False),
    "batch": ("store + HTTP sink, batch mode", "batch", True, True),
    "binary": ("store + HTTP sink, binary mode (1 POST/event)", "binary", True, True),
}
MODELS = {"tiny": "tiny (iris logistic regression)", "medium": "medium (2x256 MLP, 32 features)"}
_SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")


class ServekitPayloadLog(Servekit):
    """servekit with ``--config`` holding the payload_log section of one configuration."""

    payload_log = True  # the section below decides, not the benchmark's default of off

    def __init__(self, config: str, directory: Path, sink_url: str | None) -> None:
        self.key, (self.label, mode, enabled, store) = config, CONFIGS[config]
        self.yaml = f"payload_log:\n  enabled: {str(enabled).lower()}\n  directory: {directory}\n"
        if enabled and not store:
            self.yaml += "  store: {enabled: false}\n"
        if mode:
            sink = f"{{type: http, url: '{sink_url}', content_mode: {mode}}}"
            self.yaml += f"  sinks:\n    - {sink}\n"

    def command(self, workdir: Path, ports: Any) -> list[str]:
        (workdir / "servekit.yaml").write_text(self.yaml)
        return [*super().command(workdir, ports), "--config", str(workdir / "servekit.yaml")]


def sink_names(config: str) -> list[str]:
    """The sinks whose delivery a configuration waits for."""
    _, mode, _, store = CONFIGS[config]
    return (["store"] if store else []) + (["http"] if mode else [])


def scrape(running: Running) -> dict[str, float]:
    """Inferences served and, per sink, records delivered and spooled (``delivered:store``...)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{running.ports.http}/metrics") as response:
        text = response.read().decode()
    found: dict[str, float] = {"inferences": 0.0}
    for line in text.splitlines():
        if not (match := _SAMPLE.match(line)):
            continue
        name, labels, value = match.groups()
        sink = (re.search(r'sink="([^"]*)"', labels or "") or [None, ""])[1]
        if name == "servekit_inference_requests_total":
            found["inferences"] += float(value)
        elif name == "servekit_payload_events_delivered_total":
            found[f"delivered:{sink}"] = float(value)
        elif name in ("servekit_payload_events_spooled", "servekit_payload_events_queued"):
            found[f"spooled:{sink}"] = found.get(f"spooled:{sink}", 0.0) + float(value)
    return found


def backlog(metrics: dict[str, float], sinks: list[str]) -> dict[str, int]:
    """Inference records served but not yet delivered, per sink."""
    return {s: int(metrics["inferences"] - metrics.get(f"delivered:{s}", 0)) for s in sinks}


def drain(running: Running, sinks: list[str], seconds: float) -> dict[str, float]:
    """/metrics once every sink has caught up, or after ``seconds``."""
    deadline = time.monotonic() + seconds
    while any(backlog(metrics := scrape(running), sinks).values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return metrics


def server_ticks(running: Running) -> int:
    """CPU time (user + system, clock ticks) the server's process tree has used so far."""
    return sum(quiet._process_ticks(pid) for pid in running.pids())


def received(receiver: ReceiverProcess) -> int:
    """Events the receiver has written (one JSON line each)."""
    return receiver.out.read_bytes().count(b"\n") if receiver.out.exists() else 0


def one_config(config: str, artifacts: dict[str, Path], pythonpath: list[str], args: Any) -> dict:
    """Start a server (and receiver) for ``config``, warm up, measure each concurrency."""
    payloads = Path(tempfile.mkdtemp(prefix=f"servekit-payloads-{config}-"))
    receiver = None
    if CONFIGS[config][1]:
        receiver = ReceiverProcess(payloads / "received.jsonl").start()
        os.sched_setaffinity(receiver.process.pid, {int(loadgen.LOAD_CORE)})
    sinks = sink_names(config)
    workdir = run.WORK / "payload-log" / config
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    server = ServekitPayloadLog(config, payloads / "log", receiver and receiver.url)
    running = Running(server, workdir, artifacts, pythonpath)
    pids = lambda: running.pids() + ([receiver.process.pid] if receiver else [])  # noqa: E731
    points: dict[int, dict[str, Any]] = {}
    try:
        body = v2_body(run.sample(args.model))
        url = running.url("rest", args.model)
        running.wait_ready([(url, body)])
        script = loadgen.wrk_script(body, workdir)
        loadgen.run_wrk(url, script, max(args.concurrency), max(args.warmup, 1.0))
        for concurrency in args.concurrency:
            before, ticks = drain(running, sinks, args.drain), server_ticks(running)
            events_before = received(receiver) if receiver else 0
            tries: list[loadgen.Point] = []  # retried when others were busy; least busy kept
            while len(tries) <= args.retries and (not tries or tries[-1].foreign_cpu > quiet.BUSY):
                quiet.wait_quiet(pids(), quiet.BUSY, timeout=args.quiet_wait)
                start = quiet.sample(pids())
                tries.append(loadgen.run_wrk(url, script, concurrency, args.duration))
                tries[-1].foreign_cpu = quiet.foreign_share(start, quiet.sample(pids()))
            point = min(tries, key=lambda p: p.foreign_cpu)
            at_end = scrape(running)
            time.sleep(args.settle)
            settled = scrape(running)
            after = drain(running, sinks, args.drain)
            served = int(after["inferences"] - before["inferences"])
            cpu_us = (server_ticks(running) - ticks) / quiet.TICKS * 1e6 / max(served, 1)
            stored = after.get("delivered:store", 0) - before.get("delivered:store", 0)
            delivered = received(receiver) - events_before if receiver else 2 * stored
            points[concurrency] = {
                "rps": point.rps, "p50": point.p50_ms, "p99": point.p99_ms,
                "errors": point.errors, "foreign": point.foreign_cpu, "attempts": len(tries),
                "expected": 2 * served, "cpu_us": cpu_us, "delivered": int(delivered),
                "backlog_end": backlog(at_end, sinks), "backlog_settled": backlog(settled, sinks),
                "spooled_end": {s: int(at_end.get(f"spooled:{s}", 0)) for s in sinks},
            }  # fmt: skip
            print(f"    {config:<6} c={concurrency:<3} {point.rps:>7,.0f}/s  p50 "
                  f"{point.p50_ms:.2f}  p99 {point.p99_ms:.2f} ms  backlog at end "
                  f"{points[concurrency]['backlog_end']}", flush=True)  # fmt: skip
    finally:
        running.stop()
        if receiver:
            receiver.stop()
        shutil.rmtree(payloads, ignore_errors=True)
    return points


def paired(runs: dict[str, list[dict]], config: str, concurrency: int, key: str) -> str:
    """Median and range over rounds of the change against the same round's "off" run: on a
    noisy machine a round's runs are close in time, so pairing them cancels slow drifts."""
    changes = [
        (on[concurrency][key] / off[concurrency][key] - 1) * 100
        for on, off in zip(runs[config], runs["off"], strict=True)
    ]
    if key == "rps":
        changes = [-c for c in changes]  # a loss
    return f"{statistics.median(changes):.1f} % ({min(changes):.0f} to {max(changes):.0f})"


def summarize(runs: dict[str, list[dict]], levels: list[int]) -> list[list[str]]:
    """Median rps/p50/p99 over rounds; losses paired per round; events summed; worst backlog."""
    rows = []
    for concurrency in levels:
        for config, results in runs.items():
            pts = [r[concurrency] for r in results]
            rps = statistics.median(p["rps"] for p in pts)
            expected, got = sum(p["expected"] for p in pts), sum(p["delivered"] for p in pts)

            def worst(key: str, pts: list[dict] = pts) -> str:
                sinks = pts[0][key]
                return ", ".join(f"{s} {max(p[key][s] for p in pts):,}" for s in sinks) or "—"

            errors = sum(p["errors"] for p in pts)
            flags = " ⚠" * any(p["foreign"] > quiet.BUSY for p in pts)
            flags += f" ({errors} errors)" * bool(errors)
            rows.append([
                CONFIGS[config][0], str(concurrency), f"{rps:,.0f}{flags}",
                f"{statistics.median(p['p50'] for p in pts):.2f}",
                f"{statistics.median(p['p99'] for p in pts):.2f}",
                "—" if config == "off" else paired(runs, config, concurrency, "rps"),
                f"{statistics.median(p['cpu_us'] for p in pts):.0f}",
                "—" if config == "off" else paired(runs, config, concurrency, "cpu_us"),
                "—" if config == "off" else f"{got:,} / {expected:,}",
                worst("backlog_end"), worst("backlog_settled"),
            ])  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per point")
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--rounds", type=int, default=2, help="ABCD rounds, median kept")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds per server")
    parser.add_argument("--settle", type=float, default=3.0, help="second /metrics read after")
    parser.add_argument("--drain", type=float, default=60.0, help="max wait for sinks per point")
    parser.add_argument("--quiet-wait", type=float, default=10.0, help="max wait for quiet, s")
    parser.add_argument("--retries", type=int, default=1, help="extra runs of a disturbed point")
    parser.add_argument("--servekit-src", choices=("head", "worktree"), default="head")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="off is always run")
    parser.add_argument(
        "--model", choices=tuple(MODELS), default="tiny", help="; ".join(MODELS.values())
    )  # fmt: skip
    args = parser.parse_args(argv)
    configs = ["off", *(c for c in run._csv(args.configs) if c != "off")]
    if unknown := set(configs) - set(CONFIGS):
        raise SystemExit(f"unknown configs {sorted(unknown)}; known: {', '.join(CONFIGS)}")
    args.concurrency = [int(c) for c in run._csv(args.concurrency)]
    if error := envs.ensure(["servekit"])["servekit"]:
        raise SystemExit(f"servekit environment: {error}")
    artifacts = run.train_models([args.model])
    pythonpath, revision = run.servekit_source(args.servekit_src)
    started, m = time.time(), report.machine_description()
    runs: dict[str, list[dict]] = {config: [] for config in configs}
    for round_ in range(1, args.rounds + 1):
        print(f"== round {round_} of {args.rounds}", flush=True)
        for config in configs:
            runs[config].append(one_config(config, artifacts, pythonpath, args))
    heads = ["config", "c", "inferences/s", "p50 ms", "p99 ms", "throughput loss vs off",
             "server CPU µs/inf", "CPU/inf vs off",
             "events delivered / expected", "backlog at end of load (records)",
             f"backlog {args.settle:g} s later"]  # fmt: skip
    rows = summarize(runs, args.concurrency)
    table = [f"| {' | '.join(heads)} |", "|" + "---|" * len(heads)]
    table += [f"| {' | '.join(row)} |" for row in rows]
    versions = ", ".join(f"{d} {v}" for d, v in m["versions"].get("servekit", {}).items() if v)
    command = shlex.join(["python", "bench/payload_log.py", *(argv or sys.argv[1:])])
    text = "\n".join([
        f"## Payload log overhead, {time.strftime('%Y-%m-%d %H:%M %Z', time.localtime(started))}"
        f" on {m['host']}", "",
        f"`{command}` — servekit {args.servekit_src} {revision}, {MODELS[args.model]} model, "
        f"V2 REST JSON via wrk; {args.duration:g} s per point, {args.rounds} "
        f"interleaved round(s) (median kept; events summed, backlog the worst round); took "
        f"{time.time() - started:.0f} s.", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, Linux {m['kernel']}, "
        f"{m['python']}; load average at start {m['loadavg_start']}, at end {report.loadavg()}. "
        "servekit pinned to core 0 (OMP/OPENBLAS/MKL threads = 1); wrk AND the CloudEvents "
        f"receiver (servekit.testing.event_receiver) share core 1. {m['wrk']}. {versions}.", "",
        "Each configuration is a fresh server with a fresh payload directory (a temp dir). "
        "Events: 2 per inference; expected = 2 × servekit_inference_requests_total over the "
        "point, delivered = events the receiver got (store only: 2 × "
        "servekit_payload_events_delivered_total{sink=\"store\"}) once the sinks had caught up "
        f"(at most {args.drain:g} s). Backlog = inferences served minus records delivered, per "
        f"sink, from /metrics right after the load and {args.settle:g} s later. Server CPU: "
        "user + system time of the server's processes from the start of the load until its "
        "sinks had caught up, per inference (less sensitive than inferences/s to other "
        f"processes, not immune to them). ⚠: other processes took > {quiet.BUSY:.0%} of the "
        f"CPU in every try ({args.retries + 1}).", "",
        *table, "",
    ])  # fmt: skip
    print("\n" + text)
    raw = {"command": command, "machine": m, "revision": revision, "runs": runs}
    report.write_named("payload-log", args.model, started, text, raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())
