"""Inline outlier/adversarial scoring: what a request's response carries about its inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

OUTLIER_PARAMETER = "servekit_outlier"
"""Response parameter: true when an inline detector flagged a row of the request."""
OUTLIER_HEADER = "x-servekit-outlier"
"""The same flag as a header ('true'/'false'), for proxies and clients that skip the body."""


class InlineDetector(Protocol):
    name: str
    detector: Any


def score_rows(detectors: Sequence[InlineDetector], rows: np.ndarray) -> dict[str, Any]:
    """Response parameters: per detector the highest score and the number of flagged rows,
    and the overall flag."""
    parameters: dict[str, Any] = {}
    any_flag = False
    for feed in detectors:
        scores, flags = feed.detector.score(rows)
        flagged = int(np.count_nonzero(flags))
        any_flag = any_flag or flagged > 0
        parameters[f"{feed.name}_score"] = float(np.max(scores))
        parameters[f"{feed.name}_outliers"] = flagged
    parameters[OUTLIER_PARAMETER] = any_flag
    return parameters


def outlier_header(parameters: dict[str, Any]) -> dict[str, str]:
    """The header for a response whose parameters hold an inline verdict (else none)."""
    flagged = parameters.get(OUTLIER_PARAMETER)
    if flagged is None:
        return {}
    return {OUTLIER_HEADER: "true" if flagged else "false"}


__all__ = ["OUTLIER_HEADER", "OUTLIER_PARAMETER", "outlier_header", "score_rows"]
