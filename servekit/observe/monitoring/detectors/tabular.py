"""Per-feature drift: Kolmogorov–Smirnov for numeric and chi-squared for categorical features.

Why the false-positive rate stays at ``p_val``:

* each feature gets a two-sample test (the reference is a sample, not the population), so
  the null distribution holds at any window size, 1000 rows included;
* KS is never run on categorical codes: ties make it conservative at best and meaningless at
  worst; categorical features get a chi-squared test of the reference against the window;
* chi-squared is only trusted with expected counts of at least 5, so rare categories are merged
  into one bin (and a table left with a single bin is not tested at all) — tiny expected counts
  are the classic cause of chi-squared over-alarming on small windows;
* the per-feature p-values are combined with Bonferroni (family-wise error at ``p_val``) or the
  Benjamini–Hochberg FDR procedure (which equals family-wise control when nothing drifted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

from servekit.observe.monitoring.detectors.base import (
    DetectorResult,
    FeatureResult,
    as_window,
    check_choice,
    check_p_val,
    require_fitted,
)

if TYPE_CHECKING:
    from servekit.observe.monitoring.reference import Reference

CORRECTIONS = ("bonferroni", "fdr")
MIN_EXPECTED = 5.0
"""Smallest expected count per chi-squared cell before bins are merged."""


def ks_test(reference: np.ndarray, window: np.ndarray) -> tuple[float, float]:
    """Two-sample KS (exact for small samples, asymptotic for large ones)."""
    result = stats.ks_2samp(reference, window, method="auto")
    return float(result.statistic), float(result.pvalue)


def chi2_test(reference: np.ndarray, window: np.ndarray) -> tuple[float, float]:
    """Chi-squared test of homogeneity on category counts, rare categories merged."""
    categories, codes = np.unique(np.concatenate([reference, window]), return_inverse=True)
    counts = np.zeros((2, len(categories)))
    np.add.at(counts[0], codes[: len(reference)], 1)
    np.add.at(counts[1], codes[len(reference) :], 1)
    table = merge_rare(counts)
    if table.shape[1] < 2:
        return 0.0, 1.0
    result = stats.chi2_contingency(table, correction=True)
    return float(result.statistic), float(result.pvalue)


def merge_rare(counts: np.ndarray) -> np.ndarray:
    """Merge the least frequent categories together until every expected count is >= 5."""
    order = np.argsort(counts.sum(axis=0))
    table = counts[:, order]
    while table.shape[1] > 1 and _min_expected(table) < MIN_EXPECTED:
        merged = table[:, 0] + table[:, 1]
        table = np.column_stack([merged, table[:, 2:]]) if table.shape[1] > 2 else merged[:, None]
        table = table[:, np.argsort(table.sum(axis=0))]
    return table


def _min_expected(table: np.ndarray) -> float:
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    return float(expected.min())


TESTS = {"numeric": ks_test, "categorical": chi2_test}
"""The test per feature type."""


def combine(p_values: np.ndarray, p_val: float, correction: str) -> tuple[float, np.ndarray]:
    """(the corrected family p-value, which features are significant after correction)."""
    if correction == "bonferroni":
        adjusted = np.minimum(p_values * len(p_values), 1.0)
    else:
        adjusted = stats.false_discovery_control(p_values, method="bh")
    return float(adjusted.min()), adjusted < p_val


class TabularDrift:
    """KS or chi-squared per feature (by the reference's feature types), then a correction.

    ``only`` forces one test for every feature (the ``ks`` and ``chi2`` registry types).
    """

    kind = "data_drift"

    def __init__(
        self,
        name: str,
        *,
        p_val: float = 0.05,
        correction: str = "bonferroni",
        only: str | None = None,
    ) -> None:
        self.name = name
        self.p_val = check_p_val(p_val)
        self.correction = check_choice("correction", correction, CORRECTIONS)
        self.only = None if only is None else check_choice("only", only, tuple(TESTS))
        self._reference: np.ndarray | None = None
        self._names: list[str] = []
        self._types: list[str] = []

    def fit(self, reference: Reference) -> None:
        self.fit_columns(reference.features, reference.names, reference.types)

    def fit_columns(self, features: np.ndarray, names: list[str], types: list[str]) -> None:
        self._reference = np.asarray(features, dtype=np.float64)
        self._names = list(names)
        self._types = [self.only or t for t in types]

    def test(self, window: np.ndarray) -> DetectorResult:
        require_fitted(self._reference is not None, self.name)
        assert self._reference is not None
        rows = as_window(window, self._reference.shape[1], self.name)
        figures = [
            TESTS[kind](self._reference[:, i], rows[:, i]) for i, kind in enumerate(self._types)
        ]
        p_values = np.array([p for _, p in figures])
        family_p, significant = combine(p_values, self.p_val, self.correction)
        features = tuple(
            FeatureResult(name, statistic, p, bool(flag))
            for name, (statistic, p), flag in zip(self._names, figures, significant, strict=True)
        )
        return DetectorResult(
            detector=self.name,
            kind=self.kind,
            alarm=bool(significant.any()),
            statistic=max(s for s, _ in figures),
            p_value=family_p,
            threshold=self.p_val,
            window_size=len(rows),
            features=features,
            values={"drifted_features": float(significant.sum())},
        )


class KSDrift(TabularDrift):
    """KS on every feature (numeric references)."""

    def __init__(self, name: str, *, p_val: float = 0.05, correction: str = "bonferroni") -> None:
        super().__init__(name, p_val=p_val, correction=correction, only="numeric")


class Chi2Drift(TabularDrift):
    """Chi-squared on every feature (categorical references)."""

    def __init__(self, name: str, *, p_val: float = 0.05, correction: str = "bonferroni") -> None:
        super().__init__(name, p_val=p_val, correction=correction, only="categorical")


__all__ = ["CORRECTIONS", "Chi2Drift", "KSDrift", "TabularDrift", "chi2_test", "ks_test"]
