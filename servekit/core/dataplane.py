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
from typing import TYPE_CHECKING

from servekit import __version__
from servekit.core.ids import RequestIds
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
from servekit.types.metadata import ModelMetadata, ServerMetadata, TensorSpec

if TYPE_CHECKING:
    from servekit.deploy.base import Deployment
    from servekit.deploy.manager import DeploymentManager
    from servekit.observe.monitoring.service import MonitorService
    from servekit.observe.payloads.service import PayloadLog

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
        payload_log: PayloadLog | None = None,
        deployments: DeploymentManager | None = None,
        monitor: MonitorService | None = None,
    ) -> None:
        self._registry = registry
        self.monitor = monitor
        """Model monitoring: scores requests of models with inline detectors."""
        self.deployments = deployments
        """Services and graphs served by name next to the models (servekit.deploy)."""
        self.payload_log = payload_log
        self._metrics = metrics
        self._manager = manager
        self._admin_token = admin_token
        self._strict_readiness = strict_readiness
        self._ids = RequestIds()
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
        deployment = self._deployment(name)
        if deployment is not None:  # ready when what answers clients is (shadows aside)
            serving = getattr(deployment, "serving_targets", deployment.targets)
            return all(self.model_ready(target) for target in serving())
        return self._registry.get(name, version or None).ready

    def _deployment(self, name: str) -> Deployment | None:
        return self.deployments.get(name) if self.deployments is not None else None

    def declared_io(
        self, name: str, version: str | None = None
    ) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """Declared inputs and outputs of a model; a deployment declares none (its first
        model's when it is a plain service without a transformer)."""
        deployment = self._deployment(name)
        if deployment is None:
            handle = self._registry.get(name, version or None)
            return list(handle.inputs), list(handle.outputs)
        signature = getattr(deployment, "signature_model", None)
        if signature is not None and signature() is not None:
            return self.declared_io(*signature())
        return [], []

    # -- metadata ----------------------------------------------------------------------------

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        deployment = self._deployment(name)
        if deployment is not None:
            inputs, outputs = self.declared_io(name)
            targets = ",".join(sorted(deployment.targets()))
            return ModelMetadata(
                name=name,
                versions=[],
                platform="servekit-deployment",
                inputs=inputs,
                outputs=outputs,
                properties={"kind": "deployment", "targets": targets},
            )
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

    def check_admin(self, token: str | None, what: str = "the model control API") -> None:
        """Raise Unauthenticated unless ``token`` is the admin token (when one is set)."""
        if self._admin_token and not hmac.compare_digest(token or "", self._admin_token):
            raise Unauthenticated(f"{what} needs the admin token")

    def _authorize(self, token: str | None) -> ModelManager:
        self.check_admin(token)
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
        deployment = self._deployment(name)
        if deployment is not None:
            return await self._infer_deployment(deployment, version, request, context)
        started = time.perf_counter()
        started_wall = time.time()
        model_label, version_label, status = UNKNOWN_MODEL, "", "ok"
        in_flight_model = handle = decoded = response = None
        error: ServekitError | None = None
        try:
            handle = self._registry.get(name, version or None)
            model_label, version_label = handle.name, handle.version
            decoded = request = request() if callable(request) else request
            context.request_id = request.id or context.request_id or self._ids.next()
            if self.payload_log is not None:
                self.payload_log.admit()
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
            in_flight_model = handle.name
            self._metrics.requests.started(in_flight_model)
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
            response = InferenceResponse(
                model_name=handle.name,
                model_version=handle.version,
                id=context.request_id,
                outputs=outputs,
            )
            if handle.monitoring is not None and self.monitor is not None:
                await self.monitor.score_inline(handle, inputs, response)
            context.served_by = f"{handle.name}/{handle.version}"
            return response
        except ServekitError as exc:
            status, error = exc.code.name.lower(), exc
            if isinstance(exc, ModelNotFound):
                model_label = UNKNOWN_MODEL
            raise
        except Exception:
            status = "internal"
            error = InferenceError("internal server error")
            logger.exception("unexpected error serving model %s", name)
            raise
        finally:
            if in_flight_model is not None:
                self._metrics.requests.finished(in_flight_model)
            elapsed = time.perf_counter() - started
            self._metrics.observe_request(
                model_label, version_label, context.protocol, status, elapsed
            )
            if context.request_id is None:
                context.request_id = self._ids.next()
            if self.payload_log is not None:
                try:  # here, not in a method: this runs for every inference
                    self.payload_log.log_inference(
                        None if handle is None else handle.payload_log,
                        name if handle is None else model_label,
                        (version or "") if handle is None else version_label,
                        decoded, response, context, started_wall, elapsed, status, error,
                    )  # fmt: skip
                except Exception:  # noqa: BLE001 - logged loudly, never the client's problem
                    logger.exception("payload log: could not record %s", context.request_id)
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

    async def _infer_deployment(
        self,
        deployment: Deployment,
        version: str | None,
        request: RequestSource,
        context: RequestContext,
    ) -> InferenceResponse:
        """A service or graph: it calls models (or deployments) back through ``infer``, so each
        hop is validated, counted and logged as itself."""
        started, status = time.perf_counter(), "ok"
        try:
            if callable(request):
                request = request()
            context.request_id = request.id or context.request_id or self._ids.next()
            response = await deployment.infer(version, request, context, self.infer)
        except ServekitError as exc:
            status = exc.code.name.lower()
            raise
        except Exception:
            status = "internal"
            raise
        finally:
            self._metrics.observe_deployment(
                deployment.name, context.chosen_variant or "", status,
                time.perf_counter() - started,
            )  # fmt: skip
        response.id = context.request_id
        served = response.model_name or deployment.name
        version_served = response.model_version
        context.served_by = f"{served}/{version_served}" if version_served else served
        return response
