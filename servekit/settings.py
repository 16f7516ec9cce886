"""Server settings: the only place that reads environment variables.

Precedence, highest first: command-line options, ``SERVEKIT_*`` environment variables, the YAML
config file (``--config`` or ``SERVEKIT_CONFIG``), defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from servekit.errors import ConfigError
from servekit.observe.payloads.config import PayloadLogSettings

if TYPE_CHECKING:
    from servekit.storage import StorageOptions

CONFIG_FILE_ENV = "SERVEKIT_CONFIG"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SERVEKIT_", env_nested_delimiter="__", extra="forbid"
    )

    model_repository: str | None = Field(
        default=None,
        description="Folder or URI of the models to serve (s3://, gs://, az://, https://, file://).",
    )
    host: str = Field(default="127.0.0.1", description="Address both servers bind to.")
    http_port: int = Field(default=8080, ge=0, le=65535, description="REST port (0: any free).")
    grpc_port: int = Field(default=8081, ge=0, le=65535, description="gRPC port (0: any free).")
    grpc_enabled: bool = Field(default=True, description="Serve the gRPC API.")
    grpc_legacy_listener: bool = Field(
        default=True,
        description="Accept gRPC connections with gRPC core's long-standing listener instead of "
        "grpcio's EventEngine one (GRPC_EXPERIMENTS=-event_engine_listener); 13-25 % "
        "more calls per second on one core here. Ignored when GRPC_EXPERIMENTS is set.",
    )
    grpc_poller_nice: int = Field(
        default=0,
        ge=0,
        le=19,
        description="Niceness of grpc.aio's poller thread (Linux; 0: unchanged). 19 gave 34-36 % "
        "more gRPC calls per second without batching on a busy core, and fewer with batching.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = Field(
        default="text", description="'json' writes one JSON object per log line."
    )
    max_request_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0, description="Larger bodies get 413 / RESOURCE_EXHAUSTED."
    )
    freeze_heap: bool = Field(
        default=True,
        description="After each model load, move the objects that exist into CPython's "
        "permanent generation (gc.freeze), so that full garbage collections under load do not "
        "rescan them: ~100 ms pauses every few seconds otherwise.",
    )
    inference_threads: int = Field(
        default=4, gt=0, description="Threads that run synchronous model code."
    )
    strict_readiness: bool = Field(
        default=True,
        description="Server readiness requires every model to be ready (the V2 protocol's "
        "definition); set false to be ready once loading finished, failed models aside.",
    )
    model_control: Literal["auto", "explicit"] = Field(
        default="auto",
        description="'auto' serves every model in the repository; 'explicit' only those loaded "
        "through the control API (POST /v2/repository/models/NAME/load).",
    )
    repository_poll_seconds: float = Field(
        default=0.0,
        ge=0,
        description="Re-read the repository this often and apply changes "
        "without a restart (0: only on demand, through the control API).",
    )
    reload_policy: Literal["availability", "resources"] = Field(
        default="availability",
        description="'availability' loads a new version before the old one is unloaded (no "
        "failed request); 'resources' unloads first (less memory, brief 503s).",
    )
    drain_seconds: float = Field(
        default=30.0, ge=0, description="How long a retired version may finish its requests."
    )
    cold_start_timeout_seconds: float = Field(
        default=60.0, gt=0, description="How long a request waits for a scaled-to-zero model."
    )
    management_api: bool = Field(
        default=True, description="Serve the model control API (load, unload, index)."
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="When set, the control API requires 'Authorization: Bearer "
        "<token>' (REST) or an 'authorization' metadata entry (gRPC).",
    )
    storage_cache_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / "servekit",
        description="Where remote repositories are cached, keyed by content.",
    )
    storage_endpoint_url: str | None = Field(
        default=None,
        description="S3-compatible endpoint (MinIO, Ceph); AWS_ENDPOINT_URL works too.",
    )
    storage_key: str | None = Field(default=None, description="Access key id (Azure: account).")
    storage_secret: SecretStr | None = Field(default=None, description="Secret key.")
    storage_anon: bool = Field(default=False, description="Unsigned requests (public buckets).")
    storage_max_archive_bytes: int = Field(
        default=8 * 1024**3, gt=0, description="Largest total unpacked size of an archive."
    )
    graceful_shutdown_seconds: float = Field(
        default=10.0, ge=0, description="How long in-flight requests may finish on shutdown."
    )
    deployments: str | None = Field(
        default=None,
        description="Deployments YAML file or folder (services, rollouts, experiments, "
        "graphs); default: a 'deployments' folder next to a local model repository, if any.",
    )
    deployments_poll_seconds: float = Field(
        default=1.0, gt=0, description="How often the deployments file is checked for edits."
    )
    deployment_state_dir: Path | None = Field(
        default=None,
        description="Where learnt bandit state is kept (default: the payload log directory).",
    )
    payload_log: PayloadLogSettings = Field(
        default_factory=PayloadLogSettings,
        description="Payload logging: spool, embedded store, sinks (see the README).",
    )

    def storage_options(self) -> StorageOptions:
        """How the storage layer reaches remote repositories and artifacts."""
        from servekit.storage import StorageOptions

        secret = self.storage_secret.get_secret_value() if self.storage_secret else None
        return StorageOptions(
            endpoint_url=self.storage_endpoint_url,
            key=self.storage_key,
            secret=secret,
            anon=self.storage_anon,
            max_archive_bytes=self.storage_max_archive_bytes,
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls))


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build settings; ``overrides`` that are None (options not given) are ignored."""
    config_file = config_file or os.environ.get(CONFIG_FILE_ENV) or None
    if config_file is not None:
        _check_config_file(Path(config_file))
    given = {k: v for k, v in overrides.items() if v is not None}

    class _Settings(Settings):
        model_config = SettingsConfigDict(**{**Settings.model_config, "yaml_file": config_file})

    try:
        return _Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None


def _check_config_file(path: Path) -> None:
    """Fail with a ConfigError naming the file (not a YAML or TypeError) when it cannot be used."""
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found")
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {str(path)!r}: not valid YAML: {exc}") from None
    if document is not None and not isinstance(document, dict):
        raise ConfigError(f"config file {str(path)!r}: expected a mapping at the top level")
