"""Sinks by type name. Each is imported only when configured, so its client library
(psycopg, pyarrow) is needed only by those who use it."""

from __future__ import annotations

import importlib

from servekit.errors import ConfigError
from servekit.observe.payloads.config import SinkConfig
from servekit.observe.payloads.sinks.base import RejectedEvents, Sink

SINK_TYPES: dict[str, str] = {
    "http": "servekit.observe.payloads.sinks.http:HTTPSink",
    "postgres": "servekit.observe.payloads.sinks.postgres:PostgresSink",
    "file": "servekit.observe.payloads.sinks.files:FileSink",
}


def build_sink(config: SinkConfig) -> Sink:
    module_name, _, class_name = SINK_TYPES[config.type].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"payload log sink {sink_name(config)!r} needs a library that is not "
            f"installed ({exc.name}); pip install 'servekit[{config.type}]'"
        ) from None
    return getattr(module, class_name)(config)


def sink_name(config: SinkConfig) -> str:
    return config.name or config.type


def unique_names(configs: list[SinkConfig], reserved: set[str]) -> None:
    seen = set(reserved)
    for config in configs:
        name = sink_name(config)
        if name in seen:
            raise ConfigError(f"payload_log.sinks: two sinks are named {name!r}; give each a name")
        seen.add(name)


__all__ = ["SINK_TYPES", "RejectedEvents", "Sink", "build_sink", "sink_name", "unique_names"]
