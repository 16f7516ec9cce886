"""Graph engine without a server: sequence (with renaming and transformer nodes), ensemble,
switch and splitter flows over a fake ``invoke``; node errors name the graph and the node."""

from __future__ import annotations

import asyncio
import random
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from servekit import InferenceRequest, InferenceResponse, RequestedOutput, Tensor
from servekit.deploy.graph import Graph, build_graphs
from servekit.deploy.graph.spec import parse_graphs
from servekit.errors import InferenceError, InvalidInput, ModelNotFound, ModelNotReady
from servekit.types import RequestContext

TRANSFORMERS = textwrap.dedent(
    """
    import numpy as np
    from servekit import InferenceRequest, Tensor, Transformer


    class Scale(Transformer):
        '''Multiplies every input by ``factor``; names the result ``scaled``.'''

        def preprocess(self, request, context):
            (tensor,) = request.inputs
            scaled = tensor.data * self.options.get("factor", 1)
            return InferenceRequest(inputs=[Tensor.from_array("scaled", scaled)])

        async def postprocess(self, response, request, context):
            response.outputs.append(Tensor.from_array("post", np.array([1])))
            return response


    class Broken(Transformer):
        def preprocess(self, request, context):
            raise ValueError("boom")


    def first_node(outputs, names):
        first = next(iter(outputs.values()))
        return {name: first[name] for name in names}
    """
)


class FakeModels:
    """Stands in for the DataPlane's invoke: ``name -> fn(inputs) -> outputs``."""

    def __init__(self, models: dict[str, Any]) -> None:
        self.models = models
        self.calls: list[tuple[str, str | None, list[str]]] = []

    async def __call__(
        self, name: str, version: str | None, request: InferenceRequest, context: RequestContext
    ) -> InferenceResponse:
        self.calls.append((name, version, [t.name for t in request.inputs]))
        if name not in self.models:
            raise ModelNotFound(name, version)
        produced = self.models[name]({t.name: t.data for t in request.inputs})
        context.served_by = f"{name}/{version or '1'}"
        return InferenceResponse(
            model_name=name,
            model_version=version or "1",
            outputs=[Tensor.from_array(k, v) for k, v in produced.items()],
        )


def models() -> FakeModels:
    def fail(inputs: dict) -> dict:
        raise ModelNotReady("flaky", "1", "FAILED")

    return FakeModels(
        {
            "double": lambda i: {"y": i["x"] * 2},
            "plus-one": lambda i: {"y": i["x"] + 1},
            "half": lambda i: {"y": i["x"] / 2, "extra": i["x"]},
            "label": lambda i: {"y": np.asarray(i["x"]).astype(np.int64) % 3},
            "flaky": fail,
        }
    )


def build(tmp_path: Path, text: str, **kwargs: Any) -> dict[str, Graph]:
    (tmp_path / "user_code.py").write_text(TRANSFORMERS)
    source = tmp_path / "deployments.yaml"
    specs = parse_graphs(yaml.safe_load(text), source)
    known = {"double", "plus-one", "half", "label", "flaky"}
    return {g.name: g for g in build_graphs(specs, known, source=source, **kwargs)}


def infer(
    graph: Graph,
    invoke: FakeModels,
    x: Any,
    name: str = "x",
    parameters: dict | None = None,
    headers: dict | None = None,
) -> InferenceResponse:
    request = InferenceRequest(
        inputs=[Tensor.from_array(name, np.asarray(x))], parameters=parameters or {}
    )
    context = RequestContext("test", request_id="r1", headers=headers or {})
    return asyncio.run(graph.infer(None, request, context, invoke))


def output(response: InferenceResponse, name: str = "y") -> list:
    return next(t for t in response.outputs if t.name == name).data.tolist()


