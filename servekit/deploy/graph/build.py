"""Turn parsed ``graphs:`` entries into live ``Graph`` objects, checking every reference.

Errors are ``ConfigError`` naming the file, the graph and the node field: a missing node, a graph
that reaches itself through other graphs, a transformer or combiner that cannot be loaded.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from servekit.deploy.graph.combiners import resolve_combiner
from servekit.deploy.graph.conditions import Predicate, compile_condition
from servekit.deploy.graph.flows import EnsembleFlow, Flow, SequenceFlow, SplitterFlow, SwitchFlow
from servekit.deploy.graph.graph import Graph
from servekit.deploy.graph.nodes import ModelNode, Node, TransformerNode
from servekit.deploy.graph.spec import ConditionSpec, GraphSpec, NodeSpec, parse_graphs
from servekit.deploy.usercode import load_transformer
from servekit.errors import ConfigError

RngFactory = Callable[[int | None], random.Random]


class _Builder:
    """Builds the graphs of one deployments file (``where`` prefixes every error)."""

    def __init__(self, spec: GraphSpec, where: str, folder: Path, rng: RngFactory) -> None:
        self.spec = spec
        self.where = where
        self.folder = folder
        self.rng = rng
        self.headers: set[str] = set()

    def node(self, field: str, spec: NodeSpec) -> Node:
        if spec.model is not None:
            return ModelNode(spec.label, spec.model, spec.version, spec.inputs, spec.outputs)
        assert spec.transformer is not None
        where = f"{self.where}.{field}.transformer"
        instance = load_transformer(
            spec.transformer.class_, spec.transformer.options, self.folder, where
        )
        return TransformerNode(spec.label, instance, spec.inputs, spec.outputs)

    def condition(self, spec: ConditionSpec) -> Predicate:
        self.headers |= _headers_read(spec)
        return compile_condition(spec)

    def flow(self) -> Flow:
        return FLOWS[self.spec.kind](self)


def _headers_read(spec: ConditionSpec) -> set[str]:
    parts = [*(spec.all or []), *(spec.any or []), *([spec.not_] if spec.not_ else [])]
    nested = set().union(*(_headers_read(part) for part in parts))
    return nested | ({spec.header} if spec.header else set())


def _sequence(b: _Builder) -> Flow:
    return SequenceFlow([b.node(f, n) for f, n in b.spec.nodes()])


def _ensemble(b: _Builder) -> Flow:
    ensemble = b.spec.ensemble
    assert ensemble is not None
    nodes = [b.node(f, n) for f, n in b.spec.nodes()]
    labels = [n.label for n in nodes]
    if len(set(labels)) != len(labels):
        raise ConfigError(
            f"{b.where}.ensemble.nodes: node labels must be unique (give them a 'name'): {labels}"
        )
    combiner = resolve_combiner(ensemble.combiner, b.folder, f"{b.where}.ensemble.combiner")
    return EnsembleFlow(nodes, combiner, ensemble.combiner, ensemble.outputs)


def _switch(b: _Builder) -> Flow:
    switch = b.spec.switch
    assert switch is not None
    cases = [
        (b.condition(case.when), b.node(f"switch.cases[{i}].node", case.node))
        for i, case in enumerate(switch.cases)
    ]
    default = b.node("switch.default", switch.default) if switch.default else None
    return SwitchFlow(cases, default)


def _splitter(b: _Builder) -> Flow:
    splitter = b.spec.splitter
    assert splitter is not None
    nodes = [b.node(f, n) for f, n in b.spec.nodes()]
    return SplitterFlow(nodes, [n.weight for n in splitter.nodes], b.rng(splitter.seed))


FLOWS: dict[str, Callable[[_Builder], Flow]] = {
    "sequence": _sequence,
    "ensemble": _ensemble,
    "switch": _switch,
    "splitter": _splitter,
}
"""Graph kind -> how to build its flow."""


def build_graphs(
    specs: Sequence[Any],
    known_names: Iterable[str],
    source: Path | None = None,
    rng: RngFactory = random.Random,
) -> list[Graph]:
    """Graphs for ``specs`` (GraphSpec or raw mappings). ``known_names``: models, services and
    graphs a node may call. ``rng(seed)`` makes each splitter's random source (tests inject)."""
    origin = source or Path("deployments")
    graphs = [s if isinstance(s, GraphSpec) else parse_graphs([s], origin)[0] for s in specs]
    known = set(known_names) | {g.name for g in graphs}
    wheres = [f"{g.source or origin}: graphs[{i}] ({g.name})" for i, g in enumerate(graphs)]
    for graph, where in zip(graphs, wheres, strict=True):
        for field, node in graph.nodes():
            if node.model is not None and node.model not in known:
                raise ConfigError(
                    f"{where}.{_named(field, node)}.model: no model, service or graph named "
                    f"{node.model!r} "
                    f"(known: {sorted(known)})"
                )
    _check_cycles(graphs, wheres)
    built = []
    for graph, where in zip(graphs, wheres, strict=True):
        file = graph.source or origin
        builder = _Builder(graph, where, file.parent if file.suffix else file, rng)
        built.append(Graph(graph, builder.flow(), builder.headers))
    return built


def _named(field: str, node: NodeSpec) -> str:
    return f"{field} ({node.name})" if node.name else field


def _check_cycles(graphs: Sequence[GraphSpec], wheres: Sequence[str]) -> None:
    """A graph may call other graphs, never itself through any path."""
    by_name = {g.name: (g, w) for g, w in zip(graphs, wheres, strict=True)}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in done or name not in by_name:
            return
        graph, where = by_name[name]
        for field, node in graph.nodes():
            if node.model is None or node.model not in by_name:
                continue
            trail = [*path, name]
            if node.model in trail:
                cycle = " -> ".join([*trail[trail.index(node.model) :], node.model])
                raise ConfigError(
                    f"{where}.{_named(field, node)}.model: graphs call each other in a cycle: "
                    f"{cycle}"
                )
            visit(node.model, trail)
        done.add(name)

    for name in by_name:
        visit(name, [])
