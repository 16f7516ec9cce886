"""The one entry every transport calls: health, metadata and inference.

Transports translate their wire format to ``servekit.types`` and back; everything else happens
here, once, whatever the protocol.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Callable

from servekit import __version__
from servekit.core.lifecycle import ModelState
from servekit.core.manager import ModelManager
from servekit.core.registry import ModelHandle, ModelRegistry
from servekit.core.validation import build_outputs, check_requested_outputs, validate_inputs
from servekit.errors import (
    InferenceError,
    ModelNotFound,
    ModelNotReady,
    ServekitError,
    Unauthenticated,
    Unavailable,
)
from servekit.observe.metrics import UNKNOWN_MODEL, Metrics
from servekit.types.inference import InferenceRequest, InferenceResponse, RequestContext
from servekit.types.metadata import ModelMetadata, ServerMetadata

logger = logging.getLogger("servekit.dataplane")
request_logger = logging.getLogger("servekit.requests")

SERVER_NAME = "servekit"
EXTENSIONS = ("binary_tensor_data", "parameters", "model_lineage", "model_repository")

_WAKEABLE = (ModelState.UNLOADED, ModelState.LOADING)
RequestSource = InferenceRequest | Callable[[], InferenceRequest]
"""A request, or a function that decodes one: decoding errors are then counted and logged
with the model they were meant for."""


class DataPlane:
    def __init__(
        self,
        registry: ModelRegistry,
        metrics: Metrics,
        *,
        strict_readiness: bool = True,
        manager: ModelManager | None = None,
        admin_token: str | None = None,
    ) -> None:
        self._registry = registry
        self._metrics = metrics
        self._manager = manager
        self._admin_token = admin_token
        self._strict_readiness = strict_readiness
        self.loading_complete = False
        self.metadata = ServerMetadata(SERVER_NAME, __version__, EXTENSIONS)

    @property
    def registry(self) -> ModelRegistry:
        return self._registry

    # -- health ------------------------------------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Ready once the repository is loaded; with strict readiness, only if every model is."""
        if not self.loading_complete:
            return False
        if self._strict_readiness:
            return all(h.ready for h in self._registry)
        return True

    def model_ready(self, name: str, version: str | None = None) -> bool:
        return self._registry.get(name, version or None).ready

    # -- metadata ----------------------------------------------------------------------------

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        handle = self._registry.get(name, version or None)
        extra: dict = {"state": handle.state.value, "version": handle.version}
        properties = {"state": handle.state.value, "version": handle.version}
        if handle.error:
            extra["error"] = properties["error"] = handle.error
        if handle.lineage:
            extra["lineage"] = handle.lineage
            properties["lineage"] = json.dumps(handle.lineage, sort_keys=True, default=str)
        return ModelMetadata(
            name=handle.name,
            versions=self._registry.versions(name),
            platform=handle.platform,
            inputs=list(handle.inputs),
            outputs=list(handle.outputs),
            properties=properties,
            extra=extra,
        )

    def models(self) -> list[ModelHandle]:
        return list(self._registry)

    # -- model control (the repository extension) --------------------------------------------

    def _authorize(self, token: str | None) -> ModelManager:
        if self._admin_token and not hmac.compare_digest(token or "", self._admin_token):
            raise Unauthenticated("the model control API needs the admin token")
        if self._manager is None:
            raise Unavailable("model control is not available on this server")
        return self._manager

    def repository_index(self, token: str | None, ready_only: bool = False) -> list[dict]:
        rows = self._authorize(token).index()
        return [r for r in rows if r["state"] == "READY"] if ready_only else rows

    async def load_model(self, name: str, token: str | None) -> None:
        await self._authorize(token).load_model(name)

    async def unload_model(self, name: str, token: str | None) -> None:
        await self._authorize(token).unload_model(name)

    # -- inference ---------------------------------------------------------------------------

    async def infer(
        self,
        name: str,
        version: str | None,
        request: RequestSource,
        context: RequestContext,
    ) -> InferenceResponse:
        started = time.perf_counter()
        model_label, version_label, status = UNKNOWN_MODEL, "", "ok"
        in_flight = None
        try:
            handle = self._registry.get(name, version or None)
            model_label, version_label = handle.name, handle.version
            if callable(request):
                request = request()
            if not handle.ready:
                if handle.activator is None or handle.state not in _WAKEABLE:
                    raise ModelNotReady(handle.name, handle.version, handle.state.value)
                await handle.activator(handle)  # scaled to zero: load it, bounded wait
            inputs = validate_inputs(handle.name, handle.inputs, request.inputs)
            # Nothing requested: ask for the declared outputs only, so a runtime that can make
            # more (predict_proba) does not compute what would be dropped.
            wanted = (
                check_requested_outputs(handle.name, handle.outputs, request.outputs)
                or handle.output_names
            )
            predict = handle.predict
            if predict is None:
                raise ModelNotReady(handle.name, handle.version, handle.state.value)
            in_flight = self._metrics.in_flight_for(handle.name)
            in_flight.inc()
            handle.in_flight += 1
            handle.last_used = time.monotonic()
            try:
                produced = await predict(inputs, wanted, request.parameters)
            except ServekitError:
                raise
            except Exception as exc:
                logger.exception("model %s version %s raised", handle.name, handle.version)
                raise InferenceError(
                    f"model '{handle.name}' version '{handle.version}' failed: "
                    f"{type(exc).__name__} (details in the server log)"
                ) from exc
            finally:
                handle.in_flight -= 1
            outputs = build_outputs(handle.name, handle.outputs, produced, request.outputs)
            return InferenceResponse(
                model_name=handle.name,
                model_version=handle.version,
                id=request.id,
                outputs=outputs,
            )
        except ServekitError as exc:
            status = exc.code.name.lower()
            if isinstance(exc, ModelNotFound):
                model_label = UNKNOWN_MODEL
            raise
        except Exception:
            status = "internal"
            logger.exception("unexpected error serving model %s", name)
            raise
        finally:
            if in_flight is not None:
                in_flight.dec()
            elapsed = time.perf_counter() - started
            self._metrics.observe_request(
                model_label, version_label, context.protocol, status, elapsed
            )
            if request_logger.isEnabledFor(logging.DEBUG):
                request_logger.debug(
                    "infer",
                    extra={
                        "model": name,
                        "version": version_label,
                        "protocol": context.protocol,
                        "status": status,
                        "request_id": context.request_id,
                        "duration_ms": round(elapsed * 1000, 3),
                    },
                )
