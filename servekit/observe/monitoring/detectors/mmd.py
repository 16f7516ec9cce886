"""Multivariate drift: maximum mean discrepancy with a permutation test.

Why the false-positive rate stays at ``p_val``: under no drift the reference sample and the
window are exchangeable, so the MMD of every relabelling of the pooled rows is a draw from the
statistic's null distribution. The p-value ``(1 + #{permuted >= observed}) / (1 + B)`` is then
exact at any window size. The kernel bandwidth (median heuristic) and the feature scaling come
from the reference alone, so they do not depend on which rows were labelled window. ``B`` is
checked against ``p_val``: with too few permutations the smallest reachable p-value would
exceed the level. The reference is subsampled once (``max_reference`` rows) to keep a window of
1000 rows well under a second; all permutations are scored in one matrix product.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial.distance import cdist, pdist

from servekit.errors import ConfigError
from servekit.observe.monitoring.detectors.base import (
    DetectorResult,
    as_window,
    check_int,
    check_p_val,
    require_fitted,
)

if TYPE_CHECKING:
    from servekit.observe.monitoring.reference import Reference


def median_bandwidth(rows: np.ndarray, seed: int, limit: int = 1000) -> float:
    """The median pairwise Euclidean distance (on at most ``limit`` rows)."""
    rng = np.random.default_rng(seed)
    sample = rows[rng.choice(len(rows), min(limit, len(rows)), replace=False)]
    distances = pdist(sample)
    positive = distances[distances > 0]
    return float(np.median(positive)) if len(positive) else 1.0


def permuted_mmd2(kernel: np.ndarray, n: int, permutations: int, seed: int) -> np.ndarray:
    """Biased MMD² of the observed split (index 0) and of ``permutations`` relabellings."""
    total = kernel.shape[0]
    m = total - n
    rng = np.random.default_rng(seed)
    weights = np.empty((total, permutations + 1))
    labels = np.r_[np.full(n, 1.0 / n), np.full(m, -1.0 / m)]
    weights[:, 0] = labels
    for column in range(1, permutations + 1):
        weights[:, column] = labels[rng.permutation(total)]
    return np.einsum("ij,ij->j", weights, kernel @ weights)


class MMDDrift:
    """Gaussian-kernel MMD between the (standardised) reference and a window."""

    kind = "data_drift"

    def __init__(
        self,
        name: str,
        *,
        p_val: float = 0.05,
        n_permutations: int = 200,
        max_reference: int = 500,
        seed: int = 0,
    ) -> None:
        self.name = name
        self.p_val = check_p_val(p_val)
        self.n_permutations = check_int("n_permutations", n_permutations, 1)
        if 1.0 / (self.n_permutations + 1) > self.p_val / 2:
            raise ConfigError(
                f"n_permutations={self.n_permutations} cannot resolve p-values near "
                f"p_val={self.p_val}; use at least {int(np.ceil(2 / self.p_val))}"
            )
        self.max_reference = check_int("max_reference", max_reference, 10)
        self.seed = check_int("seed", seed, 0)
        self._reference: np.ndarray | None = None
        self._center = self._scale = np.zeros(0)
        self._bandwidth = 1.0
        self._tests = 0

    def fit(self, reference: Reference) -> None:
        rows = np.asarray(reference.features, dtype=np.float64)
        self._center = rows.mean(axis=0)
        scale = rows.std(axis=0)
        self._scale = np.where(scale > 0, scale, 1.0)
        rng = np.random.default_rng(self.seed)
        keep = rng.choice(len(rows), min(self.max_reference, len(rows)), replace=False)
        self._reference = (rows[np.sort(keep)] - self._center) / self._scale
        self._bandwidth = median_bandwidth(self._reference, self.seed)

    def test(self, window: np.ndarray) -> DetectorResult:
        require_fitted(self._reference is not None, self.name)
        assert self._reference is not None
        rows = as_window(window, self._reference.shape[1], self.name)
        pooled = np.vstack([self._reference, (rows - self._center) / self._scale])
        kernel = np.exp(-cdist(pooled, pooled, "sqeuclidean") / (2 * self._bandwidth**2))
        self._tests += 1
        mmd2 = permuted_mmd2(
            kernel, len(self._reference), self.n_permutations, self.seed + self._tests
        )
        p_value = float((1 + np.sum(mmd2[1:] >= mmd2[0])) / (1 + self.n_permutations))
        return DetectorResult(
            detector=self.name,
            kind=self.kind,
            alarm=p_value < self.p_val,
            statistic=float(mmd2[0]),
            p_value=p_value,
            threshold=self.p_val,
            window_size=len(rows),
            values={"bandwidth": self._bandwidth},
        )


__all__ = ["MMDDrift", "median_bandwidth", "permuted_mmd2"]
