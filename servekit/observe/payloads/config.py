"""Settings of the payload log: the spool, the embedded store and the sinks.

Server-wide, under ``payload_log:`` in the server config (``SERVEKIT_PAYLOAD_LOG__*`` in the
environment); per model, under ``payload_log:`` and ``feedback:`` in ``model.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

Mode = Literal["all", "request", "response"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SinkOptions(_Strict):
    """Options every sink has."""

    name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Names the sink in metrics and its spool cursor (default: its type).",
    )
    mode: Mode = Field(default="all", description="Which events: all, request or response.")
    sample_rate: float = Field(
        default=1.0, ge=0, le=1, description="Share of inferences sent (by id, so both halves)."
    )
    models: list[str] | None = Field(default=None, description="Only these models (default all).")
    batch_size: int = Field(default=256, gt=0, description="Most events per delivery.")
    linger_seconds: float = Field(
        default=0.05,
        ge=0,
        description="After a delivery that was not full, wait this long before reading again: "
        "larger batches cost less per event, for this much more delivery delay.",
    )


class HTTPSinkConfig(SinkOptions):
    type: Literal["http"]
    url: HttpUrl
    content_mode: Literal["binary", "structured", "batch"] = Field(
        default="binary",
        description="CloudEvents HTTP mode: one event per POST with ce-* headers (binary, what "
        "KServe's logger sends), one JSON event per POST (structured), or a JSON array of events "
        "per POST (batch, application/cloudevents-batch+json).",
    )
    timeout_seconds: float = Field(default=5.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict, description="Sent with every POST.")


class PostgresSinkConfig(SinkOptions):
    type: Literal["postgres"]
    dsn: str = Field(description="libpq connection string or URI.")
    table: str = Field(default="servekit_inferences", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class FileSinkConfig(SinkOptions):
    type: Literal["file"]
    path: Path = Field(description="Folder the files are written to.")
    format: Literal["jsonl", "parquet"] = "jsonl"
    rotate_bytes: int = Field(default=64 * 1024 * 1024, gt=0, description="Start a new file after.")
    rotate_seconds: float = Field(default=3600.0, gt=0, description="Start a new file after.")


SinkConfig = Annotated[
    HTTPSinkConfig | PostgresSinkConfig | FileSinkConfig, Field(discriminator="type")
]


class StoreConfig(_Strict):
    """The embedded, searchable payload store (SQLite)."""

    enabled: bool = True
    path: Path | None = Field(default=None, description="Default: <directory>/store.sqlite.")
    retention_seconds: float = Field(
        default=7 * 86400.0, gt=0, description="Keep events this long."
    )
    retention_bytes: int = Field(
        default=1024**3, gt=0, description="Delete the oldest events beyond this payload size."
    )
    sample_rate: float = Field(default=1.0, ge=0, le=1)
    mode: Mode = "all"
    batch_size: int = Field(default=4096, gt=0, description="Most events per transaction.")
    linger_seconds: float = Field(
        default=0.5,
        ge=0,
        description="Wait between transactions that were not full. Each transaction costs the "
        "server's core a fixed amount, so under load fewer, larger ones are cheaper per event "
        "(measured here: about 5 µs less per inference than at 0.05 s); events reach "
        "``/v2/logs`` this much later (feedback joins them before that).",
    )


class PayloadLogSettings(_Strict):
    enabled: bool = Field(default=True, description="Log inference payloads at all.")
    directory: Path = Field(
        default_factory=lambda: Path.home() / ".local" / "share" / "servekit" / "payloads",
        description="Spool, sink cursors and the store. One server per directory.",
    )
    store: StoreConfig = Field(default_factory=StoreConfig)
    sinks: list[SinkConfig] = Field(default_factory=list)
    spool_max_bytes: int = Field(
        default=2 * 1024**3, gt=0, description="Disk the spool may use while sinks catch up."
    )
    on_spool_full: Literal["block", "drop"] = Field(
        default="block",
        description="'block': refuse new inferences with 503 until sinks catch up (no event "
        "lost); 'drop': discard the oldest undelivered events (counted in "
        "servekit_payload_events_dropped_total).",
    )
    fsync: bool = Field(default=False, description="fsync every event (survive power loss).")
    sample_rate: float = Field(default=1.0, ge=0, le=1, description="Share of inferences logged.")
    redact: list[str] = Field(
        default_factory=list,
        description="Tensor and parameter names whose values are never written anywhere.",
    )
    max_payload_bytes: int = Field(
        default=256 * 1024, gt=0, description="Larger tensors are logged as shape and type only."
    )
    shutdown_flush_seconds: float = Field(
        default=5.0, ge=0, description="How long shutdown waits for sinks to catch up."
    )
    delivery: Literal["process", "thread"] = Field(
        default="process",
        description="Where the sinks run: 'process', a shipper process beside the server (the "
        "serving process only appends to the spool; delivery uses another core), or 'thread', "
        "threads of the serving process (one process less; delivery shares its GIL and core).",
    )
    sink_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="Scheduling niceness of the sink threads, and of the shipper process's "
        "scheduling group (Linux autogroup; 0 leaves them as they are): a request that "
        "arrives while a sink delivers gets the core first. Higher "
        "values lower latency further but let sinks fall behind under sustained saturation.",
    )
    performance_windows_seconds: list[float] = Field(
        default_factory=lambda: [300.0, 3600.0, 86400.0],
        description="Windows of the live performance figures (plus 'all' within retention).",
    )


class ModelPayloadLog(_Strict):
    """``payload_log:`` in model.yaml: overrides of the server-wide options for one model."""

    enabled: bool = True
    sample_rate: float | None = Field(default=None, ge=0, le=1)
    redact: list[str] = Field(default_factory=list, description="Added to the server's list.")


class FeedbackConfig(_Strict):
    """``feedback:`` in model.yaml: how ground truth is compared with the model's answers."""

    task: Literal["classification", "regression"] | None = Field(
        default=None,
        description="Default: classification when the prediction is an integer "
        "or string label, regression when it is a float.",
    )
    prediction_output: str | None = Field(
        default=None, description="Output holding the prediction (default: the first)."
    )
    probability_output: str | None = Field(
        default=None,
        description="Output holding class probabilities, for log loss (default: a 2-D float "
        "output whose name contains 'proba').",
    )
    classes: list[int | str] | None = Field(
        default=None, description="Class labels in the order of the probability columns."
    )
