"""The live set of deployments: load, re-read on change (an invalid edit is rejected and the
running set kept), rollout changes, bandit rewards and their persistence.

The DataPlane asks ``get(name)`` per request; every change builds new objects and swaps one dict
reference, so requests in flight finish on what they started with.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from servekit.deploy.base import Deployment
from servekit.deploy.build import build_all, build_service
from servekit.deploy.service import Service
from servekit.deploy.shadow import ShadowMetrics
from servekit.deploy.spec import VARIANT_HEADER, DeploymentsFile, LoadedSpec, load_file
from servekit.deploy.state import RouterStateFile
from servekit.errors import ConfigError, InvalidInput, NotFound

logger = logging.getLogger("servekit.deploy")


class DeploymentManager:
    def __init__(
        self,
        source: Path | None,
        metrics_registry: CollectorRegistry,
        state_file: Path | None = None,
        loaded: LoadedSpec | None = None,
    ) -> None:
        """``source``: a deployments YAML file or folder (re-read on change); ``loaded``: a spec
        built elsewhere (KServe import), served as is."""
        self.source = source
        self._loaded = loaded
        self._deployments: dict[str, Deployment] = {}
        self._models: set[str] = set()
        self._shadow_metrics = ShadowMetrics(metrics_registry)
        self._state = RouterStateFile(state_file) if state_file else None
        self._saved: dict[str, Any] = self._state.load() if self._state else {}
        self._stamp: tuple | None = None
        self._dirty = False
        self.last_error: str | None = None
        self.routing_headers: frozenset[bytes] = frozenset({VARIANT_HEADER.encode()})

    # -- lookups (hot path) ------------------------------------------------------------------

    def get(self, name: str) -> Deployment | None:
        return self._deployments.get(name)

    def names(self) -> list[str]:
        return sorted(self._deployments)

    # -- loading -----------------------------------------------------------------------------

    def load(self, models: set[str]) -> None:
        """First load: errors propagate (the server refuses to start with a bad spec)."""
        self._models = set(models)
        loaded = self._read()
        self._install(loaded, build_all(loaded, self._models, self._shadow_metrics, self._saved))

    def _read(self) -> LoadedSpec:
        if self.source is None:
            assert self._loaded is not None
            return self._loaded
        self._stamp = _stamp(self.source)
        return load_file(self.source)

    def _install(self, loaded: LoadedSpec, deployments: dict[str, Deployment]) -> None:
        for name, deployment in deployments.items():
            previous = self._deployments.get(name)
            if isinstance(deployment, Service) and isinstance(previous, Service):
                deployment.adopt(previous)
        self._loaded = loaded
        self._deployments = deployments
        headers = {VARIANT_HEADER}
        for deployment in deployments.values():
            routing_headers = getattr(deployment, "routing_headers", None)  # services, graphs
            if callable(routing_headers):
                headers |= routing_headers()
        self.routing_headers = frozenset(h.encode() for h in headers)
        logger.info("serving deployments: %s", ", ".join(sorted(deployments)) or "none")

    def reload_if_changed(self, models: set[str] | None = None) -> bool:
        """Re-read the source when it changed; an invalid edit is logged and kept out."""
        if self.source is None:
            return False
        if models is not None:
            self._models = set(models)
        stamp = _stamp(self.source)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            loaded = load_file(self.source)
            deployments = build_all(loaded, self._models, self._shadow_metrics, self._learnt())
        except ConfigError as exc:
            self.last_error = exc.message
            logger.error("deployments edit rejected, still serving the previous spec: %s", exc)
            return False
        self.last_error = None
        self._install(loaded, deployments)
        return True

    async def watch(self, interval: float, models: Any) -> None:
        """Poll the spec for edits and persist learnt router state; runs until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                self.reload_if_changed(models())
            except Exception:  # noqa: BLE001 - the watcher must survive anything
                logger.exception("deployments: reload failed")
            if self._dirty and self._state is not None:
                self._dirty = False
                self._saved = self._learnt()  # snapshot on the loop, write in a thread
                await asyncio.to_thread(self._write, self._saved)

    # -- rollouts ----------------------------------------------------------------------------

    def service(self, name: str) -> Service:
        deployment = self._deployments.get(name)
        if not isinstance(deployment, Service):
            raise NotFound(f"service '{name}' not found")
        return deployment

    def rollout(self, name: str, action: str, traffic_percent: float | None = None) -> dict:
        """set (canary traffic %), promote (canary becomes the predictor) or rollback (drop
        the canary). Applied live: a new Service object replaces the old one."""
        current = self.service(name)
        spec = current.spec
        if spec.canary is None:
            raise InvalidInput(f"service '{name}' has no canary to {action}")
        if action == "set":
            if traffic_percent is None or not 0 <= traffic_percent <= 100:
                raise InvalidInput("'traffic_percent' must be a number from 0 to 100")
            canary = spec.canary.model_copy(update={"traffic_percent": float(traffic_percent)})
            new = spec.model_copy(update={"canary": canary})
        elif action == "promote":
            predictor = spec.predictor.model_copy(  # type: ignore[union-attr]
                update={"model": spec.canary.model, "version": spec.canary.version}
            )
            new = spec.model_copy(update={"predictor": predictor, "canary": None})
        elif action == "rollback":
            new = spec.model_copy(update={"canary": None})
        else:
            raise InvalidInput(f"unknown rollout action {action!r}: set, promote or rollback")
        assert self._loaded is not None
        service = build_service(
            new, self._loaded, name, self._shadow_metrics, transformer=current.transformer
        )
        service.adopt(current)
        self._deployments = {**self._deployments, name: service}
        services = [new if s.name == name else s for s in self._loaded.document.services]
        self._loaded = LoadedSpec(
            DeploymentsFile.model_construct(services=services, graphs=self._loaded.document.graphs),
            self._loaded.source,
        )
        logger.info("rollout %s on %s: %s", action, name, service.describe()["variants"])
        return service.describe()

    # -- bandit rewards ----------------------------------------------------------------------

    def reward(self, model: str, version: str, value: float, request_id: str) -> None:
        """A feedback reward (a RewardListener): the arm that served ``request_id`` learns."""
        for deployment in list(self._deployments.values()):
            if isinstance(deployment, Service) and deployment.reward(request_id, value):
                self._dirty = True
                return
        logger.debug("reward for %s (%s/%s): no bandit served it", request_id, model, version)

    def _learnt(self) -> dict[str, Any]:
        learnt = dict(self._saved)
        for name, deployment in self._deployments.items():
            if isinstance(deployment, Service) and getattr(deployment.router, "learns", False):
                learnt[name] = deployment.router.state()
        return learnt

    def save_state(self) -> None:
        """Write what the bandits learnt (at shutdown; the watcher writes it as it changes)."""
        if self._state is None:
            return
        self._dirty = False
        self._saved = self._learnt()
        self._write(self._saved)

    def _write(self, state: dict[str, Any]) -> None:
        assert self._state is not None
        try:
            self._state.save(state)
        except OSError:
            logger.exception("could not save router state to %s", self._state.path)

    # -- description -------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "source": str(self.source or (self._loaded.source if self._loaded else "")),
            "last_error": self.last_error,
            "deployments": [self.describe_one(n) for n in self.names()],
        }

    def describe_one(self, name: str) -> dict[str, Any]:
        deployment = self._deployments.get(name)
        if deployment is None:
            raise NotFound(f"deployment '{name}' not found")
        if isinstance(deployment, Service):
            return deployment.describe()
        describe = getattr(deployment, "describe", None)
        if callable(describe):
            return describe()
        return {"name": name, "kind": "graph", "targets": sorted(deployment.targets())}


def _stamp(path: Path) -> tuple:
    """What changes when the file (or any YAML of the folder) is edited."""
    files = sorted([*path.glob("*.y*ml")]) if path.is_dir() else [path]
    stamps = []
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            continue
        stamps.append((str(file), stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)
