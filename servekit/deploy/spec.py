"""The deployment file: services (predictor, transformer, canary, shadow, sticky, experiment) and
graphs. Parsed with pydantic; every error names the file, the field and the problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from servekit.errors import ConfigError

VARIANT_HEADER = "x-servekit-variant"
"""Request header that picks a variant explicitly: canary, predictor or a variant name."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ModelRef(_Strict):
    model: str = Field(min_length=1, description="A model of the repository (or a service).")
    version: str | None = Field(default=None, description="Pinned version; default: its policy.")

    @field_validator("version", mode="before")
    @classmethod
    def _as_string(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) else value

    @property
    def label(self) -> str:
        return f"{self.model}/{self.version}" if self.version else self.model


class TransformerSpec(_Strict):
    class_: str = Field(
        alias="class", min_length=1, description='"module:Class" or "file.py:Class"'
    )
    options: dict[str, Any] = Field(default_factory=dict)


class CanarySpec(ModelRef):
    traffic_percent: float = Field(default=0, ge=0, le=100)
    pinned: bool = Field(default=False, description="0 % unless asked for by header or version.")


class ShadowSpec(ModelRef):
    percent: float = Field(default=100, ge=0, le=100, description="Share of requests mirrored.")


class StickySpec(_Strict):
    header: str | None = Field(
        default=None, description="Hash this header; without it (or when absent): the request id."
    )

    @field_validator("header")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.lower() if value else value


class VariantSpec(ModelRef):
    name: str = Field(min_length=1)
    weight: float = Field(default=1, ge=0)


class ExperimentSpec(_Strict):
    strategy: str = Field(default="fixed", description="fixed, epsilon-greedy or thompson.")
    variants: list[VariantSpec] = Field(min_length=2)
    epsilon: float = Field(default=0.1, ge=0, le=1)

    @field_validator("strategy")
    @classmethod
    def _known(cls, value: str) -> str:
        from servekit.deploy.routers import ROUTERS

        if value not in ROUTERS:
            raise ValueError(f"unknown strategy {value!r}; expected one of {sorted(ROUTERS)}")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> ExperimentSpec:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        if self.strategy == "fixed" and not any(v.weight > 0 for v in self.variants):
            raise ValueError("at least one variant needs a weight above 0")
        return self


class ServiceSpec(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    predictor: ModelRef | None = None
    transformer: TransformerSpec | None = None
    canary: CanarySpec | None = None
    shadow: ShadowSpec | None = None
    sticky: StickySpec | None = None
    experiment: ExperimentSpec | None = None

    @model_validator(mode="after")
    def _shape(self) -> ServiceSpec:
        if self.experiment is not None:
            if self.canary is not None:
                raise ValueError("use either 'canary' or 'experiment', not both")
        elif self.predictor is None:
            raise ValueError("a service needs a 'predictor' (or an 'experiment')")
        return self

    def variant_names(self) -> list[str]:
        if self.experiment is not None:
            return [v.name for v in self.experiment.variants]
        return ["predictor", *(["canary"] if self.canary else [])]


class DeploymentsFile(_Strict):
    services: list[ServiceSpec] = Field(default_factory=list)
    graphs: list[Any] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> DeploymentsFile:
        names = [s.name for s in self.services] + [_graph_name(g) for g in self.graphs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"names must be unique across services and graphs: {duplicates}")
        return self


def _graph_name(graph: Any) -> str:
    return str(
        getattr(graph, "name", None) or (graph.get("name") if isinstance(graph, dict) else "")
    )


class LoadedSpec:
    """A parsed deployment file and where it came from (for errors and user code paths)."""

    def __init__(self, document: DeploymentsFile, source: Path) -> None:
        self.document = document
        self.source = source

    @property
    def folder(self) -> Path:
        return self.source.parent if self.source.is_file() else self.source


def parse_document(raw: Any, source: Path) -> DeploymentsFile:
    """Validate one YAML document; raises ConfigError naming the file, field and problem."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with 'services' and/or 'graphs'")
    try:
        document = DeploymentsFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_errors(exc, raw)}") from None
    if document.graphs:
        document.graphs = _parse_graphs(raw.get("graphs"), source)
    return document


def _parse_graphs(raw: Any, source: Path) -> list[Any]:
    """The ``graphs:`` key belongs to servekit.deploy.graph.spec (parsed there; imported here
    because that module imports this one)."""
    from servekit.deploy.graph.spec import parse_graphs as parse

    graphs: list[Any] = []
    for index, item in enumerate(raw if isinstance(raw, list) else [raw]):
        name = item.get("name") if isinstance(item, dict) else None
        where = f"graphs[{index}]" + (f" ({name})" if name else "")
        try:
            graphs.extend(parse([item], source))
        except ConfigError:
            raise
        except ValidationError as exc:
            problems = describe_errors(exc, item, drop_leading_index=True)
            raise ConfigError(f"{source}: {where}.{problems}") from None
    return graphs


def describe_errors(exc: ValidationError, raw: Any, drop_leading_index: bool = False) -> str:
    """'services[0] (iris-svc).canary.traffic_percent: Input should be ...' per problem."""
    problems = []
    for error in exc.errors():
        parts: list[str] = []
        node = raw
        locs = error["loc"]
        if drop_leading_index and locs and isinstance(locs[0], int):
            locs = locs[1:]
        for loc in locs:
            if isinstance(loc, int):
                name = (
                    node[loc].get("name")
                    if isinstance(node, list) and isinstance(node[loc], dict)
                    else None
                )
                parts[-1:] = [
                    f"{parts[-1] if parts else ''}[{loc}]" + (f" ({name})" if name else "")
                ]
            elif loc not in ("function-after", "function-before") and not str(loc).startswith(
                "function-"
            ):
                parts.append(str(loc))
            try:
                node = node[loc]
            except (KeyError, IndexError, TypeError):
                node = None
        field = ".".join(parts) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{field}: {message}")
    return "; ".join(problems)


def load_file(path: Path) -> LoadedSpec:
    """Read a deployments YAML file or a folder of them (merged)."""
    if path.is_dir():
        merged = DeploymentsFile()
        for file in sorted([*path.glob("*.yaml"), *path.glob("*.yml")]):
            part = load_file(file).document
            merged = _merge(merged, part, file)
        return LoadedSpec(merged, path)
    if not path.is_file():
        raise ConfigError(f"{path}: deployments file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return LoadedSpec(parse_document(raw, path), path)


def _merge(a: DeploymentsFile, b: DeploymentsFile, source: Path) -> DeploymentsFile:
    names = {s.name for s in a.services} | {_graph_name(g) for g in a.graphs}
    clash = sorted(names & ({s.name for s in b.services} | {_graph_name(g) for g in b.graphs}))
    if clash:
        raise ConfigError(f"{source}: names already defined in another file: {clash}")
    return DeploymentsFile.model_construct(
        services=[*a.services, *b.services], graphs=[*a.graphs, *b.graphs]
    )


Strategy = Literal["fixed", "epsilon-greedy", "thompson"]
