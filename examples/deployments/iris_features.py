"""A servekit.Transformer for the iris model: named features in, species names out.

Accepts, per request, either one tensor per feature (V1 ``{"instances": [{"sepal_length": ...}]}``
records become exactly that, or V2 tensors named like the features) or one BYTES tensor of JSON
records (V2). Sends the model its FP32 [n, 4] ``input-0`` and answers ``label`` (BYTES) next to
``predict_proba``.
"""

from __future__ import annotations

import json

import numpy as np

from servekit import InferenceRequest, InferenceResponse, Tensor, Transformer
from servekit.errors import InvalidInput
from servekit.types import RequestContext

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


class IrisFeatures(Transformer):
    def __init__(self, labels: list[str] | None = None, **options: object) -> None:
        super().__init__(**options)
        self.labels = labels or ["setosa", "versicolor", "virginica"]

    def preprocess(self, request: InferenceRequest, context: RequestContext) -> InferenceRequest:
        by_name = {t.name: t for t in request.inputs}
        if len(request.inputs) == 1 and request.inputs[0].datatype == "BYTES":
            rows = [_record(item) for item in request.inputs[0].data.reshape(-1)]
        elif all(f in by_name for f in FEATURES):
            columns = [by_name[f].data.reshape(-1).astype(np.float32) for f in FEATURES]
            rows = np.stack(columns, axis=1)
        else:
            raise InvalidInput(f"send the features {list(FEATURES)} or JSON records (BYTES)")
        features = np.asarray(rows, dtype=np.float32).reshape(-1, len(FEATURES))
        return InferenceRequest(
            inputs=[Tensor.from_array("input-0", features)],
            id=request.id,
            parameters=request.parameters,
        )

    def postprocess(
        self, response: InferenceResponse, request: InferenceRequest, context: RequestContext
    ) -> InferenceResponse:
        outputs = []
        for tensor in response.outputs:
            if tensor.name == "predict":
                names = [self.labels[int(i)].encode() for i in tensor.data.reshape(-1)]
                outputs.append(Tensor("label", "BYTES", np.array(names, dtype=object)))
            else:
                outputs.append(tensor)
        response.outputs = outputs
        return response


def _record(item: object) -> list[float]:
    try:
        record = json.loads(item.decode() if isinstance(item, bytes) else str(item))
        return [float(record[f]) for f in FEATURES]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"each record needs the numbers {list(FEATURES)}: {exc}") from None
