"""Run alibi-detect and evidently on the drift benchmark's saved windows (in their own venv).

    bench/.venvs/drift-peers/bin/python bench/drift/peers.py WORK_DIR SLOW_TRIALS DATASET ...

Reads WORK_DIR/<dataset>.npz (written by run.py), writes WORK_DIR/<dataset>.peers.json:
{detector: {"alarms": {cell: [0/1 per window]}} or {"error": "why it did not run"}}.
The slow peers (seconds per window on a busy CPU) see only the first SLOW_TRIALS windows of
each setting, and alibi MMD no windows of 1000 rows (several seconds each with TensorFlow on
CPU), evidently none of digits (64 columns). Comparison only: nothing here is imported by servekit.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

warnings.filterwarnings("ignore")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

P_VAL = 0.05
Factory = Callable[[np.ndarray], Callable[[np.ndarray], Any]]


def alibi_ks(correction: str) -> Factory:
    from alibi_detect.cd import KSDrift

    def make(reference: np.ndarray) -> Callable[[np.ndarray], bool]:
        detector = KSDrift(reference, p_val=P_VAL, correction=correction)
        return lambda window: bool(detector.predict(window)["data"]["is_drift"])

    return make


def alibi_mmd() -> Factory:
    from alibi_detect.cd import MMDDrift
    from alibi_detect.utils.frameworks import has_pytorch, has_tensorflow

    backend = "tensorflow" if has_tensorflow else "pytorch" if has_pytorch else None
    if backend is None:
        raise RuntimeError("alibi-detect MMD needs TensorFlow or PyTorch; neither installed")

    def make(reference: np.ndarray) -> Callable[[np.ndarray], bool]:
        scale = reference.std(axis=0)
        scale[scale == 0] = 1.0
        center = reference.mean(axis=0)
        detector = MMDDrift(
            ((reference - center) / scale).astype(np.float32),
            backend=backend,
            p_val=P_VAL,
            n_permutations=100,
        )
        return lambda window: bool(
            detector.predict(((window - center) / scale).astype(np.float32))["data"]["is_drift"]
        )

    return make


def alibi_classifier() -> Factory:
    from alibi_detect.cd import ClassifierDrift
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def make(reference: np.ndarray) -> Callable[[np.ndarray], bool]:
        detector = ClassifierDrift(
            reference,
            model=make_pipeline(StandardScaler(), LogisticRegression()),
            backend="sklearn",
            p_val=P_VAL,
            n_folds=5,
            preds_type="probs",
        )
        return lambda window: bool(detector.predict(window)["data"]["is_drift"])

    return make


def evidently() -> Factory:
    """One report per window gives both rules: its dataset drift (at least half the columns
    drifted) and the naive "any column drifted" (per-column tests, no correction)."""
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    def make(reference: np.ndarray) -> Callable[[np.ndarray], Any]:
        columns = [f"x{i}" for i in range(reference.shape[1])]
        frame = pd.DataFrame(reference, columns=columns)

        def alarm(window: np.ndarray) -> dict[str, bool]:
            current = pd.DataFrame(window, columns=columns)
            result = Report([DataDriftPreset()]).run(current_data=current, reference_data=frame)
            drifted = result.dict()["metrics"][0]["value"]
            return {
                "evidently dataset drift": drifted["share"] >= 0.5,
                "evidently any column": drifted["count"] > 0,
            }

        return alarm

    return make


PEERS: dict[str, Callable[[], Factory]] = {
    "alibi KS (bonferroni)": lambda: alibi_ks("bonferroni"),
    "alibi KS (fdr)": lambda: alibi_ks("fdr"),
    "alibi MMD": alibi_mmd,
    "alibi classifier": alibi_classifier,
    "evidently": evidently,
}
"""A factory fits on a reference and returns a test: window -> alarm (or {name: alarm})."""

SLOW = {"alibi MMD": 1000, "alibi classifier": None, "evidently": None}
"""Peers run on SLOW_TRIALS windows per setting; the value: window size they skip."""

MAX_EVIDENTLY_COLUMNS = 32
"""evidently takes tens of seconds per report on digits' 64 columns here: skipped there."""


def run_dataset(work: Path, dataset: str, slow_trials: int) -> dict[str, dict]:
    saved = np.load(work / f"{dataset}.npz")
    references = saved["references"].astype(np.float64)
    cells = sorted((k for k in saved.files if k.startswith("cell")), key=lambda k: int(k[4:]))
    results: dict[str, dict] = {}
    for name, factory in PEERS.items():
        try:
            make = factory()
            alarms: dict[str, dict[str, list[int]]] = {}
            tests: dict[int, Callable[[np.ndarray], Any]] = {}
            for cell in cells:
                windows = saved[cell].astype(np.float64)
                if name in SLOW:
                    skipped = SLOW[name] is not None and windows.shape[1] >= SLOW[name]
                    skipped |= name == "evidently" and windows.shape[2] > MAX_EVIDENTLY_COLUMNS
                    windows = windows[: 0 if skipped else slow_trials]
                for trial, window in enumerate(windows):
                    if trial not in tests:
                        tests[trial] = make(references[trial])
                    said = tests[trial](window)
                    for label, alarm in (said if isinstance(said, dict) else {name: said}).items():
                        alarms.setdefault(label, {}).setdefault(cell, []).append(int(alarm))
            results.update({label: {"alarms": marks} for label, marks in alarms.items()})
        except Exception as exc:  # noqa: BLE001 - a peer that fails is reported, not fatal
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
        print(f"  peers {dataset}: {name} done", flush=True)
    return results


def main() -> None:
    work, slow_trials = Path(sys.argv[1]), int(sys.argv[2])
    for dataset in sys.argv[3:]:
        results = run_dataset(work, dataset, slow_trials)
        (work / f"{dataset}.peers.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main()
