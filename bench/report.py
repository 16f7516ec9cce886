"""Machine description and the Markdown report (tables with servekit's ratios)."""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from envs import BENCH, ENVS, REPO
from quiet import BUSY

RESULTS = BENCH / "results"
README = BENCH / "README.md"
BEGIN, END = "<!-- latest results: begin -->", "<!-- latest results: end -->"
TITLES = {
    "rest": "V2 REST, JSON body (wrk)",
    "v1": "V1 REST `:predict` (wrk)",
    "grpc": "V2 gRPC (perf_analyzer)",
}
VERSIONS = {
    "servekit": ("servekit", "scikit-learn", "numpy", "starlette", "uvicorn", "grpcio"),
    "mlserver": ("mlserver", "mlserver-sklearn", "scikit-learn", "numpy", "uvloop", "httptools"),
    "kserve": ("kserve", "scikit-learn", "numpy"),
    "ray": ("ray", "scikit-learn", "numpy"),
    "perf_analyzer": ("tritonclient",),
}


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _cpu_model() -> str:
    match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    return match.group(1) if match else platform.processor()


def _ram_gib() -> float:
    match = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    return round(int(match.group(1)) / 2**20, 1) if match else 0.0


def _command_output(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, cwd=REPO)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def git_revision(dirty: bool) -> str:
    """HEAD's short hash; with ``dirty``, marked when the working tree has changes."""
    command = ["git", "describe", "--always", "--abbrev=12"] + (["--dirty"] if dirty else [])
    return _command_output(command)


