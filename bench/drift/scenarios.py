"""Windows for the drift benchmark: bundled scikit-learn datasets, shifts of four kinds at three
strengths, and no shift.

The "population" of a dataset is its empirical distribution: the reference and every window are
independent draws (with replacement) from it. That keeps the no-shift setting a true null at any
window size — a window of 1000 rows cut from the rows left over after taking a reference would
be drawn from those leftover rows, not from the reference's distribution, and every detector
would alarm on the difference. Shifts are then applied to the window only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn import datasets

DATASETS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
    "iris": lambda: datasets.load_iris(return_X_y=True),
    "wine": lambda: datasets.load_wine(return_X_y=True),
    "breast_cancer": lambda: datasets.load_breast_cancer(return_X_y=True),
    "diabetes": lambda: datasets.load_diabetes(return_X_y=True),
    "digits": lambda: datasets.load_digits(return_X_y=True),
}
"""Bundled with scikit-learn: nothing is downloaded."""

STRENGTHS = ("low", "medium", "high")


@dataclass(frozen=True)
class Data:
    name: str
    features: np.ndarray
    classes: np.ndarray
    """Class labels (regression targets are split at the median)."""

    @property
    def scale(self) -> np.ndarray:
        std = self.features.std(axis=0)
        return np.where(std > 0, std, 1.0)


def load(name: str) -> Data:
    features, target = DATASETS[name]()
    target = np.asarray(target)
    if name == "diabetes":
        target = (target > np.median(target)).astype(int)
    return Data(name, np.asarray(features, dtype=np.float64), target.astype(int))


def draw(data: Data, rng: np.random.Generator, size: int) -> np.ndarray:
    return data.features[rng.integers(0, len(data.features), size)]


def gaussian_noise(data: Data, rng: np.random.Generator, size: int, strength: float) -> np.ndarray:
    """Every feature gets noise with a standard deviation of ``strength`` x its own."""
    rows = draw(data, rng, size)
    return rows + rng.normal(size=rows.shape) * strength * data.scale


def feature_subset(data: Data, rng: np.random.Generator, size: int, strength: float) -> np.ndarray:
    """A quarter of the features (at least one; a fixed choice per dataset) moved by
    ``strength`` standard deviations."""
    rows = draw(data, rng, size)
    width = data.features.shape[1]
    chosen = np.random.default_rng(width).choice(width, max(1, width // 4), replace=False)
    rows[:, chosen] += strength * data.scale[chosen]
    return rows


def prior_shift(data: Data, rng: np.random.Generator, size: int, strength: float) -> np.ndarray:
    """Label shift: a share ``strength`` of the window comes from class 0 only."""
    rows = draw(data, rng, size)
    from_class = rng.random(size) < strength
    pool = data.features[data.classes == 0]
    rows[from_class] = pool[rng.integers(0, len(pool), int(from_class.sum()))]
    return rows


def biased_selection(
    data: Data, rng: np.random.Generator, size: int, strength: float
) -> np.ndarray:
    """Covariate shift: rows picked with probability proportional to exp(strength x z), z the
    standardised first principal component."""
    centred = (data.features - data.features.mean(axis=0)) / data.scale
    component = np.linalg.svd(centred, full_matrices=False)[2][0]
    z = centred @ component
    z = (z - z.mean()) / z.std()
    weights = np.exp(strength * z)
    return data.features[rng.choice(len(z), size, p=weights / weights.sum())]


Shift = Callable[[Data, np.random.Generator, int, float], np.ndarray]

SHIFTS: dict[str, tuple[Shift, tuple[float, float, float]]] = {
    "gaussian_noise": (gaussian_noise, (0.1, 0.3, 1.0)),
    "feature_subset": (feature_subset, (0.1, 0.3, 1.0)),
    "prior_shift": (prior_shift, (0.1, 0.3, 0.6)),
    "biased_selection": (biased_selection, (0.1, 0.3, 1.0)),
}
"""Shift kind -> (window maker, strengths for low / medium / high)."""


@dataclass(frozen=True)
class Setting:
    shift: str
    strength: str
    size: int

    @property
    def label(self) -> str:
        return "no shift" if self.shift == "none" else f"{self.shift} {self.strength}"


def settings(sizes: tuple[int, ...]) -> list[Setting]:
    cells = [Setting("none", "-", size) for size in sizes]
    for shift in SHIFTS:
        for strength in STRENGTHS:
            cells += [Setting(shift, strength, size) for size in sizes]
    return cells


def window(data: Data, setting: Setting, rng: np.random.Generator) -> np.ndarray:
    if setting.shift == "none":
        return draw(data, rng, setting.size)
    make, strengths = SHIFTS[setting.shift]
    return make(data, rng, setting.size, strengths[STRENGTHS.index(setting.strength)])


__all__ = ["DATASETS", "SHIFTS", "STRENGTHS", "Data", "Setting", "draw", "load", "settings"]
