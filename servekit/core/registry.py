"""name -> version -> handle. The only place that decides which version serves a request."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from servekit.core.batching import AdaptiveBatcher
from servekit.core.executor import AsyncCallable
from servekit.core.lifecycle import ModelState
from servekit.errors import ModelNotFound
from servekit.runtimes.base import Runtime
from servekit.types.metadata import TensorSpec


@dataclass(slots=True)
class ModelHandle:
    """One loaded (or failed) version of one model."""

    name: str
    version: str
    platform: str
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    state: ModelState = ModelState.LOADING
    error: str | None = None
    runtime: Runtime | None = None
    predict: AsyncCallable | None = None
    batcher: AdaptiveBatcher | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    load_seconds: float | None = None
    in_flight: int = 0
    """Requests inside predict right now; a draining version is unloaded when it reaches 0."""
    last_used: float = 0.0
    activator: Callable[[ModelHandle], Awaitable[None]] | None = None
    """Set for scale-to-zero models: loads the version again when a request finds it unloaded."""
    loaded_at: float = 0.0
    fingerprint: str = ""
    """What the repository held when this version was loaded; a change means reload."""
    payload_log: Any = None
    """``model.yaml``'s payload_log section (observe.payloads.config.ModelPayloadLog)."""
    feedback: Any = None
    """``model.yaml``'s feedback section (observe.payloads.config.FeedbackConfig)."""
    monitoring: Any = None
    """``model.yaml``'s monitoring section (observe.monitoring.config.MonitoringConfig)."""

    @property
    def output_names(self) -> list[str] | None:
        return [spec.name for spec in self.outputs] or None

    @property
    def ready(self) -> bool:
        return self.state is ModelState.READY


def version_key(version: str) -> tuple[int, int | str]:
    """Numeric versions sort numerically and after non-numeric labels."""
    return (1, int(version)) if version.isdigit() else (0, version)


class ModelRegistry:
    def __init__(self) -> None:
        self._models: dict[str, dict[str, ModelHandle]] = {}
        self._defaults: dict[str, ModelHandle] = {}
        self._labels: dict[str, dict[str, str]] = {}
        self._default_version: dict[str, str] = {}

    def route(self, name: str, labels: dict[str, str], default: str | None) -> None:
        """Version labels (``stable`` -> ``"1"``) and the version for requests naming none."""
        self._labels[name] = dict(labels)
        if default:
            self._default_version[name] = default
        else:
            self._default_version.pop(name, None)
        self.refresh(name)

    def add(self, handle: ModelHandle) -> None:
        self._models.setdefault(handle.name, {})[handle.version] = handle
        self.refresh(handle.name)

    def remove(self, handle: ModelHandle) -> None:
        """Drop ``handle`` if it is still the one registered under its name and version."""
        versions = self._models.get(handle.name, {})
        if versions.get(handle.version) is handle:
            del versions[handle.version]
            if not versions:
                del self._models[handle.name]
        self.refresh(handle.name)

    def handles(self, name: str) -> list[ModelHandle]:
        return list(self._models.get(name, {}).values())

    def refresh(self, name: str) -> None:
        """Forget the cached default version of ``name``; call after any state change."""
        self._defaults.pop(name, None)

    def get(self, name: str, version: str | None = None) -> ModelHandle:
        versions = self._models.get(name)
        if not versions:
            raise ModelNotFound(name)
        if not version:
            version = self._default_version.get(name)
        if version:
            version = self._labels.get(name, {}).get(version, version)
            try:
                return versions[version]
            except KeyError:
                raise ModelNotFound(name, version) from None
        default = self._defaults.get(name)
        if default is None:
            default = self._defaults[name] = self._default(versions)
        return default

    @staticmethod
    def _default(versions: dict[str, ModelHandle]) -> ModelHandle:
        """The newest ready version; else the newest that can be woken up (scaled to zero);
        else the newest of all (its state explains the refusal)."""
        ordered = sorted(versions.values(), key=lambda h: version_key(h.version), reverse=True)
        return next(
            (h for h in ordered if h.ready),
            next(
                (h for h in ordered if h.activator and h.state is ModelState.UNLOADED), ordered[0]
            ),
        )

    def versions(self, name: str) -> list[str]:
        if name not in self._models:
            raise ModelNotFound(name)
        return sorted(self._models[name], key=version_key)

    def names(self) -> list[str]:
        return sorted(self._models)

    def __iter__(self) -> Iterator[ModelHandle]:
        for name in sorted(self._models):
            for version in self.versions(name):
                yield self._models[name][version]

    def __len__(self) -> int:
        return sum(len(v) for v in self._models.values())
