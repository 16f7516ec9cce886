"""Classifier two-sample test: can a model tell window rows from reference rows?

Why the false-positive rate stays at ``p_val``: every row's "is it from the window?" score is
an out-of-fold prediction, made by a classifier that never saw that row — fitting and scoring
on the same rows lets the classifier memorise and alarm on pure noise. Within one fold the
held-out rows are independent of that fold's model, so under no drift a one-sided
Mann–Whitney U test (the AUC) on them is exact. Pooling the out-of-fold scores of all folds
into one test is NOT valid (each fold's model is fitted on the other folds' rows, which makes
the folds' statistics positively dependent: we measured a 10 % false-positive rate at a 5 %
level with 1000-row windows), so the fold p-values are combined with Bonferroni, which holds
under any dependence. Class weights balance the window against the larger reference. The
reference is subsampled once; windows must not overlap the reference.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import stats
from sklearn.base import ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from servekit.observe.monitoring.detectors.base import (
    DetectorResult,
    as_window,
    check_choice,
    check_int,
    check_p_val,
    require_fitted,
)

if TYPE_CHECKING:
    from servekit.observe.monitoring.reference import Reference


def _forest(seed: int) -> ClassifierMixin:
    return RandomForestClassifier(
        n_estimators=50, min_samples_leaf=5, class_weight="balanced", random_state=seed, n_jobs=1
    )


def _logistic(seed: int) -> ClassifierMixin:
    return make_pipeline(
        StandardScaler(), LogisticRegression(class_weight="balanced", random_state=seed)
    )


MODELS = {"random_forest": _forest, "logistic": _logistic}
"""The discriminating classifier, by name."""


class ClassifierDrift:
    """Out-of-fold classifier scores, a Mann–Whitney U test per fold, Bonferroni over folds."""

    kind = "data_drift"

    def __init__(
        self,
        name: str,
        *,
        p_val: float = 0.05,
        model: str = "random_forest",
        n_folds: int = 2,
        max_reference: int = 1000,
        seed: int = 0,
    ) -> None:
        self.name = name
        self.p_val = check_p_val(p_val)
        self.model = check_choice("model", model, tuple(MODELS))
        self.n_folds = check_int("n_folds", n_folds, 2)
        self.max_reference = check_int("max_reference", max_reference, 10)
        self.seed = check_int("seed", seed, 0)
        self._reference: np.ndarray | None = None

    def fit(self, reference: Reference) -> None:
        rows = np.asarray(reference.features, dtype=np.float64)
        rng = np.random.default_rng(self.seed)
        keep = rng.choice(len(rows), min(self.max_reference, len(rows)), replace=False)
        self._reference = rows[np.sort(keep)]

    def test(self, window: np.ndarray) -> DetectorResult:
        require_fitted(self._reference is not None, self.name)
        assert self._reference is not None
        rows = as_window(window, self._reference.shape[1], self.name)
        auc, p_value = self._auc(rows) if len(rows) >= 2 else (0.5, 1.0)
        return DetectorResult(
            detector=self.name,
            kind=self.kind,
            alarm=p_value < self.p_val,
            statistic=auc,
            p_value=p_value,
            threshold=self.p_val,
            window_size=len(rows),
            values={"auc": auc},
        )

    def _auc(self, rows: np.ndarray) -> tuple[float, float]:
        """(the out-of-fold AUC, the Bonferroni-combined p-value of the per-fold tests)."""
        assert self._reference is not None
        pooled = np.vstack([self._reference, rows])
        labels = np.r_[np.zeros(len(self._reference)), np.ones(len(rows))]
        folds = StratifiedKFold(
            n_splits=min(self.n_folds, len(rows)), shuffle=True, random_state=self.seed
        )
        scores = np.empty(len(labels))
        p_values = []
        for train, held_out in folds.split(pooled, labels):
            model = MODELS[self.model](self.seed).fit(pooled[train], labels[train])
            scores[held_out] = model.predict_proba(pooled[held_out])[:, 1]
            window, reference = labels[held_out] == 1, labels[held_out] == 0
            test = stats.mannwhitneyu(
                scores[held_out][window], scores[held_out][reference], alternative="greater"
            )
            p_values.append(float(test.pvalue))
        auc = stats.mannwhitneyu(scores[labels == 1], scores[labels == 0]).statistic
        auc = float(auc) / (len(rows) * len(self._reference))
        return auc, min(1.0, len(p_values) * min(p_values))


__all__ = ["MODELS", "ClassifierDrift"]
