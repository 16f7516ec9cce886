"""The three detector protocols and the result every detector returns.

A detector is fed in one of three ways, so it implements one of three small protocols:
``WindowDetector.test`` (a window of rows against the reference), ``StreamDetector.update``
(one value at a time) or ``InstanceDetector.score`` (a score and a flag per row). The monitor
picks the feed by the method a detector has, so user classes need no base class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from servekit.errors import ConfigError

if TYPE_CHECKING:
    from servekit.observe.monitoring.reference import Reference

KINDS = (
    "data_drift",
    "output_drift",
    "concept_drift",
    "outlier",
    "adversarial",
    "performance_estimate",
)


@dataclass(frozen=True)
class FeatureResult:
    """One feature's test inside a multi-feature drift test."""

    name: str
    statistic: float
    p_value: float | None
    drifted: bool


@dataclass(frozen=True)
class DetectorResult:
    """What one test said: stored, exported as metrics and CloudEvents, and alerted on."""

    detector: str
    kind: str
    alarm: bool
    statistic: float | None = None
    p_value: float | None = None
    threshold: float | None = None
    window_size: int = 0
    features: tuple[FeatureResult, ...] = ()
    values: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class WindowDetector(Protocol):
    """Tests a window of live rows (inputs or outputs) against the reference."""

    name: str
    kind: str

    def fit(self, reference: Reference) -> None: ...

    def test(self, window: np.ndarray) -> DetectorResult: ...


@runtime_checkable
class StreamDetector(Protocol):
    """Follows one value at a time; returns a result only when it alarms."""

    name: str
    kind: str

    def fit(self, reference_values: np.ndarray) -> None: ...

    def update(self, value: float) -> DetectorResult | None: ...


@runtime_checkable
class InstanceDetector(Protocol):
    """Scores each row; ``flags`` marks rows beyond the threshold calibrated on the reference."""

    name: str
    kind: str

    def fit(
        self, reference: Reference, predict: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> None: ...

    def score(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


Detector = WindowDetector | StreamDetector | InstanceDetector


def check_p_val(p_val: Any) -> float:
    """A significance level strictly between 0 and 1, or a ConfigError."""
    try:
        value = float(p_val)
    except (TypeError, ValueError):
        raise ConfigError(f"p_val must be a number, got {p_val!r}") from None
    if not 0.0 < value < 1.0:
        raise ConfigError(f"p_val must be between 0 and 1 (exclusive), got {value}")
    return value


def check_int(option: str, value: Any, minimum: int) -> int:
    """A whole-number option at least ``minimum``, or a ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"{option} must be a whole number, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{option} must be at least {minimum}, got {value}")
    return int(value)


def check_choice(option: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{option} must be one of {', '.join(choices)}; got {value!r}")
    return str(value)


def as_window(window: Any, width: int | None, who: str) -> np.ndarray:
    """A 2-D float64 window with ``width`` columns (when known), or a ValueError naming ``who``."""
    rows = np.asarray(window, dtype=np.float64)
    if rows.ndim == 1:
        rows = rows.reshape(-1, 1) if width in (None, 1) else rows.reshape(1, -1)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise ValueError(f"{who}: expected a non-empty 2-D window, got shape {rows.shape}")
    if width is not None and rows.shape[1] != width:
        raise ValueError(f"{who}: window has {rows.shape[1]} columns, the reference {width}")
    if not np.all(np.isfinite(rows)):
        raise ValueError(f"{who}: window contains NaN or infinite values")
    return rows


def require_fitted(fitted: bool, who: str) -> None:
    if not fitted:
        raise RuntimeError(f"detector {who!r} used before fit()")


__all__ = [
    "KINDS",
    "Detector",
    "DetectorResult",
    "FeatureResult",
    "InstanceDetector",
    "StreamDetector",
    "WindowDetector",
    "as_window",
    "check_choice",
    "check_int",
    "check_p_val",
    "require_fitted",
]
