"""``model.yaml``: what a model folder declares about itself.

Parsed once when the repository is read (pydantic is fine here: it is not on the request path).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from servekit.errors import ConfigError
from servekit.observe.monitoring.config import MonitoringConfig
from servekit.observe.payloads.config import FeedbackConfig, ModelPayloadLog
from servekit.types.metadata import TensorSpec
from servekit.types.tensors import DATATYPES

MODEL_CONFIG_FILE = "model.yaml"


class TensorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    datatype: str
    shape: list[int]

    @field_validator("datatype")
    @classmethod
    def _known_datatype(cls, value: str) -> str:
        if value not in DATATYPES:
            raise ValueError(f"unknown datatype {value!r}; expected one of {', '.join(DATATYPES)}")
        return value

    @field_validator("shape")
    @classmethod
    def _valid_dims(cls, value: list[int]) -> list[int]:
        if any(d < -1 for d in value):
            raise ValueError("dimensions are non-negative integers or -1 (variable)")
        return value

    def to_spec(self) -> TensorSpec:
        return TensorSpec(self.name, self.datatype, tuple(self.shape))


class BatchingConfig(BaseModel):
    """Adaptive batching (Triton's dynamic batcher semantics)."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(gt=0, description="Most rows one batch may hold.")
    max_batch_delay_ms: float = Field(
        default=0.0, ge=0, description="Longest the oldest request waits for others."
    )
    preferred_batch_sizes: list[int] = Field(
        default_factory=list, description="Sizes sent as soon as they can be formed."
    )
    max_queue_size: int = Field(default=1024, gt=0, description="More waiting requests get 503.")
    timeout_ms: float | None = Field(
        default=None, gt=0, description="Longest a request may wait in the queue (503 after)."
    )

    @field_validator("preferred_batch_sizes")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(v <= 0 for v in value):
            raise ValueError("preferred batch sizes are positive integers")
        return value


class WarmupConfig(BaseModel):
    """Requests run before a version takes traffic, so nobody pays for lazy initialisation."""

    model_config = ConfigDict(extra="forbid")

    sample: str | None = Field(
        default=None,
        description="JSON file in the version folder, {input name: nested list}; default: one "
        "row of zeros from the signature.",
    )
    repeat: int = Field(default=1, gt=0, le=1000)


class VersionPolicy(BaseModel):
    """Which versions to serve, as TF Serving chooses them: exactly one of the three."""

    model_config = ConfigDict(extra="forbid")

    latest: int | None = Field(default=None, gt=0, description="The N newest versions.")
    all: bool | None = Field(default=None, description="Every version folder.")
    specific: list[str] | None = Field(default=None, description="These versions.")

    @field_validator("specific", mode="before")
    @classmethod
    def _as_strings(cls, value: Any) -> Any:
        return [str(v) for v in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _exactly_one(self) -> VersionPolicy:
        chosen = [k for k in ("latest", "all", "specific") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError("set exactly one of latest, all, specific")
        return self

    def choose(self, available: list[str]) -> list[str]:
        """``available`` sorted oldest first; the versions this policy serves."""
        if self.specific is not None:
            return list(self.specific)
        if self.all:
            return list(available)
        return list(available[-(self.latest or 1) :])


class ModelConfig(BaseModel):
    """Everything ``model.yaml`` may say. Every field is optional."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = None
    format: str | None = Field(
        default=None,
        description="Runtime name (sklearn, xgboost, lightgbm, onnx, torch, custom) "
        "or an import string 'package.module:Class'.",
    )
    platform: str | None = None
    versions: list[str] | None = Field(
        default=None, description="Shorthand for version_policy: {specific: [...]}."
    )
    version_policy: VersionPolicy | None = Field(
        default=None, description="latest: N (default 1), all, or specific: [...]."
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Names for versions, e.g. {stable: '1', canary: '2'}."
    )
    default_version: str | None = Field(
        default=None, description="Version or label for requests that name none (default: newest)."
    )
    sha256: dict[str, str] = Field(
        default_factory=dict, description="Pinned digests of artifacts, by path in the version."
    )
    idle_unload_after: float | None = Field(
        default=None,
        gt=0,
        description="Seconds without requests before the model is unloaded; the next request "
        "loads it again (scale to zero).",
    )
    inputs: list[TensorConfig] | None = None
    outputs: list[TensorConfig] | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    batching: BatchingConfig | None = None
    warmup: WarmupConfig | None = None
    execution: Literal["auto", "event_loop", "threads"] = Field(
        default="auto",
        description="Where synchronous predict code runs: 'threads' (a bounded pool), "
        "'event_loop' (inline, for calls of a few hundred microseconds), or 'auto' (inline when "
        "a warm-up call from the signature takes under 2 ms, else threads).",
    )
    instances: int | Literal["auto"] = Field(
        default=0,
        description="Worker processes serving the model, forked from one loaded copy "
        "(0: in the server process; 'auto': one per CPU).",
    )
    payload_log: ModelPayloadLog | None = Field(
        default=None, description="Payload logging of this model: enabled, sample_rate, redact."
    )
    feedback: FeedbackConfig | None = Field(
        default=None, description="How ground truth is compared with predictions."
    )
    monitoring: MonitoringConfig | None = Field(
        default=None,
        description="Drift, outlier and adversarial detectors, their reference and alerts.",
    )
    lineage: dict[str, Any] = Field(default_factory=dict)

    @field_validator("versions", mode="before")
    @classmethod
    def _versions_as_strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [str(v) for v in value]
        return value

    @field_validator("labels", mode="before")
    @classmethod
    def _label_versions_as_strings(cls, value: Any) -> Any:
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else value

    @field_validator("instances")
    @classmethod
    def _non_negative(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 0:
            raise ValueError("instances is 0 or more, or 'auto'")
        return value

    def worker_count(self) -> int:
        if self.instances == "auto":
            from servekit.workers import default_instances

            return default_instances()
        return int(self.instances)

    def policy(self) -> VersionPolicy:
        if self.version_policy is not None:
            return self.version_policy
        if self.versions is not None:
            return VersionPolicy(specific=self.versions)
        return VersionPolicy(latest=1)


def read_model_config(model_dir: Path) -> ModelConfig:
    path = model_dir / MODEL_CONFIG_FILE
    if not path.exists():
        return ModelConfig()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        config = ModelConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None
    if config.monitoring is not None and "://" not in config.monitoring.reference:
        # A relative reference lives in the model folder, wherever the server runs from.
        config.monitoring.reference = str((model_dir / config.monitoring.reference).absolute())
    return config
