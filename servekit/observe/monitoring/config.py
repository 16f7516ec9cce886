"""``monitoring:`` in model.yaml: the reference, the detectors, their windows and the alerts.

The common case is a few lines::

    monitoring:
      reference: reference.parquet
      detectors:
        - {type: tabular, window: {size: 200}}
        - {type: isolation_forest, inline: true}
      alerts: [{url: "http://alertmanager:9093/api/v1/alerts"}]
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

Source = Literal["inputs", "outputs", "probabilities", "prediction", "errors"]


class WindowConfig(BaseModel):
    """Which rows a window detector tests together.

    Count windows hold the last ``size`` rows, time windows the rows of the last ``seconds``
    (by the time each request arrived). ``step`` is how often a window is tested: equal to the
    length (the default) gives tumbling windows, shorter gives sliding ones.
    """

    model_config = ConfigDict(extra="forbid")

    size: int | None = Field(default=None, gt=0, description="Rows per count window.")
    seconds: float | None = Field(default=None, gt=0, description="Length of a time window.")
    step: float | None = Field(
        default=None, gt=0, description="Rows (or seconds) between tests; default: the length."
    )
    min_size: int = Field(default=10, gt=0, description="Smaller time windows are not tested.")

    @model_validator(mode="after")
    def _one_length(self) -> WindowConfig:
        if (self.size is None) == (self.seconds is None):
            raise ValueError("set exactly one of size (rows) or seconds")
        if self.size is not None and self.step is not None and self.step != int(self.step):
            raise ValueError("the step of a count window is a whole number of rows")
        return self

    @property
    def sliding(self) -> bool:
        length = self.size if self.size is not None else self.seconds
        return self.step is not None and self.step < (length or 0)


class DetectorConfig(BaseModel):
    """One detector: ``type`` picks it from the detector registry; unknown keys are its options
    (``p_val``, ``correction``, ``percentile``, ``ert``...)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="ks, chi2, tabular, mmd, classifier, output, cbpe, adwin, ...")
    name: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.-]+$", description="Default: the type."
    )
    inline: bool = Field(
        default=False,
        description="Outlier/adversarial detectors only: score inside the request and return "
        "the score and flag in the response parameters and the x-servekit-outlier header.",
    )
    window: WindowConfig | None = Field(default=None, description="Default: the model's window.")
    alarm_rate: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Outlier/adversarial detectors: alarm when the flagged share of a window "
        "exceeds it.",
    )
    source: Source | None = Field(
        default=None,
        description="What a stream detector follows: 'prediction' (the top score, default) or "
        "'errors' (1 when feedback says the prediction was wrong: concept drift).",
    )

    @property
    def label(self) -> str:
        return self.name or self.type

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class AlertConfig(BaseModel):
    """A webhook that receives Alertmanager-compatible payloads (firing and resolved)."""

    model_config = ConfigDict(extra="forbid")

    url: HttpUrl
    headers: dict[str, str] = Field(default_factory=dict)
    retries: int = Field(default=5, ge=0, description="Attempts after the first, with backoff.")
    timeout_seconds: float = Field(default=5.0, gt=0)
    severity: str = "warning"


class MonitoringConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    reference: str = Field(
        description="Reference data (.npy, .csv, .parquet): a path relative to the model "
        "folder, or a URI."
    )
    features: list[str] | None = Field(default=None, description="Feature names (default x0..).")
    categorical: list[str] = Field(
        default_factory=list, description="Features that are categorical (the rest numeric)."
    )
    target: str | None = Field(default=None, description="Label column of a CSV/Parquet file.")
    input: str | None = Field(default=None, description="Input tensor monitored (default: first).")
    prediction_output: str | None = Field(
        default=None, description="Output holding the prediction (default: the first)."
    )
    probability_output: str | None = Field(
        default=None,
        description="Output holding class probabilities (default: a 2-D output named *proba*).",
    )
    window: WindowConfig = Field(
        default_factory=lambda: WindowConfig(size=100), description="Default window."
    )
    detectors: list[DetectorConfig] = Field(min_length=1)
    alerts: list[AlertConfig] = Field(default_factory=list)
    events: bool = Field(
        default=True,
        description="Send every result as a CloudEvent to the payload log's HTTP sinks.",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> MonitoringConfig:
        names = [d.label for d in self.detectors]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"detectors named {', '.join(duplicated)} twice; give each a name")
        return self

    def window_of(self, detector: DetectorConfig) -> WindowConfig:
        return detector.window or self.window


__all__ = ["AlertConfig", "DetectorConfig", "MonitoringConfig", "Source", "WindowConfig"]
