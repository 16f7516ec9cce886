"""Clear shifts are detected, and results name what drifted."""

from __future__ import annotations

import numpy as np
import pytest

from servekit.observe.monitoring.detectors import build_detector
from servekit.observe.monitoring.reference import Reference


def reference_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    numeric = rng.normal(size=(n, 3))
    colour = rng.choice(3, size=(n, 1), p=[0.6, 0.3, 0.1]).astype(float)
    return np.hstack([numeric, colour])


NAMES = ["a", "b", "c", "colour"]
TYPES = ["numeric", "numeric", "numeric", "categorical"]


@pytest.fixture
def reference() -> Reference:
    return Reference(reference_rows(np.random.default_rng(0), 1000), NAMES, TYPES)


@pytest.mark.parametrize(
    ("type_name", "options"),
    [
        ("tabular", {}),
        ("tabular", {"correction": "fdr"}),
        ("mmd", {"n_permutations": 100, "seed": 1}),
        ("classifier", {"model": "logistic", "seed": 1}),
        ("classifier", {"seed": 1}),
    ],
)
def test_mean_shift_of_one_feature_is_detected(reference, type_name, options):
    detector = build_detector(type_name, "d", **options)
    detector.fit(reference)
    window = reference_rows(np.random.default_rng(1), 200)
    window[:, 1] += 1.0
    result = detector.test(window)
    assert result.alarm
    assert result.p_value < 0.05
    assert result.window_size == 200
    assert result.kind == "data_drift"


def test_tabular_names_the_drifted_features(reference):
    detector = build_detector("tabular", "tab")
    detector.fit(reference)
    window = reference_rows(np.random.default_rng(2), 300)
    window[:, 3] = np.random.default_rng(3).choice(3, size=300, p=[0.1, 0.3, 0.6])
    result = detector.test(window)
    drifted = {f.name for f in result.features if f.drifted}
    assert drifted == {"colour"}
    assert result.alarm and result.detector == "tab"
    assert result.values["drifted_features"] == 1.0


def test_ks_and_chi2_types_force_one_test(reference):
    ks = build_detector("ks", "ks")
    ks.fit(Reference(reference.features[:, :3], NAMES[:3], ["numeric"] * 3))
    assert not ks.test(reference_rows(np.random.default_rng(4), 100)[:, :3]).alarm
    chi2 = build_detector("chi2", "chi2")
    chi2.fit(Reference(reference.features[:, 3:], ["colour"], ["categorical"]))
    shifted = np.random.default_rng(5).choice(3, size=(300, 1), p=[0.2, 0.2, 0.6])
    assert chi2.test(shifted).alarm


def test_output_drift_on_predicted_labels():
    rng = np.random.default_rng(6)
    labels = rng.choice(3, size=(1000, 1), p=[0.5, 0.3, 0.2]).astype(float)
    reference = Reference(np.zeros((1000, 1)), ["x"], ["numeric"], predictions=labels)
    detector = build_detector("output", "out")
    detector.fit(reference)
    result = detector.test(rng.choice(3, size=(200, 1), p=[0.2, 0.3, 0.5]).astype(float))
    assert result.alarm and result.kind == "output_drift"


def test_cbpe_estimates_accuracy_and_alarms_on_a_drop():
    rng = np.random.default_rng(7)
    confident = rng.dirichlet([8, 1], size=2000)
    labels = (rng.random(2000) > confident[:, 0]).astype(int)
    reference = Reference(np.zeros((2000, 1)), ["x"], ["numeric"], labels, confident)
    detector = build_detector("cbpe", "cbpe")
    detector.fit(reference)
    calm = detector.test(rng.dirichlet([8, 1], size=200))
    assert not calm.alarm
    assert calm.values["estimated_accuracy"] == pytest.approx(8 / 9, abs=0.05)
    unsure = detector.test(rng.dirichlet([2, 1.5], size=200))
    assert unsure.alarm
    assert unsure.values["estimated_accuracy"] < calm.values["estimated_accuracy"]
    assert 0 < unsure.values["estimated_f1"] < 1


@pytest.mark.parametrize("type_name", ["adwin", "page_hinkley"])
def test_stream_detectors_alarm_after_a_change(type_name):
    rng = np.random.default_rng(8)
    detector = build_detector(type_name, "errors", ert=1000)
    detector.fit((rng.random(3000) < 0.1).astype(float))
    stable = [detector.update(v) for v in (rng.random(500) < 0.1).astype(float)]
    changed = [detector.update(v) for v in (rng.random(2000) < 0.5).astype(float)]
    alarms = [r for r in changed if r is not None]
    assert sum(r is not None for r in stable) == 0
    assert alarms and alarms[0].alarm and alarms[0].kind == "concept_drift"


@pytest.mark.parametrize("type_name", ["isolation_forest", "mahalanobis"])
def test_far_rows_are_flagged(reference, type_name):
    numeric = Reference(reference.features[:, :3], NAMES[:3], ["numeric"] * 3)
    detector = build_detector(type_name, "o")
    detector.fit(numeric)
    rows = np.vstack([np.zeros((5, 3)), np.full((5, 3), 8.0)])
    scores, flags = detector.score(rows)
    assert flags.tolist() == [False] * 5 + [True] * 5
    assert scores[5:].min() > scores[:5].max()


def test_squeezing_flags_rows_where_the_prediction_is_brittle():
    def predict(rows: np.ndarray) -> np.ndarray:
        positive = 1 / (1 + np.exp(-200 * (rows[:, 0] - 0.503)))
        return np.column_stack([1 - positive, positive])

    rng = np.random.default_rng(9)
    reference = Reference(rng.uniform(0, 1, (1000, 2)), ["a", "b"], ["numeric", "numeric"])
    detector = build_detector("squeezing", "adv", bits=4, percentile=99)
    detector.fit(reference, predict)
    brittle = np.column_stack([np.full(5, 0.503), rng.uniform(0, 1, 5)])
    ordinary = np.column_stack([np.full(5, 0.2), rng.uniform(0, 1, 5)])
    scores, flags = detector.score(np.vstack([brittle, ordinary]))
    assert flags.tolist() == [True] * 5 + [False] * 5
    assert scores[:5].min() > 0.5
