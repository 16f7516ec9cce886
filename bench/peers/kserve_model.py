"""KServe peer: a custom ``kserve.Model`` per scikit-learn pickle, V2 (REST + gRPC) and V1.

    python bench/peers/kserve_model.py MODEL_DIR --http_port P --grpc_port Q

MODEL_DIR holds ``<name>.joblib`` files; each becomes a model called ``<name>``. The remaining
options are KServe's own model-server options.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server


class SKLearnModel(Model):
    """Loads one pickle; answers V2 with a ``predict`` tensor and V1 with ``predictions``."""

    def __init__(self, name: str, path: Path) -> None:
        super().__init__(name)
        self.path = path
        self.model: Any = None
        self.load()

    def load(self) -> bool:
        self.model = joblib.load(self.path)
        self.n_features = int(self.model.n_features_in_)
        self.ready = True
        return self.ready

    async def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": "input-0", "datatype": "FP32", "shape": [-1, self.n_features]}]

    async def get_output_types(self) -> list[dict[str, Any]]:
        return [{"name": "predict", "datatype": "INT64", "shape": [-1]}]

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        if isinstance(payload, InferRequest):
            labels = self.model.predict(payload.inputs[0].as_numpy()).astype(np.int64)
            output = InferOutput(name="predict", shape=list(labels.shape), datatype="INT64")
            # as KServe's own servers do: raw outputs for gRPC requests with raw inputs
            binary = payload.use_binary_outputs
            output.set_data_from_numpy(labels, binary_data=binary)
            return InferResponse(
                model_name=self.name,
                infer_outputs=[output],
                response_id=payload.id or "",
                use_binary_outputs=binary,
            )
        labels = self.model.predict(np.asarray(payload["instances"], dtype=np.float32))
        return {"predictions": labels.tolist()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("model_dir", type=Path)
    args, _ = parser.parse_known_args()
    models = [SKLearnModel(p.stem, p) for p in sorted(args.model_dir.glob("*.joblib"))]
    if not models:
        sys.exit(f"no *.joblib in {args.model_dir}")
    ModelServer(http_port=args.http_port, grpc_port=args.grpc_port, workers=1).start(models)
