"""What model monitoring costs the request path: iris over V2 REST JSON, monitoring off vs on.

    python bench/monitoring.py [--duration S] [--concurrency 1,16] [--rounds 3] [--rows 1]

Three configurations, each a fresh server on the same freshly trained iris model: 'off' (no
``monitoring:`` section), 'async' (a drift test over windows of 200 rows, an isolation forest and
a Mahalanobis outlier detector, all off the hot path on the payload journal), and 'inline' (the
same, with the Mahalanobis detector scoring inside each request). Rounds are interleaved
(ABC ABC ...) and the median kept; wrk runs on core 1. After each point the monitoring backlog
(events not yet read by the detectors) is read from /metrics at once and after the detectors
catch up, with the number of detector results: monitoring keeps up, it is not skipped.
The goal: 'async' within 10 % of 'off'.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen  # noqa: E402

from servekit.testing import ServerProcess  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DETECTORS = [
    {"type": "tabular", "name": "drift", "window": {"size": 200}},
    {"type": "isolation_forest", "name": "forest"},
    {"type": "mahalanobis", "name": "outliers"},
]
CONFIGS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "off": ("off (no monitoring section)", None),
    "async": ("on: drift + 2 outlier detectors, async", {"detectors": DETECTORS}),
    "inline": (
        "on: same, Mahalanobis inline",
        {"detectors": [*DETECTORS[:2], {**DETECTORS[2], "inline": True}]},
    ),
}
_SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")


def build_repositories(workdir: Path) -> dict[str, Path]:
    """One repository per configuration, sharing the artifacts trained once."""
    sys.path.insert(0, str(ROOT / "examples"))
    import train_models

    trained = workdir / "trained"
    train_models.build_repository(trained)
    repos = {}
    for key, (_, monitoring) in CONFIGS.items():
        model = workdir / key / "iris"
        model.mkdir(parents=True)
        for item in (trained / "iris").iterdir():
            (model / item.name).symlink_to(item)
        (model / "model.yaml").unlink()
        config = yaml.safe_load((trained / "iris" / "model.yaml").read_text())
        config.pop("monitoring", None)
        config["version_policy"] = {"specific": ["1"]}
        if monitoring is not None:
            config["monitoring"] = {"reference": "reference.csv", "target": "species",
                                    **monitoring}  # fmt: skip
        (model / "model.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        repos[key] = workdir / key
    return repos


def body(rows: int) -> bytes:
    data = np.tile([5.9, 3.0, 4.2, 1.5], (rows, 1))
    return httpx.Request(
        "POST", "http://x",
        json={"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [rows, 4],
                          "data": data.ravel().tolist()}]},
    ).content  # fmt: skip


def scrape(url: str) -> dict[str, float]:
    found = {"backlog": 0.0, "results": 0.0}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if not (match := _SAMPLE.match(line)):
            continue
        name, labels, value = match.groups()
        pending = ("servekit_payload_events_spooled", "servekit_payload_events_queued")
        if name in pending and 'sink="monitoring"' in (labels or ""):
            found["backlog"] += float(value)
        elif name == "servekit_monitoring_results_total":
            found["results"] += float(value)
    return found


def wait_monitoring(url: str, monitored: bool, timeout: float = 120) -> None:
    """Until the detectors are fitted (the server is ready before they are)."""
    deadline = time.monotonic() + timeout
    while monitored and time.monotonic() < deadline:
        state = httpx.get(f"{url}/v2/models/iris/monitoring").json()
        if state.get("status") == "ready":
            return
        if state.get("status") == "failed":
            raise RuntimeError(f"monitoring failed: {state.get('error')}")
        time.sleep(0.2)


def one_round(key: str, repo: Path, args: argparse.Namespace, workdir: Path) -> dict:
    points = {}
    env = {"OMP_NUM_THREADS": "1", "SERVEKIT_LOG_LEVEL": "warning"}
    with ServerProcess(repo, env=env) as server:
        wait_monitoring(server.http_url, CONFIGS[key][1] is not None)
        url = f"{server.http_url}/v2/models/iris/infer"
        script = loadgen.wrk_script(body(args.rows), workdir)
        loadgen.run_wrk(url, script, max(args.concurrency), args.warmup)
        for concurrency in args.concurrency:
            point = loadgen.run_wrk(url, script, concurrency, args.duration)
            at_end = scrape(server.http_url)
            deadline = time.monotonic() + args.drain
            while (after := scrape(server.http_url))["backlog"] and time.monotonic() < deadline:
                time.sleep(0.2)
            points[concurrency] = {
                "rps": point.rps, "p50": point.p50_ms, "p99": point.p99_ms,
                "errors": point.errors, "backlog_end": at_end["backlog"],
                "backlog_after": after["backlog"], "results": after["results"],
            }  # fmt: skip
            print(f"  {key:<6} c={concurrency:<3} {point.rps:>7,.0f}/s  p50 {point.p50_ms:.2f}"
                  f"  p99 {point.p99_ms:.2f} ms  backlog {at_end['backlog']:.0f} -> "
                  f"{after['backlog']:.0f}", flush=True)  # fmt: skip
    return points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per point")
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds, median kept")
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--drain", type=float, default=30.0, help="most seconds to catch up")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="servekit-bench-monitoring-"))
    repos = build_repositories(workdir)
    runs: dict[str, list[dict]] = {key: [] for key in CONFIGS}
    for round_ in range(args.rounds):
        print(f"round {round_ + 1}/{args.rounds}", flush=True)
        for key in CONFIGS:
            runs[key].append(one_round(key, repos[key], args, workdir))
    print()
    header = ["configuration", "conc.", "req/s", "vs off", "p50 ms", "p99 ms", "backlog at end",
              "backlog after drain", "detector results"]  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for concurrency in args.concurrency:
        off = statistics.median(r[concurrency]["rps"] for r in runs["off"])
        for key, (label, _) in CONFIGS.items():
            pts = [r[concurrency] for r in runs[key]]
            rps = statistics.median(p["rps"] for p in pts)
            errors = sum(p["errors"] for p in pts)
            row = [
                label + (f" ({errors} errors)" if errors else ""), str(concurrency),
                f"{rps:,.0f}", "—" if key == "off" else f"{(rps / off - 1) * 100:+.1f} %",
                f"{statistics.median(p['p50'] for p in pts):.2f}",
                f"{statistics.median(p['p99'] for p in pts):.2f}",
                f"{max(p['backlog_end'] for p in pts):,.0f}",
                f"{max(p['backlog_after'] for p in pts):,.0f}",
                f"{statistics.median(p['results'] for p in pts):,.0f}",
            ]  # fmt: skip
            print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
