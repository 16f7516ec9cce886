"""Inference graphs: sequence, ensemble, switch and splitter flows of models, services, graphs
and transformers, served by name like a model."""

from servekit.deploy.graph.build import build_graphs
from servekit.deploy.graph.graph import Graph

__all__ = ["Graph", "build_graphs"]
