"""Under no shift every detector alarms at (about) its nominal rate, at windows of 10, 100, 1000.

Each trial draws a fresh reference and an independent window from the same distribution (a
two-sample test's level is over both samples; a window never overlaps its reference), with a
fixed seed. The bound is the nominal rate plus three binomial standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from servekit.observe.monitoring.detectors import build_detector
from servekit.observe.monitoring.reference import Reference

P_VAL = 0.05


def bound(trials: int, rate: float = P_VAL) -> float:
    return rate + 3 * math.sqrt(rate * (1 - rate) / trials)


def mixed_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """Three correlated numeric features, one integer-valued one and a categorical one."""
    numeric = rng.multivariate_normal([0, 1, 2], [[1, 0.5, 0], [0.5, 1, 0.3], [0, 0.3, 2]], n)
    counts = rng.poisson(3, size=(n, 1)).astype(float)
    colour = rng.choice(4, size=(n, 1), p=[0.5, 0.3, 0.15, 0.05]).astype(float)
    return np.hstack([numeric, counts, colour])


TYPES = ["numeric", "numeric", "numeric", "numeric", "categorical"]
NAMES = ["a", "b", "c", "count", "colour"]


def false_alarm_rate(type_name, size, trials, n_reference, seed=0, **options) -> float:
    rng = np.random.default_rng(seed)
    alarms = 0
    for trial in range(trials):
        detector = build_detector(type_name, type_name, p_val=P_VAL, seed=trial, **options)
        detector.fit(Reference(mixed_rows(rng, n_reference), NAMES, TYPES))
        alarms += detector.test(mixed_rows(rng, size)).alarm
    return alarms / trials


@pytest.mark.parametrize("size", [10, 100, 1000])
@pytest.mark.parametrize("correction", ["bonferroni", "fdr"])
def test_tabular(size, correction):
    rng = np.random.default_rng(size)
    trials, alarms = 200, 0
    for _ in range(trials):
        detector = build_detector("tabular", "t", p_val=P_VAL, correction=correction)
        detector.fit(Reference(mixed_rows(rng, 500), NAMES, TYPES))
        alarms += detector.test(mixed_rows(rng, size)).alarm
    assert alarms / trials <= bound(trials)


@pytest.mark.parametrize("size", [10, 100, 1000])
def test_mmd(size):
    rate = false_alarm_rate("mmd", size, 60, 300, seed=size, n_permutations=60, max_reference=200)
    assert rate <= bound(60)


@pytest.mark.parametrize("size", [10, 100, 1000])
def test_classifier_logistic(size):
    rate = false_alarm_rate("classifier", size, 60, 300, seed=size, model="logistic")
    assert rate <= bound(60)


def test_classifier_forest():
    rate = false_alarm_rate("classifier", 100, 20, 200, seed=7)
    assert rate <= bound(20)


@pytest.mark.parametrize("size", [10, 100, 1000])
def test_output_drift_on_labels_and_probabilities(size):
    rng = np.random.default_rng(size)
    trials, alarms = 150, 0
    for _ in range(trials):
        probabilities = rng.dirichlet([4, 2, 1], size=500 + size)
        labels = probabilities.argmax(axis=1).astype(float)
        outputs = np.column_stack([labels, probabilities[:, 0]])
        reference = Reference(np.zeros((500, 1)), ["x"], ["numeric"], predictions=outputs[:500])
        detector = build_detector("output", "o", p_val=P_VAL)
        detector.fit(reference)
        alarms += detector.test(outputs[500:]).alarm
    assert alarms / trials <= bound(trials)


def calibrated_classifier(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(P(class) per row, labels drawn from them): a perfectly calibrated 3-class model."""
    logits = rng.normal(size=(n, 3)) * 1.5
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = (rng.random((n, 1)) > probabilities.cumsum(axis=1)).sum(axis=1)
    return probabilities, labels


@pytest.mark.parametrize("size", [10, 100, 1000])
def test_cbpe(size):
    rng = np.random.default_rng(size)
    trials, alarms = 150, 0
    for trial in range(trials):
        probabilities, labels = calibrated_classifier(rng, 1000)
        reference = Reference(
            np.zeros((1000, 1)), ["x"], ["numeric"], targets=labels, predictions=probabilities
        )
        detector = build_detector("cbpe", "c", p_val=P_VAL, n_bootstrap=500, seed=trial)
        detector.fit(reference)
        alarms += detector.test(calibrated_classifier(rng, size)[0]).alarm
    assert alarms / trials <= bound(trials)


@pytest.mark.parametrize("type_name", ["isolation_forest", "mahalanobis"])
def test_outlier_flag_rate_matches_the_percentile(type_name):
    rng = np.random.default_rng(3)
    flagged, scored = 0, 0
    for seed in range(4):
        rows = rng.multivariate_normal([0, 0, 0], np.eye(3) + 0.5, 1500)
        detector = build_detector(type_name, "o", percentile=99, seed=seed)
        detector.fit(Reference(rows, ["a", "b", "c"], ["numeric"] * 3))
        _, flags = detector.score(rng.multivariate_normal([0, 0, 0], np.eye(3) + 0.5, 2000))
        flagged, scored = flagged + int(flags.sum()), scored + len(flags)
    # the threshold is itself estimated from 4 x 450 held-out rows: that is the sampling error
    assert flagged / scored <= bound(4 * 450, 0.01)


@pytest.mark.parametrize("type_name", ["adwin", "page_hinkley"])
def test_stream_run_length_reaches_the_expected_run_time(type_name):
    rng = np.random.default_rng(11)
    detector = build_detector(type_name, "s", ert=500, seed=1)
    detector.fit((rng.random(3000) < 0.2).astype(float))
    stream = (rng.random(20_000) < 0.2).astype(float)
    alarms = sum(detector.update(v) is not None for v in stream)
    assert alarms <= 20_000 / 500 * 1.5
