"""The contract between the DataPlane and a deployment (a service or a graph).

A deployment never touches runtimes directly: it calls models (or other deployments) through the
``Invoke`` function the DataPlane hands it, so validation, batching, metrics and the payload log
apply to every hop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from servekit.types.inference import InferenceRequest, InferenceResponse, RequestContext

Invoke = Callable[[str, str | None, InferenceRequest, RequestContext], Awaitable[InferenceResponse]]
"""Call a model or a service/graph by name (and optional version) through the DataPlane's full path
(validation, batching, metrics, payload log); raises ServekitError subclasses."""


class Deployment(Protocol):
    name: str

    def targets(self) -> set[str]: ...  # names of models/services it calls (validation & cycles)

    async def infer(
        self,
        version: str | None,
        request: InferenceRequest,
        context: RequestContext,
        invoke: Invoke,
    ) -> InferenceResponse: ...
