"""Detectors by type name, and ``build_detector`` to make one from ``model.yaml`` options.

A user detector is named ``"package.module:Class"``; it is built as ``Class(name, **options)``
and must implement one of the protocols in ``base`` (``test``, ``update`` or ``score``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from servekit.errors import ConfigError
from servekit.observe.monitoring.detectors.adversarial import FeatureSqueezing
from servekit.observe.monitoring.detectors.base import (
    Detector,
    DetectorResult,
    FeatureResult,
    InstanceDetector,
    StreamDetector,
    WindowDetector,
)
from servekit.observe.monitoring.detectors.cbpe import CBPE
from servekit.observe.monitoring.detectors.classifier import ClassifierDrift
from servekit.observe.monitoring.detectors.mmd import MMDDrift
from servekit.observe.monitoring.detectors.online import ADWINDrift, PageHinkleyDrift
from servekit.observe.monitoring.detectors.outlier import (
    IsolationForestOutlier,
    MahalanobisOutlier,
)
from servekit.observe.monitoring.detectors.output import OutputDrift
from servekit.observe.monitoring.detectors.tabular import Chi2Drift, KSDrift, TabularDrift

DETECTORS: dict[str, Callable[..., Any]] = {
    "ks": KSDrift,
    "chi2": Chi2Drift,
    "tabular": TabularDrift,
    "mmd": MMDDrift,
    "classifier": ClassifierDrift,
    "output": OutputDrift,
    "cbpe": CBPE,
    "adwin": ADWINDrift,
    "page_hinkley": PageHinkleyDrift,
    "isolation_forest": IsolationForestOutlier,
    "mahalanobis": MahalanobisOutlier,
    "squeezing": FeatureSqueezing,
}
"""Built-in detector classes by the ``type`` used in model.yaml."""

PROTOCOL_METHODS = ("test", "update", "score")


def _import_class(spec: str) -> Callable[..., Any]:
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"detector type {spec!r}: cannot import {module_name!r}: {exc}") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConfigError(f"detector type {spec!r}: {module_name!r} has no {attribute!r}") from None


def build_detector(type_name: str, name: str, **options: Any) -> Detector:
    """A detector from its type (a built-in name or ``module:Class``) and options.

    Unknown types, unknown options and bad option values raise ConfigError.
    """
    if ":" in type_name:
        factory = _import_class(type_name)
    elif type_name in DETECTORS:
        factory = DETECTORS[type_name]
    else:
        raise ConfigError(
            f"unknown detector type {type_name!r}; use one of {', '.join(DETECTORS)} "
            "or 'package.module:Class'"
        )
    try:
        detector = factory(name, **options)
    except TypeError as exc:
        if "argument" not in str(exc):
            raise
        raise ConfigError(f"detector {name!r} ({type_name}): bad options: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"detector {name!r} ({type_name}): {exc}") from None
    if not any(callable(getattr(detector, m, None)) for m in PROTOCOL_METHODS):
        raise ConfigError(f"detector {type_name!r} has none of {', '.join(PROTOCOL_METHODS)}()")
    for attribute in ("name", "kind"):
        if not hasattr(detector, attribute):
            raise ConfigError(f"detector {type_name!r} has no {attribute!r} attribute")
    return detector


__all__ = [
    "DETECTORS",
    "Detector",
    "DetectorResult",
    "FeatureResult",
    "InstanceDetector",
    "StreamDetector",
    "WindowDetector",
    "build_detector",
]
