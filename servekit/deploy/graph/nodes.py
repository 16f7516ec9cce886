"""Graph nodes at run time: a call to a model/service/graph, or a transformer, plus renaming.

Every node error comes back as the same error class (so the same HTTP/gRPC status) with a message
that names the graph and the node: ``graph 'g' node 'scaler': <what went wrong>``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from servekit.deploy.base import Invoke
from servekit.deploy.transformer import Transformer, run_hook
from servekit.errors import InferenceError, InvalidInput, ServekitError
from servekit.types.inference import InferenceRequest, InferenceResponse, RequestContext
from servekit.types.tensors import Tensor

logger = logging.getLogger("servekit.deploy")

SERVED_BY = "served_by"
"""Response parameter: 'model/version' of every model that served, in call order."""


def named_error(exc: ServekitError, graph: str, node: str) -> ServekitError:
    """``exc`` again (same class, same status) with the graph and node in front of its message."""
    cls = type(exc)
    renamed = cls.__new__(cls)
    renamed.__dict__.update(exc.__dict__)
    ServekitError.__init__(renamed, f"graph '{graph}' node '{node}': {exc.message}")
    return renamed


def rename(tensors: Sequence[Tensor], mapping: dict[str, str], what: str) -> list[Tensor]:
    """``mapping`` is {new name: existing name}; empty keeps every tensor as it is."""
    if not mapping:
        return list(tensors)
    by_name = {t.name: t for t in tensors}
    renamed = []
    for new, old in mapping.items():
        tensor = by_name.get(old)
        if tensor is None:
            raise InvalidInput(
                f"no tensor '{old}' for {what} '{new}' (available: {sorted(by_name) or 'none'})"
            )
        renamed.append(dataclasses.replace(tensor, name=new))
    return renamed


def served_by(response: InferenceResponse) -> list[str]:
    """Who served ``response``: a nested graph's list, else its model and version."""
    nested = response.parameters.get(SERVED_BY)
    if isinstance(nested, list):
        return [str(s) for s in nested]
    if response.model_version:
        return [f"{response.model_name}/{response.model_version}"]
    return [response.model_name]


class ModelNode:
    """Calls a model, service or graph by name through the DataPlane (``invoke``)."""

    def __init__(
        self,
        label: str,
        model: str,
        version: str | None,
        inputs: dict[str, str],
        outputs: dict[str, str],
    ) -> None:
        self.label = label
        self.model = model
        self.version = version
        self.inputs = inputs
        self.outputs = outputs

    def targets(self) -> set[str]:
        return {self.model}

    async def call(
        self, request: InferenceRequest, context: RequestContext, invoke: Invoke
    ) -> InferenceResponse:
        sent = InferenceRequest(
            inputs=rename(request.inputs, self.inputs, "input"),
            id=request.id,
            parameters=dict(request.parameters),
        )
        # A copy per call: concurrent nodes must not overwrite each other's served_by.
        response = await invoke(self.model, self.version, sent, dataclasses.replace(context))
        who = served_by(response)
        response.outputs = rename(response.outputs, self.outputs, "output")
        response.parameters = {**response.parameters, SERVED_BY: who}
        return response


class TransformerNode:
    """A ``servekit.Transformer``: ``preprocess`` on the way in, ``postprocess`` on the way out."""

    def __init__(
        self,
        label: str,
        transformer: Transformer,
        inputs: dict[str, str],
        outputs: dict[str, str],
    ) -> None:
        self.label = label
        self.transformer = transformer
        self.inputs = inputs
        self.outputs = outputs

    def targets(self) -> set[str]:
        return set()

    async def preprocess(
        self, request: InferenceRequest, context: RequestContext
    ) -> InferenceRequest:
        incoming = dataclasses.replace(
            request, inputs=rename(request.inputs, self.inputs, "input"), outputs=[]
        )
        result = await run_hook(self.transformer, "preprocess", "", incoming, context)
        if not isinstance(result, InferenceRequest):
            raise InferenceError(f"transformer preprocess returned {type(result).__name__}")
        return result

    async def postprocess(
        self, response: InferenceResponse, request: InferenceRequest, context: RequestContext
    ) -> InferenceResponse:
        result = await run_hook(self.transformer, "postprocess", "", response, request, context)
        if not isinstance(result, InferenceResponse):
            raise InferenceError(f"transformer postprocess returned {type(result).__name__}")
        result.outputs = rename(result.outputs, self.outputs, "output")
        return result


Node = ModelNode | TransformerNode


async def run_chain(
    graph: str,
    nodes: Sequence[Node],
    request: InferenceRequest,
    context: RequestContext,
    invoke: Invoke,
) -> InferenceResponse:
    """Run ``nodes`` in order: each model's outputs are the next node's inputs; a transformer
    preprocesses what flows in and postprocesses the final response on the way back out. The
    response names the last model that served and lists every one in ``served_by``."""
    served: list[str] = []
    last: InferenceResponse | None = None
    unwind: list[tuple[TransformerNode, InferenceRequest]] = []
    for node in nodes:
        try:
            if isinstance(node, TransformerNode):
                request = await node.preprocess(request, context)
                unwind.append((node, request))
                continue
            last = await node.call(request, context, invoke)
        except ServekitError as exc:
            raise named_error(exc, graph, node.label) from exc
        served += last.parameters[SERVED_BY]
        request = InferenceRequest(
            inputs=list(last.outputs), id=request.id, parameters=request.parameters
        )
    response = InferenceResponse(
        model_name=last.model_name if last else graph,
        model_version=last.model_version if last else None,
        outputs=list(request.inputs),
        parameters={**(last.parameters if last else {}), SERVED_BY: served},
    )
    answered = response.model_name, response.model_version
    for node, seen in reversed(unwind):
        try:
            response = await node.postprocess(response, seen, context)
        except ServekitError as exc:
            raise named_error(exc, graph, node.label) from exc
    response.model_name, response.model_version = answered
    response.parameters = {**response.parameters, SERVED_BY: served}
    return response
