"""Live performance metrics: agreement with scikit-learn, JSON-safety, and interval behaviour."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
    precision_score,
    r2_score,
    recall_score,
)

from servekit.observe.performance import (
    classification_metrics,
    compare_versions,
    regression_metrics,
    reward_summary,
    samples,
)


def _plain(value: object) -> None:
    """Only JSON-native types, and no NaN anywhere."""
    json.dumps(value, allow_nan=False)
    if isinstance(value, dict):
        for item in value.values():
            _plain(item)
    else:
        assert value is None or type(value) in (int, float, str, bool), type(value)


@pytest.mark.parametrize(
    ("truth", "predicted"),
    [
        ([0, 1, 2, 2, 1, 0, 2, 1], [0, 2, 2, 2, 1, 0, 1, 1]),
        (["cat", "dog", "cat", "bird", "dog"], ["cat", "cat", "cat", "bird", "fish"]),
    ],
    ids=["int-labels", "str-labels-with-class-missing-from-truth"],
)
def test_classification_matches_sklearn(truth: list, predicted: list) -> None:
    got = classification_metrics(truth, predicted)
    _plain(got)
    assert got["count"] == len(truth)
    assert got["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    for key, fn in (
        ("precision_macro", precision_score),
        ("recall_macro", recall_score),
        ("f1_macro", f1_score),
    ):
        assert got[key] == pytest.approx(fn(truth, predicted, average="macro", zero_division=0))
    labels = sorted(set(truth) | set(predicted))
    p, r, f, s = precision_recall_fscore_support(
        truth, predicted, labels=labels, average=None, zero_division=0
    )
    assert list(got["per_class"]) == [str(label) for label in labels]
    for i, label in enumerate(labels):
        row = got["per_class"][str(label)]
        assert row == pytest.approx(
            {"precision": p[i], "recall": r[i], "f1": f[i], "support": int(s[i])}
        )
    assert "log_loss" not in got


def test_log_loss_with_string_labels_in_unsorted_column_order() -> None:
    classes = ["zebra", "ant", "mole"]  # column order as the model emits it, not sorted
    truth = ["ant", "zebra", "mole", "ant", "mole"]
    proba = np.array(
        [[0.1, 0.7, 0.2], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.3, 0.4, 0.3], [0.5, 0.1, 0.4]]
    )
    predicted = [classes[i] for i in proba.argmax(axis=1)]
    got = classification_metrics(truth, predicted, proba, classes=classes)
    _plain(got)
    order = np.argsort(classes)  # sklearn wants columns in sorted label order
    expected = log_loss(truth, proba[:, order], labels=sorted(classes))
    assert got["log_loss"] == pytest.approx(expected)
    assert got["log_loss_reason"] is None
    by_hand = -np.mean([math.log(proba[i, classes.index(t)]) for i, t in enumerate(truth)])
    assert got["log_loss"] == pytest.approx(by_hand)


def test_log_loss_default_classes_are_column_indices() -> None:
    proba = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    got = classification_metrics([0, 1, 1], [0, 1, 0], proba)
    assert got["log_loss"] == pytest.approx(log_loss([0, 1, 1], proba, labels=[0, 1]))


def test_log_loss_unknown_truth_label_is_none_with_reason() -> None:
    proba = np.array([[0.9, 0.1], [0.2, 0.8]])
    got = classification_metrics(["a", "c"], ["a", "b"], proba, classes=["a", "b"])
    assert got["log_loss"] is None
    assert "'c'" in got["log_loss_reason"]
    assert got["accuracy"] == 0.5  # the other metrics are still reported


def test_log_loss_rejects_rows_that_are_not_distributions() -> None:
    got = classification_metrics([0, 1], [0, 1], np.array([[0.5, 0.2], [0.1, 0.9]]))
    assert got["log_loss"] is None and "sum to 1" in got["log_loss_reason"]
    # float32 rounding is tolerated (renormalised) instead of tripping sklearn's warning
    proba = np.array([[0.3, 0.7000001], [0.9, 0.1]], dtype=np.float32)
    ok = classification_metrics([1, 0], [1, 0], proba)
    assert ok["log_loss"] == pytest.approx(-(math.log(0.7) + math.log(0.9)) / 2, rel=1e-5)


def test_classification_empty_input() -> None:
    got = classification_metrics([], [], probabilities=np.empty((0, 2)))
    _plain(got)
    assert got == {
        "count": 0,
        "accuracy": None,
        "precision_macro": None,
        "recall_macro": None,
        "f1_macro": None,
        "per_class": {},
        "log_loss": None,
        "log_loss_reason": "no samples",
    }


def test_classification_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="truth has"):
        classification_metrics([1, 2], [1])


def test_regression_matches_sklearn() -> None:
    rng = np.random.default_rng(3)
    truth = rng.normal(10, 3, 50)
    predicted = truth + rng.normal(0.5, 1, 50)
    got = regression_metrics(truth.tolist(), predicted.tolist())
    _plain(got)
    assert got["count"] == 50
    assert got["rmse"] == pytest.approx(math.sqrt(mean_squared_error(truth, predicted)))
    assert got["mae"] == pytest.approx(mean_absolute_error(truth, predicted))
    assert got["r2"] == pytest.approx(r2_score(truth, predicted))


def test_regression_tiny_inputs() -> None:
    assert regression_metrics([], []) == {"count": 0, "rmse": None, "mae": None, "r2": None}
    assert regression_metrics([2.0], [5.0]) == {"count": 1, "rmse": 3.0, "mae": 3.0, "r2": None}


def test_reward_summary_t_interval() -> None:
    rewards = [1.0, 0.0, 1.0, 1.0, 0.5, 0.0, 1.0]
    got = reward_summary(rewards)
    _plain(got)
    mean = float(np.mean(rewards))
    half = 2.4469118511449692 * np.std(rewards, ddof=1) / math.sqrt(7)  # t(0.975, df=6)
    assert got["count"] == 7 and got["mean"] == pytest.approx(mean)
    assert got["ci_low"] == pytest.approx(mean - half)
    assert got["ci_high"] == pytest.approx(mean + half)
    assert got["confidence"] == 0.95


def test_reward_summary_tiny_inputs() -> None:
    assert reward_summary([]) == {
        "count": 0,
        "mean": None,
        "ci_low": None,
        "ci_high": None,
        "confidence": 0.95,
    }
    assert reward_summary([0.4])["ci_low"] is None
    constant = reward_summary([2.0, 2.0, 2.0])
    assert constant["ci_low"] == constant["ci_high"] == 2.0


def test_samples_shapes() -> None:
    assert samples("classification", ["a", "b", 1], ["a", "c", 1]) == {
        "task": "classification",
        "correct": [1.0, 0.0, 1.0],
    }
    assert samples("regression", [1, 2], [3, 2]) == {"task": "regression", "squared_error": [4, 0]}
    assert samples("reward", rewards=[1, 0]) == {"task": "reward", "reward": [1.0, 0.0]}
    with pytest.raises(ValueError, match="task must be"):
        samples("ranking", [1], [1])
    with pytest.raises(ValueError):
        samples("classification", [1, 2], [1])


def _counts(correct: int, total: int) -> dict:
    return {"task": "classification", "correct": [1.0] * correct + [0.0] * (total - correct)}


def test_newcombe_interval_matches_published_example() -> None:
    # Newcombe (1998), Stat Med 17:873, table II example (56/70 vs 48/80): method 10 gives
    # 0.0524 to 0.3339 for a difference of 0.2.
    got = compare_versions(_counts(48, 80), _counts(56, 70), "classification")
    _plain(got)
    assert got["difference"] == pytest.approx(0.2)
    assert got["ci_low"] == pytest.approx(0.0524, abs=1e-4)
    assert got["ci_high"] == pytest.approx(0.3339, abs=1e-4)
    assert got["significant"] is True and got["better"] == "candidate"
    assert got["metric"] == "accuracy" and got["method"] == "newcombe-hybrid-score"


def test_clear_classification_difference_has_the_right_sign() -> None:
    worse = compare_versions(_counts(900, 1000), _counts(800, 1000), "classification")
    assert worse["difference"] == pytest.approx(-0.1)
    assert worse["ci_high"] < 0 and worse["p_value"] < 1e-6
    assert worse["significant"] is True and worse["better"] == "baseline"


def test_identical_versions_are_not_significant() -> None:
    same = compare_versions(_counts(80, 100), _counts(80, 100), "classification")
    assert same["difference"] == 0.0 and same["ci_low"] < 0 < same["ci_high"]
    assert same["p_value"] == pytest.approx(1.0)
    assert same["significant"] is False and same["better"] is None
    rewards = samples("reward", rewards=[0.1, 0.5, 0.9, 0.3])
    welch = compare_versions(rewards, rewards, "reward")
    assert welch["ci_low"] < 0 < welch["ci_high"] and welch["significant"] is False
    perfect = compare_versions(_counts(50, 50), _counts(50, 50), "classification")
    assert perfect["p_value"] == 1.0 and perfect["significant"] is False


def test_regression_compares_mse_lower_is_better() -> None:
    rng = np.random.default_rng(7)
    truth = rng.normal(0, 1, 300)
    base = samples("regression", truth, truth + rng.normal(0, 2, 300))
    cand = samples("regression", truth, truth + rng.normal(0, 1, 300))
    got = compare_versions(base, cand, "regression")
    _plain(got)
    assert got["metric"] == "mse" and got["lower_is_better"] is True
    assert got["baseline"] == pytest.approx(np.mean(base["squared_error"]))
    assert got["difference"] < 0 and got["ci_high"] < 0
    assert got["significant"] is True and got["better"] == "candidate"


def test_reward_welch_matches_scipy() -> None:
    from scipy import stats

    rng = np.random.default_rng(11)
    base, cand = rng.normal(1.0, 1.0, 40), rng.normal(1.8, 2.0, 25)
    got = compare_versions(
        samples("reward", rewards=base), samples("reward", rewards=cand), "reward", 0.9
    )
    ref = stats.ttest_ind(cand, base, equal_var=False)
    ci = ref.confidence_interval(0.9)
    assert got["p_value"] == pytest.approx(ref.pvalue)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert got["confidence"] == 0.9 and got["better"] == "candidate"


@pytest.mark.parametrize("task", ["classification", "regression", "reward"])
@pytest.mark.parametrize("sizes", [(0, 0), (0, 5), (1, 1), (1, 5)])
def test_tiny_samples_do_not_raise(task: str, sizes: tuple[int, int]) -> None:
    key = {"classification": "correct", "regression": "squared_error", "reward": "reward"}[task]
    base = {"task": task, key: [1.0] * sizes[0]}
    cand = {"task": task, key: [0.0, 1.0, 1.0, 0.0, 1.0][: sizes[1]]}
    got = compare_versions(base, cand, task)
    _plain(got)
    assert got["significant"] is False and got["better"] is None
    if 0 in sizes:
        assert got["difference"] is None and got["ci_low"] is None and got["reason"]
    if task != "classification":
        assert got["ci_low"] is None and got["p_value"] is None and got["reason"]


def test_zero_variance_welch_is_undetermined() -> None:
    got = compare_versions(
        samples("reward", rewards=[1, 1, 1]), samples("reward", rewards=[0, 0, 0]), "reward"
    )
    assert got["difference"] == -1.0 and got["ci_low"] is None and got["significant"] is False
    assert "zero variance" in got["reason"]


def test_mismatched_task_raises() -> None:
    with pytest.raises(ValueError, match="not 'reward'"):
        compare_versions(_counts(1, 2), _counts(1, 2), "reward")


def test_newcombe_coverage_by_simulation() -> None:
    rng = np.random.default_rng(20240601)
    p_base, p_cand, n = 0.80, 0.85, 400
    covered = 0
    for _ in range(400):
        k1, k2 = rng.binomial(n, p_base), rng.binomial(n, p_cand)
        got = compare_versions(_counts(k1, n), _counts(k2, n), "classification")
        covered += got["ci_low"] <= p_cand - p_base <= got["ci_high"]
    assert 0.92 <= covered / 400 <= 0.98


def test_welch_coverage_by_simulation() -> None:
    rng = np.random.default_rng(20240602)
    covered = 0
    for _ in range(400):
        base = samples("reward", rewards=rng.exponential(1.0, 60))
        cand = samples("reward", rewards=rng.normal(1.3, 0.5, 30))
        got = compare_versions(base, cand, "reward")
        covered += got["ci_low"] <= 0.3 <= got["ci_high"]
    assert 0.92 <= covered / 400 <= 0.98
