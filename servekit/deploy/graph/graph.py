"""``Graph``: a deployment (served by name like a model) that runs a flow of nodes."""

from __future__ import annotations

import dataclasses
from typing import Any

from servekit.deploy.base import Invoke
from servekit.deploy.graph.flows import Flow
from servekit.deploy.graph.spec import GraphSpec
from servekit.errors import InvalidInput, ModelNotFound
from servekit.types.inference import InferenceRequest, InferenceResponse, RequestContext


class Graph:
    """Implements ``servekit.deploy.base.Deployment``."""

    def __init__(self, spec: GraphSpec, flow: Flow, headers: set[str] | None = None) -> None:
        self.name = spec.name
        self.spec = spec
        self.flow = flow
        self._headers = headers or set()

    def targets(self) -> set[str]:
        return {t for node in self.flow.nodes() for t in node.targets()}

    def routing_headers(self) -> set[str]:
        """Headers the switch conditions read (the HTTP transport passes only those on)."""
        return set(self._headers)

    async def infer(
        self,
        version: str | None,
        request: InferenceRequest,
        context: RequestContext,
        invoke: Invoke,
    ) -> InferenceResponse:
        if version:
            raise ModelNotFound(self.name, version)
        # Nodes return all their outputs; the client's choice applies to the graph's answer.
        wanted = [o.name for o in request.outputs]
        inner = dataclasses.replace(request, outputs=[])
        child = dataclasses.replace(context, service=self.name)
        response = await self.flow.run(self.name, inner, child, invoke)
        if wanted:
            by_name = {t.name: t for t in response.outputs}
            unknown = [n for n in wanted if n not in by_name]
            if unknown:
                raise InvalidInput(
                    f"graph '{self.name}' has no output '{unknown[0]}'; its outputs are: "
                    + ", ".join(sorted(by_name))
                )
            response.outputs = [by_name[n] for n in wanted]
        return response

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "graph",
            "graph": self.spec.kind,
            "targets": sorted(self.targets()),
            "spec": self.spec.model_dump(by_alias=True, exclude_none=True),
        }
