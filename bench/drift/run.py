"""Drift detection benchmark: detection rate per detector, shift and window size, and the
false-positive rate under no shift — servekit's detectors side by side with alibi-detect and
evidently run on the same windows.

    python -m bench.drift                     # defaults: a few minutes on CPU
    python bench/drift/run.py --trials 10 --null-trials 40 --datasets iris,wine
    python bench/drift/run.py --skip-peers    # servekit only

Windows (see scenarios.py) are saved under bench/.work/drift/; the peers run on those files in
their own virtual environment, bench/.venvs/drift-peers (created on first use with
``pip install alibi-detect[tensorflow] evidently``; comparison only, never a dependency).
Results: printed, and written to bench/results/<date>-drift.md (and .json).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import subprocess
import sys
import time
import venv
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.drift import scenarios  # noqa: E402
from servekit.observe.monitoring.detectors import build_detector  # noqa: E402
from servekit.observe.monitoring.reference import Reference  # noqa: E402

WORK = ROOT / "bench" / ".work" / "drift"
PEERS_VENV = ROOT / "bench" / ".venvs" / "drift-peers"
RESULTS = ROOT / "bench" / "results"
PEER_PACKAGES = ["alibi-detect[tensorflow]", "evidently"]

OURS: dict[str, tuple[str, dict[str, Any]]] = {
    "servekit tabular (bonferroni)": ("tabular", {}),
    "servekit tabular (fdr)": ("tabular", {"correction": "fdr"}),
    "servekit MMD": ("mmd", {"n_permutations": 100, "max_reference": 500}),
    "servekit classifier (logistic)": ("classifier", {"model": "logistic"}),
    "servekit classifier (forest)": ("classifier", {}),
}
"""Benchmark label -> (detector type, options); p_val is 0.05 everywhere."""

DEFAULT_OURS = ("servekit tabular", "servekit MMD", "servekit classifier (logistic)")
"""Run unless --detectors says otherwise (the forest adds ~0.3 s per window)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(scenarios.DATASETS))
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--trials", type=int, default=10, help="windows per shifted setting")
    parser.add_argument("--null-trials", type=int, default=40, help="windows under no shift")
    parser.add_argument("--reference-size", type=int, default=500)
    parser.add_argument(
        "--detectors",
        default=",".join(DEFAULT_OURS),
        help="comma-separated prefixes of servekit labels: " + ", ".join(OURS),
    )
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument(
        "--reuse-peers",
        action="store_true",
        help="use the peers' results already in bench/.work/drift (same seed and settings)",
    )
    parser.add_argument(
        "--peer-trials",
        type=int,
        default=1,
        help="windows per setting for the slow peers (alibi MMD/classifier, evidently)",
    )
    parser.add_argument("--seed", type=int, default=2026)
    return parser.parse_args(argv)


def make_windows(data: scenarios.Data, args: argparse.Namespace) -> dict[str, np.ndarray]:
    """References (one per trial) and the windows of every setting, as saved for the peers."""
    index = list(scenarios.DATASETS).index(data.name)
    rng = np.random.default_rng([args.seed, index])
    most = max(args.trials, args.null_trials)
    saved = {
        "references": np.stack(
            [scenarios.draw(data, rng, args.reference_size) for _ in range(most)]
        ).astype(np.float32)
    }
    for number, setting in enumerate(args.cells):
        trials = args.null_trials if setting.shift == "none" else args.trials
        saved[f"cell{number}"] = np.stack(
            [scenarios.window(data, setting, rng) for _ in range(trials)]
        ).astype(np.float32)
    return saved


def run_ours(saved: dict[str, np.ndarray], args: argparse.Namespace) -> dict[str, dict]:
    references = saved["references"].astype(np.float64)
    width = references.shape[2]
    names, types = [f"x{i}" for i in range(width)], ["numeric"] * width
    results: dict[str, dict] = {}
    for label, (type_name, options) in args.ours.items():
        fitted: dict[int, Any] = {}
        alarms: dict[str, list[int]] = {}
        started = time.perf_counter()
        for number in range(len(args.cells)):
            marks = []
            for trial, window in enumerate(saved[f"cell{number}"].astype(np.float64)):
                if trial not in fitted:
                    seeded = {"seed": trial} if type_name in ("mmd", "classifier") else {}
                    detector = build_detector(type_name, label, **options, **seeded)
                    detector.fit(Reference(references[trial], names, types))
                    fitted[trial] = detector
                marks.append(int(fitted[trial].test(window).alarm))
            alarms[f"cell{number}"] = marks
        results[label] = {"alarms": alarms, "seconds": time.perf_counter() - started}
    return results


def ensure_peers() -> Path | None:
    python = PEERS_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {PEERS_VENV} (alibi-detect, evidently) ...", flush=True)
        venv.create(PEERS_VENV, with_pip=True)
        install = [str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES]
        if subprocess.run(install, check=False).returncode != 0:
            print("peer install failed: comparison skipped", flush=True)
            return None
    return python


def rate(marks: list[int] | None) -> float:
    return sum(marks) / len(marks) if marks else math.nan


