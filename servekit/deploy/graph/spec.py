"""The ``graphs:`` key of a deployments file: sequence, ensemble, switch and splitter graphs.

Parsed with pydantic (strict: unknown fields are errors). A node is a model, service or graph by
name (``model:``) or a ``servekit.Transformer`` (``transformer:``); nodes may rename tensors on the
way in and out. Switch conditions are data, never code: a source (request parameter, header or
input tensor element), an operator from a fixed table and a value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    field_validator,
    model_validator,
)

from servekit.deploy.graph.conditions import OPERATORS
from servekit.deploy.spec import TransformerSpec

GRAPH_KINDS = ("sequence", "ensemble", "switch", "splitter")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class NodeSpec(_Strict):
    """One step: exactly one of ``model`` (a model, service or graph) or ``transformer``."""

    name: str | None = Field(default=None, description="Label in errors and served_by.")
    model: str | None = Field(default=None, min_length=1)
    version: str | None = None
    transformer: TransformerSpec | None = None
    inputs: dict[str, str] = Field(
        default_factory=dict,
        description="{node input: incoming tensor}; when given, the node gets only these.",
    )
    outputs: dict[str, str] = Field(
        default_factory=dict,
        description="{new name: node output}; when given, only these leave the node.",
    )

    @field_validator("version", mode="before")
    @classmethod
    def _as_string(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) else value

    @model_validator(mode="after")
    def _one_kind(self) -> NodeSpec:
        if (self.model is None) == (self.transformer is None):
            raise ValueError("a node needs exactly one of 'model' or 'transformer'")
        if self.version is not None and self.model is None:
            raise ValueError("'version' needs 'model'")
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.model is not None:
            return f"{self.model}/{self.version}" if self.version else self.model
        assert self.transformer is not None
        return self.transformer.class_.rpartition(":")[2]


class WeightedNodeSpec(NodeSpec):
    weight: float = Field(default=1, ge=0)


class ConditionSpec(_Strict):
    """``{parameter|header|input: NAME, op: OP, value: V}``, or ``all``/``any``/``not`` of them.

    ``index`` picks the element of an input tensor (default: its first element)."""

    parameter: str | None = None
    header: str | None = None
    input: str | None = None
    index: list[int] | None = None
    op: str = "eq"
    value: Any = None
    all: list[ConditionSpec] | None = None
    any: list[ConditionSpec] | None = None
    not_: ConditionSpec | None = Field(default=None, alias="not")

    @field_validator("op")
    @classmethod
    def _known_op(cls, value: str) -> str:
        if value not in OPERATORS:
            raise ValueError(f"unknown operator {value!r}; expected one of {sorted(OPERATORS)}")
        return value

    @field_validator("header")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.lower() if value else value

    @model_validator(mode="after")
    def _one_form(self) -> ConditionSpec:
        forms = [
            f for f in ("parameter", "header", "input", "all", "any", "not_") if getattr(self, f)
        ]
        if len(forms) != 1:
            raise ValueError(
                "a condition needs exactly one of 'parameter', 'header', 'input', 'all', 'any' "
                f"or 'not' (got {[f.rstrip('_') for f in forms] or 'none'})"
            )
        if self.index is not None and self.input is None:
            raise ValueError("'index' needs 'input'")
        return self


class CaseSpec(_Strict):
    when: ConditionSpec
    node: NodeSpec


class SwitchSpec(_Strict):
    cases: list[CaseSpec] = Field(min_length=1)
    default: NodeSpec | None = Field(default=None, description="When no case matches.")


class EnsembleSpec(_Strict):
    nodes: list[NodeSpec] = Field(min_length=2)
    combiner: str = Field(default="mean", description='mean, vote, or "module:function".')
    outputs: list[str] | None = Field(
        default=None, description="Outputs to combine (default: those every node returns)."
    )


class SplitterSpec(_Strict):
    nodes: list[WeightedNodeSpec] = Field(min_length=1)
    seed: int | None = Field(default=None, description="Seed the split (reproducible runs).")

    @model_validator(mode="after")
    def _some_weight(self) -> SplitterSpec:
        if not any(n.weight > 0 for n in self.nodes):
            raise ValueError("at least one node needs a weight above 0")
        return self


class GraphSpec(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    sequence: list[NodeSpec] | None = Field(default=None, min_length=1)
    ensemble: EnsembleSpec | None = None
    switch: SwitchSpec | None = None
    splitter: SplitterSpec | None = None
    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        """The file that declared this graph (for errors and user code paths)."""
        return self._source

    @model_validator(mode="after")
    def _one_kind(self) -> GraphSpec:
        kinds = [k for k in GRAPH_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                f"a graph needs exactly one of {list(GRAPH_KINDS)} (got {kinds or 'none'})"
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in GRAPH_KINDS if getattr(self, k) is not None)

    def nodes(self) -> list[tuple[str, NodeSpec]]:
        """Every node with the field path that declares it (for error messages)."""
        if self.sequence is not None:
            return [(f"sequence[{i}]", n) for i, n in enumerate(self.sequence)]
        if self.ensemble is not None:
            return [(f"ensemble.nodes[{i}]", n) for i, n in enumerate(self.ensemble.nodes)]
        if self.splitter is not None:
            return [(f"splitter.nodes[{i}]", n) for i, n in enumerate(self.splitter.nodes)]
        assert self.switch is not None
        found = [(f"switch.cases[{i}].node", c.node) for i, c in enumerate(self.switch.cases)]
        if self.switch.default is not None:
            found.append(("switch.default", self.switch.default))
        return found


_GRAPH_LIST = TypeAdapter(list[GraphSpec])


def parse_graphs(raw: Any, source: Path) -> list[GraphSpec]:
    """Validate the ``graphs:`` list (pydantic's ValidationError propagates; the deployments
    loader words it with the file, graph and field)."""
    graphs = _GRAPH_LIST.validate_python(raw if isinstance(raw, list) else [raw])
    for graph in graphs:
        graph._source = source
    return graphs