def machine_description() -> dict[str, Any]:
    versions = {
        env: {dist: ENVS[env].version(dist) for dist in dists}
        for env, dists in VERSIONS.items()
        if ENVS[env].python.exists()
    }
    return {
        "host": socket.gethostname(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "kernel": platform.release(),
        "python": _command_output([str(ENVS["servekit"].python), "--version"]),
        "wrk": _command_output(["wrk", "-v"]),
        "loadavg_start": loadavg(),
        "versions": versions,
    }


def write_named(stem: str, model: str, started: float, text: str, raw: dict[str, Any]) -> Path:
    """``results/<day>-<stem>[-<model>].md`` and its ``.json`` (the tiny model has no suffix)."""
    suffix = "" if model == "tiny" else f"-{model}"
    day = time.strftime("%Y-%m-%d", time.localtime(started))
    path = RESULTS / f"{day}-{stem}{suffix}.md"
    path.write_text(text)
    path.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
    print(f"results: {path} (+ .json with every round)")
    return path


def _short(error: str, limit: int = 140) -> str:
    """One line, no table pipes: the most telling line of an error."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    telling = next((line for line in lines if "error" in line.lower()), lines[0] if lines else "")
    return " ".join(telling.replace("|", "/").split())[:limit]


def _cell(point: dict[str, Any] | None) -> str:
    if not point:
        return "—"
    text = f"{point['rps']:,.0f} · {point['p50_ms']:.2f} · {point['p99_ms']:.2f}"
    if point.get("foreign_cpu", 0) > BUSY:
        text += " ⚠"
    return text + (f" ({point['errors']} errors)" if point.get("errors") else "")


def _rps(row: dict[str, Any] | None, concurrency: str) -> float | None:
    point = (row or {}).get("points", {}).get(concurrency)
    return point["rps"] if point and not point.get("errors") else None


def _ratio(ours: float | None, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}×" if ours and theirs else "—"


def _table(rows: list[dict[str, Any]], protocol: str, levels: list[str]) -> list[str]:
    rows = [r for r in rows if r["protocol"] == protocol]
    if not rows:
        return []
    heads = " | ".join(f"c={c}" for c in levels)
    lines = [
        f"### {TITLES[protocol]} — inferences/s · p50 ms · p99 ms",
        "",
        f"| server | model | {heads} | RSS MB | servekit ÷ row ({' / '.join(levels)}) |",
        "|---|---|" + "---|" * len(levels) + "---|---|",
    ]
    summary = []
    for model in dict.fromkeys(r["model"] for r in rows):
        group = [r for r in rows if r["model"] == model]
        ours = next((r for r in group if r["key"] == "servekit"), None)
        for row in group:
            if row.get("error"):
                lines.append(f"| {row['label']} | {model} | failed: {_short(row['error'])} |")
                continue
            cells = " | ".join(_cell(row["points"].get(c)) for c in levels)
            ratio = (
                "—"
                if row["kind"] == "servekit"
                else " / ".join(_ratio(_rps(ours, c), _rps(row, c)) for c in levels)
            )
            lines.append(
                f"| {row['label']} | {model} | {cells} | {row.get('rss_mb', '—')} | {ratio} |"
            )
        peers = [r for r in group if r["kind"] == "peer" and not r.get("error")]
        for mine in (r for r in group if r["kind"] == "servekit" and not r.get("error")):
            parts = []
            for c in levels:
                best = max(peers, key=lambda r, c=c: _rps(r, c) or 0, default=None)
                if best and _rps(best, c):
                    parts.append(
                        f"c={c} {_ratio(_rps(mine, c), _rps(best, c))} "
                        f"({best['label'].split(' ')[0]} {best['key']})"
                    )
            if parts:
                summary.append(f"- {model}, {mine['label']} vs best peer: " + "; ".join(parts))
    return [*lines, "", *summary, ""]


def _ceiling_table(ceiling: dict[str, Any]) -> list[str]:
    if not ceiling:
        return []
    lines = [
        "### In process: `model.predict` on the server core (no network)",
        "",
        "| model | batch 1: µs per call (calls/s) | batch 32: µs per call (rows/s) |",
        "|---|---|---|",
    ]
    for model, t in ceiling.items():
        lines.append(
            f"| {model} | {t['batch1_us_per_call']:.0f} µs ({t['batch1_rows_per_s']:,.0f}/s) | "
            f"{t['batch32_us_per_call']:.0f} µs ({t['batch32_rows_per_s']:,.0f} rows/s) |"
        )
    return [*lines, ""]


def _disturbed(rows: list[dict[str, Any]]) -> int:
    return sum(
        1 for r in rows for p in r.get("points", {}).values() if p.get("foreign_cpu", 0) > BUSY
    )


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    levels = [str(c) for c in results["settings"]["concurrency"]]
    versions = "; ".join(
        f"{env}: " + ", ".join(f"{d} {v}" for d, v in dists.items() if v)
        for env, dists in m["versions"].items()
    )
    s = results["settings"]
    lines = [
        f"## Results {results['started']} on {m['host']}",
        "",
        f"`{results['command']}` — {s['duration']:g} s per point, {s['repeats']} run(s) per point "
        f"(median kept), {s['warmup']:g} s warm-up per group; took {results['elapsed_s']} s.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, Linux {m['kernel']}, "
        f"{m['python']}; load average at start {m['loadavg_start']}, at end {m['loadavg_end']}. "
        f"Servers pinned to core 0 (OMP/OPENBLAS/MKL threads = 1), load generator on core 1. "
        f"servekit {s.get('servekit_src', 'worktree')} {m['servekit_commit']}; {m['wrk']}.",
        "",
        f"Versions — {versions}.",
        "",
        f"The machine is shared: each run waits for a quiet machine and is retried (up to twice) "
        f"when other processes took more than {BUSY:.0%} of its CPU meanwhile; ⚠ marks points "
        f"where that still happened ({_disturbed(results['rows'])} of "
        f"{sum(len(r.get('points', {})) for r in results['rows'])}).",
        "",
    ]
    for protocol in TITLES:
        lines += _table(results["rows"], protocol, levels)
    lines += _ceiling_table(results.get("predict_ceiling", {}))
    failed = sorted(
        {
            f"{r['label']}: {_short(r['error'], 300)}"
            for r in results["rows"]
            if r.get("error") and r["model"] == "*"
        }
    )
    if failed:
        lines += ["Not measured:", "", *[f"- {f}" for f in failed], ""]
    return "\n".join(lines)


def write(results: dict[str, Any], update_readme: bool = True) -> tuple[str, Path]:
    """Write results/<date>-<HHMM>-<host>[-quick].{md,json} (start time); a full run also puts
    the table in bench/README.md."""
    RESULTS.mkdir(exist_ok=True)
    quick = "-quick" if results["settings"]["duration"] < 2 else ""
    when = results["started"][:16].replace(" ", "-").replace(":", "")  # 2026-11-22-0250
    stem = f"{when}-{results['machine']['host']}{quick}"
    markdown = render(results)
    (RESULTS / f"{stem}.md").write_text(markdown + "\n")
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    if update_readme and not quick and not results["settings"]["only"] and README.exists():
        text = README.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            tail = rest.split(END, 1)[1]
            README.write_text(
                f"{head}{BEGIN}\n{markdown}\n\nRaw numbers: "
                f"[results/{stem}.json](results/{stem}.json)\n{END}{tail}"
            )
    return markdown, RESULTS / f"{stem}.md"
