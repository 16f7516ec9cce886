"""User code for the example graphs: a transformer node and an ensemble combiner."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from servekit import InferenceRequest, InferenceResponse, Tensor, Transformer
from servekit.errors import InvalidInput
from servekit.types import RequestContext

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


class IrisMillimetres(Transformer):
    """Named features (one tensor each, in millimetres) in, species names out."""

    def __init__(self, labels: list[str] | None = None, **options: object) -> None:
        super().__init__(**options)
        self.labels = labels or ["setosa", "versicolor", "virginica"]

    def preprocess(self, request: InferenceRequest, context: RequestContext) -> InferenceRequest:
        by_name = {t.name: t for t in request.inputs}
        missing = [f for f in FEATURES if f not in by_name]
        if missing:
            raise InvalidInput(f"missing features {missing}; send {list(FEATURES)}")
        columns = [by_name[f].data.reshape(-1).astype(np.float32) for f in FEATURES]
        features = Tensor.from_array("features", np.stack(columns, axis=1))
        return InferenceRequest(inputs=[features], id=request.id, parameters=request.parameters)

    def postprocess(
        self, response: InferenceResponse, request: InferenceRequest, context: RequestContext
    ) -> InferenceResponse:
        predicted = next(t for t in response.outputs if t.name == "predict")
        names = [self.labels[int(i)].encode() for i in predicted.data.reshape(-1)]
        label = Tensor("label", "BYTES", np.array(names, dtype=object))
        response.outputs = [label, *response.outputs]  # first: V1 answers the first output
        return response


def most_confident(
    outputs: Mapping[str, Mapping[str, np.ndarray]], names: list[str]
) -> dict[str, np.ndarray]:
    """Per row, the class of the node that is most sure of itself (highest probability)."""
    probabilities = np.stack([node["predict_proba"] for node in outputs.values()])
    best = probabilities.max(axis=2).argmax(axis=0)  # (rows,): which node wins each row
    rows = np.arange(probabilities.shape[1])
    return {
        "predict": probabilities[best, rows].argmax(axis=1),
        "predict_proba": probabilities[best, rows],
    }
