"""Protocol-neutral value types: tensors, requests, responses, metadata."""

from servekit.types.inference import (
    InferenceRequest,
    InferenceResponse,
    Parameters,
    RequestContext,
    RequestedOutput,
)
from servekit.types.metadata import ModelMetadata, ServerMetadata, TensorSpec
from servekit.types.tensors import DATATYPES, Tensor

__all__ = [
    "DATATYPES",
    "InferenceRequest",
    "InferenceResponse",
    "ModelMetadata",
    "Parameters",
    "RequestContext",
    "RequestedOutput",
    "ServerMetadata",
    "Tensor",
    "TensorSpec",
]
