"""How each kind of graph runs its nodes: sequence, ensemble, switch, splitter.

A flow gets the graph's name (for errors), the request, the context and ``invoke``; it returns one
response whose ``served_by`` parameter lists every model that served. Flows are keyed by the spec's
kind in ``servekit.deploy.graph.build``; none holds per-request state.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from servekit.deploy.base import Invoke
from servekit.deploy.graph.combiners import Combiner
from servekit.deploy.graph.conditions import Predicate
from servekit.deploy.graph.nodes import SERVED_BY, Node, named_error, run_chain
from servekit.errors import InferenceError, InvalidInput, ServekitError
from servekit.types.inference import InferenceRequest, InferenceResponse, RequestContext
from servekit.types.tensors import Tensor

logger = logging.getLogger("servekit.deploy")


class Flow(Protocol):
    def nodes(self) -> Sequence[Node]: ...

    async def run(
        self, graph: str, request: InferenceRequest, context: RequestContext, invoke: Invoke
    ) -> InferenceResponse: ...


class SequenceFlow:
    """Each node's outputs feed the next; latency is the sum of the nodes'."""

    def __init__(self, steps: Sequence[Node]) -> None:
        self.steps = list(steps)

    def nodes(self) -> Sequence[Node]:
        return self.steps

    async def run(
        self, graph: str, request: InferenceRequest, context: RequestContext, invoke: Invoke
    ) -> InferenceResponse:
        return await run_chain(graph, self.steps, request, context, invoke)


class EnsembleFlow:
    """Every node gets the same request, concurrently (latency: the slowest node); their outputs
    are combined by name."""

    def __init__(
        self,
        members: Sequence[Node],
        combiner: Combiner,
        combiner_name: str,
        outputs: list[str] | None,
    ) -> None:
        self.members = list(members)
        self.combiner = combiner
        self.combiner_name = combiner_name
        self.outputs = outputs

    def nodes(self) -> Sequence[Node]:
        return self.members

    async def run(
        self, graph: str, request: InferenceRequest, context: RequestContext, invoke: Invoke
    ) -> InferenceResponse:
        results = await asyncio.gather(
            *(run_chain(graph, [node], request, context, invoke) for node in self.members),
            return_exceptions=True,
        )
        for result in results:  # the first failing node, in spec order
            if isinstance(result, BaseException):
                raise result
        responses: list[InferenceResponse] = results  # type: ignore[assignment]
        by_node = {
            node.label: {t.name: t.data for t in response.outputs}
            for node, response in zip(self.members, responses, strict=True)
        }
        combined = self._combine(graph, by_node, self._names(graph, by_node))
        served = [who for response in responses for who in response.parameters[SERVED_BY]]
        return InferenceResponse(
            model_name=graph,
            outputs=[Tensor.from_array(name, array) for name, array in combined.items()],
            parameters={SERVED_BY: served},
        )

    def _names(self, graph: str, by_node: dict[str, dict[str, np.ndarray]]) -> list[str]:
        if self.outputs is not None:
            for label, outputs in by_node.items():
                missing = [n for n in self.outputs if n not in outputs]
                if missing:
                    raise InvalidInput(
                        f"graph '{graph}' node '{label}': no output '{missing[0]}' to combine "
                        f"(it returned {sorted(outputs)})"
                    )
            return list(self.outputs)
        first, *others = by_node.values()
        names = [n for n in first if all(n in o for o in others)]
        if not names:
            raise InvalidInput(f"graph '{graph}': its nodes return no output name in common")
        return names

    def _combine(
        self, graph: str, by_node: dict[str, dict[str, np.ndarray]], names: list[str]
    ) -> dict[str, Any]:
        try:
            combined = self.combiner(by_node, names)
        except ServekitError as exc:
            raise named_error(exc, graph, f"combiner {self.combiner_name}") from exc
        except Exception as exc:
            logger.exception("graph %s: combiner %s raised", graph, self.combiner_name)
            raise InferenceError(
                f"graph '{graph}': combiner '{self.combiner_name}' failed: "
                f"{type(exc).__name__} (details in the server log)"
            ) from exc
        if not isinstance(combined, dict) or not combined:
            raise InferenceError(
                f"graph '{graph}': combiner '{self.combiner_name}' must return a non-empty "
                "dict of output name -> array"
            )
        return combined


class SwitchFlow:
    """The first case whose condition holds serves the request (else the default node)."""

    def __init__(self, cases: Sequence[tuple[Predicate, Node]], default: Node | None) -> None:
        self.cases = list(cases)
        self.default = default

    def nodes(self) -> Sequence[Node]:
        return [n for _, n in self.cases] + ([self.default] if self.default else [])

    async def run(
        self, graph: str, request: InferenceRequest, context: RequestContext, invoke: Invoke
    ) -> InferenceResponse:
        chosen = next((n for test, n in self.cases if test(request, context)), self.default)
        if chosen is None:
            raise InvalidInput(f"graph '{graph}': no switch case matched and there is no default")
        return await run_chain(graph, [chosen], request, context, invoke)


class SplitterFlow:
    """Each request goes to one node drawn by weight (``rng`` is injectable for tests)."""

    def __init__(self, members: Sequence[Node], weights: Sequence[float], rng: random.Random):
        self.members = list(members)
        self.weights = list(weights)
        self.rng = rng

    def nodes(self) -> Sequence[Node]:
        return self.members

    async def run(
        self, graph: str, request: InferenceRequest, context: RequestContext, invoke: Invoke
    ) -> InferenceResponse:
        chosen = self.rng.choices(self.members, weights=self.weights)[0]
        return await run_chain(graph, [chosen], request, context, invoke)
