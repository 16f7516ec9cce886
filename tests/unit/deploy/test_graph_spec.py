"""Graph spec errors name the file, the graph and the node field; conditions and combiners are
data and registered functions, never evaluated code."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from servekit.deploy.build import build_all
from servekit.deploy.graph import Graph
from servekit.deploy.graph.combiners import mean, vote
from servekit.deploy.graph.conditions import compile_condition
from servekit.deploy.graph.spec import ConditionSpec
from servekit.deploy.shadow import ShadowMetrics
from servekit.deploy.spec import load_file
from servekit.errors import ConfigError, InvalidInput
from servekit.types import InferenceRequest, RequestContext, Tensor


def load(tmp_path: Path, text: str) -> dict:
    path = tmp_path / "deployments.yaml"
    path.write_text(textwrap.dedent(text))
    (tmp_path / "user_code.py").write_text("class NotATransformer:\n    pass\n")
    return build_all(load_file(path), {"iris"}, ShadowMetrics(CollectorRegistry()), {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "graphs: [{name: g, sequence: [{model: iris}, {model: nope}]}]",
            r"deployments.yaml: graphs\[0\] \(g\)\.sequence\[1\]\.model: no model, service or "
            r"graph named 'nope'",
        ),
        (
            """
            graphs:
              - {name: a, sequence: [{model: iris}, {model: b}]}
              - {name: b, ensemble: {nodes: [{model: iris}, {name: back, model: a}]}}
            """,
            r"graphs\[1\] \(b\)\.ensemble\.nodes\[1\] \(back\)\.model: graphs call each other "
            r"in a cycle: a -> b -> a",
        ),
        (
            "graphs: [{name: self, switch: {cases: "
            "[{when: {parameter: p}, node: {model: self}}]}}]",
            r"graphs\[0\] \(self\)\.switch\.cases\[0\]\.node\.model: .*cycle: self -> self",
        ),
        (
            "graphs: [{name: g, sequence: [{model: iris, transformer: {class: 'a:B'}}]}]",
            r"graphs\[0\] \(g\)\.sequence\[0\]: a node needs exactly one of 'model' or",
        ),
        (
            "graphs: [{name: g, switch: {cases: "
            "[{when: {header: h, op: like}, node: {model: iris}}]}}]",
            r"graphs\[0\] \(g\)\.switch\.cases\[0\]\.when\.op: unknown operator 'like'",
        ),
        (
            "graphs: [{name: g, switch: {cases: [{when: {op: eq}, node: {model: iris}}]}}]",
            r"when: a condition needs exactly one of 'parameter', 'header', 'input'",
        ),
        (
            "graphs: [{name: g, ensemble: {nodes: [{model: iris}]}}]",
            r"graphs\[0\] \(g\)\.ensemble\.nodes: List should have at least 2 items",
        ),
        (
            "graphs: [{name: g, ensemble: {nodes: [{model: iris}, {model: iris}]}}]",
            r"graphs\[0\] \(g\)\.ensemble\.nodes: node labels must be unique",
        ),
        (
            "graphs: [{name: g, ensemble: {combiner: median, nodes: [{model: iris, version: 1}, "
            "{model: iris, version: 2}]}}]",
            r"graphs\[0\] \(g\)\.ensemble\.combiner: unknown combiner 'median'",
        ),
        (
            "graphs: [{name: g, sequence: "
            "[{transformer: {class: 'user_code.py:NotATransformer'}}]}]",
            r"graphs\[0\] \(g\)\.sequence\[0\]\.transformer\.class: NotATransformer is not a "
            r"servekit.Transformer",
        ),
        (
            "graphs: [{name: g, splitter: {nodes: [{model: iris, weight: 0}]}}]",
            r"graphs\[0\] \(g\)\.splitter: at least one node needs a weight above 0",
        ),
        (
            "graphs: [{name: g, sequence: [{model: iris}], splitter: {nodes: [{model: iris}]}}]",
            r"a graph needs exactly one of \['sequence', 'ensemble', 'switch', 'splitter'\]",
        ),
    ],
)
def test_spec_errors_name_file_graph_and_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load(tmp_path, text)
    assert str(tmp_path / "deployments.yaml") in str(caught.value)


def test_a_valid_file_builds_graphs_next_to_services(tmp_path: Path) -> None:
    built = load(
        tmp_path,
        """
        services:
          - {name: svc, predictor: {model: iris, version: "2"}}
        graphs:
          - {name: g, sequence: [{model: svc}, {model: iris, version: 1}]}
        """,
    )
    graph = built["g"]
    assert isinstance(graph, Graph)
    assert graph.targets() == {"svc", "iris"}
    assert graph.describe()["graph"] == "sequence"


def test_conditions_are_declarative_and_tolerate_missing_values() -> None:
    request = InferenceRequest(
        inputs=[
            Tensor.from_array("x", np.array([[1.5, 7.0]])),
            Tensor("s", "BYTES", np.array([b"gold"], dtype=object)),
        ],
        parameters={"n": 3},
    )
    context = RequestContext("t", headers={"x-score": "0.9"})

    def holds(**condition: object) -> bool:
        return compile_condition(ConditionSpec.model_validate(condition))(request, context)

    assert holds(input="x", index=[0, 1], op="ge", value=7)
    assert holds(input="s", value="gold")
    assert holds(header="X-Score", op="gt", value=0.5)  # headers compare as numbers
    assert holds(parameter="n", op="in", value=[1, 3])
    assert holds(parameter="missing", op="exists", value=False)
    assert not holds(parameter="missing", op="ne", value=1)  # absent: the test is false
    assert not holds(input="x", index=[5, 5], op="gt", value=0)
    assert not holds(input="x", index=[0], op="gt", value=0)  # a row, not an element
    assert not holds(parameter="n", op="lt", value="text")  # incomparable: false
    assert holds(any=[{"parameter": "n", "value": 4}, {"not": {"header": "x-none"}}])


def test_builtin_combiners() -> None:
    outputs = {
        "a": {"p": np.array([0.2, 0.8]), "label": np.array([b"cat", b"dog"], dtype=object)},
        "b": {"p": np.array([0.4, 0.6]), "label": np.array([b"cat", b"cow"], dtype=object)},
        "c": {"p": np.array([0.6, 0.4]), "label": np.array([b"dog", b"cow"], dtype=object)},
    }
    assert np.allclose(mean(outputs, ["p"])["p"], [0.4, 0.6])
    assert vote(outputs, ["label"])["label"].tolist() == [b"cat", b"cow"]
    assert vote({"a": {"k": np.array([1, 2])}, "b": {"k": np.array([2, 1])}}, ["k"])[
        "k"
    ].tolist() == [1, 1]  # a tie goes to the smallest value
    with pytest.raises(InvalidInput, match="'label' is not numeric"):
        mean(outputs, ["label"])
    with pytest.raises(InvalidInput, match="different shapes"):
        mean({"a": {"p": np.zeros(2)}, "b": {"p": np.zeros(3)}}, ["p"])


def test_a_deployments_folder_finds_user_code_next_to_each_file(tmp_path: Path) -> None:
    folder = tmp_path / "deployments"
    folder.mkdir()
    (folder / "a.yaml").write_text("services: [{name: svc, predictor: {model: iris}}]\n")
    (folder / "b.yaml").write_text(
        "graphs:\n"
        "  - name: g\n"
        "    sequence: [{transformer: {class: 'code_b.py:Passthrough'}}, {model: svc}]\n"
    )
    (folder / "code_b.py").write_text(
        "from servekit import Transformer\n\n\nclass Passthrough(Transformer):\n    pass\n"
    )
    built = build_all(load_file(folder), {"iris"}, ShadowMetrics(CollectorRegistry()), {})
    assert built["g"].targets() == {"svc"}
    (folder / "b.yaml").write_text("graphs: [{name: g, source: x, sequence: [{model: svc}]}]\n")
    with pytest.raises(ConfigError, match=r"b.yaml: graphs\[0\] \(g\)\.source: Extra inputs"):
        load_file(folder)
