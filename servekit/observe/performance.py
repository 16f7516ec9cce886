"""Live model performance from predictions joined to feedback (ground truth).

Pure computation, no I/O. Point metrics come from scikit-learn so they match what users get
offline; intervals and tests come from scipy.stats. Every number returned is a plain Python
float/int (JSON-able); undefined values are None, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    log_loss,
    mean_absolute_error,
    precision_recall_fscore_support,
    r2_score,
    root_mean_squared_error,
)
from sklearn.utils.multiclass import unique_labels

TASKS = ("classification", "regression", "reward")
# Per-sample series each task is compared on, the metric it yields, and whether lower is better.
_SERIES = {
    "classification": ("correct", "accuracy", False),
    "regression": ("squared_error", "mse", True),
    "reward": ("reward", "mean_reward", False),
}
# Rows whose probabilities sum this far from 1 are rejected rather than renormalised.
_PROBA_SUM_TOLERANCE = 1e-3


def _num(value: Any) -> float | None:
    """A plain float, or None for NaN/inf/None (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def classification_metrics(
    truth: Sequence,
    predicted: Sequence,
    probabilities: np.ndarray | None = None,
    classes: Sequence | None = None,
) -> dict:
    """Accuracy, macro and per-class precision/recall/F1, and log loss when probabilities exist.

    Labels (ints or strings, one type throughout) are the sorted union of truth and predictions,
    as scikit-learn does by default; ill-defined ratios count as 0 (``zero_division=0``), so a
    class missing from the truth emits no warning. ``probabilities`` is (n, k) with column j
    being ``classes[j]`` (default ``0..k-1``, any order). ``log_loss`` is None, with the cause
    in ``log_loss_reason``, when a truth label is not among ``classes`` (rows are not dropped:
    that would silently flatter the model), when rows are not distributions, or with < 2 classes.
    Rows summing to 1 within 1e-3 (float32 rounding) are renormalised before scoring.
    """
    truth_arr, pred_arr = np.asarray(truth), np.asarray(predicted)
    if truth_arr.shape != pred_arr.shape:
        raise ValueError(f"truth has {truth_arr.shape} labels, predicted {pred_arr.shape}")
    count = int(truth_arr.shape[0])
    result: dict[str, Any] = {"count": count}
    if count == 0:
        result.update(accuracy=None, precision_macro=None, recall_macro=None, f1_macro=None)
        result["per_class"] = {}
    else:
        labels = unique_labels(truth_arr, pred_arr)
        macro = precision_recall_fscore_support(
            truth_arr, pred_arr, labels=labels, average="macro", zero_division=0
        )
        per = precision_recall_fscore_support(
            truth_arr, pred_arr, labels=labels, average=None, zero_division=0
        )
        result["accuracy"] = _num(accuracy_score(truth_arr, pred_arr))
        result["precision_macro"], result["recall_macro"], result["f1_macro"] = map(_num, macro[:3])
        result["per_class"] = {
            str(label): {
                "precision": _num(p),
                "recall": _num(r),
                "f1": _num(f),
                "support": int(s),
            }
            for label, p, r, f, s in zip(labels.tolist(), *per, strict=True)
        }
    if probabilities is not None:
        result["log_loss"], result["log_loss_reason"] = _log_loss(
            truth_arr, np.asarray(probabilities), classes
        )
    return result


def _log_loss(
    truth: np.ndarray, proba: np.ndarray, classes: Sequence | None
) -> tuple[float | None, str | None]:
    """(log loss, None) or (None, why it is undefined)."""
    if truth.shape[0] == 0:
        return None, "no samples"
    if proba.ndim != 2 or proba.shape[0] != truth.shape[0]:
        return None, f"probabilities shape {proba.shape} does not match {truth.shape[0]} rows"
    cls = np.asarray(list(range(proba.shape[1])) if classes is None else classes)
    if cls.shape != (proba.shape[1],) or len(np.unique(cls)) != len(cls):
        return None, f"classes must be {proba.shape[1]} distinct labels, got {cls.tolist()}"
    if len(cls) < 2:
        return None, "log loss needs at least two classes"
    unknown = sorted({str(t) for t in truth.tolist()} - {str(c) for c in cls.tolist()})
    if unknown:
        return None, f"truth labels not in classes: {unknown[:10]}"
    proba = proba.astype(np.float64)
    sums = proba.sum(axis=1)
    if (
        not (np.isfinite(proba).all() and (proba >= 0).all())
        or (np.abs(sums - 1) > _PROBA_SUM_TOLERANCE).any()
    ):
        return None, "probability rows must be non-negative and sum to 1"
    # scikit-learn expects columns in sorted label order.
    order = np.argsort(cls, kind="stable")
    value = log_loss(truth, (proba / sums[:, None])[:, order], labels=cls[order])
    return _num(value), None


def regression_metrics(truth: Sequence[float], predicted: Sequence[float]) -> dict:
    """RMSE, MAE and R² (R² is None below 2 samples, where it is undefined)."""
    y, p = np.asarray(truth, dtype=float), np.asarray(predicted, dtype=float)
    if y.shape != p.shape:
        raise ValueError(f"truth has {y.shape} values, predicted {p.shape}")
    count = int(y.shape[0])
    if count == 0:
        return {"count": 0, "rmse": None, "mae": None, "r2": None}
    return {
        "count": count,
        "rmse": _num(root_mean_squared_error(y, p)),
        "mae": _num(mean_absolute_error(y, p)),
        "r2": _num(r2_score(y, p)) if count >= 2 else None,
    }


def reward_summary(rewards: Sequence[float], confidence: float = 0.95) -> dict:
    """Mean reward with a Student-t interval of the mean (None below 2 samples)."""
    r = np.asarray(rewards, dtype=float)
    count = int(r.shape[0])
    out: dict[str, Any] = {"count": count, "mean": _num(r.mean()) if count else None}
    out.update(ci_low=None, ci_high=None, confidence=confidence)
    if count >= 2:
        sem = float(stats.sem(r))
        if sem == 0.0:  # all rewards equal: the interval collapses to the mean
            out["ci_low"] = out["ci_high"] = out["mean"]
        else:
            low, high = stats.t.interval(confidence, count - 1, loc=r.mean(), scale=sem)
            out["ci_low"], out["ci_high"] = _num(low), _num(high)
    return out


def samples(
    task: str,
    truth: Sequence | None = None,
    predicted: Sequence | None = None,
    rewards: Sequence[float] | None = None,
) -> dict:
    """Per-sample data for :func:`compare_versions`, so callers need not know its internals.

    classification -> ``{"task", "correct": [1.0|0.0]}``, regression -> ``{"task",
    "squared_error": [...]}``, reward -> ``{"task", "reward": [...]}`` (truth/predicted unused).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "reward":
        return {"task": task, "reward": [] if rewards is None else [float(r) for r in rewards]}
    if truth is None or predicted is None:
        raise ValueError(f"{task} samples need truth and predicted")
    pairs = zip(truth, predicted, strict=True)
    if task == "classification":
        return {"task": task, "correct": [1.0 if t == p else 0.0 for t, p in pairs]}
    return {"task": task, "squared_error": [(float(t) - float(p)) ** 2 for t, p in pairs]}


def compare_versions(baseline: dict, candidate: dict, task: str, confidence: float = 0.95) -> dict:
    """Is the candidate (canary) really better than the baseline? Inputs come from :func:`samples`.

    The two versions served different requests, so samples are independent (not paired).
    classification: accuracy difference with Newcombe's hybrid score interval (method 10, from
    Wilson intervals); ``p_value`` from the pooled two-proportion z-test. regression: difference
    in MSE (mean squared error, lower is better) and reward: difference in mean reward, both with
    Welch's t-interval and t-test. ``difference`` is candidate - baseline; ``significant`` means
    the interval excludes 0 (the p-value may disagree marginally, it is a different test).
    Too few samples (0 for proportions, < 2 for t) or zero variance give None and a ``reason``.
    """
    if task not in _SERIES:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    key, metric, lower_is_better = _SERIES[task]
    for name, data in (("baseline", baseline), ("candidate", candidate)):
        if data.get("task", task) != task:
            raise ValueError(f"{name} samples are for {data['task']!r}, not {task!r}")
    base = np.asarray(baseline.get(key, []), dtype=float)
    cand = np.asarray(candidate.get(key, []), dtype=float)
    out: dict[str, Any] = {
        "metric": metric,
        "baseline": _num(base.mean()) if base.size else None,
        "candidate": _num(cand.mean()) if cand.size else None,
        "baseline_count": int(base.size),
        "candidate_count": int(cand.size),
        "difference": None,
        "ci_low": None,
        "ci_high": None,
        "confidence": confidence,
        "p_value": None,
        "significant": False,
        "better": None,
        "lower_is_better": lower_is_better,
        "method": "newcombe-hybrid-score" if task == "classification" else "welch-t",
        "reason": None,
    }
    if out["baseline"] is not None and out["candidate"] is not None:
        out["difference"] = _num(out["candidate"] - out["baseline"])
    if task == "classification":
        interval = _newcombe(base, cand, confidence)
    else:
        interval = _welch(base, cand, confidence)
    if isinstance(interval, str):
        out["reason"] = interval
        return out
    out["ci_low"], out["ci_high"], out["p_value"] = interval
    out["significant"] = bool(out["ci_low"] > 0 or out["ci_high"] < 0)
    if out["significant"]:
        candidate_wins = (out["ci_high"] < 0) if lower_is_better else (out["ci_low"] > 0)
        out["better"] = "candidate" if candidate_wins else "baseline"
    return out


def _newcombe(base: np.ndarray, cand: np.ndarray, confidence: float) -> tuple | str:
    """Newcombe (1998) hybrid score interval for p_cand - p_base, plus a pooled z-test p."""
    if base.size == 0 or cand.size == 0:
        return "needs at least one sample per version"
    if not np.isin(np.concatenate([base, cand]), (0.0, 1.0)).all():
        return "classification samples must be 0/1 correctness values"
    (k1, n1), (k2, n2) = (int(base.sum()), base.size), (int(cand.sum()), cand.size)
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = stats.binomtest(k1, n1).proportion_ci(confidence, method="wilson")
    l2, u2 = stats.binomtest(k2, n2).proportion_ci(confidence, method="wilson")
    diff = p2 - p1
    low = diff - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    high = diff + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    p_value = 1.0 if se == 0 else float(2 * stats.norm.sf(abs(diff) / se))
    return _num(low), _num(high), p_value


def _welch(base: np.ndarray, cand: np.ndarray, confidence: float) -> tuple | str:
    """Welch's t-interval and t-test for mean(cand) - mean(base) (unequal variances)."""
    if base.size < 2 or cand.size < 2:
        return "needs at least two samples per version"
    if not (np.isfinite(base).all() and np.isfinite(cand).all()):
        return "samples contain non-finite values"
    if base.var() == 0 and cand.var() == 0:
        return "both versions have zero variance; no interval can be estimated"
    res = stats.ttest_ind(cand, base, equal_var=False)
    ci = res.confidence_interval(confidence_level=confidence)
    return _num(ci.low), _num(ci.high), _num(res.pvalue)