def test_sequence_feeds_outputs_forward_with_renaming(tmp_path: Path) -> None:
    graphs = build(
        tmp_path,
        """
        - name: chain
          sequence:
            - {model: double}
            - {model: plus-one, version: "7", inputs: {x: y}}
        """,
    )
    invoke = models()
    response = infer(graphs["chain"], invoke, [1.0, 2.0])
    assert output(response) == [3.0, 5.0]
    assert (response.model_name, response.model_version) == ("plus-one", "7")
    assert response.parameters["served_by"] == ["double/1", "plus-one/7"]
    assert invoke.calls == [("double", None, ["x"]), ("plus-one", "7", ["x"])]


def test_transformer_node_preprocesses_in_and_postprocesses_out(tmp_path: Path) -> None:
    graphs = build(
        tmp_path,
        """
        - name: scaled
          sequence:
            - transformer: {class: "user_code.py:Scale", options: {factor: 10}}
            - {model: double, inputs: {x: scaled}, outputs: {doubled: y}}
        """,
    )
    response = infer(graphs["scaled"], models(), [1, 2])
    assert output(response, "doubled") == [20, 40]
    assert output(response, "post") == [1]
    assert response.model_name == "double"
    assert response.parameters["served_by"] == ["double/1"]


def test_missing_tensor_for_a_renamed_input_is_a_clear_400(tmp_path: Path) -> None:
    graphs = build(tmp_path, "- {name: g, sequence: [{model: double, inputs: {x: nope}}]}")
    with pytest.raises(InvalidInput, match=r"graph 'g' node 'double': no tensor 'nope'"):
        infer(graphs["g"], models(), [1])


def test_a_failing_node_keeps_its_error_class_and_is_named(tmp_path: Path) -> None:
    graphs = build(
        tmp_path,
        """
        - {name: g, sequence: [{model: double}, {name: scorer, model: flaky, inputs: {x: y}}]}
        - {name: t, sequence: [{transformer: {class: "user_code.py:Broken"}}, {model: double}]}
        """,
    )
    with pytest.raises(ModelNotReady, match=r"^graph 'g' node 'scorer': model 'flaky'"):
        infer(graphs["g"], models(), [1])
    with pytest.raises(InferenceError, match=r"graph 't' node 'Broken': transformer preprocess"):
        infer(graphs["t"], models(), [1])


def test_ensemble_runs_nodes_concurrently_and_combines_by_name(tmp_path: Path) -> None:
    graphs = build(
        tmp_path,
        """
        - name: avg
          ensemble:
            nodes: [{model: double}, {model: plus-one}, {model: half}]
        - name: majority
          ensemble:
            combiner: vote
            nodes: [{name: a, model: label}, {name: b, model: label}, {name: c, model: double}]
        - name: custom
          ensemble:
            combiner: "user_code.py:first_node"
            outputs: [y]
            nodes: [{model: half}, {model: double}]
        """,
    )
    response = infer(graphs["avg"], models(), [3.0, 6.0])
    assert output(response) == [(6 + 4 + 1.5) / 3, (12 + 7 + 3) / 3]
    assert [t.name for t in response.outputs] == ["y"]  # 'extra' is not common to all
    assert response.model_name == "avg"
    assert response.parameters["served_by"] == ["double/1", "plus-one/1", "half/1"]
    assert output(infer(graphs["majority"], models(), [4, 5])) == [1, 2]
    assert output(infer(graphs["custom"], models(), [4.0])) == [2.0]


def test_ensemble_nodes_run_at_the_same_time(tmp_path: Path) -> None:
    graphs = build(tmp_path, "- {name: e, ensemble: {nodes: [{model: double}, {model: half}]}}")
    started: list[str] = []

    class Concurrent(FakeModels):
        async def __call__(self, name, version, request, context):  # type: ignore[override]
            started.append(name)
            while len(started) < 2:  # answers only once the other node has started too
                await asyncio.sleep(0)
            return await super().__call__(name, version, request, context)

    response = infer(graphs["e"], Concurrent(models().models), [2.0])
    assert sorted(started) == ["double", "half"]
    assert output(response) == [2.5]


def test_ensemble_node_error_is_named(tmp_path: Path) -> None:
    graphs = build(tmp_path, "- {name: e, ensemble: {nodes: [{model: double}, {model: flaky}]}}")
    with pytest.raises(ModelNotReady, match=r"^graph 'e' node 'flaky'"):
        infer(graphs["e"], models(), [1.0])


