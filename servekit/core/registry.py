"""name -> version -> handle. The only place that decides which version serves a request."""

from __future__ import annotations

from collections.abc import Iterator
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

    def add(self, handle: ModelHandle) -> None:
        self._models.setdefault(handle.name, {})[handle.version] = handle
        self.refresh(handle.name)

    def refresh(self, name: str) -> None:
        """Forget the cached default version of ``name``; call after any state change."""
        self._defaults.pop(name, None)

    def get(self, name: str, version: str | None = None) -> ModelHandle:
        versions = self._models.get(name)
        if not versions:
            raise ModelNotFound(name)
        if version:
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
        """The newest ready version; the newest of all when none is ready (it explains why)."""
        ordered = sorted(versions.values(), key=lambda h: version_key(h.version), reverse=True)
        return next((h for h in ordered if h.ready), ordered[0])

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