def shown(value: float | str) -> str:
    return value if isinstance(value, str) else "-" if math.isnan(value) else f"{value:.2f}"


def summarise(results: dict[str, dict[str, dict]], args: argparse.Namespace) -> dict[str, Any]:
    """Detection rate per (setting, detector), averaged over datasets."""
    detectors = list(next(iter(results.values())).keys())
    table: dict[str, dict[str, float | str]] = {}
    for number, setting in enumerate(args.cells):
        key = f"{setting.label} | {setting.size}"
        row: dict[str, float | str] = {}
        for detector in detectors:
            rates = []
            for per_dataset in results.values():
                entry = per_dataset.get(detector, {"alarms": {}})
                if "error" in entry:
                    row[detector] = "not run"
                    break
                rates.append(rate(entry["alarms"].get(f"cell{number}")))
            else:
                known = [r for r in rates if not math.isnan(r)]
                row[detector] = float(np.mean(known)) if known else math.nan
        table[key] = row
    return {"detectors": detectors, "table": table}


def markdown(summary: dict[str, Any], results: dict, args: argparse.Namespace) -> str:
    detectors = summary["detectors"]
    lines = [
        f"# Drift detection benchmark ({dt.date.today()})",
        "",
        f"Datasets: {', '.join(results)}; reference {args.reference_size} rows; "
        f"{args.trials} windows per shifted setting and {args.null_trials} under no shift, "
        "per dataset; p = 0.05. Cells: share of windows that alarmed, averaged over datasets "
        "(under no shift: the false-positive rate; the nominal 0.05 plus 3 binomial standard "
        f"errors is {0.05 + 3 * math.sqrt(0.0475 / (args.null_trials * len(results))):.3f}). "
        f"alibi MMD, alibi classifier and evidently (seconds per window) ran on the first "
        f"{args.peer_trials} window(s) of each setting only; alibi MMD on no 1000-row windows and "
        "evidently not on digits (seconds per window; shown as -, or averaged without them).",
        "",
        "| setting | window | " + " | ".join(detectors) + " |",
        "|---|---|" + "---|" * len(detectors),
    ]
    for key, row in summary["table"].items():
        setting, size = key.split(" | ")
        cells = [shown(v) for v in row.values()]
        lines.append(f"| {setting} | {size} | " + " | ".join(cells) + " |")
    lines += ["", "False-positive rate under no shift, per dataset:", ""]
    lines += ["| dataset | window | " + " | ".join(detectors) + " |"]
    lines += ["|---|---|" + "---|" * len(detectors)]
    for dataset, per_dataset in results.items():
        for number, setting in enumerate(args.cells):
            if setting.shift != "none":
                continue
            cells = [
                "not run"
                if "error" in per_dataset.get(d, {})
                else shown(rate(per_dataset.get(d, {"alarms": {}})["alarms"].get(f"cell{number}")))
                for d in detectors
            ]
            lines.append(f"| {dataset} | {setting.size} | " + " | ".join(cells) + " |")
    errors = {
        d: entry["error"]
        for per_dataset in results.values()
        for d, entry in per_dataset.items()
        if "error" in entry
    }
    if errors:
        lines += ["", "Not run:", ""] + [f"- {d}: {why}" for d, why in errors.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.cells = scenarios.settings(tuple(int(s) for s in args.sizes.split(",")))
    prefixes = [p for p in args.detectors.split(",") if p]
    args.ours = {k: v for k, v in OURS.items() if k.startswith(tuple(prefixes))}
    WORK.mkdir(parents=True, exist_ok=True)
    python = None if args.skip_peers else ensure_peers()
    results: dict[str, dict[str, dict]] = {}
    started = time.perf_counter()
    for dataset in args.datasets.split(","):
        data = scenarios.load(dataset)
        saved = make_windows(data, args)
        np.savez(WORK / f"{dataset}.npz", **saved)
        peers: subprocess.Popen | None = None
        output = WORK / f"{dataset}.peers.json"
        if args.reuse_peers and output.exists():
            results[dataset] = {**run_ours(saved, args), **json.loads(output.read_text())}
            print(f"{dataset}: done at {time.perf_counter() - started:.0f} s", flush=True)
            continue
        if python is not None:
            output.unlink(missing_ok=True)
            log = (WORK / f"{dataset}.peers.log").open("w")
            script = Path(__file__).with_name("peers.py")
            command = [str(python), str(script), str(WORK), str(args.peer_trials), dataset]
            peers = subprocess.Popen(command, stdout=log, stderr=log)
        results[dataset] = run_ours(saved, args)
        if peers is not None:
            peers.wait()
            output = WORK / f"{dataset}.peers.json"
            if output.exists():
                results[dataset].update(json.loads(output.read_text()))
            else:
                results[dataset]["peers"] = {"error": f"peer run failed, see {log.name}"}
        print(f"{dataset}: done at {time.perf_counter() - started:.0f} s", flush=True)
    summary = summarise(results, args)
    text = markdown(summary, results, args)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"{dt.date.today()}-drift"
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps({"summary": summary, "raw": results}))
    print(f"wrote {stem}.md", flush=True)


if __name__ == "__main__":
    main()