def test_switch_routes_by_parameter_header_and_tensor_element(tmp_path: Path) -> None:
    graphs = build(
        tmp_path,
        """
        - name: route
          switch:
            cases:
              - when: {parameter: tier, value: gold}
                node: {model: double}
              - when: {header: X-Tier, op: in, value: [silver, bronze]}
                node: {model: plus-one}
              - when: {input: x, index: [0, 1], op: gt, value: 10}
                node: {model: half}
              - when: {all: [{input: x, op: lt, value: 0}, {not: {parameter: tier}}]}
                node: {name: negative, model: label}
            default: {model: plus-one, version: "2"}
        - name: strict
          switch:
            cases: [{when: {parameter: tier, op: exists}, node: {model: double}}]
        """,
    )
    route = graphs["route"]
    assert route.routing_headers() == {"x-tier"}
    invoke = models()
    assert output(infer(route, invoke, [[1, 2]], parameters={"tier": "gold"})) == [[2, 4]]
    assert output(infer(route, invoke, [[1, 2]], headers={"x-tier": "bronze"})) == [[2, 3]]
    assert output(infer(route, invoke, [[1, 20]])) == [[0.5, 10]]
    assert output(infer(route, invoke, [[-1, 2]])) == [[2, 2]]
    assert infer(route, invoke, [[1, 2]]).parameters["served_by"] == ["plus-one/2"]
    with pytest.raises(InvalidInput, match="no switch case matched and there is no default"):
        infer(graphs["strict"], invoke, [1])


def test_splitter_follows_weights_with_an_injected_rng(tmp_path: Path) -> None:
    text = """
        - name: split
          splitter:
            nodes: [{model: double, weight: 80}, {model: plus-one, weight: 20}]
        """
    seeds: list[int | None] = []

    def rng(seed: int | None) -> random.Random:
        seeds.append(seed)
        return random.Random(1234)

    graph = build(tmp_path, text, rng=rng)["split"]
    invoke = models()
    counts = Counter(infer(graph, invoke, [1]).parameters["served_by"][0] for _ in range(1000))
    assert seeds == [None]
    expected = random.Random(1234).choices(["double/1", "plus-one/1"], [80, 20], k=1000)
    assert counts == Counter(expected)
    assert 700 < counts["double/1"] < 900


def test_graphs_can_call_graphs_and_requested_outputs_apply_to_the_answer(tmp_path: Path) -> None:
    graphs = build(
        tmp_path,
        """
        - {name: inner, sequence: [{model: double}, {model: half, inputs: {x: y}}]}
        - {name: outer, sequence: [{model: inner}, {model: plus-one, inputs: {x: extra}}]}
        """,
    )
    inner = graphs["inner"]

    class WithGraphs(FakeModels):
        async def __call__(self, name, version, request, context):  # type: ignore[override]
            if name == "inner":
                return await inner.infer(version, request, context, self)
            return await super().__call__(name, version, request, context)

    invoke = WithGraphs(models().models)
    request = InferenceRequest(inputs=[Tensor.from_array("x", np.array([2.0]))])
    response = asyncio.run(graphs["outer"].infer(None, request, RequestContext("t"), invoke))
    assert output(response) == [5.0]
    assert response.parameters["served_by"] == ["double/1", "half/1", "plus-one/1"]
    request.outputs = [RequestedOutput("extra")]
    response = asyncio.run(graphs["inner"].infer(None, request, RequestContext("t"), invoke))
    assert [(t.name, t.data.tolist()) for t in response.outputs] == [("extra", [4.0])]
    request.outputs = [RequestedOutput("nope")]
    with pytest.raises(InvalidInput, match="graph 'inner' has no output 'nope'"):
        asyncio.run(graphs["inner"].infer(None, request, RequestContext("t"), invoke))
    with pytest.raises(ModelNotFound):
        asyncio.run(graphs["outer"].infer("3", request, RequestContext("t"), invoke))
