"""Turn a parsed deployment file into live ``Deployment`` objects, checking every reference."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from servekit.deploy.base import Deployment
from servekit.deploy.graph import build_graphs
from servekit.deploy.routers import ROUTERS
from servekit.deploy.service import Service, split_weights
from servekit.deploy.shadow import ShadowMetrics, ShadowMirror
from servekit.deploy.spec import LoadedSpec, ServiceSpec
from servekit.deploy.transformer import Transformer
from servekit.deploy.usercode import load_transformer
from servekit.errors import ConfigError


def build_service(
    spec: ServiceSpec,
    loaded: LoadedSpec,
    where: str,
    shadow_metrics: ShadowMetrics,
    saved_state: Mapping[str, Any] | None = None,
    transformer: Transformer | None = None,
) -> Service:
    """One service; ``transformer`` reuses an existing instance (a rollout change)."""
    strategy = spec.experiment.strategy if spec.experiment else "fixed"
    epsilon = spec.experiment.epsilon if spec.experiment else 0.0
    router = ROUTERS[strategy](split_weights(spec), epsilon=epsilon)
    if saved_state:
        router.restore(saved_state)
    if transformer is None and spec.transformer is not None:
        transformer = load_transformer(
            spec.transformer.class_,
            spec.transformer.options,
            loaded.folder,
            f"{where}.transformer",
        )
    shadow = None
    if spec.shadow is not None:
        shadow = ShadowMirror(
            spec.name, spec.shadow.model, spec.shadow.version, spec.shadow.percent, shadow_metrics
        )
    return Service(spec, router, transformer, shadow)


def build_all(
    loaded: LoadedSpec,
    models: set[str],
    shadow_metrics: ShadowMetrics,
    saved_states: Mapping[str, Any],
) -> dict[str, Deployment]:
    """Every service and graph of ``loaded``; ConfigError naming file, entry and field."""
    source = loaded.source
    deployments: dict[str, Deployment] = {}
    for index, spec in enumerate(loaded.document.services):
        where = f"{source}: services[{index}] ({spec.name})"
        if spec.name in models:
            raise ConfigError(
                f"{where}.name: a model of the repository is already called {spec.name!r}"
            )
        try:
            deployments[spec.name] = build_service(
                spec, loaded, where, shadow_metrics, saved_states.get(spec.name)
            )
        except ConfigError as exc:
            raise ConfigError(
                exc.message if exc.message.startswith(str(source)) else f"{where}: {exc}"
            ) from None
    deployment_names = set(deployments) | {_name(g) for g in loaded.document.graphs}
    for index, spec in enumerate(loaded.document.services):
        _check_refs(spec, f"{source}: services[{index}] ({spec.name})", models | deployment_names)
    if loaded.document.graphs:
        for graph in _build_graphs(loaded, models | deployment_names):
            deployments[graph.name] = graph
    _check_cycles(deployments, str(source))
    return deployments


def _name(graph: Any) -> str:
    return str(
        getattr(graph, "name", None) or (graph.get("name") if isinstance(graph, dict) else "")
    )


def _check_refs(spec: ServiceSpec, where: str, known: set[str]) -> None:
    refs: list[tuple[str, str]] = []
    if spec.predictor is not None:
        refs.append(("predictor.model", spec.predictor.model))
    if spec.canary is not None:
        refs.append(("canary.model", spec.canary.model))
    if spec.shadow is not None:
        refs.append(("shadow.model", spec.shadow.model))
    if spec.experiment is not None:
        refs += [
            (f"experiment.variants[{i}] ({v.name}).model", v.model)
            for i, v in enumerate(spec.experiment.variants)
        ]
    for field, name in refs:
        if name not in known:
            raise ConfigError(
                f"{where}.{field}: no model, service or graph named {name!r} "
                f"(known: {sorted(known)})"
            )


def _build_graphs(loaded: LoadedSpec, known: set[str]) -> list[Any]:
    return list(build_graphs(loaded.document.graphs, known, source=loaded.source))


def _check_cycles(deployments: Mapping[str, Deployment], source: str) -> None:
    """A deployment may call another, never itself through any path."""
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2 or name not in deployments:
            return
        if state.get(name) == 1:
            cycle = " -> ".join([*path[path.index(name) :], name])
            raise ConfigError(f"{source}: deployments call each other in a cycle: {cycle}")
        state[name] = 1
        for target in sorted(deployments[name].targets()):
            visit(target, [*path, name])
        state[name] = 2

    for name in deployments:
        visit(name, [])
